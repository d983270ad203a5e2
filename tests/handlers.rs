//! Handler tests: the HTTP contract that the router, its extractors and the domain's
//! validation decide before any store is asked (400, 401, 404, 405, 413, 415, 422,
//! request ids, the OpenAPI document), driven by `oneshot` against the router over the
//! embedded store. No server, no socket, and one run rather than one per backend: no
//! backend has a say in these answers. The end-to-end suite (tests/api) keeps what a
//! store decides.
//!
//! The modules are named after the tests/api files the tests came from.

use axum::body::Body;
use axum::http::{Method, header};
use killrvideo_test_support::{Api, PASSWORD, Reply, TestRouter, problem, unauthorized};
use serde_json::{Value, json};

const ME: &str = "/api/v1/users/me";

/// A PUT /me with a bearer token, to finish with headers and a body.
fn put_me(token: &str) -> axum::http::request::Builder {
    TestRouter::request(Method::PUT, ME).header(header::AUTHORIZATION, format!("Bearer {token}"))
}

mod auth {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use chrono::Utc;
    use killrvideo_test_support::{JWT_SECRET, sign};

    #[tokio::test]
    async fn bad_tokens_are_401_with_a_bearer_challenge_and_write_nothing() {
        let app = TestRouter::new().await;
        let user = app.register_user().await;
        let before = app.row(user.id).await.unwrap();
        let events_before = app.events(user.id).await.len();
        let now = Utc::now().timestamp();
        let sub = user.id.to_string();

        let expired = sign(
            &json!({"sub": sub, "roles": ["viewer"], "exp": now - 3600, "iat": now - 7200}),
            JWT_SECRET,
        );
        let wrong_key = sign(
            &json!({"sub": sub, "roles": ["viewer"], "exp": now + 600}),
            b"some-other-secret-some-other-secret!",
        );
        let mut tampered = app.token_for(user.id);
        {
            // Swap the payload for one naming a moderator, keeping the original signature.
            let parts: Vec<&str> = tampered.split('.').collect();
            let forged = URL_SAFE_NO_PAD
                .encode(json!({"sub": sub, "roles": ["moderator"], "exp": now + 600}).to_string());
            tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        }
        let alg_none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD
                .encode(json!({"sub": sub, "roles": ["viewer"], "exp": now + 600}).to_string())
        );
        let no_sub = sign(&json!({"roles": ["viewer"], "exp": now + 600}), JWT_SECRET);
        let bad_sub = sign(
            &json!({"sub": "admin", "roles": ["viewer"], "exp": now + 600}),
            JWT_SECRET,
        );
        let not_yet = sign(
            &json!({"sub": sub, "exp": now + 7200, "nbf": now + 3600}),
            JWT_SECRET,
        );

        for token in [
            expired,
            wrong_key,
            tampered,
            alg_none,
            no_sub,
            bad_sub,
            not_yet,
            "garbage".into(),
        ] {
            unauthorized(app.put_me(&token, &json!({"firstname": "Hacked"})).await).await;
        }
        let hacked = || Body::from(json!({"firstname": "Hacked"}).to_string());
        let no_header = TestRouter::request(Method::PUT, ME)
            .header(header::CONTENT_TYPE, "application/json")
            .body(hacked())
            .unwrap();
        unauthorized(app.oneshot(no_header).await).await;
        let basic = TestRouter::request(Method::PUT, ME)
            .header(
                header::AUTHORIZATION,
                format!("Basic {}", STANDARD.encode("user:pw")),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(hacked())
            .unwrap();
        unauthorized(app.oneshot(basic).await).await;

        assert_eq!(app.row(user.id).await.as_ref(), Some(&before));
        assert_eq!(app.events(user.id).await.len(), events_before);
    }

    #[tokio::test]
    async fn auth_errors_win_over_body_errors() {
        let app = TestRouter::new().await;
        let request = TestRouter::request(Method::PUT, ME)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("nonsense"))
            .unwrap();
        unauthorized(app.oneshot(request).await).await;
    }
}

mod foundation {
    use super::*;

    #[tokio::test]
    async fn request_ids_are_generated_or_echoed() {
        let app = TestRouter::new().await;
        let healthz = TestRouter::request(Method::GET, "/healthz")
            .body(Body::empty())
            .unwrap();
        let generated = app.oneshot(healthz).await;
        let id = generated.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(id.len(), 36, "a UUID is generated: {id}");

        let not_a_uuid = TestRouter::request(Method::GET, "/api/v1/users/not-a-uuid")
            .header("x-request-id", "trace-me-42")
            .body(Body::empty())
            .unwrap();
        let echoed = app.oneshot(not_a_uuid).await;
        assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");
        let body = problem(echoed, axum::http::StatusCode::BAD_REQUEST).await;
        assert_eq!(body["request_id"], "trace-me-42");
        assert_eq!(body["instance"], "/api/v1/users/not-a-uuid");
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_are_problems() {
        let app = TestRouter::new().await;
        let nope = TestRouter::request(Method::GET, "/nope")
            .body(Body::empty())
            .unwrap();
        problem(app.oneshot(nope).await, axum::http::StatusCode::NOT_FOUND).await;
        let patch = TestRouter::request(Method::PATCH, ME)
            .body(Body::empty())
            .unwrap();
        problem(
            app.oneshot(patch).await,
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;
    }

    #[tokio::test]
    async fn openapi_document_describes_the_api() {
        let app = TestRouter::new().await;
        let request = TestRouter::request(Method::GET, "/openapi.json")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await;
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        let doc = response.body_json().await;
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for path in [
            "/api/v1/users/me",
            "/api/v1/users/register",
            "/api/v1/users/login",
            "/api/v1/users/{user_id}",
        ] {
            assert!(doc["paths"].get(path).is_some(), "missing {path}");
        }
        assert!(doc["paths"]["/api/v1/users/me"].get("put").is_some());
    }
}

mod hardening {
    use super::*;
    use axum::http::StatusCode;

    /// Guess budgets on the embedded store: how many rows there are.
    fn budget_rows(app: &TestRouter) -> i64 {
        app.sqlite()
            .query_row("SELECT COUNT(*) FROM login_budgets", [], |r| r.get(0))
            .unwrap()
    }

    /// A login email longer than any registrable one is refused before anything is
    /// stored for it (the probe grew the embedded store by 3.2 MB with 200 of them).
    #[tokio::test]
    async fn oversized_login_emails_are_refused_before_storage() {
        let app = TestRouter::new().await;
        let before = budget_rows(&app);
        for i in 0..20 {
            // As long as a body may be (16 KiB) allows: the probe's were 16 KB.
            let email = format!("{i}{}@example.com", "x".repeat(15 * 1024));
            let response = app.login(&email, "whatever password").await;
            let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
            assert_eq!(body["errors"][0]["field"], "/email", "{body}");
        }
        assert_eq!(budget_rows(&app), before, "nothing stored");
    }

    /// Two `Authorization` headers are ambiguous: 400, and nothing is written.
    #[tokio::test]
    async fn two_authorization_headers_are_refused() {
        let app = TestRouter::new().await;
        let user = app.register_user().await;
        let other = app.register_user().await;
        let before = app.row(user.id).await.unwrap();
        let request = put_me(&user.token)
            .header(header::AUTHORIZATION, format!("Bearer {}", other.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"firstname": "Twice"}).to_string()))
            .unwrap();
        problem(app.oneshot(request).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(app.row(user.id).await.unwrap(), before);
        assert_eq!(app.row(other.id).await.unwrap().firstname(), Some("John"));
    }

    /// A body naming a member twice is a 400, not "the last one wins".
    #[tokio::test]
    async fn duplicate_json_members_are_refused() {
        let app = TestRouter::new().await;
        let user = app.register_user().await;
        let before = app.row(user.id).await.unwrap();
        let request = put_me(&user.token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                r#"{"firstname": "Alice", "firstname": "Mallory"}"#,
            ))
            .unwrap();
        let body = problem(app.oneshot(request).await, StatusCode::BAD_REQUEST).await;
        assert!(body["detail"].as_str().unwrap().contains("twice"), "{body}");
        assert_eq!(app.row(user.id).await.unwrap(), before);
    }

    /// Names made only of invisible characters, and names with bidi overrides, are 422.
    #[tokio::test]
    async fn invisible_and_bidi_names_are_refused() {
        let app = TestRouter::new().await;
        let user = app.register_user().await;
        let before = app.row(user.id).await.unwrap();
        for name in ["\u{200B}", "\u{FEFF}", "\u{3164}", "Jane\u{202E}eoD"] {
            let response = app.put_me(&user.token, &json!({"firstname": name})).await;
            let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
            assert_eq!(body["errors"][0]["field"], "/firstname", "{name:?}: {body}");
        }
        assert_eq!(app.row(user.id).await.unwrap(), before);
    }

    /// A 422 lists a bounded number of errors and counts the rest.
    #[tokio::test]
    async fn a_422_lists_a_bounded_number_of_errors() {
        let app = TestRouter::new().await;
        let user = app.register_user().await;
        // As many as a 16 KiB body holds (the probe's 2,000 would be a 413 now).
        let body: serde_json::Map<String, Value> =
            (0..1400).map(|i| (format!("k{i}"), json!(1))).collect();
        let request_size = serde_json::to_string(&body).unwrap().len();
        let response = app.put_me(&user.token, &Value::Object(body)).await;
        let problem_body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        let listed = problem_body["errors"].as_array().unwrap().len();
        assert_eq!(listed, killrvideo_users::http::error::MAX_LISTED_ERRORS);
        assert_eq!(problem_body["errors_omitted"], 1400 - listed);
        let answer_size = problem_body.to_string().len();
        assert!(
            answer_size < request_size,
            "{answer_size} bytes answer {request_size}"
        );
    }
}

mod history {
    use super::*;

    #[tokio::test]
    async fn bad_history_parameters_are_400() {
        let app = TestRouter::new().await;
        let user = app.register_user().await;
        for query in [
            "limit=0",
            "limit=1000",
            "limit=ten",
            "cursor=nope",
            "as_of=yesterday",
        ] {
            let response = app
                .get_with_token(&format!("/api/v1/users/me/history?{query}"), &user.token)
                .await;
            problem(response, axum::http::StatusCode::BAD_REQUEST).await;
        }
    }
}

mod put_me {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn invalid_names_and_null_are_422_and_change_nothing() {
        let app = TestRouter::new().await;
        let user = app.register_user().await;
        let before = app.row(user.id).await.unwrap();
        let events_before = app.events(user.id).await.len();
        let fifty_one = "a".repeat(51);
        let cases = [
            (json!({"firstname": fifty_one}), "/firstname"),
            (json!({"lastname": "   "}), "/lastname"),
            (json!({"firstname": null}), "/firstname"),
            (json!({"lastName": null}), "/lastName"),
            (
                json!({"firstname": "Ok", "lastname": "bad\u{7}bell"}),
                "/lastname",
            ),
            (json!({"firstname": 42}), "/firstname"),
        ];
        for (body, field) in cases {
            let response = app.put_me(&user.token, &body).await;
            let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
            let errors = problem["errors"].as_array().unwrap();
            assert_eq!(errors.len(), 1, "{problem}");
            assert_eq!(errors[0]["field"], field);
            assert!(!errors[0]["message"].as_str().unwrap().is_empty());
        }
        app.assert_untouched(user.id, &before, events_before).await;
        // Exactly 50 characters is fine.
        let ok = app
            .put_me(&user.token, &json!({"firstname": "b".repeat(50)}))
            .await;
        assert_eq!(ok.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn protected_and_unknown_fields_are_422_and_never_written() {
        let app = TestRouter::new().await;
        let user = app.register_user().await;
        let before = app.row(user.id).await.unwrap();
        let events_before = app.events(user.id).await.len();
        for field in [
            "email",
            "account_status",
            "userid",
            "userId",
            "created_date",
            "last_login_date",
            "favourite_colour",
        ] {
            let body = json!({"firstname": "Mallory", field: "moderator@evil.example"});
            let response = app.put_me(&user.token, &body).await;
            assert_eq!(error_fields(response).await, [format!("/{field}")]);
        }
        app.assert_untouched(user.id, &before, events_before).await;
        assert_eq!(
            app.row(user.id).await.unwrap().account_status(),
            Some("viewer")
        );
    }

    #[tokio::test]
    async fn malformed_requests_are_400_415_413() {
        let app = TestRouter::new().await;
        let user = app.register_user().await;
        let before = app.row(user.id).await.unwrap();
        let events_before = app.events(user.id).await.len();
        let send = |content_type: Option<&str>, body: String| {
            let mut request = put_me(&user.token);
            if let Some(content_type) = content_type {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            app.oneshot(request.body(Body::from(body)).unwrap())
        };
        let json = Some("application/json");

        let bad_json = send(json, "{\"firstname\": ".into()).await;
        problem(bad_json, StatusCode::BAD_REQUEST).await;
        let not_object = send(json, "[1, 2]".into()).await;
        problem(not_object, StatusCode::UNPROCESSABLE_ENTITY).await;
        let text = send(Some("text/plain"), "{\"firstname\": \"X\"}".into()).await;
        problem(text, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        let no_type = send(None, "{\"firstname\": \"X\"}".into()).await;
        problem(no_type, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        let huge = format!(
            "{{\"firstname\": \"X\", \"pad\": \"{}\"}}",
            "p".repeat(17 * 1024)
        );
        let too_large = send(json, huge).await;
        problem(too_large, StatusCode::PAYLOAD_TOO_LARGE).await;

        app.assert_untouched(user.id, &before, events_before).await;
    }
}

mod register {
    use super::*;
    use killrvideo_test_support::unique_email;

    #[tokio::test]
    async fn invalid_registrations_are_422_and_write_nothing() {
        let app = TestRouter::new().await;
        let email = unique_email();
        let cases = [
            (
                json!({"email": "not-an-email", "password": PASSWORD, "firstname": "A", "lastname": "B"}),
                "/email",
            ),
            (
                json!({"email": email, "password": "short", "firstname": "A", "lastname": "B"}),
                "/password",
            ),
            (
                json!({"email": email, "password": "x".repeat(129), "firstname": "A", "lastname": "B"}),
                "/password",
            ),
            (
                json!({"email": email, "password": PASSWORD, "firstname": "  ", "lastname": "B"}),
                "/firstname",
            ),
            (
                json!({"email": email, "password": PASSWORD, "firstname": "A", "lastname": "x".repeat(51)}),
                "/lastname",
            ),
            (
                json!({"email": email, "password": PASSWORD, "firstname": "A"}),
                "/lastname",
            ),
            (
                json!({"email": email, "password": PASSWORD, "firstname": "A", "lastname": "B", "account_status": "moderator"}),
                "/account_status",
            ),
        ];
        for (body, field) in cases {
            let response = app.post_json("/api/v1/users/register", &body).await;
            assert_eq!(error_fields(response).await, [field], "{body}");
        }
        assert!(
            app.credentials(&email).await.is_none(),
            "nothing was written"
        );
    }
}

mod security {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use killrvideo_test_support::JWT_SECRET;

    #[tokio::test]
    async fn foreign_algorithms_are_refused() {
        let app = TestRouter::new().await;
        let user = app.register_user().await;
        let claims = json!({"sub": user.id.to_string(), "roles": ["viewer"], "exp": chrono::Utc::now().timestamp() + 600});
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        // HS/RS confusion: a token claiming RS256 (or ES256) with a signature made by
        // whatever the attacker has, here the HMAC secret itself and junk.
        for alg in ["RS256", "ES256", "PS256", "none", "None"] {
            let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
            for signature in ["", "c2lnbmF0dXJl"] {
                let token = format!("{header}.{payload}.{signature}");
                let response = app.put_me(&token, &json!({"firstname": "Forged"})).await;
                assert!(response.headers().contains_key("www-authenticate"), "{alg}");
                problem(response, axum::http::StatusCode::UNAUTHORIZED).await;
            }
        }
        // Another HMAC algorithm with the right secret is still not the configured one.
        let hs512 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
        )
        .unwrap();
        problem(
            app.put_me(&hs512, &json!({"firstname": "Forged"})).await,
            axum::http::StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_eq!(app.row(user.id).await.unwrap().firstname(), Some("John"));
    }
}

/// The `field` of each error a 422 lists.
async fn error_fields(response: impl Reply) -> Vec<String> {
    let problem = problem(response, axum::http::StatusCode::UNPROCESSABLE_ENTITY).await;
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}
