//! CORS for the web frontend served from another origin: exact origins, with
//! credentials, configured by `KILLRVIDEO_CORS_ORIGINS`.

use killrvideo_test_support::backend_tests;
use killrvideo_test_support::{Api, Backend, TestApp};
use reqwest::{Method, StatusCode};

const FRONTEND: &str = "http://localhost:8080";

async fn an_allowed_origin_gets_preflights_and_credentialed_answers(backend: Backend) {
    let app = TestApp::on(backend)
        .cors(&[FRONTEND, "https://app.example.com"])
        .spawn()
        .await;
    let user = app.register_user().await;
    let preflight = app
        .client
        .request(Method::OPTIONS, app.url("/api/v1/users/me"))
        .header("origin", FRONTEND)
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], FRONTEND);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("PUT"), "{methods}");
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );

    let answer = app
        .client
        .get(app.url("/api/v1/users/me"))
        .header("origin", FRONTEND)
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["access-control-allow-origin"], FRONTEND);
    assert_eq!(answer.headers()["access-control-allow-credentials"], "true");
    let exposed = answer.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("etag"), "{exposed}");
    // Errors carry the headers too, or the browser hides their `detail`.
    let refused = app
        .client
        .get(app.url("/api/v1/users/me"))
        .header("origin", FRONTEND)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers()["access-control-allow-origin"], FRONTEND);
}

async fn other_origins_get_no_cors_headers(backend: Backend) {
    let app = TestApp::on(backend).cors(&[FRONTEND]).spawn().await;
    let preflight = app
        .client
        .request(Method::OPTIONS, app.url("/api/v1/users/me"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "PUT")
        .send()
        .await
        .unwrap();
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let answer = app
        .client
        .get(app.url("/healthz"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    // tower-http still sends `allow-credentials`, which means nothing to a browser
    // without an allowed origin.
    assert!(
        answer
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    // And without the setting, no origin gets them.
    let plain = TestApp::on(backend).spawn().await;
    let answer = plain
        .client
        .get(plain.url("/healthz"))
        .header("origin", FRONTEND)
        .send()
        .await
        .unwrap();
    assert!(
        answer
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

backend_tests!(
    an_allowed_origin_gets_preflights_and_credentialed_answers,
    other_origins_get_no_cors_headers,
);
