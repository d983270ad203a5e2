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
}

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
    pub fn verify(&self, token: &str) -> Result<Uuid, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        // Only the subject is read: `exp` is checked by the validation, and the roles
        // are never trusted, so they are not even parsed.
        #[derive(Deserialize)]
        struct Subject {
            sub: String,
        }
        let data = jsonwebtoken::decode::<Subject>(token, &self.decoding, &self.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::MissingRequiredClaim(claim) if claim == "sub" => TokenError::BadSubject,
                _ => TokenError::Invalid,
            })?;
        Uuid::parse_str(&data.claims.sub).map_err(|_| TokenError::BadSubject)
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
}
