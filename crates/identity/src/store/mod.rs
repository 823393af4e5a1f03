//! Identity's storage: one implementation over both SQL backends.
//!
//! Methods that must run inside a caller's transaction take a [`Tx`]; the rest use the pool.
//! SQL is shared between PostgreSQL and SQLite except where noted.

mod keys;
mod links;
mod secrets;
mod sessions;
mod social;
mod throttle;
mod users;

use platform::db::{ConnectError, Db};
use sqlx::migrate::Migrator;

pub use keys::StoredKey;
pub use links::NewLinkRequest;
pub use sessions::RefreshOutcome;
pub use social::{IdentityRow, StateRow, Unlink};
pub use users::NewUser;

static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Connects and brings the schema (identity's tables and the outbox) up to date.
    pub async fn open(url: &str, pool: &platform::db::PoolConfig) -> Result<Self, ConnectError> {
        let db = events::open_database(url, pool, &POSTGRES, &SQLITE).await?;
        db.observe_as(crate::SERVICE);
        Ok(Self { db })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}
