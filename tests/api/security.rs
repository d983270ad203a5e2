//! Hostile input and account protection: lockout after repeated failures, algorithm
//! confusion, one user's token against another's data, overload and timeouts.

use crate::backend_tests;
use crate::support::{
    Backend, JWT_SECRET, PASSWORD, problem, spawn_app, spawn_app_with_limits, unique_email,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use futures::future::join_all;
use killrvideo_users::http::Limits;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn repeated_failures_lock_the_email_out(backend: Backend) {
    let app = spawn_app(backend).await;
    let victim = app.register_user().await;
    let bystander = app.register_user().await;
    let mut details = Vec::new();
    for _ in 0..killrvideo_users::domain::login::MAX_FAILURES {
        let body = problem(
            app.login(&victim.email, "wrong password").await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        details.push(body["detail"].clone());
    }
    // Locked out: even the right password gets the same 401.
    let locked = problem(
        app.login(&victim.email, PASSWORD).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(locked["detail"], details[0]);
    // Other accounts are unaffected, and unknown emails behave exactly alike.
    assert_eq!(
        app.login(&bystander.email, PASSWORD).await.status(),
        StatusCode::OK
    );
    let ghost = unique_email();
    for _ in 0..killrvideo_users::domain::login::MAX_FAILURES + 1 {
        let body = problem(app.login(&ghost, PASSWORD).await, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["detail"], details[0]);
    }
    // A success below the threshold clears the count.
    let recovering = app.register_user().await;
    for _ in 0..killrvideo_users::domain::login::MAX_FAILURES - 1 {
        app.login(&recovering.email, "wrong password").await;
    }
    assert_eq!(
        app.login(&recovering.email, PASSWORD).await.status(),
        StatusCode::OK
    );
    for _ in 0..killrvideo_users::domain::login::MAX_FAILURES - 1 {
        app.login(&recovering.email, "wrong password").await;
    }
    assert_eq!(
        app.login(&recovering.email, PASSWORD).await.status(),
        StatusCode::OK
    );
}

async fn foreign_algorithms_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
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
            problem(response, StatusCode::UNAUTHORIZED).await;
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
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(app.row(user.id).await.unwrap().firstname(), Some("John"));
}

async fn a_token_only_ever_writes_its_own_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register_user().await;
    let bob = app.register_user().await;
    let bob_before = app.row(bob.id).await.unwrap();
    let bob_events = app.events(bob.id).await.len();
    // The body cannot name a target: userId is a protected field.
    let sneaky = app
        .put_me(
            &alice.token,
            &json!({"userId": bob.id.to_string(), "firstname": "Mallory"}),
        )
        .await;
    problem(sneaky, StatusCode::UNPROCESSABLE_ENTITY).await;
    let own = app
        .put_me(&alice.token, &json!({"firstname": "Alice"}))
        .await;
    assert_eq!(own.status(), StatusCode::OK);
    let body: Value = own.json().await.unwrap();
    assert_eq!(body["userId"], alice.id.to_string());
    assert_eq!(app.row(bob.id).await.as_ref(), Some(&bob_before));
    assert_eq!(app.events(bob.id).await.len(), bob_events);
}

async fn past_the_concurrency_limit_requests_are_shed_with_fast_503s(backend: Backend) {
    let limits = Limits {
        max_in_flight: 2,
        request_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let app = spawn_app_with_limits(backend, limits).await;
    // Registrations are slow (argon2): forty at once overwhelm a limit of two.
    let started = Instant::now();
    let attempts = (0..40).map(|i| {
        let app = &app;
        async move {
            app.register(&unique_email(), "Shed", &format!("N{i}"))
                .await
        }
    });
    let responses = join_all(attempts).await;
    let elapsed = started.elapsed();
    let mut created = 0;
    let mut shed = 0;
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(response.headers()["retry-after"], "1");
                let body = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
                assert_eq!(body["type"], "urn:killrvideo:problem:overloaded");
                shed += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        created >= 2,
        "requests within the limit are served ({created})"
    );
    assert!(shed > 0, "requests past the limit are shed ({shed})");
    assert!(
        elapsed < Duration::from_secs(20),
        "nothing queued without bound: {elapsed:?}"
    );
}

async fn requests_past_the_timeout_get_503(backend: Backend) {
    let limits = Limits {
        max_in_flight: 512,
        request_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let app = spawn_app_with_limits(backend, limits).await;
    // The body never finishes, so the handler cannot, and only the deadline can answer.
    // A request that is merely slow (this test once relied on argon2 outlasting a 1 ms
    // deadline) can beat the timer on a starved machine: the timeout polls the request
    // before its timer, so work that ends while the runtime is too busy to fire the
    // timer completes with 201.
    let email = unique_email();
    let stalled_body = futures::stream::iter([Ok::<_, std::io::Error>(format!(
        r#"{{"email": "{email}", "password": "#
    ))])
    .chain(futures::stream::pending());
    let started = Instant::now();
    let response = app
        .client
        .post(app.url("/api/v1/users/register"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stalled_body))
        .send()
        .await
        .expect("a response before the body ends");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the deadline answers, not the client's patience"
    );
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "status {}",
        response.status()
    );
    let body = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["type"], "urn:killrvideo:problem:timeout");
    assert!(
        app.store
            .find_credentials(&email.to_ascii_lowercase())
            .await
            .expect("store")
            .is_none(),
        "a timed-out registration writes nothing"
    );
}

backend_tests!(
    repeated_failures_lock_the_email_out,
    foreign_algorithms_are_refused,
    a_token_only_ever_writes_its_own_user,
    past_the_concurrency_limit_requests_are_shed_with_fast_503s,
    requests_past_the_timeout_get_503,
);
