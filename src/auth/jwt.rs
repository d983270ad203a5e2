//! HS256 access tokens, compatible with the Python KillrVideo backend: claims
//! `{sub, roles, exp}` plus `iat` on tokens minted here. The `roles` claim is written for
//! clients but never trusted: the role is read from the users row on every request.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// `[account_status]` at issue time; informational only.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time; absent from Python-minted tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

/// Why a token was refused. Each maps to 401; the variants exist for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// `sub` missing or not a UUID.
    #[error("token subject is not a user id")]
    BadSubject,
    /// Bad signature, wrong algorithm, malformed, not yet valid...
    #[error("invalid token")]
    Invalid,
}

/// Signing and verification keys with the policy around them.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    /// Tokens whose signature has already been checked: see [`JwtKeys::verify`].
    verified: quick_cache::sync::Cache<Box<str>, VerifiedToken>,
}

/// What a token that passed verification still needs checking on its next use.
#[derive(Debug, Clone, Copy)]
struct VerifiedToken {
    user_id: Uuid,
    /// `exp`, seconds since the epoch.
    expires: i64,
    /// `iat`, seconds since the epoch, when the token has one.
    issued_at: Option<i64>,
}

/// Who a verified token names, and when it was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSession {
    /// The user id (`sub`).
    pub user_id: Uuid,
    /// `iat`, seconds since the epoch; `None` for tokens minted without one (other
    /// backends' tokens may lack it), which are never "fresh".
    pub issued_at: Option<i64>,
}

/// Verified tokens remembered at once. A client sends the same token on every request
/// until it expires, so this covers that many concurrently active sessions; beyond it
/// the least useful entries go, and their next request is verified again.
const VERIFIED_TOKENS: usize = 16 * 1024;

impl JwtKeys {
    /// Keys for an HS256 secret and a token lifetime.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        // The accepted algorithm comes from configuration, never from the token header:
        // that is what stops `alg: none` and HS/RS confusion.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
        }
    }

    /// The configured token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Mints a token for `user_id` whose `roles` claim shows `account_status`.
    pub fn issue(
        &self,
        user_id: Uuid,
        account_status: &str,
        now: DateTime<Utc>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            sub: user_id.to_string(),
            roles: vec![account_status.to_owned()],
            exp: now.timestamp().saturating_add(ttl),
            iat: Some(now.timestamp()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Checks signature, algorithm and times, and returns the user id.
    ///
    /// A token that passed once is remembered by its exact text, so the signature and
    /// the claims are checked once per token rather than once per request (they were
    /// a tenth of the request path's CPU: docs/performance.md, "What mattered"). Only the expiry depends
    /// on when the token is used, and it is checked on every use, with the same leeway.
    /// A remembered entry cannot admit anything the full check would refuse: the key is
    /// the whole token, signature included, and the secret does not change while the
    /// process runs.
    pub fn verify(&self, token: &str) -> Result<Uuid, TokenError> {
        self.verify_session(token).map(|session| session.user_id)
    }

    /// [`JwtKeys::verify`], also returning when the token was issued: how recently the
    /// user logged in, for the requests that ask for a fresh login.
    pub fn verify_session(&self, token: &str) -> Result<TokenSession, TokenError> {
        let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX);
        self.verify_at(token, now)
    }

    /// [`JwtKeys::verify`] with a remembered token's expiry judged at `now` (seconds
    /// since the epoch); a token not yet remembered is checked at the real time.
    fn verify_at(&self, token: &str, now: i64) -> Result<TokenSession, TokenError> {
        let session = |known: VerifiedToken| TokenSession {
            user_id: known.user_id,
            issued_at: known.issued_at,
        };
        if let Some(known) = self.verified.get(token) {
            return if self.expired(known.expires, now) {
                self.verified.remove(token);
                Err(TokenError::Expired)
            } else {
                Ok(session(known))
            };
        }
        let known = self.verify_signature_and_claims(token)?;
        self.verified.insert(token.into(), known);
        Ok(session(known))
    }

    /// Past `exp` by more than the leeway, as `jsonwebtoken` judges it.
    fn expired(&self, expires: i64, now: i64) -> bool {
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(i64::MAX);
        expires < now.saturating_sub(leeway)
    }

    /// The full check: signature, algorithm, `exp`, `nbf` and the subject.
    fn verify_signature_and_claims(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        // Only the subject and the times are read: the roles are never trusted, so they
        // are not even parsed.
        #[derive(Deserialize)]
        struct Subject {
            sub: String,
            exp: i64,
            iat: Option<i64>,
        }
        let data = jsonwebtoken::decode::<Subject>(token, &self.decoding, &self.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::MissingRequiredClaim(claim) if claim == "sub" => TokenError::BadSubject,
                _ => TokenError::Invalid,
            })?;
        let user_id = Uuid::parse_str(&data.claims.sub).map_err(|_| TokenError::BadSubject)?;
        Ok(VerifiedToken {
            user_id,
            expires: data.claims.exp,
            issued_at: data.claims.iat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn issued_tokens_verify() {
        let keys = JwtKeys::new(SECRET, Duration::from_secs(60));
        let user = Uuid::new_v4();
        let token = keys.issue(user, "viewer", Utc::now()).unwrap();
        assert_eq!(keys.verify(&token), Ok(user));
    }

    #[test]
    fn python_style_tokens_without_iat_verify() {
        let keys = JwtKeys::new(SECRET, Duration::from_secs(60));
        let user = Uuid::new_v4();
        let claims = serde_json::json!({"sub": user.to_string(), "roles": ["viewer"], "exp": Utc::now().timestamp() + 600});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(keys.verify(&token), Ok(user));
    }

    #[test]
    fn expired_wrong_key_and_bad_subject_are_refused() {
        let keys = JwtKeys::new(SECRET, Duration::from_secs(60));
        let user = Uuid::new_v4();
        let old = keys
            .issue(user, "viewer", Utc::now() - chrono::Duration::hours(2))
            .unwrap();
        assert_eq!(keys.verify(&old), Err(TokenError::Expired));
        let other = JwtKeys::new(b"another-secret-another-secret-xx", Duration::from_secs(60));
        assert_eq!(
            keys.verify(&other.issue(user, "viewer", Utc::now()).unwrap()),
            Err(TokenError::Invalid)
        );
        let claims = serde_json::json!({"sub": "not-a-uuid", "exp": Utc::now().timestamp() + 600});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(keys.verify(&token), Err(TokenError::BadSubject));
    }

    /// Keys with a 60 s lifetime and a token issued at `now`, verified once so that
    /// the keys remember it.
    fn remembered_token(now: DateTime<Utc>) -> (JwtKeys, Uuid, String) {
        let keys = JwtKeys::new(SECRET, Duration::from_secs(60));
        let user = Uuid::new_v4();
        let token = keys.issue(user, "viewer", now).unwrap();
        assert_eq!(keys.verify(&token), Ok(user));
        (keys, user, token)
    }

    /// A remembered token still expires, and is forgotten when it does.
    #[test]
    fn a_remembered_token_is_refused_once_expired() {
        let now = Utc::now();
        let (keys, user, token) = remembered_token(now);
        let exp = now.timestamp() + 60;
        // Within the leeway it is still good; past it, refused.
        assert_eq!(keys.verify_at(&token, exp + 5).map(|s| s.user_id), Ok(user));
        assert_eq!(keys.verify_at(&token, exp + 6), Err(TokenError::Expired));
        assert!(keys.verified.get(token.as_str()).is_none());
    }

    /// Remembering a token admits only that exact token: one with the same claims and
    /// a different signature is still refused.
    #[test]
    fn a_remembered_token_does_not_vouch_for_a_tampered_copy() {
        let (keys, user, token) = remembered_token(Utc::now());
        let (unsigned, signature) = token.rsplit_once('.').unwrap();
        let mut forged_signature = signature.to_owned().into_bytes();
        forged_signature[0] = if forged_signature[0] == b'A' {
            b'B'
        } else {
            b'A'
        };
        let forged = format!(
            "{unsigned}.{}",
            String::from_utf8(forged_signature).unwrap()
        );
        assert_eq!(keys.verify(&forged), Err(TokenError::Invalid));
        assert_eq!(keys.verify(&token), Ok(user));
    }
}
