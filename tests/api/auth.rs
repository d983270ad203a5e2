//! Bearer tokens on /me: missing, expired, tampered, alg none, foreign users.

use crate::backend_tests;
use crate::support::{Backend, JWT_SECRET, problem, spawn_app};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

fn sign(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

async fn assert_401(response: reqwest::Response) {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .expect("WWW-Authenticate")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    problem(response, StatusCode::UNAUTHORIZED).await;
}

async fn bad_tokens_are_401_with_a_bearer_challenge_and_write_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
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
        assert_401(app.put_me(&token, &json!({"firstname": "Hacked"})).await).await;
    }
    let no_header = app
        .client
        .put(app.url("/api/v1/users/me"))
        .json(&json!({"firstname": "Hacked"}))
        .send()
        .await
        .unwrap();
    assert_401(no_header).await;
    let basic = app
        .client
        .put(app.url("/api/v1/users/me"))
        .basic_auth("user", Some("pw"))
        .json(&json!({"firstname": "Hacked"}))
        .send()
        .await
        .unwrap();
    assert_401(basic).await;

    assert_eq!(app.row(user.id).await.as_ref(), Some(&before));
    assert_eq!(app.events(user.id).await.len(), events_before);
}

async fn a_token_for_a_missing_user_is_401_and_creates_no_row(backend: Backend) {
    let app = spawn_app(backend).await;
    let ghost = Uuid::new_v4();
    let token = app.token_for(ghost);
    assert_401(app.put_me(&token, &json!({"firstname": "Ghost"})).await).await;
    assert_401(app.get_me(&token).await).await;
    assert_eq!(
        app.row(ghost).await,
        None,
        "no row was created by the upsert"
    );
    assert!(app.events(ghost).await.is_empty());
}

async fn python_minted_tokens_without_iat_are_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.register_user().await;
    let token = sign(
        &json!({"sub": user.id.to_string(), "roles": ["viewer"], "exp": Utc::now().timestamp() + 600}),
        JWT_SECRET,
    );
    let response = app.put_me(&token, &json!({"lastname": "Python"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.row(user.id).await.unwrap().lastname(), Some("Python"));
}

async fn auth_errors_win_over_body_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .put(app.url("/api/v1/users/me"))
        .header("content-type", "text/plain")
        .body("nonsense")
        .send()
        .await
        .unwrap();
    assert_401(response).await;
}

backend_tests!(
    bad_tokens_are_401_with_a_bearer_challenge_and_write_nothing,
    a_token_for_a_missing_user_is_401_and_creates_no_row,
    python_minted_tokens_without_iat_are_accepted,
    auth_errors_win_over_body_errors,
);
