//! Typed payloads of the events services publish. The payload is the contract between the
//! producer and its consumers: add fields, never repurpose one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::EventPayload;

/// A user account was created (by registration, the bootstrap admin, or an operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub registered_at: DateTime<Utc>,
}

impl EventPayload for UserRegistered {
    const TYPE: &'static str = "user.registered";
    fn subject(&self) -> String {
        self.user_id.to_string()
    }
}
