//! POST /api/v1/users/register

use futures::future::join_all;
use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, PASSWORD, TestApp, problem, unique_email};
use killrvideo_users::domain::UserEvent;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

async fn registration_creates_a_viewer_from_one_event(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let local = format!("Jane.{}", Uuid::new_v4().simple());
    let response = app
        .post_json(
            "/api/v1/users/register",
            &json!({"email": format!("  {local}@Example.COM "), "password": PASSWORD, "firstName": " Jane ", "lastname": "Doe"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(response.headers().contains_key("etag"));
    let body: Value = response.json().await.unwrap();

    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "userId",
        "firstName",
        "lastName",
        "email",
        "createdDate",
        "accountStatus",
        "lastLoginDate",
        "roles",
        "firstname",
        "lastname",
        "account_status",
        "created_date",
        "last_login_date",
    ];
    expected.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, expected);

    let id = Uuid::parse_str(body["userId"].as_str().unwrap()).unwrap();
    assert_eq!(location, format!("/api/v1/users/{id}"));
    assert_eq!(body["email"], format!("{local}@example.com"));
    assert_eq!(body["firstname"], "Jane");
    assert_eq!(body["account_status"], "viewer");
    assert!(body["last_login_date"].is_null());
    assert!(body["created_date"].as_str().unwrap().ends_with('Z'));

    let row = app.row(id).await.expect("row exists");
    assert_eq!(row.email(), Some(format!("{local}@example.com").as_str()));
    assert_eq!(row.firstname(), Some("Jane"));
    assert_eq!(row.account_status(), Some("viewer"));
    let events = app.events(id).await;
    assert_eq!(events.len(), 1);
    assert!(matches!(events[0].event, UserEvent::UserRegistered(_)));
    assert_eq!(row.version(), Some(events[0].event_id));

    let credentials = app
        .credentials(&format!("{local}@example.com"))
        .await
        .expect("credentials");
    assert_eq!(credentials.user_id, id);
    assert!(credentials.password_hash.starts_with("$argon2id$"));
    assert!(!credentials.password_hash.contains(PASSWORD));
}

async fn duplicate_email_is_409_whatever_its_case(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let email = unique_email();
    assert_eq!(
        app.register(&email, "A", "B").await.status(),
        StatusCode::CREATED
    );
    let again = app.register(&email.to_uppercase(), "C", "D").await;
    let body = problem(again, StatusCode::CONFLICT).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("already registered")
    );
}

async fn racing_registrations_of_one_email_have_exactly_one_winner(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let email = unique_email();
    let attempts = (0..8).map(|i| {
        let app = &app;
        let email = if i % 2 == 0 {
            email.clone()
        } else {
            email.to_uppercase()
        };
        async move { app.register(&email, "Racer", &format!("N{i}")).await }
    });
    let responses = join_all(attempts).await;
    let mut created = Vec::new();
    let mut conflicts = 0;
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created.push(response.json::<Value>().await.unwrap()),
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one registration wins");
    assert_eq!(conflicts, 7);
    let winner = Uuid::parse_str(created[0]["userId"].as_str().unwrap()).unwrap();
    let credentials = app.credentials(&email).await.unwrap();
    assert_eq!(credentials.user_id, winner);
}

backend_tests!(
    registration_creates_a_viewer_from_one_event,
    duplicate_email_is_409_whatever_its_case,
    racing_registrations_of_one_email_have_exactly_one_winner,
);
