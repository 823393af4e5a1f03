//! Everything that can go wrong in the catalog, and how each case is answered over HTTP and gRPC.

use axum::response::{IntoResponse, Response};
use platform::{ErrorCode, FieldError, Problem, http::problem::error_chain};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("product not found")]
    ProductNotFound,
    #[error("sku not found")]
    SkuNotFound,
    #[error("slug {0:?} is taken")]
    SlugTaken(String),
    #[error("sku {0:?} is taken")]
    SkuTaken(String),
    #[error("stock on hand cannot go below the {reserved} reserved")]
    BelowReserved { reserved: i64 },
    /// A well-formed request that what the catalog holds rules out: a parent category that does
    /// not exist, stock sent for a SKU that exists already, a SKU twice in one request. No
    /// schema can foresee it, so it is a conflict (409), not a validation failure (422).
    #[error("{field}: {message}")]
    Contradicts { field: String, message: &'static str },
    #[error("this order id already holds a reservation for other lines")]
    ReservationMismatch,
    #[error("no reservation for this order")]
    ReservationNotFound,
    #[error("the reservation is {0} and cannot be committed")]
    ReservationClosed(&'static str),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl CatalogError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::ProductNotFound | Self::SkuNotFound | Self::ReservationNotFound => ErrorCode::NotFound,
            Self::SlugTaken(_)
            | Self::SkuTaken(_)
            | Self::BelowReserved { .. }
            | Self::Contradicts { .. }
            | Self::ReservationMismatch
            | Self::ReservationClosed(_) => ErrorCode::Conflict,
            Self::Validation(_) => ErrorCode::Validation,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn contradicts(field: impl Into<String>, message: &'static str) -> Self {
        Self::Contradicts { field: field.into(), message }
    }

    /// Logs what the client will not see, once, where the error leaves the service.
    fn log(&self) {
        match self {
            Self::Unavailable(cause) => tracing::warn!(error = %error_chain(cause), "database unavailable"),
            Self::Internal(cause) => tracing::error!(error = %error_chain(cause.as_ref()), "internal error"),
            _ => {}
        }
    }
}

impl From<sqlx::Error> for CatalogError {
    fn from(error: sqlx::Error) -> Self {
        if platform::db::is_unavailable(&error) { Self::Unavailable(error) } else { Self::internal(error) }
    }
}

impl From<CatalogError> for Problem {
    fn from(error: CatalogError) -> Self {
        error.log();
        let code = error.code();
        match error {
            CatalogError::ProductNotFound => Problem::with_detail(code, "no such product"),
            CatalogError::SkuNotFound => Problem::with_detail(code, "no such SKU"),
            CatalogError::SlugTaken(slug) => {
                Problem::with_detail(code, format!("another product already has the slug {slug:?}"))
                    .extension("slug", slug)
            }
            CatalogError::SkuTaken(sku) => {
                Problem::with_detail(code, format!("the SKU {sku:?} already exists")).extension("sku", sku)
            }
            CatalogError::BelowReserved { reserved } => Problem::with_detail(
                code,
                format!("{reserved} units are reserved for orders; stock on hand cannot be set below that"),
            )
            .extension("reserved", reserved),
            CatalogError::Contradicts { field, message } => {
                Problem::with_detail(code, format!("{field}: {message}")).extension("field", field)
            }
            CatalogError::Validation(errors) => Problem::validation(errors),
            CatalogError::Unavailable(_) => Problem::unavailable("the catalog database is unavailable", 2),
            CatalogError::Internal(_) => Problem::internal(),
            other => Problem::with_detail(code, other.to_string()),
        }
    }
}

impl IntoResponse for CatalogError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

impl From<CatalogError> for tonic::Status {
    fn from(error: CatalogError) -> Self {
        error.log();
        let message = match &error {
            CatalogError::Unavailable(_) | CatalogError::Internal(_) => error.code().title().to_owned(),
            CatalogError::Validation(errors) => {
                errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
            }
            other => other.to_string(),
        };
        let code = match &error {
            // A reservation that exists in another state is a precondition the caller broke,
            // not a conflict worth retrying.
            CatalogError::ReservationMismatch | CatalogError::ReservationClosed(_) => tonic::Code::FailedPrecondition,
            other => platform::grpc::code(other.code()),
        };
        tonic::Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL restarting ends every session with an error of its own (`57P01` on a fast
    /// shutdown): the request is answered 503, as for a database that cannot be reached.
    #[tokio::test]
    async fn a_session_the_server_ended_is_unavailable() {
        let Some(database) = testkit::TestDatabase::create(testkit::Backend::Postgres).await else { return };
        let db = platform::db::Db::connect(&database.url, &Default::default()).await.unwrap();
        let mut tx = db.begin().await.unwrap();
        let platform::db::TxConn::Postgres(pg) = tx.conn() else { unreachable!() };
        let error = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())").execute(&mut **pg).await.unwrap_err();
        assert!(matches!(CatalogError::from(error), CatalogError::Unavailable(_)));
    }
}
