//! API errors with RabbitMQ's JSON body (`{"error": ..., "reason": ...}`) and status codes.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use warren_server::direct::DirectError;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) reason: String,
}

impl ApiError {
    pub(crate) fn not_found() -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "Object Not Found",
            reason: "Not Found".into(),
        }
    }

    /// RabbitMQ's 404 for a change in a vhost that does not exist.
    pub(crate) fn vhost_not_found() -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "not_found",
            reason: "vhost_not_found".into(),
        }
    }

    pub(crate) fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request",
            reason: reason.into(),
        }
    }

    /// A 400 with RabbitMQ's own `error` for the case (`invalid_pagination_parameters`, ...).
    pub(crate) fn bad_request_as(error: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error,
            reason: reason.into(),
        }
    }

    pub(crate) fn not_authorised(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorised",
            reason: reason.into(),
        }
    }

    pub(crate) fn unavailable(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "unavailable",
            reason: reason.into(),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> ApiError {
        match s.code() {
            tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
                ApiError::bad_request(s.message())
            }
            _ => ApiError::unavailable(s.message()),
        }
    }
}

impl From<DirectError> for ApiError {
    fn from(e: DirectError) -> ApiError {
        match e {
            DirectError::Refused(amqp) => match amqp.code {
                404 => ApiError {
                    status: StatusCode::NOT_FOUND,
                    error: "not_found",
                    reason: amqp.text,
                },
                403 | 530 => ApiError::not_authorised(amqp.text),
                _ => ApiError::bad_request(amqp.text),
            },
            other => ApiError::unavailable(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.error, "reason": self.reason});
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        r
    }
}
