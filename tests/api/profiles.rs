//! GET /api/v1/users/{user_id}: public profiles.

use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, TestApp, problem};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

async fn public_profiles_hide_the_email(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    // The user has logged in (register_user does), so there is a login time to hide.
    let response = app
        .client
        .get(app.url(&format!("/api/v1/users/{}", user.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["userId"], user.id.to_string());
    assert_eq!(body["firstname"], "John");
    assert_eq!(body["lastname"], "Doe");
    assert!(body["email"].is_null(), "email is private: {body}");
    assert!(
        body["last_login_date"].is_null() && body["lastLoginDate"].is_null(),
        "login activity is private: {body}"
    );
    assert_eq!(body["firstName"], "John");
    assert_eq!(body["roles"], serde_json::json!(["viewer"]));
    assert!(!body.to_string().contains(&user.email));
}

async fn unknown_ids_are_404_and_non_uuids_400(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let unknown = app
        .client
        .get(app.url(&format!("/api/v1/users/{}", Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    problem(unknown, StatusCode::NOT_FOUND).await;
    let garbage = app
        .client
        .get(app.url("/api/v1/users/12345"))
        .send()
        .await
        .unwrap();
    problem(garbage, StatusCode::BAD_REQUEST).await;
}

backend_tests!(
    public_profiles_hide_the_email,
    unknown_ids_are_404_and_non_uuids_400
);
