//! The one error type of the HTTP API: every refusal the front answers, with
//! codejail-service's status codes and bodies (docs/compat.md). Messages of its fixed-text
//! errors are byte-exact; `{"error": ...}` for the API's own refusals, `{"detail": ...}`
//! for the HTTP-level ones (as Django REST framework answers them).

use std::time::Duration;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use codejail_client::pyjson::{Dict, Value};

/// `application/json`, exactly (upstream's callers compare the header).
pub const JSON: &str = "application/json";

/// Why a request was not run.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `enabled = false` in the config.
    #[error("Codejail service not enabled")]
    NotEnabled,
    /// The safety checks have not passed (yet, or since the broker came back), or the
    /// broker cannot be reached. The message is codejail-service's for the same case.
    #[error("Codejail service is not correctly configured")]
    NotReady,
    /// The form has no `payload` field.
    #[error("Missing 'payload' parameter in POST body")]
    MissingPayload,
    /// The payload is not JSON or breaks the schema.
    #[error(transparent)]
    Payload(#[from] crate::payload::PayloadError),
    /// A `python_path` entry other than `python_lib.zip`.
    #[error("Only allowed entry in 'python_path' is 'python_lib.zip'")]
    PythonPath,
    /// An uploaded file other than `python_lib.zip`.
    #[error("Only allowed name for uploaded file is 'python_lib.zip'")]
    FileName,
    /// `unsafely: true`.
    #[error("Refusing codejail execution with unsafely=true")]
    Unsafely,
    /// The broker stayed busy for the whole `queue_wait`, or the front's in-flight cap
    /// is reached.
    #[error("Codejail service is busy, try again later")]
    Busy {
        /// The `Retry-After` value.
        retry_after: Duration,
    },
    /// A method other than POST on code-exec.
    #[error("Method \"{0}\" not allowed.")]
    MethodNotAllowed(Method),
    /// A body that is neither urlencoded nor multipart form data.
    #[error("Unsupported media type \"{0}\" in request.")]
    UnsupportedMediaType(String),
    /// A form body that cannot be parsed.
    #[error("{0}")]
    MalformedBody(String),
    /// A body over the configured cap (declared, or as it is read).
    #[error("Request body too large: the limit is {0} bytes")]
    BodyTooLarge(usize),
    /// A multipart form with more parts of a kind than the front reads.
    #[error("Form parse error - too many {what}: the limit is {max}")]
    TooManyParts {
        /// `fields` or `files`.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// No such path.
    #[error("Not found.")]
    NotFound,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::NotEnabled | ApiError::NotReady => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::MissingPayload
            | ApiError::Payload(_)
            | ApiError::PythonPath
            | ApiError::FileName
            | ApiError::Unsafely
            | ApiError::MalformedBody(_)
            | ApiError::TooManyParts { .. } => StatusCode::BAD_REQUEST,
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// `error` for the API's refusals, `detail` for HTTP-level ones (DRF's key).
    fn key(&self) -> &'static str {
        match self {
            ApiError::MethodNotAllowed(_)
            | ApiError::UnsupportedMediaType(_)
            | ApiError::MalformedBody(_)
            | ApiError::TooManyParts { .. }
            | ApiError::BodyTooLarge(_)
            | ApiError::NotFound => "detail",
            _ => "error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Dict::new();
        body.insert(self.key(), Value::from(self.to_string()));
        let mut resp = json_response(self.status(), &Value::Dict(body));
        match &self {
            ApiError::Busy { retry_after } => {
                let secs = retry_after.as_secs().max(1).to_string();
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            ApiError::MethodNotAllowed(_) => {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
            }
            _ => {}
        }
        resp
    }
}

/// A response with a Python-dialect JSON body (`NaN` stays `NaN`, as codejail-service
/// with `STRICT_JSON: False`) and the content type exactly `application/json`.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON))],
        body.to_json(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_messages_are_exact() {
        assert_eq!(
            ApiError::NotEnabled.to_string(),
            "Codejail service not enabled"
        );
        assert_eq!(
            ApiError::NotReady.to_string(),
            "Codejail service is not correctly configured"
        );
        assert_eq!(
            ApiError::MissingPayload.to_string(),
            "Missing 'payload' parameter in POST body"
        );
        assert_eq!(
            ApiError::PythonPath.to_string(),
            "Only allowed entry in 'python_path' is 'python_lib.zip'"
        );
        assert_eq!(
            ApiError::FileName.to_string(),
            "Only allowed name for uploaded file is 'python_lib.zip'"
        );
        assert_eq!(
            ApiError::Unsafely.to_string(),
            "Refusing codejail execution with unsafely=true"
        );
        assert_eq!(
            ApiError::MethodNotAllowed(Method::GET).to_string(),
            "Method \"GET\" not allowed."
        );
        let r = ApiError::Busy {
            retry_after: Duration::from_secs(2),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(r.headers()[header::CONTENT_TYPE], JSON);
    }
}
