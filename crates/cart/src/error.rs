//! Everything that can go wrong in the cart service, and how each case is answered.

use axum::response::{IntoResponse, Response};
use platform::{ErrorCode, FieldError, Problem};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CartError {
    #[error("cart not found")]
    CartNotFound,
    #[error("no such product for sale")]
    SkuNotFound(String),
    #[error("not enough stock")]
    OutOfStock { sku: String, available: i64, in_cart: i64 },
    #[error("the cart is priced in {0}")]
    OtherCurrency(String),
    /// A new line for a cart that holds `MAX_LINES` already: a conflict with the cart's state,
    /// like stock, not a malformed request (the same body is fine for another cart).
    #[error("the cart holds {0} different products already")]
    CartFull(usize),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("the catalog is unavailable")]
    CatalogUnavailable(String),
    #[error("the cart store is unavailable")]
    StoreUnavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl CartError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::CartNotFound | Self::SkuNotFound(_) => ErrorCode::NotFound,
            Self::OutOfStock { .. } | Self::OtherCurrency(_) | Self::CartFull(_) => ErrorCode::Conflict,
            Self::Validation(_) => ErrorCode::Validation,
            Self::CatalogUnavailable(_) | Self::StoreUnavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    fn log(&self) {
        match self {
            Self::CatalogUnavailable(cause) => tracing::warn!(error = %cause, "catalog unavailable"),
            Self::StoreUnavailable(cause) => tracing::warn!(error = %cause, "cart store unavailable"),
            Self::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            _ => {}
        }
    }
}

impl From<StoreError> for CartError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => Self::StoreUnavailable(cause),
            StoreError::Broken(cause) => Self::Internal(cause),
        }
    }
}

impl From<CartError> for Problem {
    fn from(error: CartError) -> Self {
        error.log();
        let code = error.code();
        match error {
            CartError::CartNotFound => Problem::with_detail(code, "no such cart"),
            CartError::SkuNotFound(sku) => {
                Problem::with_detail(code, format!("no product for sale has the SKU {sku:?}")).extension("sku", sku)
            }
            CartError::OutOfStock { sku, available, in_cart } => Problem::with_detail(
                code,
                format!("only {available} of {sku} available ({in_cart} already in the cart)"),
            )
            .extension("sku", sku)
            .extension("available", available)
            .extension("in_cart", in_cart),
            CartError::OtherCurrency(currency) => {
                Problem::with_detail(code, format!("this cart is priced in {currency}; one cart holds one currency"))
            }
            CartError::CartFull(lines) => {
                Problem::with_detail(code, format!("a cart holds at most {lines} different products"))
            }
            CartError::Validation(errors) => Problem::validation(errors),
            CartError::CatalogUnavailable(_) => Problem::unavailable("prices and stock cannot be checked right now", 2),
            CartError::StoreUnavailable(_) => Problem::unavailable("carts are unavailable right now", 2),
            CartError::Internal(_) => Problem::internal(),
        }
    }
}

impl IntoResponse for CartError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

impl From<CartError> for tonic::Status {
    fn from(error: CartError) -> Self {
        let code = platform::grpc::code(error.code());
        let message = match &error {
            CartError::Internal(_) | CartError::StoreUnavailable(_) | CartError::CatalogUnavailable(_) => {
                error.code().title().to_owned()
            }
            other => other.to_string(),
        };
        error.log();
        tonic::Status::new(code, message)
    }
}

pub fn internal(error: impl std::fmt::Display) -> CartError {
    CartError::Internal(error.to_string())
}
