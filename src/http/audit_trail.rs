//! The audit trail over HTTP: `GET /api/v1/users/me/history` for the owner and
//! `GET /api/v1/users/{id}/history` for moderators.

use super::AppState;
use super::auth::CurrentUser;
use super::error::ApiError;
use crate::app::audit_trail::{
    DEFAULT_PAGE, HistoryPage, MAX_PAGE, decode_cursor, history_page, profile_as_of,
};
use crate::app::representation::{UserResponse, etag};
use crate::domain::role::Role;
use axum::Json;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// The profile as of an instant.
#[derive(Serialize, ToSchema)]
pub struct ProfileAsOf {
    /// The instant asked for.
    pub as_of: DateTime<Utc>,
    /// The user as it was then.
    pub user: UserResponse,
    /// The ETag the user had then.
    pub etag: Option<String>,
}

/// What a history request answers: a page of events, or with `as_of` the profile then.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum HistoryResponse {
    /// Without `as_of`.
    Page(HistoryPage),
    /// With `as_of`.
    AsOf(Box<ProfileAsOf>),
}

/// Parsed query parameters.
struct HistoryQuery {
    limit: usize,
    before: Option<Uuid>,
    as_of: Option<DateTime<Utc>>,
}

fn parse_query(raw: Option<&str>) -> Result<HistoryQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|err| ApiError::BadRequest(format!("unreadable query string: {err}")))?;
    let mut query = HistoryQuery {
        limit: DEFAULT_PAGE,
        before: None,
        as_of: None,
    };
    for (key, value) in pairs {
        match key.as_str() {
            "limit" => {
                query.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "`limit` must be an integer from 1 to {MAX_PAGE}"
                        ))
                    })?;
            }
            "cursor" => {
                query.before = Some(decode_cursor(&value).ok_or_else(|| {
                    ApiError::BadRequest("`cursor` is not a cursor this API issued".into())
                })?);
            }
            "as_of" => {
                query.as_of = Some(
                    DateTime::parse_from_rfc3339(&value)
                        .map_err(|_| {
                            ApiError::BadRequest("`as_of` must be an RFC 3339 timestamp".into())
                        })?
                        .with_timezone(&Utc),
                );
            }
            // Unknown parameters are ignored, as HTTP caches and proxies expect.
            _ => {}
        }
    }
    Ok(query)
}

async fn respond(
    state: &AppState,
    user_id: Uuid,
    raw_query: Option<String>,
    path: &str,
) -> Result<Response, ApiError> {
    let query = parse_query(raw_query.as_deref())?;
    if let Some(as_of) = query.as_of {
        let row = profile_as_of(state.store.as_ref(), user_id, as_of)
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!("user {user_id} did not exist at {as_of}"))
            })?;
        return Ok(Json(ProfileAsOf {
            as_of,
            user: UserResponse::from(&row),
            etag: etag(&row),
        })
        .into_response());
    }
    let page: HistoryPage = history_page(state.store.as_ref(), user_id, query.before, query.limit)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {user_id}")))?;
    let link = page.next_cursor.as_ref().map(|cursor| {
        format!(
            "<{path}?limit={}&cursor={cursor}>; rel=\"next\"",
            query.limit
        )
    });
    let mut response = Json(page).into_response();
    if let Some(value) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, value);
    }
    Ok(response)
}

/// The caller's own history, newest first, or their profile as of an instant.
#[utoipa::path(
    get, path = "/api/v1/users/me/history", tag = "audit",
    security(("bearer" = [])),
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (default 20)"),
        ("cursor" = Option<String>, Query, description = "From the previous page's `next_cursor` or Link header"),
        ("as_of" = Option<String>, Query, description = "RFC 3339 instant: return the profile as it was then"),
    ),
    responses(
        (status = 200, description = "A page of events (or, with as_of, the profile then)", body = HistoryResponse, headers(("Link" = String))),
        (status = 400, description = "Bad limit, cursor or as_of"),
        (status = 401, description = "Missing, invalid or expired token"),
        (status = 403, description = "Account status does not allow it"),
        (status = 404, description = "No profile at that instant"),
        (status = 503, description = "Data store unavailable"),
    )
)]
pub async fn my_history(
    State(state): State<AppState>,
    current: CurrentUser,
    OriginalUri(uri): OriginalUri,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    respond(&state, current.row.user_id, query, uri.path()).await
}

/// Any user's history: moderators only. The role is read from the caller's row.
#[utoipa::path(
    get, path = "/api/v1/users/{user_id}/history", tag = "audit",
    security(("bearer" = [])),
    params(
        ("user_id" = String, Path, description = "The user id (a UUID)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (default 20)"),
        ("cursor" = Option<String>, Query, description = "From the previous page's `next_cursor` or Link header"),
        ("as_of" = Option<String>, Query, description = "RFC 3339 instant: return the profile as it was then"),
    ),
    responses(
        (status = 200, description = "A page of events (or, with as_of, the profile then)", body = HistoryResponse, headers(("Link" = String))),
        (status = 400, description = "Not a UUID, or bad limit, cursor or as_of"),
        (status = 401, description = "Missing, invalid or expired token"),
        (status = 403, description = "The caller is not a moderator"),
        (status = 404, description = "No such user (or no profile at that instant)"),
        (status = 503, description = "Data store unavailable"),
    )
)]
pub async fn user_history(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(raw_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if current.role < Role::Moderator {
        return Err(ApiError::Forbidden(
            "Only moderators may read another user's history".into(),
        ));
    }
    let user_id = Uuid::parse_str(&raw_id)
        .map_err(|_| ApiError::BadRequest(format!("`{raw_id}` is not a user id (a UUID)")))?;
    respond(&state, user_id, query, uri.path()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_checked() {
        let q = parse_query(Some("limit=5&as_of=2026-01-01T00:00:00Z&other=x")).unwrap();
        assert_eq!(q.limit, 5);
        assert!(q.as_of.is_some());
        for bad in [
            "limit=0",
            "limit=101",
            "limit=x",
            "cursor=%%%",
            "cursor=abc",
            "as_of=yesterday",
            // Decodes to 16 bytes, but the nil UUID is not an event id.
            "cursor=AAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
