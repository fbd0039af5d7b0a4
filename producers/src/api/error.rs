//! The API's error responses: always JSON, `{"error", "message", "fields"}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::service::CommandError;

/// One invalid field, by its JSON path (`lines[2].quantity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path of the field.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// HTTP status (not serialized).
    #[serde(skip)]
    #[schema(ignore)]
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub error: &'static str,
    /// For humans.
    pub message: String,
    /// Field errors, for 400s.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

impl ApiError {
    /// An error without field details.
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// A 400 for invalid fields.
    pub fn fields(fields: Vec<FieldError>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_fields",
            message: "one or more fields are invalid".into(),
            fields,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = matches!(self.status, StatusCode::SERVICE_UNAVAILABLE);
        let mut response = (self.status, axum::Json(&self)).into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let message = e.to_string();
        match e {
            CommandError::Rejected(rule) if rule.is_not_found() => {
                ApiError::new(StatusCode::NOT_FOUND, rule.code(), message)
            }
            CommandError::Rejected(rule) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, rule.code(), message),
            CommandError::IdempotencyMismatch => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", message)
            }
            CommandError::Conflict => ApiError::new(StatusCode::CONFLICT, "version_conflict", message),
            CommandError::Saturated => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "saturated", message),
            CommandError::Unavailable(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
        }
    }
}
