//! The catalog's storage: one implementation over both SQL backends.
//!
//! Methods that take part in a caller's transaction take a [`Tx`]; reads use the pool. SQL is
//! shared between PostgreSQL and SQLite; where a list of values is bound, a `QueryBuilder`
//! spells out one placeholder per value, which both dialects accept.

mod categories;
mod inventory;
mod products;

use platform::db::{ConnectError, Db};
use sqlx::migrate::Migrator;

pub use inventory::{ReservationState, StockChange, VariantInfo};
pub use products::{NewProductRow, NewVariantRow, ProductChanges};

static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Most values bound in one `IN (…)` list; SQLite allows 32,766 variables per statement.
pub const MAX_IN_LIST: usize = 1000;

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Connects and brings the schema (the catalog's tables and the outbox) up to date.
    pub async fn open(url: &str, pool: &platform::db::PoolConfig) -> Result<Self, ConnectError> {
        let db = events::open_database(url, pool, &POSTGRES, &SQLITE).await?;
        db.observe_as(crate::SERVICE);
        Ok(Self { db })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}
