//! RFC 9457 problem details: the one shape every error takes on the wire.
//!
//! Each service keeps its own error enum; what they share is an [`ErrorCode`] that fixes the
//! HTTP status (and, for gRPC, the status code) and a [`Problem`] body. Internal errors are
//! logged once, where they are turned into a response, and never shown to the client.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value};

/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What kind of failure happened, independent of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    PaymentRequired,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    Validation,
    TooManyRequests,
    Internal,
    BadGateway,
    Unavailable,
    Timeout,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::PaymentRequired => StatusCode::PAYMENT_REQUIRED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable, documented identifier of this kind of problem (the `type` member).
    pub fn type_uri(self) -> &'static str {
        match self {
            Self::BadRequest => "urn:emporium:problem:bad-request",
            Self::Unauthorized => "urn:emporium:problem:unauthorized",
            Self::PaymentRequired => "urn:emporium:problem:payment-required",
            Self::Forbidden => "urn:emporium:problem:forbidden",
            Self::NotFound => "urn:emporium:problem:not-found",
            Self::MethodNotAllowed => "urn:emporium:problem:method-not-allowed",
            Self::Conflict => "urn:emporium:problem:conflict",
            Self::PayloadTooLarge => "urn:emporium:problem:payload-too-large",
            Self::UnsupportedMediaType => "urn:emporium:problem:unsupported-media-type",
            Self::Validation => "urn:emporium:problem:validation",
            Self::TooManyRequests => "urn:emporium:problem:rate-limited",
            Self::Internal => "urn:emporium:problem:internal",
            Self::BadGateway => "urn:emporium:problem:bad-gateway",
            Self::Unavailable => "urn:emporium:problem:unavailable",
            Self::Timeout => "urn:emporium:problem:timeout",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::BadRequest => "Malformed request",
            Self::Unauthorized => "Authentication required",
            Self::PaymentRequired => "Payment declined",
            Self::Forbidden => "Not allowed",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Conflict => "Conflict",
            Self::PayloadTooLarge => "Request body too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::Validation => "Validation failed",
            Self::TooManyRequests => "Too many requests",
            Self::Internal => "Internal error",
            Self::BadGateway => "Bad gateway",
            Self::Unavailable => "Service unavailable",
            Self::Timeout => "Upstream timed out",
        }
    }
}

/// One invalid field of a request, reported in `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// An RFC 9457 problem document.
///
/// Boxed: it travels in the `Err` of almost every fallible call, which should stay small.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct Problem(#[schema(inline)] Box<Details>);

/// The members of a [`Problem`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Details {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Present for validation failures, one entry per invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Problem-specific members (for example the SKUs that are out of stock).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: Map<String, Value>,
    /// Seconds the client should wait before retrying; sent as `Retry-After`.
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// Extra response headers (for example `WWW-Authenticate`).
    #[serde(skip)]
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl std::ops::Deref for Problem {
    type Target = Details;
    fn deref(&self) -> &Details {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut Details {
        &mut self.0
    }
}

impl Problem {
    pub fn new(code: ErrorCode) -> Self {
        Self(Box::new(Details {
            type_uri: code.type_uri().to_owned(),
            title: code.title().to_owned(),
            status: code.status().as_u16(),
            detail: None,
            errors: Vec::new(),
            extensions: Map::new(),
            retry_after: None,
            headers: Vec::new(),
        }))
    }

    pub fn with_detail(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(code).detail(detail)
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", errors.len()),
        };
        let mut problem = Self::with_detail(ErrorCode::Validation, detail);
        problem.errors = errors;
        problem
    }

    /// The generic answer to a failure whose cause must stay on the server.
    pub fn internal() -> Self {
        Self::with_detail(ErrorCode::Internal, "an unexpected error occurred; it has been logged")
    }

    /// A dependency is down: the client may retry after `retry_after` seconds.
    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        Self::with_detail(ErrorCode::Unavailable, detail).retry_after(retry_after)
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn extension(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&*self.0).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        response
    }
}

/// Renders an error's cause chain on one line, for the single log entry an internal error gets.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_problem_json_with_retry_after() {
        let response = Problem::unavailable("database is down", 2).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["status"], 503);
        assert_eq!(json["detail"], "database is down");
        assert!(json.get("errors").is_none());
    }

    #[test]
    fn validation_lists_fields() {
        let problem = Problem::validation(vec![FieldError::new("email", "is not an email address")]);
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(json["status"], 422);
        assert_eq!(json["errors"][0]["field"], "email");
    }
}
