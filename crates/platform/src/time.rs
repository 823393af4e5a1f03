//! Timestamps as the services store and return them.

use chrono::{DateTime, SubsecRound, Utc};

/// The current time at microsecond precision: what PostgreSQL keeps, so a value reads back
/// equal to what was written on either SQL backend.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
