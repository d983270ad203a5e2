//! POST /api/v1/users/login

use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, PASSWORD, TestApp, problem, unique_email};
use killrvideo_users::domain::UserEvent;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

async fn login_returns_a_token_and_records_the_login(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let email = unique_email();
    app.register(&email, "Ann", "Lee").await;
    let response = app
        .login(&format!("  {}  ", email.to_uppercase()), PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    let id = Uuid::parse_str(body["user"]["userId"].as_str().unwrap()).unwrap();
    assert_eq!(app.jwt.verify(token), Ok(id));
    let login_date = body["user"]["last_login_date"]
        .as_str()
        .expect("login date is returned");

    let row = app.row(id).await.unwrap();
    let stored = row.last_login_date.as_ref().unwrap().value;
    assert_eq!(
        stored.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        login_date
    );
    let events = app.events(id).await;
    assert_eq!(events.len(), 2);
    assert!(matches!(events[1].event, UserEvent::UserLoggedIn(_)));

    let me = app.get_me(token).await;
    assert_eq!(me.status(), StatusCode::OK);
}

async fn wrong_password_unknown_email_and_locked_account_get_the_same_401(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let email = unique_email();
    app.register(&email, "Ann", "Lee").await;
    let locked_email = unique_email();
    app.register(&locked_email, "Lou", "Lock").await;
    app.lock_account(&locked_email).await;

    let mut details = Vec::new();
    for (who, password) in [
        (email.as_str(), "wrong password"),
        ("nobody@example.com", PASSWORD),
        (locked_email.as_str(), PASSWORD),
    ] {
        let response = app.login(who, password).await;
        assert!(!response.headers().contains_key("set-cookie"));
        let body = problem(response, StatusCode::UNAUTHORIZED).await;
        details.push(body["detail"].as_str().unwrap().to_owned());
    }
    assert!(details.iter().all(|d| d == &details[0]), "{details:?}");
}

backend_tests!(
    login_returns_a_token_and_records_the_login,
    wrong_password_unknown_email_and_locked_account_get_the_same_401,
);
