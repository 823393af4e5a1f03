//! Everything that can go wrong in the orders use cases, each with the shared code that says
//! what kind of failure it is (`http` turns that into a status and a problem document).

use platform::{ErrorCode, FieldError};

use crate::{domain::TransitionError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order not found")]
    NotFound,
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("the order changed meanwhile")]
    Concurrent,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("this Idempotency-Key was used with another request")]
    KeyReused,
    #[error("a request with this Idempotency-Key is still in progress")]
    KeyInProgress,
    #[error("another checkout of this cart is still running")]
    CartBusy,
    #[error("a service this depends on is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl OrderError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound => ErrorCode::NotFound,
            Self::Transition(_) | Self::Concurrent | Self::KeyInProgress | Self::CartBusy => ErrorCode::Conflict,
            Self::Validation(_) | Self::KeyReused => ErrorCode::Validation,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

pub fn internal(error: impl std::fmt::Display) -> OrderError {
    OrderError::Internal(error.to_string())
}

impl From<StoreError> for OrderError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => Self::Unavailable(format!("database: {cause}")),
            StoreError::Failed(cause) => Self::Internal(cause),
        }
    }
}
