//! Cross-cutting request handling.

use super::error::{ApiError, REQUEST_CONTEXT, RequestContext};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Makes the request path and id available to any [`ApiError`] raised while serving it.
pub async fn problem_context(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let context = RequestContext {
        path: request.uri().path().to_owned(),
        request_id,
    };
    REQUEST_CONTEXT.scope(context, next.run(request)).await
}

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

/// Removes a client's `x-request-id` that is not usable (or given twice), so the
/// request-id layer gives the request a fresh one, which the answer then carries.
pub async fn drop_unusable_request_id(mut request: Request, next: Next) -> Response {
    let ids = request.headers().get_all("x-request-id");
    let mut ids = ids.iter();
    let usable = match (ids.next(), ids.next()) {
        (Some(id), None) => usable_request_id(id.as_bytes()),
        (None, _) => true,
        _ => false,
    };
    if !usable {
        request.headers_mut().remove("x-request-id");
    }
    next.run(request).await
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
