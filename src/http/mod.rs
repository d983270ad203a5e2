//! The HTTP edge: routing, extractors, the error type and the handlers. Handlers are
//! thin: they authenticate and parse the request, call a use case of the application
//! layer (`crate::app`), which asks the domain and records through the store's ports,
//! and shape its answer (`crate::app::representation`) or its error ([`error::ApiError`]).

pub mod audit_trail;
pub mod auth;
pub mod client;
pub mod error;
pub mod export;
pub mod extract;
pub mod health;
pub mod middleware;
pub mod moderation;
pub mod openapi;
pub mod users;

use crate::app::turns::Turns;
use crate::auth::jwt::JwtKeys;
use crate::auth::password::Passwords;
use crate::clock::EventClock;
use crate::store::SharedStore;
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use axum::routing::{get, post};
use std::sync::Arc;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

/// Bounds on the work the service accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests served at once; past it requests are shed with 503 at once.
    pub max_in_flight: usize,
    /// Longest a request may take before it is abandoned with 503.
    pub request_timeout: std::time::Duration,
    /// Connections open at once (capped further by the open-file limit).
    pub max_connections: usize,
    /// Longest a connection may wait for, and take to send, a request head.
    pub header_read_timeout: std::time::Duration,
}

impl Limits {
    /// The limits when none is configured: the one home of these defaults, which
    /// `serve`'s flags (`config::ServeArgs`) show and parse as theirs.
    pub const DEFAULT: Limits = Limits {
        max_in_flight: 512,
        request_timeout: std::time::Duration::from_secs(10),
        max_connections: 4096,
        header_read_timeout: std::time::Duration::from_secs(5),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The browser origins allowed to call the API (`KILLRVIDEO_CORS_ORIGINS`): exact
/// origins, each answered with its own name and with credentials allowed, since the
/// KillrVideo frontend sends `credentials: 'include'`. Empty: no CORS headers at all.
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(pub Vec<HeaderValue>);

impl CorsOrigins {
    /// The layer, or `None` when no origin is allowed.
    fn layer(&self) -> Option<CorsLayer> {
        if self.0.is_empty() {
            return None;
        }
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(self.0.clone()))
                .allow_credentials(true)
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::IF_MATCH,
                    HeaderName::from_static("x-request-id"),
                ])
                .expose_headers([
                    header::ETAG,
                    header::LOCATION,
                    header::LINK,
                    header::RETRY_AFTER,
                    HeaderName::from_static("x-request-id"),
                ])
                .max_age(std::time::Duration::from_secs(600)),
        )
    }
}

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
    /// One lightweight transaction per key at a time within this process: an email's
    /// guess reservation or claim, a user's version-checked write.
    pub turns: Arc<Turns>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<client::TrustedProxies>,
}

impl AppState {
    /// What a password check needs: a login's, or an account deletion's.
    pub fn login_context(&self) -> crate::app::login::LoginContext<'_> {
        crate::app::login::LoginContext {
            store: self.store.as_ref(),
            passwords: &self.passwords,
            clock: &self.clock,
            turns: &self.turns,
        }
    }
}

/// Overload protection for `bounded`: a request past `max_in_flight` is shed at once
/// with 503 instead of queueing, and none runs longer than `request_timeout`. The
/// `probes` are merged outside the bound: a saturated instance is still alive, and
/// readiness reports on the store (within its own deadline), not on the queue.
///
/// `Router::layer` wraps every route (every method of it) in its own copy of a layer,
/// so the in-flight bound needs a semaphore shared by all the copies
/// (`GlobalConcurrencyLimitLayer`); `ConcurrencyLimitLayer` would give each route a
/// limit of its own.
fn with_overload_protection<S>(bounded: Router<S>, probes: Router<S>, limits: Limits) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    bounded
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(middleware::overload))
                .layer(LoadShedLayer::new())
                .layer(GlobalConcurrencyLimitLayer::new(
                    limits.max_in_flight.max(1),
                ))
                .layer(TimeoutLayer::new(limits.request_timeout)),
        )
        .merge(probes)
}

/// The whole HTTP application. Tests drive it with `oneshot` or serve it on port 0.
pub fn router(state: AppState, limits: Limits, cors: &CorsOrigins) -> Router {
    let users = Router::new()
        .route("/register", post(users::register))
        .route("/login", post(users::login))
        .route(
            "/me",
            get(users::get_me)
                .put(users::put_me)
                .delete(users::delete_me),
        )
        .route("/me/history", get(audit_trail::my_history))
        .route("/me/export", get(export::export_me))
        .route("/{user_id}", get(users::get_user))
        .route("/{user_id}/history", get(audit_trail::user_history));
    let moderation = Router::new()
        .route("/users", get(moderation::search_users))
        .route(
            "/users/{user_id}/assign-moderator",
            post(moderation::assign_moderator),
        )
        .route(
            "/users/{user_id}/revoke-moderator",
            post(moderation::revoke_moderator),
        );
    let api = Router::new()
        .nest("/api/v1/users", users)
        .nest("/api/v1/moderation", moderation)
        .route("/openapi.json", get(openapi::serve))
        .route_layer(axum::middleware::from_fn(crate::telemetry::track_request))
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES));
    let probes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route_layer(axum::middleware::from_fn(crate::telemetry::track_request))
        .method_not_allowed_fallback(middleware::method_not_allowed);
    // Inside the request context, so the 503s carry the request id.
    with_overload_protection(api, probes, limits)
        // Around every answer a route gives, shed load and timeouts included; inside
        // the request context and the log span, whose ids it logs. `Router::layer`
        // runs after routing, so the matched route is known.
        .layer(axum::middleware::from_fn(middleware::report_errors))
        .layer(axum::middleware::from_fn(middleware::require_one_host))
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
                // Every answer once at INFO, except shed load and abandoned requests,
                // which a flood would turn into a flood of lines: they are counted and
                // summarised (middleware::overload). Server faults are logged once, by
                // middleware::report_errors, so nothing is logged on failure here.
                .on_response(
                    |response: &axum::response::Response,
                     latency: std::time::Duration,
                     _: &tracing::Span| {
                        if response.extensions().get::<middleware::Shed>().is_none() {
                            tracing::info!(
                                status = response.status().as_u16(),
                                latency_ms = latency.as_secs_f64() * 1000.0,
                                "finished processing request"
                            );
                        }
                    },
                )
                .on_failure(()),
        )
        // Outside the log span, which names the request by its id.
        .layer(axum::middleware::from_fn(middleware::request_context))
        // Outermost: a preflight is answered before anything else looks at it, and
        // every answer, errors and shed load included, carries the CORS headers.
        .layer(tower::util::option_layer(cors.layer()))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use std::time::Duration;
    use tokio::sync::{Notify, oneshot};
    use tower::ServiceExt;

    fn request(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).expect("request")
    }

    /// The bound is on the whole service: one request held on one route leaves no room
    /// for a request on another, while the probes still answer.
    #[tokio::test]
    async fn the_in_flight_bound_is_shared_by_every_route_but_the_probes() {
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (hold_entered, hold_release) = (entered.clone(), release.clone());
        let routes: Router = Router::new()
            .route(
                "/hold",
                get(move || async move {
                    hold_entered.notify_one();
                    hold_release.notified().await;
                    "held"
                }),
            )
            .route("/other", get(|| async { "other" }));
        let probes: Router = Router::new().route("/healthz", get(|| async { "alive" }));
        let app = with_overload_protection(
            routes,
            probes,
            Limits {
                max_in_flight: 1,
                request_timeout: Duration::from_secs(30),
                ..Limits::default()
            },
        );

        let (held_tx, held_rx) = oneshot::channel();
        let holder = app.clone();
        tokio::spawn(async move {
            let _ = held_tx.send(holder.oneshot(request("/hold")).await);
        });
        entered.notified().await;

        let other = app
            .clone()
            .oneshot(request("/other"))
            .await
            .expect("infallible");
        assert_eq!(other.status(), StatusCode::SERVICE_UNAVAILABLE);
        let probe = app
            .clone()
            .oneshot(request("/healthz"))
            .await
            .expect("infallible");
        assert_eq!(probe.status(), StatusCode::OK, "probes are not shed");

        release.notify_one();
        let held = held_rx.await.expect("answered").expect("infallible");
        assert_eq!(held.status(), StatusCode::OK);
        let after = app.oneshot(request("/other")).await.expect("infallible");
        assert_eq!(after.status(), StatusCode::OK, "the permit is returned");
    }
}
