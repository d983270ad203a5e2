//! Hostile input and account protection: lockout after repeated failures, algorithm
//! confusion, one user's token against another's data, overload and timeouts.

use futures::StreamExt;
use futures::future::join_all;
use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, PASSWORD, TestApp, problem, unique_email};
use killrvideo_users::http::Limits;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn repeated_failures_lock_the_email_out(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
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

async fn a_token_only_ever_writes_its_own_user(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
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
    let app = TestApp::on(backend).limits(limits).spawn().await;
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
    let app = TestApp::on(backend).limits(limits).spawn().await;
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
        app.credentials(&email).await.is_none(),
        "a timed-out registration writes nothing"
    );
}

backend_tests!(
    repeated_failures_lock_the_email_out,
    a_token_only_ever_writes_its_own_user,
    past_the_concurrency_limit_requests_are_shed_with_fast_503s,
    requests_past_the_timeout_get_503,
);
