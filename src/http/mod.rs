//! The HTTP edge: routing, extractors, the error type and the handlers. Handlers are
//! thin: they call the domain for validation and decisions, and the store for I/O.

pub mod auth;
pub mod error;
pub mod extract;
pub mod health;
pub mod history;
pub mod middleware;
pub mod openapi;
pub mod representation;
pub mod users;

use crate::auth::jwt::JwtKeys;
use crate::auth::password::Passwords;
use crate::clock::EventClock;
use crate::store::SharedStore;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::routing::{get, post};
use std::sync::Arc;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    /// The storage port (embedded or Cassandra).
    pub store: SharedStore,
    /// Token signing and verification.
    pub jwt: Arc<JwtKeys>,
    /// Source of event ids (and so of write times).
    pub clock: Arc<EventClock>,
    /// argon2id hashing and the login decoy.
    pub passwords: Passwords,
}

/// The whole HTTP application. Tests drive it with `oneshot` or serve it on port 0.
pub fn router(state: AppState) -> Router {
    let users = Router::new()
        .route("/register", post(users::register))
        .route("/login", post(users::login))
        .route("/me", get(users::get_me).put(users::put_me))
        .route("/me/history", get(history::my_history))
        .route("/{user_id}", get(users::get_user))
        .route("/{user_id}/history", get(history::user_history));
    Router::new()
        .nest("/api/v1/users", users)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi::serve))
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(middleware::problem_context))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let request_id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id = %request_id,
                    )
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}
