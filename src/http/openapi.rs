//! The OpenAPI 3 document, generated from the handlers' annotations.

use super::representation::UserResponse;
use super::users::{LoginRequest, LoginResponse, ProfileUpdateRequest, RegisterRequest};
use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Adds the bearer scheme the secured paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "killrvideo-users", description = "The users service of the KillrVideo reference app"),
    paths(
        super::users::register,
        super::users::login,
        super::users::get_me,
        super::users::put_me,
        super::users::get_user,
        super::history::my_history,
        super::history::user_history,
        super::moderation::search_users,
        super::moderation::assign_moderator,
        super::moderation::revoke_moderator,
        super::health::healthz,
        super::health::readyz,
    ),
    components(schemas(crate::history::HistoryPage, crate::history::AuditedEvent, super::history::ProfileAsOf, super::history::HistoryResponse, UserResponse, LoginResponse, RegisterRequest, LoginRequest, ProfileUpdateRequest)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// `/openapi.json`.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
