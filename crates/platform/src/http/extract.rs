//! Request extractors whose rejections are problem+json, with validation built in.
//!
//! A handler never sees an unvalidated body: [`ApiJson<T>`] reads the bytes (413 past the
//! limit), checks the media type (415), parses JSON (400 for malformed JSON or wrong types,
//! 422 for missing fields) and then runs `T`'s own [`Input::parse`] (422 with field errors).

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use bytes::Bytes;
use http::{header, request::Parts};
use serde::de::DeserializeOwned;

use super::problem::{ErrorCode, FieldError, Problem};

/// A request body type that is parsed from a raw, deserialised form into validated domain values.
pub trait Input: Sized {
    /// What the client sends, as JSON.
    type Raw: DeserializeOwned;
    /// Turns the raw form into domain values, reporting every invalid field at once.
    fn parse(raw: Self::Raw) -> Result<Self, Vec<FieldError>>;
}

/// Collects field errors while parsing an [`Input`].
#[derive(Debug, Default)]
pub struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    /// Keeps the value, or records why `field` is invalid.
    pub fn check<T, E: std::fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.errors.push(FieldError::new(field, error.to_string()));
                None
            }
        }
    }

    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// How many problems were recorded; comparing it before and after tells whether a part
    /// of the input had any.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }
}

/// A JSON request body, parsed and validated into `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: Input,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Problem::with_detail(
                ErrorCode::UnsupportedMediaType,
                "expected a body with Content-Type: application/json",
            ));
        }
        let bytes = read_limited(req.into_body(), super::DEFAULT_BODY_LIMIT).await?;
        let raw = parse_json::<T::Raw>(&bytes)?;
        T::parse(raw).map(ApiJson).map_err(Problem::validation)
    }
}

/// Reads a body of at most `limit` bytes. Past the limit the rest is read and thrown away (up to
/// [`drain`]'s bounds) before the 413 goes out: closing a connection with unread data makes the
/// kernel reset it, and a client still uploading would then see a broken pipe, not the answer.
pub async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Bytes, Problem> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|_| Problem::with_detail(ErrorCode::BadRequest, "the request body could not be read"))?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > limit {
                drain(body).await;
                return Err(too_large());
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(collected))
}

pub fn too_large() -> Problem {
    Problem::with_detail(ErrorCode::PayloadTooLarge, "the request body exceeds the size limit")
}

/// Reads and discards what is left of a refused body, for at most 8 MiB or 2 seconds: enough
/// for an honest client to finish sending and read the answer, too little to be a resource.
pub async fn drain(body: axum::body::Body) {
    use http_body_util::BodyExt;
    const MAX_BYTES: usize = 8 * 1024 * 1024;
    let mut body = body;
    let mut seen = 0usize;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > MAX_BYTES {
                break;
            }
        }
    })
    .await;
}

fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Deserialises JSON, telling malformed input (400) from missing fields (422).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        if inner.is_data() {
            if let Some(field) = missing_field(&message) {
                let field = if path == "." { field.to_owned() } else { format!("{path}.{field}") };
                return Problem::validation(vec![FieldError::new(field, "is required")]);
            }
            let detail = if path == "." { message } else { format!("{path}: {message}") };
            return Problem::with_detail(ErrorCode::BadRequest, strip_position(&detail));
        }
        Problem::with_detail(ErrorCode::BadRequest, format!("malformed JSON: {}", strip_position(&message)))
    })?;
    deserializer.end().map_err(|error| {
        Problem::with_detail(ErrorCode::BadRequest, format!("malformed JSON: {}", strip_position(&error.to_string())))
    })?;
    Ok(value)
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// serde_json appends "at line 1 column 7"; useful to a person, noise in a stable API message.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// Integers as JSON Schema counts them: `12`, `12.0` and `1.2e1` are all the integer 12, and a
/// client that keeps numbers as floats (a fuzzer among them) sends the latter. serde's `i64`
/// takes only the first, so these fields read any JSON number and keep it when it is whole.
pub mod whole {
    use serde::{Deserialize, Deserializer, de::Error};
    use serde_json::Number;

    fn whole<E: Error>(number: &Number) -> Result<i64, E> {
        let exact = |f: &f64| f.fract() == 0.0 && *f >= i64::MIN as f64 && *f < i64::MAX as f64;
        number
            .as_i64()
            .or_else(|| number.as_f64().filter(exact).map(|f| f as i64))
            .ok_or_else(|| E::custom(format!("invalid value: {number}, expected a whole number")))
    }

    pub fn required<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        whole(&Number::deserialize(deserializer)?)
    }

    pub fn optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
        Option::<Number>::deserialize(deserializer)?.as_ref().map(whole::<D::Error>).transpose()
    }
}

/// Query parameters; a rejection is a 400 problem.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state).await.map(|Query(value)| ApiQuery(value)).map_err(|rejection| {
            Problem::with_detail(ErrorCode::BadRequest, format!("invalid query string: {}", rejection.body_text()))
        })
    }
}

/// Path parameters. A value that does not parse names nothing that could exist, so it is a 404.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|_| Problem::with_detail(ErrorCode::NotFound, "no such resource"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Login {
        email: String,
        attempts: u32,
    }

    #[test]
    fn malformed_json_is_400() {
        let problem = parse_json::<Login>(b"{\"email\": ").unwrap_err();
        assert_eq!(problem.status, 400);
        assert!(problem.detail.as_deref().unwrap().starts_with("malformed JSON"));
    }

    #[test]
    fn trailing_garbage_is_400() {
        let problem = parse_json::<Login>(br#"{"email":"a","attempts":1} x"#).unwrap_err();
        assert_eq!(problem.status, 400);
    }

    #[test]
    fn wrong_type_is_400_naming_the_field() {
        let problem = parse_json::<Login>(br#"{"email": 5, "attempts": 1}"#).unwrap_err();
        assert_eq!(problem.status, 400);
        assert!(problem.detail.as_deref().unwrap().starts_with("email: invalid type"));
    }

    #[test]
    fn missing_field_is_422_with_field_error() {
        let problem = parse_json::<Login>(br#"{"attempts": 1}"#).unwrap_err();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors, vec![FieldError::new("email", "is required")]);
    }

    #[test]
    fn json_media_types() {
        let mut headers = http::HeaderMap::new();
        assert!(!is_json(&headers));
        headers.insert(header::CONTENT_TYPE, "application/json; charset=utf-8".parse().unwrap());
        assert!(is_json(&headers));
        headers.insert(header::CONTENT_TYPE, "application/merge-patch+json".parse().unwrap());
        assert!(is_json(&headers));
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!is_json(&headers));
    }
}
