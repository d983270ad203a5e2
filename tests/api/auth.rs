//! Bearer tokens on /me that a store decides: a token for a user the store lacks, a
//! token minted elsewhere. Refused tokens are tested in tests/handlers.rs.

use chrono::Utc;
use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, JWT_SECRET, TestApp, sign, unauthorized};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

async fn a_token_for_a_missing_user_is_401_and_creates_no_row(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let ghost = Uuid::new_v4();
    let token = app.token_for(ghost);
    unauthorized(app.put_me(&token, &json!({"firstname": "Ghost"})).await).await;
    unauthorized(app.get_me(&token).await).await;
    assert_eq!(
        app.row(ghost).await,
        None,
        "no row was created by the upsert"
    );
    assert!(app.events(ghost).await.is_empty());
}

async fn python_minted_tokens_without_iat_are_accepted(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let user = app.register_user().await;
    let token = sign(
        &json!({"sub": user.id.to_string(), "roles": ["viewer"], "exp": Utc::now().timestamp() + 600}),
        JWT_SECRET,
    );
    let response = app.put_me(&token, &json!({"lastname": "Python"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.row(user.id).await.unwrap().lastname(), Some("Python"));
}

backend_tests!(
    a_token_for_a_missing_user_is_401_and_creates_no_row,
    python_minted_tokens_without_iat_are_accepted,
);
