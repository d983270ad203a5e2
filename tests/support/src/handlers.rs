//! [`TestRouter`]: the whole router driven by `oneshot`, over the embedded store, with
//! no socket and no server: for the HTTP contract that the handlers and the extractors
//! decide before any store does (400, 401, 404, 405, 413, 415, 422).

use crate::JWT_SECRET;
use crate::api::{Api, Call};
use axum::body::Body;
use axum::http::{Method, Request, header};
use axum::response::Response;
use killrvideo_users::auth::jwt::JwtKeys;
use killrvideo_users::clock::EventClock;
use killrvideo_users::http::{AppState, CorsOrigins, Limits, router};
use killrvideo_users::store::SharedStore;
use killrvideo_users::store::embedded::EmbeddedStore;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// The router over a fresh embedded store, with the test secret and default limits.
pub struct TestRouter {
    router: axum::Router,
    /// The store the router writes to.
    pub store: SharedStore,
    /// Token minting with the router's secret.
    pub jwt: JwtKeys,
    embedded: EmbeddedStore,
    _data_dir: tempfile::TempDir,
}

impl TestRouter {
    /// A router over a new SQLite file in a temporary directory.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let embedded = EmbeddedStore::open(dir.path()).expect("open embedded store");
        let store: SharedStore = Arc::new(embedded.clone());
        let jwt = JwtKeys::new(JWT_SECRET, Duration::from_secs(1800));
        let passwords =
            tokio::task::spawn_blocking(killrvideo_users::auth::password::Passwords::new)
                .await
                .expect("join")
                .expect("password hashing");
        let state = AppState {
            store: Arc::clone(&store),
            jwt: Arc::new(JwtKeys::new(JWT_SECRET, Duration::from_secs(1800))),
            clock: Arc::new(EventClock::new()),
            passwords,
            turns: Arc::default(),
            trusted_proxies: Arc::default(),
        };
        Self {
            router: router(state, Limits::default(), &CorsOrigins::default()),
            store,
            jwt,
            embedded,
            _data_dir: dir,
        }
    }

    /// A request to `path` with the one `Host` header HTTP/1.1 needs, to finish with
    /// headers and a body and hand to [`TestRouter::oneshot`].
    pub fn request(method: Method, path: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
    }

    /// The store's SQLite file, opened past the service.
    pub fn sqlite(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.embedded.path()).expect("open sqlite")
    }

    /// Answers one request.
    pub async fn oneshot(&self, request: Request<Body>) -> Response {
        self.router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible")
    }
}

impl Api for TestRouter {
    type Response = Response;

    async fn send(&self, call: Call) -> Response {
        let mut request = Self::request(call.method, &call.path);
        if let Some(token) = &call.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        let body = match &call.json {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.oneshot(request.body(body).expect("a valid request"))
            .await
    }

    fn store(&self) -> &SharedStore {
        &self.store
    }

    fn jwt(&self) -> &JwtKeys {
        &self.jwt
    }
}
