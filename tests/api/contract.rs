//! The user object contract: every user object the API returns carries every key of
//! the KillrVideo OpenAPI `User` (what the web frontend reads) and the endpoint
//! document's keys, with the same values. The expected schema is written here from
//! ../shared/spec/killrvideo-frontend.md and put-users-me.md, not from the code.

use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The JSON types a key may have.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Uuid,
    /// A string of 1 to 50 characters.
    Name,
    String,
    DateTime,
    NullableDateTime,
    StringArray,
}

/// The OpenAPI `User` (frontend spec table): userId uuid, firstName/lastName string
/// 1-50, email string, createdDate date-time, accountStatus string, lastLoginDate
/// date-time or null, roles array of strings.
const OPENAPI_USER: [(&str, Kind); 8] = [
    ("userId", Kind::Uuid),
    ("firstName", Kind::Name),
    ("lastName", Kind::Name),
    ("email", Kind::String),
    ("createdDate", Kind::DateTime),
    ("accountStatus", Kind::String),
    ("lastLoginDate", Kind::NullableDateTime),
    ("roles", Kind::StringArray),
];

/// The endpoint document's keys beyond `userId` and `email`, each paired with the
/// OpenAPI key that must hold the same value.
const DOCUMENT_KEYS: [(&str, &str); 5] = [
    ("firstname", "firstName"),
    ("lastname", "lastName"),
    ("account_status", "accountStatus"),
    ("created_date", "createdDate"),
    ("last_login_date", "lastLoginDate"),
];

/// Who sees the object: its owner (or a moderator), or anyone (`GET /users/{id}`),
/// for whom the email and the login activity are private and `null`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum View {
    Owner,
    Public,
}

fn has_kind(value: &Value, kind: Kind) -> bool {
    let date_time = |v: &Value| {
        v.as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
    };
    match kind {
        Kind::Uuid => value
            .as_str()
            .is_some_and(|s| uuid::Uuid::parse_str(s).is_ok()),
        Kind::Name => value
            .as_str()
            .is_some_and(|s| (1..=50).contains(&s.chars().count())),
        Kind::String => value.is_string(),
        Kind::DateTime => date_time(value),
        Kind::NullableDateTime => value.is_null() || date_time(value),
        Kind::StringArray => value
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string)),
    }
}

/// Asserts that `object` is a user object of the contract, and nothing else.
pub fn assert_user_object(object: &Value, view: View, context: &str) {
    let members = object
        .as_object()
        .unwrap_or_else(|| panic!("{context}: not an object: {object}"));
    let mut expected: Vec<&str> = OPENAPI_USER.iter().map(|(key, _)| *key).collect();
    expected.extend(DOCUMENT_KEYS.iter().map(|(key, _)| *key));
    let mut keys: Vec<&str> = members.keys().map(String::as_str).collect();
    keys.sort_unstable();
    expected.sort_unstable();
    assert_eq!(keys, expected, "{context}: the keys of {object}");
    for (key, kind) in OPENAPI_USER {
        let value = &object[key];
        let private = view == View::Public && matches!(key, "email" | "lastLoginDate");
        if private {
            assert!(value.is_null(), "{context}: `{key}` is private: {object}");
        } else {
            assert!(
                has_kind(value, kind),
                "{context}: `{key}` should be {kind:?}: {object}"
            );
        }
    }
    for (key, same_as) in DOCUMENT_KEYS {
        assert_eq!(
            object[key], object[same_as],
            "{context}: `{key}` and `{same_as}` differ: {object}"
        );
    }
    // The roles follow the stored status.
    let roles = object["roles"].as_array().cloned().unwrap_or_default();
    match object["accountStatus"].as_str() {
        Some("moderator") => assert!(roles.contains(&json!("moderator")), "{context}"),
        Some("suspended") => assert!(roles.is_empty(), "{context}"),
        Some("viewer") => assert_eq!(roles, [json!("viewer")], "{context}"),
        _ => {}
    }
}

async fn json_of(response: reqwest::Response, status: StatusCode, context: &str) -> Value {
    assert_eq!(response.status(), status, "{context}");
    response.json().await.expect("JSON body")
}

/// Every place the API returns a user object, in one walk.
async fn every_user_object_has_both_sets_of_keys(backend: Backend) {
    let app: TestApp = TestApp::on(backend).spawn().await;
    let email = killrvideo_test_support::unique_email();
    let registered = json_of(
        app.register(&email, "Jane", "Doe").await,
        StatusCode::CREATED,
        "register",
    )
    .await;
    assert_user_object(&registered, View::Owner, "register");
    assert!(registered["lastLoginDate"].is_null());
    let id = registered["userId"].as_str().unwrap().to_owned();

    let login = json_of(
        app.login(&email, killrvideo_test_support::PASSWORD).await,
        StatusCode::OK,
        "login",
    )
    .await;
    assert_user_object(&login["user"], View::Owner, "login.user");
    assert!(login["user"]["lastLoginDate"].is_string());
    let token = login["token"].as_str().unwrap().to_owned();

    let me = json_of(app.get_me(&token).await, StatusCode::OK, "GET /me").await;
    assert_user_object(&me, View::Owner, "GET /me");
    assert_eq!(me["firstName"], "Jane");
    assert_eq!(me["email"], email);

    let put = json_of(
        app.put_me(&token, &json!({"firstName": "Janet", "lastName": "Dole"}))
            .await,
        StatusCode::OK,
        "PUT /me",
    )
    .await;
    assert_user_object(&put, View::Owner, "PUT /me");
    assert_eq!(
        (&put["firstName"], &put["lastname"]),
        (&json!("Janet"), &json!("Dole"))
    );

    let public = json_of(
        app.client
            .get(app.url(&format!("/api/v1/users/{id}")))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
        "GET /{id}",
    )
    .await;
    assert_user_object(&public, View::Public, "GET /{id}");
    assert_eq!(public["firstName"], "Janet");

    let stale = "\"AAAAAAAAAAAAAAAAAAAAAA\"";
    let conflict = app
        .put_me_if_match(&token, stale, &json!({"firstname": "Never"}))
        .await;
    let problem = json_of(conflict, StatusCode::PRECONDITION_FAILED, "412").await;
    assert_user_object(&problem["current"], View::Owner, "412 current");

    let as_of = chrono::Utc::now().to_rfc3339();
    let history = json_of(
        app.get_with_token(
            &format!("/api/v1/users/me/history?as_of={}", urlencode(&as_of)),
            &token,
        )
        .await,
        StatusCode::OK,
        "history as_of",
    )
    .await;
    assert_user_object(&history["user"], View::Owner, "history as_of user");
}

fn urlencode(raw: &str) -> String {
    serde_urlencoded::to_string([("x", raw)]).unwrap()[2..].to_owned()
}

backend_tests!(every_user_object_has_both_sets_of_keys);
