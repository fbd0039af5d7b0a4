//! Reading a JSON command body: content type, size, syntax and types, each a clear 4xx.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::{ApiError, FieldError};

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest a body may take to arrive. A command body is at most 64 KiB, which any
/// client sends in well under a second; a body trickled in byte by byte (slowloris)
/// would otherwise hold a connection and a task for as long as the client likes.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A parsed JSON body, plus its raw bytes (hashed for idempotency).
#[derive(Debug)]
pub struct JsonBody<T> {
    /// The value.
    pub value: T,
    /// The bytes as received.
    pub raw: Bytes,
}

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the command as Content-Type: application/json",
            ));
        }
        let arriving = tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(req, state));
        let raw = arriving.await.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
            )
        })?;
        let raw = raw.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the body is over {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", r.body_text())
            }
        })?;
        let mut de = serde_json::Deserializer::from_slice(&raw);
        let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", inner.to_string())
            } else {
                let path = if path == "." { String::new() } else { path };
                ApiError::fields(vec![FieldError {
                    path,
                    message: inner.to_string(),
                }])
            }
        })?;
        de.end()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()))?;
        Ok(JsonBody { value, raw })
    }
}
