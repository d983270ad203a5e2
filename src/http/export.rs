//! `GET /api/v1/users/me/export`: the right of access over HTTP (`app::export`).
//!
//! It hands out everything held about the caller in one response, so a stolen token
//! must not be enough: the token must come from a login within the last
//! [`FRESH_LOGIN`]. An older one gets 401 with RFC 9470's step-up challenge
//! (`error="insufficient_user_authentication", max_age=300`), which tells the client
//! to ask for the password again and retry with the new token.

use super::AppState;
use super::auth::CurrentUser;
use super::error::ApiError;
use crate::app::audit_trail::AuditedEvent;
use crate::app::export::export;
use crate::app::representation::UserResponse;
use crate::domain::events::micros_to_datetime;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// How recent the login behind an export's token must be.
pub const FRESH_LOGIN: Duration = Duration::from_secs(300);

/// Everything the service holds about the caller.
#[derive(Serialize, ToSchema)]
pub struct ExportResponse {
    /// When this document was made.
    pub exported_at: DateTime<Utc>,
    /// The profile, as `GET /users/me` shows it.
    pub user: UserResponse,
    /// Every event of the caller's history, oldest first, values in clear.
    pub events: Vec<AuditedEvent>,
    /// The credentials row, without the password hash.
    pub credentials: Option<HeldCredentials>,
    /// The login throttle's budgets kept for the caller's email, per client address
    /// (`*`: every address).
    pub login_budgets: Vec<HeldLoginBudget>,
}

/// The credentials row as exported.
#[derive(Serialize, ToSchema)]
pub struct HeldCredentials {
    /// The email as the login key (lowercased).
    pub email_key: String,
    /// Whether logins are refused.
    pub account_locked: bool,
    /// Always `"withheld"`: the argon2id hash is one-way and is not handed out.
    pub password_hash: &'static str,
}

/// One login budget as exported.
#[derive(Serialize, ToSchema)]
pub struct HeldLoginBudget {
    /// `*` or a client address.
    pub scope: String,
    /// Password guesses counted in the window.
    pub guesses: u32,
    /// When the window began.
    pub window_start: DateTime<Utc>,
}

/// The caller's data, for a token from a recent login.
#[utoipa::path(
    get, path = "/api/v1/users/me/export", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Everything held about the caller", body = ExportResponse),
        (status = 401, description = "Missing, invalid or expired token, or a login older than 5 minutes (`WWW-Authenticate: Bearer error=\"insufficient_user_authentication\", max_age=300`)"),
        (status = 403, description = "Account status does not allow it"),
        (status = 503, description = "Data store unavailable"),
    )
)]
pub async fn export_me(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Json<ExportResponse>, ApiError> {
    let now = Utc::now();
    let max_age = FRESH_LOGIN.as_secs();
    let fresh = current.token_issued_at.is_some_and(|issued| {
        let age = now.timestamp() - issued;
        // A token from the future by more than a clock's drift is not fresh either.
        (-60..=max_age as i64).contains(&age)
    });
    if !fresh {
        return Err(ApiError::LoginTooOld { max_age });
    }
    let held = export(state.store.as_ref(), current.row).await?;
    Ok(Json(ExportResponse {
        exported_at: now,
        user: UserResponse::from(&held.user),
        events: held.events,
        credentials: held
            .credentials
            .map(|(email_key, account_locked)| HeldCredentials {
                email_key,
                account_locked,
                password_hash: "withheld",
            }),
        login_budgets: held
            .guess_budgets
            .into_iter()
            .map(|held| HeldLoginBudget {
                scope: held.scope,
                guesses: held.budget.used,
                window_start: micros_to_datetime(held.budget.window_start),
            })
            .collect(),
    }))
}
