//! Health, readiness, problem details for unknown routes, request ids, OpenAPI.

use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::Value;

async fn readyz_answers_200_when_the_store_is_reachable(backend: Backend) {
    let app = TestApp::on(backend).spawn().await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    let expected = match backend {
        Backend::Embedded => "embedded",
        Backend::Cassandra => "cassandra",
    };
    assert_eq!(body["store"], expected);

    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

backend_tests!(readyz_answers_200_when_the_store_is_reachable,);
