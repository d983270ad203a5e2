//! The right of access: `GET /api/v1/users/me/export` returns everything held about the
//! caller, and only for a token from a recent login.

use chrono::{Duration as Span, Utc};
use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, PASSWORD, TestApp, problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn the_export_holds_the_profile_every_event_and_the_login_budgets(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    app.put_me(
        &user.token,
        &json!({"firstname": "Ximena", "lastname": "Quist"}),
    )
    .await;
    // One wrong guess leaves a budget for the account and one for this address.
    assert_eq!(
        app.login(&user.email, "not-the-password").await.status(),
        StatusCode::UNAUTHORIZED
    );

    let response = app
        .get_with_token("/api/v1/users/me/export", &user.token)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let export: Value = response.json().await.unwrap();

    assert_eq!(export["user"]["userId"], json!(user.id.to_string()));
    assert_eq!(export["user"]["firstName"], json!("Ximena"));
    assert_eq!(export["user"]["lastname"], json!("Quist"));

    // Every event of the stored log, oldest first, values in clear.
    let logged: Vec<String> = app
        .events(user.id)
        .await
        .iter()
        .map(|e| e.event_id.to_string())
        .collect();
    let events = export["events"].as_array().unwrap();
    let exported: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(exported, logged, "the whole log, oldest first");
    assert_eq!(events[0]["type"], json!("UserRegistered"));
    assert_eq!(
        events[0]["fields"]["email"]["to"],
        json!(user.email),
        "the registration's email in clear"
    );
    let update = events
        .iter()
        .find(|e| e["type"] == json!("ProfileUpdated"))
        .unwrap();
    assert_eq!(update["fields"]["firstname"]["from"], json!("John"));
    assert_eq!(update["fields"]["firstname"]["to"], json!("Ximena"));

    // The credentials row, without the hash.
    let credentials = &export["credentials"];
    assert_eq!(
        credentials["email_key"],
        json!(user.email.to_ascii_lowercase())
    );
    assert_eq!(credentials["account_locked"], json!(false));
    assert_eq!(credentials["password_hash"], json!("withheld"));
    assert!(!export.to_string().contains("$argon2"), "no hash anywhere");

    // The budgets the store holds for the email: the account's and the address's.
    let stored = app
        .store
        .guess_budgets(&user.email.to_ascii_lowercase())
        .await
        .unwrap();
    let budgets = export["login_budgets"].as_array().unwrap();
    assert_eq!(budgets.len(), stored.len());
    assert!(stored.len() >= 2, "{stored:?}");
    for (exported, held) in budgets.iter().zip(&stored) {
        assert_eq!(exported["scope"], json!(held.scope));
        assert_eq!(exported["guesses"], json!(held.budget.used));
    }
    assert!(budgets.iter().any(|b| b["scope"] == json!("*")));
}

async fn an_export_needs_a_login_from_the_last_five_minutes(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    // A valid token, but from a login ten minutes ago.
    let old = app
        .jwt
        .issue(user.id, "viewer", Utc::now() - Span::minutes(10))
        .unwrap();
    let response = app.get_with_token("/api/v1/users/me/export", &old).await;
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains(r#"error="insufficient_user_authentication""#)
            && challenge.contains("max_age=300"),
        "{challenge}"
    );
    let body = problem(response, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["type"], json!("urn:killrvideo:problem:login-too-old"));
    assert_eq!(body["max_age"], json!(300));
    // The same token still serves everything else.
    assert_eq!(
        app.get_with_token("/api/v1/users/me", &old).await.status(),
        StatusCode::OK
    );
    // Logging in again gives a token that exports.
    let fresh = app
        .login(&user.email, PASSWORD)
        .await
        .json::<Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.get_with_token("/api/v1/users/me/export", &fresh)
            .await
            .status(),
        StatusCode::OK
    );
    // No token at all is the usual 401.
    assert_eq!(
        app.client
            .get(app.url("/api/v1/users/me/export"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

backend_tests!(
    the_export_holds_the_profile_every_event_and_the_login_budgets,
    an_export_needs_a_login_from_the_last_five_minutes,
);
