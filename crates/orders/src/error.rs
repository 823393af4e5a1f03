//! Everything that can go wrong in the orders service, and how each case is answered.

use axum::response::{IntoResponse, Response};
use platform::{ErrorCode, FieldError, Problem};

use crate::domain::Status;

/// A line that could not be reserved at checkout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Shortage {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
    /// `out_of_stock`, `unknown_sku` or `not_for_sale`.
    pub reason: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order not found")]
    NotFound,
    #[error("cart not found")]
    CartNotFound,
    #[error("the cart is empty")]
    EmptyCart,
    #[error("not enough stock")]
    OutOfStock(Vec<Shortage>),
    #[error("an order that is {} cannot become {}", from.as_str(), to.as_str())]
    Transition { from: Status, to: Status },
    #[error("the order changed meanwhile")]
    Concurrent,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("the Idempotency-Key header is required")]
    MissingKey,
    #[error("this Idempotency-Key was used with another request")]
    KeyReused,
    #[error("a request with this Idempotency-Key is still in progress")]
    KeyInProgress,
    #[error("a service this depends on is unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl OrderError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound | Self::CartNotFound => ErrorCode::NotFound,
            Self::OutOfStock(_) | Self::Transition { .. } | Self::Concurrent | Self::KeyInProgress => {
                ErrorCode::Conflict
            }
            Self::EmptyCart | Self::Validation(_) | Self::KeyReused => ErrorCode::Validation,
            Self::MissingKey => ErrorCode::BadRequest,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    fn log(&self) {
        match self {
            Self::Unavailable(cause) => tracing::warn!(error = %cause, "dependency unavailable"),
            Self::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            _ => {}
        }
    }
}

pub fn internal(error: impl std::fmt::Display) -> OrderError {
    OrderError::Internal(error.to_string())
}

impl From<sqlx::Error> for OrderError {
    fn from(error: sqlx::Error) -> Self {
        if platform::db::is_unavailable(&error) {
            Self::Unavailable(format!("database: {error}"))
        } else {
            Self::Internal(platform::http::problem::error_chain(&error))
        }
    }
}

impl From<OrderError> for Problem {
    fn from(error: OrderError) -> Self {
        error.log();
        let code = error.code();
        match error {
            OrderError::NotFound => Problem::with_detail(code, "no such order"),
            OrderError::CartNotFound => Problem::with_detail(code, "no such cart"),
            OrderError::EmptyCart => Problem::with_detail(code, "the cart is empty: there is nothing to order"),
            OrderError::OutOfStock(shortages) => {
                let skus: Vec<&str> = shortages.iter().map(|s| s.sku.as_str()).collect();
                Problem::with_detail(code, format!("not enough stock for {}", skus.join(", ")))
                    .extension("shortages", serde_json::to_value(&shortages).unwrap_or_default())
            }
            OrderError::Transition { from, to } => {
                Problem::with_detail(code, format!("an order that is {} cannot become {}", from.as_str(), to.as_str()))
                    .extension("order_status", from.as_str())
            }
            OrderError::Concurrent => {
                Problem::with_detail(code, "the order was changed by another request; read it again")
            }
            OrderError::Validation(errors) => Problem::validation(errors),
            OrderError::MissingKey => {
                Problem::with_detail(code, "an Idempotency-Key header is required for requests that move money")
            }
            OrderError::KeyReused => {
                Problem::with_detail(code, "this Idempotency-Key was already used with a different request body")
            }
            OrderError::KeyInProgress => {
                Problem::with_detail(code, "a request with this Idempotency-Key is still being processed")
                    .retry_after(1)
            }
            OrderError::Unavailable(_) => Problem::unavailable("orders cannot be processed right now", 2),
            OrderError::Internal(_) => Problem::internal(),
        }
    }
}

impl IntoResponse for OrderError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}
