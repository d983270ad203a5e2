//! The one error type of the HTTP edge, rendered as RFC 9457 problem details.
//!
//! Client mistakes are 4xx with a precise `detail`. Server faults are 500 with a generic
//! `detail`; the cause is logged once, with the same request id the body carries, where
//! the response is finished: [`ApiError::into_response`] leaves an [`ErrorReport`] in the
//! response's extensions, and [`super::middleware::report_errors`] logs it with the
//! matched route and counts the store error behind it.

use crate::domain::FieldError;
use crate::store::StoreError;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Most field errors a 422 lists: a body naming thousands of unknown members would
/// otherwise get an answer many times its own size. The rest are counted.
pub const MAX_LISTED_ERRORS: usize = 20;

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u64 = 1;

tokio::task_local! {
    /// The request being served, so any error can name it (`instance`, `request_id`)
    /// without every handler passing it along. Set by [`super::middleware::request_context`].
    pub static REQUEST_CONTEXT: RequestContext;
}

/// What an error response says about its request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request path, used as the problem `instance`.
    pub path: String,
    /// The `x-request-id`.
    pub request_id: String,
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: unreadable request (bad JSON, bad path or query parameter).
    #[error("{0}")]
    BadRequest(String),
    /// 401 with `WWW-Authenticate: Bearer`.
    #[error("{detail}")]
    Unauthorized {
        /// Shown to the client.
        detail: String,
        /// Whether a token was presented and refused (`error="invalid_token"`).
        invalid_token: bool,
    },
    /// 401: a valid token, but from a login longer ago than `max_age` seconds, for a
    /// request that asks for a recent one (RFC 9470's step-up challenge).
    #[error("This request needs a login within the last {max_age} seconds: log in again")]
    LoginTooOld {
        /// The most a login may be old, in seconds.
        max_age: u64,
    },
    /// 403: authenticated, but the account's role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: e.g. the email is already registered.
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Match` did not match. Carries the current version and representation.
    #[error("the user has changed since that version")]
    PreconditionFailed {
        /// The current ETag, also sent as the `ETag` header.
        etag: String,
        /// The current user, as an extension member.
        current: Value,
    },
    /// 413: body over the limit.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: the body parsed but fields are invalid; one entry per field.
    #[error("the request body has invalid fields")]
    Validation(Vec<FieldError>),
    /// 503 with `Retry-After`: the database cannot be reached.
    #[error("the data store is unavailable: {0}")]
    Unavailable(String),
    /// 503 with `Retry-After`: too many requests in flight; shed at once.
    #[error("the service is overloaded; retry shortly")]
    Overloaded,
    /// 503 with `Retry-After`: another request holds what this one needs for longer
    /// than it waits (the moderators' lease); the detail says what.
    #[error("{0}")]
    Contended(String),
    /// 503 with `Retry-After`: the request outlived the request timeout.
    #[error("the request took too long and was abandoned; retry shortly")]
    TimedOut,
    /// 503 from `/readyz`: not ready, and the reason is shown (an operator endpoint).
    #[error("not ready: {0}")]
    NotReady(String),
    /// 500. The cause is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
    /// A store error, answered as [`ApiError::Unavailable`], [`ApiError::Conflict`] or
    /// [`ApiError::Internal`] and counted by its kind where the answer is finished.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::Store(err)
    }
}

/// What the answer to a failed request leaves for [`super::middleware::report_errors`],
/// in the response's extensions: the one place that logs and counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    /// A server-side failure to log, with its cause: `Some` for a fault (at ERROR) or
    /// an unreachable store (at WARN), `None` for a client's mistake or shed load.
    pub logged: Option<(ReportLevel, String)>,
    /// The kind of store error behind the answer (`store_errors_total{kind}`), if any.
    pub store_error: Option<&'static str>,
}

/// How loudly an [`ErrorReport`] is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportLevel {
    /// A fault: `request failed`, at ERROR.
    Fault,
    /// The data store could not be reached: at WARN.
    Unavailable,
}

impl ErrorReport {
    /// What an error leaves to be logged and counted; `None` when there is nothing.
    fn of(error: &ApiError) -> Option<Self> {
        let store_error = match error {
            ApiError::Store(err) => Some(match err {
                StoreError::Conflict(_) => "conflict",
                StoreError::Unavailable { .. } => "unavailable",
                StoreError::SchemaMissing(_) => "schema_missing",
                StoreError::Internal { .. } => "internal",
                StoreError::WrongKey(_) => "wrong_key",
            }),
            _ => None,
        };
        let logged = match error {
            ApiError::Internal(cause) => Some((ReportLevel::Fault, cause.clone())),
            ApiError::Unavailable(cause) => Some((ReportLevel::Unavailable, cause.clone())),
            ApiError::Store(err) => match store_answer(err) {
                ApiError::Internal(cause) => Some((ReportLevel::Fault, cause)),
                ApiError::Unavailable(cause) => Some((ReportLevel::Unavailable, cause)),
                _ => None,
            },
            _ => None,
        };
        (logged.is_some() || store_error.is_some()).then_some(Self {
            logged,
            store_error,
        })
    }
}

/// A store error as the edge answers it: unreachable is 503, a conflict 409, the rest
/// a fault.
fn store_answer(err: &StoreError) -> ApiError {
    match err {
        StoreError::Unavailable { .. } => ApiError::Unavailable(err.report()),
        StoreError::Conflict(what) => ApiError::Conflict(what.clone()),
        StoreError::SchemaMissing(_) | StoreError::Internal { .. } | StoreError::WrongKey(_) => {
            ApiError::Internal(err.report())
        }
    }
}

impl ApiError {
    /// The one place statuses are decided.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Store(err) => store_answer(err).status(),
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } | ApiError::LoginTooOld { .. } => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_)
            | ApiError::NotReady(_)
            | ApiError::Overloaded
            | ApiError::Contended(_)
            | ApiError::TimedOut => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem `type`: a stable identifier per kind of problem.
    fn problem_type(&self) -> &'static str {
        match self {
            ApiError::Store(err) => store_answer(err).problem_type(),
            ApiError::BadRequest(_) => "urn:killrvideo:problem:bad-request",
            ApiError::Unauthorized { .. } => "urn:killrvideo:problem:unauthenticated",
            ApiError::LoginTooOld { .. } => "urn:killrvideo:problem:login-too-old",
            ApiError::Forbidden(_) => "urn:killrvideo:problem:forbidden",
            ApiError::NotFound(_) => "urn:killrvideo:problem:not-found",
            ApiError::MethodNotAllowed => "urn:killrvideo:problem:method-not-allowed",
            ApiError::Conflict(_) => "urn:killrvideo:problem:conflict",
            ApiError::PreconditionFailed { .. } => "urn:killrvideo:problem:precondition-failed",
            ApiError::PayloadTooLarge(_) => "urn:killrvideo:problem:payload-too-large",
            ApiError::UnsupportedMediaType(_) => "urn:killrvideo:problem:unsupported-media-type",
            ApiError::Validation(_) => "urn:killrvideo:problem:validation",
            ApiError::Overloaded | ApiError::Contended(_) => "urn:killrvideo:problem:overloaded",
            ApiError::TimedOut => "urn:killrvideo:problem:timeout",
            ApiError::Unavailable(_) | ApiError::NotReady(_) => {
                "urn:killrvideo:problem:unavailable"
            }
            ApiError::Internal(_) => "urn:killrvideo:problem:internal",
        }
    }

    /// What the client is told. Server-side causes stay in the log.
    fn detail(&self) -> String {
        match self {
            ApiError::Store(err) => store_answer(err).detail(),
            ApiError::Unavailable(_) => {
                "Unable to reach the data store. Please try again later.".into()
            }
            ApiError::Internal(_) => {
                "An unexpected error occurred. Quote the request id when reporting it.".into()
            }
            // The frontend shows `detail` and nothing else: it names each field and what
            // is wrong with it; `errors` keeps the same for programs.
            ApiError::Validation(errors) => {
                let mut detail = errors
                    .iter()
                    .take(MAX_LISTED_ERRORS)
                    .map(|error| match error.field.strip_prefix('/') {
                        Some(name) if !name.is_empty() => format!("{name}: {}", error.message),
                        _ if error.field.is_empty() => error.message.clone(),
                        _ => format!("{}: {}", error.field, error.message),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                if errors.len() > MAX_LISTED_ERRORS {
                    detail.push_str(&format!("; and {} more", errors.len() - MAX_LISTED_ERRORS));
                }
                detail
            }
            other => other.to_string(),
        }
    }
}

/// Builds a problem-details response.
fn problem_response(status: StatusCode, body: Map<String, Value>, headers: HeaderMap) -> Response {
    let mut response = (status, headers, Value::Object(body).to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// Renders the problem document, and leaves an [`ErrorReport`] in the response for
/// the middleware that logs and counts failures; nothing is logged here.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let report = ErrorReport::of(&self);
        let answer = match self {
            ApiError::Store(err) => store_answer(&err),
            other => other,
        };
        let mut response = answer.problem();
        if let Some(report) = report {
            response.extensions_mut().insert(report);
        }
        response
    }
}

impl ApiError {
    /// The problem document of an error that is not [`ApiError::Store`].
    fn problem(self) -> Response {
        let status = self.status();
        let context = REQUEST_CONTEXT.try_with(Clone::clone).ok();

        let mut body = Map::new();
        body.insert("type".into(), json!(self.problem_type()));
        body.insert(
            "title".into(),
            json!(status.canonical_reason().unwrap_or("Error")),
        );
        body.insert("status".into(), json!(status.as_u16()));
        body.insert("detail".into(), json!(self.detail()));
        if let Some(context) = &context {
            body.insert("instance".into(), json!(context.path));
            body.insert("request_id".into(), json!(context.request_id));
        }

        let mut headers = HeaderMap::new();
        match self {
            ApiError::Validation(mut errors) => {
                let omitted = errors.len().saturating_sub(MAX_LISTED_ERRORS);
                errors.truncate(MAX_LISTED_ERRORS);
                body.insert("errors".into(), json!(errors));
                if omitted > 0 {
                    body.insert("errors_omitted".into(), json!(omitted));
                }
            }
            ApiError::Unauthorized { invalid_token, .. } => {
                let challenge = if invalid_token {
                    r#"Bearer realm="killrvideo", error="invalid_token""#
                } else {
                    r#"Bearer realm="killrvideo""#
                };
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            ApiError::LoginTooOld { max_age } => {
                let challenge = format!(
                    r#"Bearer realm="killrvideo", error="insufficient_user_authentication", error_description="log in again", max_age={max_age}"#
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
                body.insert("max_age".into(), json!(max_age));
            }
            ApiError::PreconditionFailed { etag, current } => {
                if let Ok(value) = HeaderValue::from_str(&etag) {
                    headers.insert(header::ETAG, value);
                }
                body.insert("current_etag".into(), json!(etag));
                body.insert("current".into(), current);
            }
            ApiError::Unavailable(_)
            | ApiError::NotReady(_)
            | ApiError::Overloaded
            | ApiError::Contended(_)
            | ApiError::TimedOut => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        problem_response(status, body, headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_of(response: &Response) -> Option<&ErrorReport> {
        response.extensions().get::<ErrorReport>()
    }

    #[test]
    fn a_store_error_is_answered_as_before_and_reported_by_its_kind() {
        let response = ApiError::from(StoreError::unavailable("no replicas")).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        let report = report_of(&response).expect("reported");
        assert_eq!(report.store_error, Some("unavailable"));
        assert!(
            matches!(&report.logged, Some((ReportLevel::Unavailable, cause)) if cause.contains("no replicas"))
        );

        let response = ApiError::from(StoreError::Conflict("email taken".into())).into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let report = report_of(&response).expect("counted");
        assert_eq!(
            (report.store_error, &report.logged),
            (Some("conflict"), &None)
        );

        let response = ApiError::from(StoreError::internal("bad row")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(matches!(
            &report_of(&response).expect("reported").logged,
            Some((ReportLevel::Fault, cause)) if cause.contains("bad row")
        ));
    }

    #[test]
    fn a_client_mistake_leaves_nothing_to_report() {
        let response = ApiError::BadRequest("no".into()).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(report_of(&response).is_none());
    }
}
