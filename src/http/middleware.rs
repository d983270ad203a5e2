//! Cross-cutting request handling.

use super::error::{ApiError, ErrorReport, REQUEST_CONTEXT, ReportLevel, RequestContext};
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The request id, in one step: a client's `x-request-id` is kept when it is usable,
/// otherwise (absent, too long, not printable, given twice) a fresh one replaces it.
/// The id is set on the request (the log span and the events read it there), made
/// available with the path to any [`ApiError`] raised while serving it (`instance`,
/// `request_id`), and echoed on the answer.
pub async fn request_context(mut request: Request, next: Next) -> Response {
    let client_id = {
        let mut ids = request.headers().get_all(REQUEST_ID).iter();
        match (ids.next(), ids.next()) {
            (Some(id), None) if usable_request_id(id.as_bytes()) => Some(id.clone()),
            _ => None,
        }
    };
    let id = client_id.unwrap_or_else(|| {
        // A hyphenated UUID is always a valid header value.
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    });
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let context = RequestContext {
        path: request.uri().path().to_owned(),
        request_id: id.to_str().unwrap_or_default().to_owned(),
    };
    let mut response = REQUEST_CONTEXT.scope(context, next.run(request)).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// Logs a failed request once, where its answer is finished (as axum's
/// `error-handling` example does): a fault at ERROR, an unreachable store at WARN, each
/// with its cause, the matched route (never the raw path, which holds user ids) and the
/// request id the problem document carries; and counts the store error behind the
/// answer (`store_errors_total`). Whatever built the error only described it
/// ([`ErrorReport`], left in the response's extensions by `ApiError::into_response`).
pub async fn report_errors(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    if let Some(report) = response.extensions().get::<ErrorReport>() {
        if let Some(kind) = report.store_error {
            crate::telemetry::store_error(kind);
        }
        if let Some((level, cause)) = &report.logged {
            let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
            let request_id = REQUEST_CONTEXT.try_with(|c| c.request_id.clone()).ok();
            let request_id = request_id.as_deref();
            match level {
                ReportLevel::Fault => {
                    tracing::error!(route, request_id, %cause, "request failed")
                }
                ReportLevel::Unavailable => {
                    tracing::warn!(route, request_id, %cause, "data store unavailable")
                }
            }
        }
    }
    response
}

/// The request id header.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Unknown routes get a problem document too.
pub async fn not_found() -> Response {
    ApiError::NotFound("no such resource".into()).into_response()
}

/// Known routes with the wrong method.
pub async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// Marks an answer to shed load or an abandoned request, which are counted and
/// summarised instead of logged one by one.
#[derive(Debug, Clone, Copy)]
pub struct Shed;

/// Turns the errors of the overload layers into problem documents: shed load and
/// abandoned requests are 503 with `Retry-After`, never a hang.
pub async fn overload(err: tower::BoxError) -> Response {
    let mut response = if err.is::<tower::load_shed::error::Overloaded>() {
        crate::telemetry::shed("overloaded");
        ApiError::Overloaded.into_response()
    } else if err.is::<tower::timeout::error::Elapsed>() {
        crate::telemetry::shed("timeout");
        ApiError::TimedOut.into_response()
    } else {
        return ApiError::Internal(format!("middleware failure: {err}")).into_response();
    };
    response.extensions_mut().insert(Shed);
    response
}

/// Longest `x-request-id` a client may choose; it is stored in every event the request
/// causes and printed in every log line.
pub const MAX_CLIENT_REQUEST_ID: usize = 128;

/// True for a request id a client may choose: 1 to [`MAX_CLIENT_REQUEST_ID`] visible
/// ASCII characters.
pub fn usable_request_id(id: &[u8]) -> bool {
    (1..=MAX_CLIENT_REQUEST_ID).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
}

/// HTTP/1.1 requires exactly one `Host` (RFC 9112 §3.2): a request with none or two is
/// a 400, since two parts of a chain could disagree on which host it was for.
pub async fn require_one_host(request: Request, next: Next) -> Response {
    if request.version() == axum::http::Version::HTTP_11 {
        let hosts = request.headers().get_all(axum::http::header::HOST);
        let count = hosts.iter().take(2).count();
        if count != 1 {
            return ApiError::BadRequest(
                "an HTTP/1.1 request needs exactly one `Host` header".into(),
            )
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    /// Collects what the log writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_fault_is_logged_once_with_the_matched_route_and_the_request_id() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = Router::new()
            .route(
                "/users/{user_id}",
                get(|| async { ApiError::Internal("the disk is on fire".into()) }),
            )
            .layer(axum::middleware::from_fn(report_errors))
            .layer(axum::middleware::from_fn(request_context));
        let user_id = "6f1c2a8e-3d4b-4c5a-9e7f-0a1b2c3d4e5f";
        let request = Request::get(format!("/users/{user_id}"))
            .header("x-request-id", "request-77")
            .body(Body::empty())
            .expect("request");

        let response = app.oneshot(request).await.expect("infallible");

        assert_eq!(
            response.status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
        let log = String::from_utf8(captured.0.lock().expect("log buffer").clone()).unwrap();
        assert_eq!(log.matches("request failed").count(), 1, "{log}");
        assert!(log.contains("the disk is on fire"), "{log}");
        assert!(log.contains("/users/{user_id}"), "{log}");
        assert!(log.contains("request-77"), "{log}");
        assert!(!log.contains(user_id), "the raw path names the user: {log}");
    }
}
