//! The REST API's one error type. Every failure a client can see has an HTTP status, a stable
//! machine-readable `code` and, where one field is at fault, its name:
//! `{"error": {"code": "VALIDATION_FAILED", "message": "...", "field": "name"}}`.
//!
//! Internal errors are logged once here, with their cause, and answered with a generic
//! message: their details (SQL, paths) never reach the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Extra machine-readable details (e.g. the current upload offset).
    pub details: Option<serde_json::Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, details: None }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("{what} not found"))
    }

    /// 422: a value was understood but is not acceptable.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED", message).with_field(field)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Logs the cause and answers 500 without details.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error; the server log has the details")
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `VALIDATION_FAILED`, `NOT_FOUND`, `VERSION_CONFLICT`.
    pub code: String,
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
                details: self.details,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error() {
            if db.is_unique_violation() {
                return ApiError::conflict("ALREADY_EXISTS", "an item with that name or key already exists");
            }
            if db.is_foreign_key_violation() {
                return ApiError::conflict("REFERENCED", "a referenced item does not exist or is still in use");
            }
            // PostgreSQL refuses NUL in text (SQLite stores it): a value no item can have.
            if db.code().as_deref() == Some("22021") {
                return ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "VALIDATION_FAILED",
                    "a value contains a NUL character",
                );
            }
        }
        if matches!(e, sqlx::Error::PoolTimedOut) {
            return ApiError::unavailable("the database is busy; retry shortly");
        }
        // The database is down or the connection broke: transient, not a server fault.
        if matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed)
        {
            tracing::warn!(error = %e, "database unavailable");
            return ApiError::unavailable("the database is unavailable; retry shortly");
        }
        ApiError::internal(e)
    }
}

impl From<crate::content::ContentError> for ApiError {
    fn from(e: crate::content::ContentError) -> Self {
        match e {
            crate::content::ContentError::Body(m) => {
                ApiError::bad_request("BODY_READ_FAILED", format!("request body could not be read: {m}"))
            }
            crate::content::ContentError::TooLarge => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "the content is larger than allowed")
            }
            crate::content::ContentError::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                tracing::error!(error = %e, "the content store is full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "STORAGE_FULL",
                    "the content store is full; nothing was saved",
                )
            }
            other => ApiError::internal(other),
        }
    }
}
