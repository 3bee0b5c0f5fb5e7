//! Errors as the API answers them: an HTTP status and an [`api::dvs::ErrorBody`].

use api::dvs::ErrorBody;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dvs_store::StoreError;

#[derive(Debug)]
pub struct ApiErr {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiErr {
    pub fn invalid(m: impl Into<String>) -> ApiErr {
        ApiErr {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            message: m.into(),
        }
    }
    pub fn not_found(m: impl Into<String>) -> ApiErr {
        ApiErr {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: m.into(),
        }
    }
    pub fn conflict(m: impl Into<String>) -> ApiErr {
        ApiErr {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: m.into(),
        }
    }
    pub fn unauthorized(m: impl Into<String>) -> ApiErr {
        ApiErr {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: m.into(),
        }
    }
    pub fn forbidden(m: impl Into<String>) -> ApiErr {
        ApiErr {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: m.into(),
        }
    }
    pub fn unavailable(m: impl Into<String>) -> ApiErr {
        ApiErr {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: m.into(),
        }
    }
    pub fn internal(m: impl Into<String>) -> ApiErr {
        ApiErr {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: m.into(),
        }
    }
}

impl From<StoreError> for ApiErr {
    fn from(e: StoreError) -> ApiErr {
        match e {
            StoreError::Unavailable { .. } => {
                ApiErr::unavailable(format!("the store is unavailable: {e}"))
            }
            StoreError::Conflict { .. } => ApiErr::conflict(e.to_string()),
            _ => ApiErr::internal(format!("store: {e}")),
        }
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            code: self.code.into(),
        };
        (self.status, axum::Json(body)).into_response()
    }
}
