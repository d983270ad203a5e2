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

/// Turns the errors of the overload layers into problem documents: shed load and
/// abandoned requests are 503 with `Retry-After`, never a hang.
pub async fn overload(err: tower::BoxError) -> Response {
    if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Overloaded.into_response()
    } else if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::TimedOut.into_response()
    } else {
        ApiError::Internal(format!("middleware failure: {err}")).into_response()
    }
}
