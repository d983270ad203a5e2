//! Health, readiness, problem details for unknown routes, request ids, OpenAPI.

use crate::backend_tests;
use crate::support::{Backend, problem, spawn_app};
use reqwest::StatusCode;
use serde_json::Value;

async fn readyz_answers_200_when_the_store_is_reachable(backend: Backend) {
    let app = spawn_app(backend).await;
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

async fn request_ids_are_generated_or_echoed(backend: Backend) {
    let app = spawn_app(backend).await;
    let generated = app.client.get(app.url("/healthz")).send().await.unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID is generated: {id}");

    let echoed = app
        .client
        .get(app.url("/api/v1/users/not-a-uuid"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");
    let body = problem(echoed, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["request_id"], "trace-me-42");
    assert_eq!(body["instance"], "/api/v1/users/not-a-uuid");
}

async fn unknown_routes_and_methods_are_problems(backend: Backend) {
    let app = spawn_app(backend).await;
    let missing = app.client.get(app.url("/nope")).send().await.unwrap();
    problem(missing, StatusCode::NOT_FOUND).await;
    let wrong_method = app
        .client
        .patch(app.url("/api/v1/users/me"))
        .send()
        .await
        .unwrap();
    problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
}

async fn openapi_document_describes_the_api(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/users/me",
        "/api/v1/users/register",
        "/api/v1/users/login",
        "/api/v1/users/{user_id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "missing {path}");
    }
    assert!(doc["paths"]["/api/v1/users/me"].get("put").is_some());
}

backend_tests!(
    readyz_answers_200_when_the_store_is_reachable,
    request_ids_are_generated_or_echoed,
    unknown_routes_and_methods_are_problems,
    openapi_document_describes_the_api,
);
