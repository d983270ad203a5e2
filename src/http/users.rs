//! `/api/v1/users`: register, login, the caller's profile (GET/PUT /me) and public
//! profiles. Each handler is the same three moves: validate (domain), decide (domain),
//! record (store), then answer from what the store holds.

use super::AppState;
use super::auth::CurrentUser;
use super::client::ClientAddress;
use super::error::ApiError;
use super::extract::{JsonObject, RequestId};
use crate::app;
use crate::app::erasure::EraseError;
use crate::app::login::{LoginError, Refusal};
use crate::app::profile::UpdateError;
use crate::app::register::RegisterError;
use crate::app::representation::{IfMatch, UserResponse, etag, parse_if_match};
use crate::domain::UserRow;
use crate::domain::profile::ProfileChanges;
use crate::domain::registration::{AccountDeletion, LoginAttempt, Registration};
use crate::store::Precondition;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Body of `POST /register`, for the OpenAPI document: parsing is field by field
/// (`domain::registration`), and `http::openapi`'s tests hold the two equal.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// A valid address; uniqueness is case-insensitive.
    #[schema(example = "jane@example.com")]
    pub email: String,
    /// 8 characters to 128 bytes.
    #[schema(min_length = 8, example = "correct horse battery")]
    pub password: String,
    /// 1 to 50 characters after trimming (alias `firstName`).
    #[schema(min_length = 1, max_length = 50)]
    pub firstname: String,
    /// 1 to 50 characters after trimming (alias `lastName`).
    #[schema(min_length = 1, max_length = 50)]
    pub lastname: String,
}

/// Body of `POST /login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The registered address, any case.
    #[schema(max_length = 254)]
    pub email: String,
    /// The password.
    #[schema(max_length = 128)]
    pub password: String,
}

/// Body of `PUT /me`: every field optional, nothing else allowed. `null` is refused:
/// omit a field to keep it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdateRequest {
    /// New first name, 1 to 50 characters after trimming (alias `firstName`).
    #[schema(value_type = String, required = false, min_length = 1, max_length = 50)]
    pub firstname: Option<String>,
    /// New last name, 1 to 50 characters after trimming (alias `lastName`).
    #[schema(value_type = String, required = false, min_length = 1, max_length = 50)]
    pub lastname: Option<String>,
}

/// Answer of `POST /login`.
#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// HS256 bearer token.
    pub token: String,
    /// The user, including the login just recorded.
    pub user: UserResponse,
}

/// A user with its ETag header.
fn user_with_etag(status: StatusCode, row: &UserRow) -> Response {
    let mut response = (status, Json(UserResponse::from(row))).into_response();
    if let Some(value) = etag(row).and_then(|tag| HeaderValue::from_str(&tag).ok()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// Registers a new account.
#[utoipa::path(
    post, path = "/api/v1/users/register", tag = "users",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = UserResponse, headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "Malformed JSON"),
        (status = 409, description = "Email already registered"),
        (status = 413, description = "Body too large"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "Invalid fields"),
        (status = 503, description = "Data store unavailable"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    request_id: RequestId,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let registration = Registration::from_json(body).map_err(ApiError::Validation)?;
    let row = app::register::register(
        state.store.as_ref(),
        &state.passwords,
        &state.clock,
        &state.turns,
        &registration,
        request_id.0,
    )
    .await
    .map_err(|err| match err {
        RegisterError::EmailTaken => ApiError::Conflict(err.to_string()),
        RegisterError::Busy => hashing_busy(),
        RegisterError::Hashing(cause) => ApiError::Internal(cause),
        RegisterError::Store(store) => store.into(),
    })?;
    let mut response = user_with_etag(StatusCode::CREATED, &row);
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/users/{}", row.user_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Logs in and returns a bearer token.
#[utoipa::path(
    post, path = "/api/v1/users/login", tag = "users",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 400, description = "Malformed JSON"),
        (status = 401, description = "Incorrect email or password"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "Missing fields, or an email or password longer than any registered one"),
        (status = 503, description = "Data store unavailable, or password checking at capacity"),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    client: ClientAddress,
    request_id: RequestId,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let attempt = LoginAttempt::from_json(body).map_err(ApiError::Validation)?;
    let context = state.login_context();
    let row = app::login::login(&context, attempt, &client.0.to_string(), request_id.0)
        .await
        .map_err(|err| match err {
            LoginError::Refused(refusal) => {
                crate::telemetry::login_refused(refusal.label());
                ApiError::Unauthorized {
                    detail: "Incorrect email or password".into(),
                    invalid_token: false,
                }
            }
            LoginError::Busy => hashing_busy(),
            LoginError::Store(store) => store.into(),
            LoginError::Internal(cause) => ApiError::Internal(cause),
        })?;
    let token = state
        .jwt
        .issue(
            row.user_id,
            row.account_status().unwrap_or_default(),
            chrono::Utc::now(),
        )
        .map_err(|err| ApiError::Internal(format!("cannot sign token: {err}")))?;
    Ok(Json(LoginResponse {
        token,
        user: UserResponse::from(&row),
    })
    .into_response())
}

/// Every password-hashing slot and queue place is taken.
fn hashing_busy() -> ApiError {
    ApiError::Contended("the service is busy checking passwords; retry shortly".into())
}

/// The caller's own profile.
#[utoipa::path(
    get, path = "/api/v1/users/me", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserResponse, headers(("ETag" = String))),
        (status = 401, description = "Missing, invalid or expired token"),
        (status = 403, description = "Account status does not allow it"),
        (status = 503, description = "Data store unavailable"),
    )
)]
pub async fn get_me(current: CurrentUser) -> Response {
    user_with_etag(StatusCode::OK, &current.row)
}

/// Body of `DELETE /me`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountDeletionRequest {
    /// The caller's current password: a token alone erases nothing.
    #[schema(max_length = 128)]
    pub password: String,
}

/// Erases the caller's account (GDPR art. 17): the profile, the credentials and the
/// data key go, the history keeps its shape with `[erased]` values. Then the account
/// answers as one that never existed, and the email can register again.
#[utoipa::path(
    delete, path = "/api/v1/users/me", tag = "users",
    security(("bearer" = [])),
    request_body = AccountDeletionRequest,
    responses(
        (status = 204, description = "Erased"),
        (status = 400, description = "Malformed JSON"),
        (status = 401, description = "Missing, invalid or expired token"),
        (status = 403, description = "Wrong password, or too many wrong passwords (the login's budgets), or an account status that does not allow it"),
        (status = 413, description = "Body too large"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "No password, or unknown fields"),
        (status = 503, description = "Data store unavailable, or password checking at capacity"),
    )
)]
pub async fn delete_me(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientAddress,
    request_id: RequestId,
    JsonObject(body): JsonObject,
) -> Result<StatusCode, ApiError> {
    let deletion = AccountDeletion::from_json(body).map_err(ApiError::Validation)?;
    let context = state.login_context();
    app::erasure::erase_own_account(
        &context,
        &current.row,
        deletion.password,
        &client.0.to_string(),
        request_id.0,
    )
    .await
    .map_err(|err| match err {
        EraseError::Password(LoginError::Refused(Refusal::Throttled(_))) => {
            ApiError::Forbidden("too many wrong passwords for this account; try again later".into())
        }
        EraseError::Password(LoginError::Refused(_)) => {
            ApiError::Forbidden("the password does not match".into())
        }
        EraseError::Password(LoginError::Busy) => hashing_busy(),
        EraseError::Password(LoginError::Store(store)) | EraseError::Store(store) => store.into(),
        EraseError::Password(LoginError::Internal(cause)) => ApiError::Internal(cause),
        EraseError::NotFound(_) => ApiError::Unauthorized {
            detail: "the token's user does not exist".into(),
            invalid_token: true,
        },
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Partially updates the caller's names; returns the refetched user.
#[utoipa::path(
    put, path = "/api/v1/users/me", tag = "users",
    security(("bearer" = [])),
    request_body = ProfileUpdateRequest,
    params(("If-Match" = Option<String>, Header, description = "ETag from a previous response; makes the update version-checked")),
    responses(
        (status = 200, description = "Updated (or unchanged for `{}`)", body = UserResponse, headers(("ETag" = String))),
        (status = 400, description = "Malformed JSON"),
        (status = 401, description = "Missing, invalid or expired token"),
        (status = 403, description = "Account status does not allow it"),
        (status = 412, description = "If-Match does not match the current version"),
        (status = 413, description = "Body too large"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "Invalid, protected or unknown fields"),
        (status = 503, description = "Data store unavailable"),
    )
)]
pub async fn put_me(
    State(state): State<AppState>,
    current: CurrentUser,
    request_id: RequestId,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let changes = ProfileChanges::from_json(body).map_err(ApiError::Validation)?;
    let precondition = precondition(&headers, &current.row)?;
    let row = app::profile::update_profile(
        state.store.as_ref(),
        &state.clock,
        &state.turns,
        current.row,
        changes,
        precondition,
        request_id.0,
    )
    .await
    .map_err(|err| match err {
        UpdateError::Stale(now) => precondition_failed(&now),
        UpdateError::Store(store) => store.into(),
    })?;
    Ok(user_with_etag(StatusCode::OK, &row))
}

fn precondition_failed(current: &UserRow) -> ApiError {
    ApiError::PreconditionFailed {
        etag: etag(current).unwrap_or_default(),
        current: serde_json::to_value(UserResponse::from(current)).unwrap_or_default(),
    }
}

/// Turns `If-Match` into a store precondition. A list of tags none of which is the
/// current version (weak, foreign, or stale) cannot match: 412 at once.
fn precondition(headers: &HeaderMap, current: &UserRow) -> Result<Precondition, ApiError> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Ok(Precondition::None);
    };
    let raw = raw.to_str().unwrap_or_default();
    match parse_if_match(raw) {
        IfMatch::Any => Ok(Precondition::None),
        IfMatch::Versions(versions) => match current.version() {
            Some(version) if versions.contains(&version) => Ok(Precondition::LatestEvent(version)),
            _ => Err(precondition_failed(current)),
        },
    }
}

/// Anyone's public profile.
#[utoipa::path(
    get, path = "/api/v1/users/{user_id}", tag = "users",
    params(("user_id" = String, Path, description = "The user id (a UUID)")),
    responses(
        (status = 200, description = "The user as anyone sees it: `email` and the last login are `null`", body = UserResponse),
        (status = 400, description = "Not a UUID"),
        (status = 404, description = "No such user"),
        (status = 503, description = "Data store unavailable"),
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    let user_id = Uuid::parse_str(&raw_id)
        .map_err(|_| ApiError::BadRequest(format!("`{raw_id}` is not a user id (a UUID)")))?;
    let row = state
        .store
        .find_user(user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {user_id}")))?;
    Ok(Json(UserResponse::public(&row)).into_response())
}
