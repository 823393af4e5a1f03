//! The `users` table.

use chrono::{DateTime, Utc};
use platform::{
    db::{Backend, Tx},
    with_db, with_tx,
};
use sqlx::types::Json;
use uuid::Uuid;

use super::Store;
use crate::domain::{RoleSet, User};

/// A user row, with the credential that never leaves this crate.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    pub password_hash: Option<String>,
    pub roles: Json<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl UserRecord {
    pub fn into_user(self) -> User {
        User {
            id: self.id,
            roles: RoleSet::from_stored(&self.roles.0),
            email: self.email,
            email_verified: self.email_verified,
            name: self.name,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

pub struct NewUser<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub email_normalized: &'a str,
    pub email_verified: bool,
    pub name: &'a str,
    pub password_hash: Option<&'a str>,
    pub roles: &'a RoleSet,
    pub now: DateTime<Utc>,
}

const COLUMNS: &str = "id, email, email_verified, name, password_hash, roles, created_at, updated_at";

impl Store {
    /// Inserts a user; a duplicate email is a unique violation the caller maps to 409.
    pub async fn insert_user(&self, tx: &mut Tx, user: &NewUser<'_>) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| {
            sqlx::query(
            "INSERT INTO users (id, email, email_normalized, name, password_hash, roles, created_at, updated_at, email_verified)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)"
        )
        .bind(user.id)
        .bind(user.email)
        .bind(user.email_normalized)
        .bind(user.name)
        .bind(user.password_hash)
        .bind(Json(user.roles.names()))
        .bind(user.now)
        .bind(user.email_verified)
        .execute(conn)
        .await
        .map(|_| ())
        })
    }

    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRecord>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE id = $1"));
        with_db!(&self.db, |pool| sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
    }

    pub async fn user_by_email(&self, normalized: &str) -> Result<Option<UserRecord>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE email_normalized = $1"));
        with_db!(&self.db, |pool| sqlx::query_as(sql).bind(normalized).fetch_optional(pool).await)
    }

    /// Changes the name and/or password hash; `None` when the user does not exist.
    pub async fn update_user(
        &self,
        tx: &mut Tx,
        id: Uuid,
        name: Option<&str>,
        password_hash: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<UserRecord>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE users SET name = COALESCE($2, name), password_hash = COALESCE($3, password_hash), updated_at = $4
             WHERE id = $1 RETURNING {COLUMNS}"
        ));
        with_tx!(tx, |conn| sqlx::query_as(sql)
            .bind(id)
            .bind(name)
            .bind(password_hash)
            .bind(now)
            .fetch_optional(conn)
            .await)
    }

    /// Replaces a hash made with old parameters, unless the password changed meanwhile.
    pub async fn upgrade_password_hash(&self, id: Uuid, old: &str, new: &str) -> Result<(), sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query(
            "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2"
        )
        .bind(id)
        .bind(old)
        .bind(new)
        .execute(pool)
        .await
        .map(|_| ()))
    }

    /// Newest first: `limit` rows after the cursor id (UUIDv7 ids sort by creation time).
    pub async fn list_users(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<UserRecord>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM users WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
        ));
        with_db!(&self.db, |pool| sqlx::query_as(sql).bind(after).bind(i64::from(limit)).fetch_all(pool).await)
    }

    /// Sets a user's roles; `None` when the user does not exist.
    pub async fn set_roles(
        &self,
        tx: &mut Tx,
        id: Uuid,
        roles: &RoleSet,
        now: DateTime<Utc>,
    ) -> Result<Option<UserRecord>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE users SET roles = $2, updated_at = $3 WHERE id = $1 RETURNING {COLUMNS}"
        ));
        with_tx!(tx, |conn| sqlx::query_as(sql).bind(id).bind(Json(roles.names())).bind(now).fetch_optional(conn).await)
    }

    /// Serialises role changes, so two admins demoting each other cannot both succeed and leave
    /// the shop without one. SQLite's write transactions are already serial.
    pub async fn lock_roles(&self, tx: &mut Tx) -> Result<(), sqlx::Error> {
        if tx.backend() == Backend::Postgres {
            with_tx!(tx, |conn| sqlx::query("SELECT pg_advisory_xact_lock(7253001)").execute(conn).await.map(|_| ()))?;
        }
        Ok(())
    }

    /// The number of users holding the admin role.
    pub async fn count_admins(&self, tx: &mut Tx) -> Result<i64, sqlx::Error> {
        // JSON containment is spelled differently by the two dialects.
        match tx.backend() {
            Backend::Postgres => with_tx!(tx, |conn| sqlx::query_scalar(
                "SELECT COUNT(*) FROM users WHERE roles @> '[\"admin\"]'::jsonb"
            )
            .fetch_one(conn)
            .await),
            Backend::Sqlite => {
                with_tx!(tx, |conn| {
                    sqlx::query_scalar(
                "SELECT COUNT(*) FROM users WHERE EXISTS (SELECT 1 FROM json_each(users.roles) WHERE value = 'admin')"
            )
            .fetch_one(conn)
            .await
                })
            }
        }
    }
}
