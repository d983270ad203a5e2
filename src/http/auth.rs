//! The bearer-token extractor: who is calling, and may they.

use super::AppState;
use super::error::ApiError;
use crate::auth::jwt::TokenError;
use crate::domain::UserRow;
use crate::domain::role::{Role, role_for_status};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

/// The caller, authenticated by token and authorised as at least a viewer. Holds the
/// users row read for the check: the PUT path's one auth read.
pub struct CurrentUser {
    /// The caller's row, as read for authorisation.
    pub row: UserRow,
    /// The role from that row (never from the token).
    pub role: Role,
    /// When the token was issued (`iat`, seconds since the epoch), if it says.
    pub token_issued_at: Option<i64>,
}

fn unauthorized(detail: &str, invalid_token: bool) -> ApiError {
    ApiError::Unauthorized {
        detail: detail.to_owned(),
        invalid_token,
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Two credentials are an ambiguous request, not a choice for us to make: a
        // proxy that checks the first and a server that uses the last disagree.
        if parts
            .headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(ApiError::BadRequest(
                "send one `Authorization` header, not several".into(),
            ));
        }
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            unauthorized(
                "Not authenticated: send `Authorization: Bearer <token>`",
                false,
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                unauthorized(
                    "Not authenticated: the Authorization header must be `Bearer <token>`",
                    false,
                )
            })?;
        let session = state.jwt.verify_session(token).map_err(|err| match err {
            TokenError::Expired => unauthorized("The token has expired", true),
            TokenError::BadSubject | TokenError::Invalid => {
                unauthorized("The token is invalid", true)
            }
        })?;
        // A token for a user that does not exist (any more) is not a valid credential:
        // 401, so that the client logs in again, rather than KillrVideo's 404.
        let row = state
            .store
            .find_user(session.user_id)
            .await?
            .ok_or_else(|| unauthorized("The token's user does not exist", true))?;
        let role = row
            .account_status()
            .and_then(role_for_status)
            .ok_or_else(|| {
                ApiError::Forbidden("This account's status does not allow this action".into())
            })?;
        Ok(CurrentUser {
            row,
            role,
            token_issued_at: session.issued_at,
        })
    }
}
