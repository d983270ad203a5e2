//! The requests the tests send, written once for the real server ([`crate::TestApp`])
//! and for the router driven by `oneshot` ([`crate::TestRouter`]).

use crate::PASSWORD;
use axum::http::{HeaderMap, Method, StatusCode};
use chrono::Utc;
use killrvideo_users::auth::jwt::JwtKeys;
use killrvideo_users::domain::UserRow;
use killrvideo_users::domain::events::{Actor, EventEnvelope, UserEvent};
use killrvideo_users::store::{EventPage, Precondition, SharedStore};
use serde_json::{Value, json};
use std::future::Future;
use uuid::Uuid;

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Id.
    pub id: Uuid,
    /// Registered email.
    pub email: String,
    /// A valid token.
    pub token: String,
}

/// One request: a method, a path, and optionally a bearer token, headers and a JSON
/// body.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method.
    pub method: Method,
    /// The path and query, from `/`.
    pub path: String,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Other headers.
    pub headers: Vec<(&'static str, String)>,
    /// Sent as `application/json`.
    pub json: Option<Value>,
}

impl Call {
    /// A request with no token, headers or body.
    pub fn new(method: Method, path: &str) -> Self {
        Self {
            method,
            path: path.to_owned(),
            token: None,
            headers: Vec::new(),
            json: None,
        }
    }

    /// With a bearer token.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// With a header.
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// With a JSON body.
    pub fn json(mut self, body: &Value) -> Self {
        self.json = Some(body.clone());
        self
    }
}

/// A response, from a real server (`reqwest`) or from `oneshot` (`axum`).
pub trait Reply: Send {
    /// The status.
    fn status_code(&self) -> StatusCode;
    /// The headers.
    fn header_map(&self) -> &HeaderMap;
    /// The body, as JSON.
    fn body_json(self) -> impl Future<Output = Value> + Send;
}

impl Reply for reqwest::Response {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn header_map(&self) -> &HeaderMap {
        self.headers()
    }

    async fn body_json(self) -> Value {
        self.json().await.expect("a JSON body")
    }
}

impl Reply for axum::response::Response {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn header_map(&self) -> &HeaderMap {
        self.headers()
    }

    async fn body_json(self) -> Value {
        let bytes = axum::body::to_bytes(self.into_body(), usize::MAX)
            .await
            .expect("the whole body");
        serde_json::from_slice(&bytes).expect("a JSON body")
    }
}

/// Reads a problem-details body, checking the media type and the members every problem
/// carries.
pub async fn problem(response: impl Reply, status: StatusCode) -> Value {
    assert_eq!(response.status_code(), status);
    let content_type = response
        .header_map()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body = response.body_json().await;
    assert_eq!(body["status"], status.as_u16());
    for member in ["type", "title", "detail", "instance", "request_id"] {
        assert!(
            body.get(member).is_some(),
            "problem lacks `{member}`: {body}"
        );
    }
    body
}

/// Checks a 401: a problem, with a `Bearer` challenge.
pub async fn unauthorized(response: impl Reply) -> Value {
    let challenge = response
        .header_map()
        .get("www-authenticate")
        .expect("WWW-Authenticate")
        .to_str()
        .expect("a text challenge")
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    problem(response, StatusCode::UNAUTHORIZED).await
}

/// A token with these claims, signed HS256 with `secret` (the service's algorithm), as
/// another issuer would mint it.
pub fn sign(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

/// The API as a test drives it, and the store behind it as a test arranges and checks
/// it. An implementation says how a [`Call`] is sent; the rest is written here once.
pub trait Api: Sync {
    /// What a call answers.
    type Response: Reply;

    /// Sends a call.
    fn send(&self, call: Call) -> impl Future<Output = Self::Response> + Send;

    /// The store the API writes to.
    fn store(&self) -> &SharedStore;

    /// Token minting with the API's secret.
    fn jwt(&self) -> &JwtKeys;

    /// POSTs JSON.
    fn post_json(&self, path: &str, body: &Value) -> impl Future<Output = Self::Response> + Send {
        self.send(Call::new(Method::POST, path).json(body))
    }

    /// Registers a user with the given names and [`PASSWORD`].
    fn register(
        &self,
        email: &str,
        firstname: &str,
        lastname: &str,
    ) -> impl Future<Output = Self::Response> + Send {
        let body = json!({"email": email, "password": PASSWORD, "firstname": firstname, "lastname": lastname});
        self.send(Call::new(Method::POST, "/api/v1/users/register").json(&body))
    }

    /// Logs in.
    fn login(&self, email: &str, password: &str) -> impl Future<Output = Self::Response> + Send {
        let body = json!({"email": email, "password": password});
        self.send(Call::new(Method::POST, "/api/v1/users/login").json(&body))
    }

    /// Registers "John Doe" with a fresh email and logs in.
    fn register_user(&self) -> impl Future<Output = TestUser> + Send {
        async move {
            let email = crate::unique_email();
            let registered = self.register(&email, "John", "Doe").await;
            assert_eq!(registered.status_code(), StatusCode::CREATED);
            let body = registered.body_json().await;
            let id = Uuid::parse_str(body["userId"].as_str().expect("userId")).expect("uuid");
            let login = self.login(&email, PASSWORD).await;
            assert_eq!(login.status_code(), StatusCode::OK);
            let token = login.body_json().await["token"]
                .as_str()
                .expect("token")
                .to_owned();
            TestUser { id, email, token }
        }
    }

    /// PUT /me with a JSON body.
    fn put_me(&self, token: &str, body: &Value) -> impl Future<Output = Self::Response> + Send {
        self.send(
            Call::new(Method::PUT, "/api/v1/users/me")
                .token(token)
                .json(body),
        )
    }

    /// PUT /me with `If-Match`.
    fn put_me_if_match(
        &self,
        token: &str,
        etag: &str,
        body: &Value,
    ) -> impl Future<Output = Self::Response> + Send {
        self.send(
            Call::new(Method::PUT, "/api/v1/users/me")
                .token(token)
                .header("if-match", etag)
                .json(body),
        )
    }

    /// GET /me.
    fn get_me(&self, token: &str) -> impl Future<Output = Self::Response> + Send {
        self.get_with_token("/api/v1/users/me", token)
    }

    /// DELETE /me with a JSON body.
    fn delete_me(&self, token: &str, body: &Value) -> impl Future<Output = Self::Response> + Send {
        self.send(
            Call::new(Method::DELETE, "/api/v1/users/me")
                .token(token)
                .json(body),
        )
    }

    /// GET a path with a bearer token.
    fn get_with_token(
        &self,
        path: &str,
        token: &str,
    ) -> impl Future<Output = Self::Response> + Send {
        self.send(Call::new(Method::GET, path).token(token))
    }

    /// POST a path with a bearer token and no body.
    fn post_with_token(
        &self,
        path: &str,
        token: &str,
    ) -> impl Future<Output = Self::Response> + Send {
        self.send(Call::new(Method::POST, path).token(token))
    }

    /// The current ETag of the caller, from GET /me.
    fn etag(&self, token: &str) -> impl Future<Output = String> + Send {
        async move {
            let response = self.get_me(token).await;
            assert_eq!(response.status_code(), StatusCode::OK);
            response.header_map()["etag"]
                .to_str()
                .expect("etag")
                .to_owned()
        }
    }

    /// A token for any subject, signed with the API's secret.
    fn token_for(&self, user_id: Uuid) -> String {
        self.jwt()
            .issue(user_id, "viewer", Utc::now())
            .expect("token")
    }

    /// The raw users row, straight from the store.
    fn row(&self, user_id: Uuid) -> impl Future<Output = Option<UserRow>> + Send {
        async move { self.store().raw_row(user_id).await.expect("load row") }
    }

    /// Every event of a user, oldest first.
    fn events(&self, user_id: Uuid) -> impl Future<Output = Vec<EventEnvelope>> + Send {
        async move {
            let page = EventPage {
                before: None,
                limit: 10_000,
            };
            let mut events = self.store().events(user_id, page).await.expect("events");
            events.reverse();
            events
        }
    }

    /// Records an event directly (as an operator would), e.g. to give a user a status.
    fn record(&self, user_id: Uuid, event: UserEvent) -> impl Future<Output = ()> + Send {
        async move {
            let envelope = EventEnvelope::new(
                user_id,
                killrvideo_users::clock::EventClock::new().next_event_id(),
                Actor::Operator("test".into()),
                None,
                event,
            );
            self.store()
                .append(&envelope, Precondition::None)
                .await
                .expect("append");
        }
    }

    /// Registers a user straight through the store ([`crate::seed_user`]).
    fn seed_user(
        &self,
        email: &str,
        firstname: &str,
        lastname: &str,
    ) -> impl Future<Output = Uuid> + Send {
        crate::seed_user(self.store().as_ref(), email, firstname, lastname)
    }

    /// Asserts that a rejected request changed nothing: same row, same log.
    fn assert_untouched(
        &self,
        user: Uuid,
        before_row: &UserRow,
        before_events: usize,
    ) -> impl Future<Output = ()> + Send {
        async move {
            assert_eq!(
                self.row(user).await.as_ref(),
                Some(before_row),
                "row unchanged"
            );
            assert_eq!(
                self.events(user).await.len(),
                before_events,
                "no event appended"
            );
        }
    }

    /// The credentials stored for an email (its lowercase form), if any.
    fn credentials(
        &self,
        email: &str,
    ) -> impl Future<Output = Option<killrvideo_users::store::Credentials>> + Send {
        async move {
            self.store()
                .find_credentials(&email.to_ascii_lowercase())
                .await
                .expect("find credentials")
        }
    }
}
