//! `/api/v1/moderation/users`: the moderators' user search and role changes, the
//! endpoints the KillrVideo frontend's Moderation → Users page calls. Only a caller
//! whose stored role is moderator may use them; a token's `roles` claim counts for
//! nothing.

use super::AppState;
use super::auth::CurrentUser;
use super::error::ApiError;
use super::extract::RequestId;
use crate::app::representation::UserResponse;
use crate::app::roles::{self, ModerationError, ModeratorChange, RoleChanger};
use crate::app::search::{self, decode_cursor, encode_cursor};
use crate::domain::FieldError;
use crate::domain::events::Actor;
use crate::domain::role::Role;
use crate::domain::search::SearchFragment;
use axum::Json;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

/// 403 unless the caller's stored role is moderator. Not 401: the frontend logs a
/// person out on any 401, and this person is authenticated.
fn require_moderator(current: &CurrentUser) -> Result<(), ApiError> {
    if current.role < Role::Moderator {
        return Err(ApiError::Forbidden(
            "Only moderators may use the moderation endpoints".into(),
        ));
    }
    Ok(())
}

/// The search's query parameters.
struct SearchQuery {
    q: Option<String>,
    cursor: Option<String>,
}

fn parse_search_query(raw: Option<&str>) -> Result<SearchQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|err| ApiError::BadRequest(format!("unreadable query string: {err}")))?;
    let mut query = SearchQuery {
        q: None,
        cursor: None,
    };
    for (key, value) in pairs {
        match key.as_str() {
            "q" => query.q = Some(value),
            "cursor" => query.cursor = Some(value),
            // Unknown parameters are ignored, as HTTP caches and proxies expect.
            _ => {}
        }
    }
    Ok(query)
}

/// Finds users by a fragment of their first name, last name or email.
#[utoipa::path(
    get, path = "/api/v1/moderation/users", tag = "moderation",
    security(("bearer" = [])),
    params(
        ("q" = Option<String>, Query, description = "A fragment of a first name, last name or email: case, accents and surrounding whitespace are ignored. Absent or blank: `[]`. At least 3 characters otherwise.", max_length = 1024),
        ("cursor" = Option<String>, Query, description = "From the previous page's Link header"),
    ),
    responses(
        (status = 200, description = "Up to 50 matching users; a `Link: <...>; rel=\"next\"` header when more may follow", body = [UserResponse], headers(("Link" = String))),
        (status = 400, description = "Unreadable query or cursor"),
        (status = 401, description = "Missing, invalid or expired token"),
        (status = 403, description = "The caller is not a moderator"),
        (status = 422, description = "`q` is too short or too long"),
        (status = 503, description = "Data store unavailable"),
    )
)]
pub async fn search_users(
    State(state): State<AppState>,
    current: CurrentUser,
    OriginalUri(uri): OriginalUri,
    RawQuery(raw_query): RawQuery,
) -> Result<Response, ApiError> {
    require_moderator(&current)?;
    let query = parse_search_query(raw_query.as_deref())?;
    let after = query
        .cursor
        .as_deref()
        .map(|cursor| {
            decode_cursor(cursor).ok_or_else(|| {
                ApiError::BadRequest("`cursor` is not a cursor this API issued".into())
            })
        })
        .transpose()?;
    let raw_q = query.q.unwrap_or_default();
    let fragment = SearchFragment::parse(&raw_q).map_err(|err| {
        ApiError::Validation(vec![FieldError {
            field: "q".into(),
            message: err.to_string(),
        }])
    })?;
    let Some(fragment) = fragment else {
        // The frontend's page calls this with an empty `q` when it opens, and keeps
        // its search box disabled until the call settles.
        return Ok(Json(Vec::<UserResponse>::new()).into_response());
    };
    let page = search::search_users(state.store.as_ref(), &fragment, after).await?;
    let users: Vec<UserResponse> = page.users.iter().map(UserResponse::of).collect();
    let mut response = Json(users).into_response();
    if let Some(next) = page.next {
        let query =
            serde_urlencoded::to_string([("q", raw_q.as_str()), ("cursor", &encode_cursor(next))])
                .unwrap_or_default();
        if let Ok(link) = HeaderValue::from_str(&format!("<{}?{query}>; rel=\"next\"", uri.path()))
        {
            response.headers_mut().insert(header::LINK, link);
        }
    }
    Ok(response)
}

fn target_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::BadRequest(format!("`{raw}` is not a user id (a UUID)")))
}

fn moderation_error(err: ModerationError) -> ApiError {
    match err {
        ModerationError::NoSuchUser(id) => ApiError::NotFound(format!("no user {id}")),
        ModerationError::Refused(_) => ApiError::Conflict(err.to_string()),
        ModerationError::Busy => ApiError::Contended(err.to_string()),
        ModerationError::Store(store) => store.into(),
    }
}

/// Changes a role on behalf of the calling moderator, who is the event's actor: the
/// one path of both role-change endpoints.
async fn change_role(
    state: &AppState,
    current: &CurrentUser,
    request_id: RequestId,
    raw_id: &str,
    change: ModeratorChange,
) -> Result<Response, ApiError> {
    require_moderator(current)?;
    let user_id = target_id(raw_id)?;
    let changer = RoleChanger {
        clock: &state.clock,
        actor: Actor::User(current.row.user_id),
        request_id: request_id.0,
    };
    let row = roles::change_moderator(state.store.as_ref(), &changer, user_id, change)
        .await
        .map_err(moderation_error)?;
    Ok(Json(UserResponse::of(&row)).into_response())
}

/// A role-change endpoint: its handler (routed on its own path, so that metrics and
/// logs name it) and its OpenAPI operation, both over [`change_role`]. The endpoints
/// differ only in the change and in what their answers say.
macro_rules! role_change_endpoint {
    ($name:ident, $change:expr, $path:literal, summary: $summary:literal,
     ok: $ok:literal, conflict: $conflict:literal, unavailable: $unavailable:literal) => {
        #[doc = $summary]
        #[utoipa::path(
                    post, path = $path, tag = "moderation", summary = $summary,
                    security(("bearer" = [])),
                    params(("user_id" = String, Path, description = "The user id (a UUID)")),
                    responses(
                        (status = 200, description = $ok, body = UserResponse),
                        (status = 400, description = "Not a UUID"),
                        (status = 401, description = "Missing, invalid or expired token"),
                        (status = 403, description = "The caller is not a moderator"),
                        (status = 404, description = "No such user"),
                        (status = 409, description = $conflict),
                        (status = 503, description = $unavailable),
                    )
                )]
        pub async fn $name(
            State(state): State<AppState>,
            current: CurrentUser,
            request_id: RequestId,
            Path(raw_id): Path<String>,
        ) -> Result<Response, ApiError> {
            change_role(&state, &current, request_id, &raw_id, $change).await
        }
    };
}

role_change_endpoint! {
    assign_moderator, ModeratorChange::Assign, "/api/v1/moderation/users/{user_id}/assign-moderator",
    summary: "Makes a user a moderator. Repeating it changes nothing.",
    ok: "The user, now a moderator", conflict: "The account's status (suspended, say) is an operator's to change", unavailable: "Data store unavailable"
}

role_change_endpoint! {
    revoke_moderator, ModeratorChange::Revoke, "/api/v1/moderation/users/{user_id}/revoke-moderator",
    summary: "Makes a moderator a viewer again. Repeating it changes nothing; the last moderator\ncannot be revoked.",
    ok: "The user, no longer a moderator", conflict: "This is the last moderator", unavailable: "Data store unavailable, or another revocation in progress"
}
