//! One fresh database per test, on either SQL backend.

use std::{path::PathBuf, time::Duration};

use sqlx::{Connection, PgConnection};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The server tests create their PostgreSQL databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("EMPORIUM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for the life of this value.
#[derive(Debug)]
pub struct TestDatabase {
    pub backend: Backend,
    /// The URL a service connects with.
    pub url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Directory(PathBuf),
    PostgresDatabase { admin_url: String, name: String },
}

impl TestDatabase {
    /// A new empty database; `None` when the backend is unreachable and backends are not
    /// required (the reason is printed).
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite()),
            Backend::Postgres => Self::postgres().await,
        }
    }

    pub fn sqlite() -> Self {
        let dir = temp_dir("sqlite");
        let url = format!("sqlite://{}/test.db", dir.display());
        Self { backend: Backend::Sqlite, url, cleanup: Cleanup::Directory(dir) }
    }

    pub async fn postgres() -> Option<Self> {
        let admin_url = postgres_admin_url();
        let connect = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin_url)).await;
        let mut admin = match connect {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => {
                crate::skip_or_fail(&format!("PostgreSQL at {admin_url} is unreachable: {error}"));
                return None;
            }
            Err(_) => {
                crate::skip_or_fail(&format!("PostgreSQL at {admin_url} did not answer within 5 s"));
                return None;
            }
        };
        let name = format!("emporium_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("EMPORIUM_TEST_POSTGRES_URL must name a database"),
        };
        Some(Self { backend: Backend::Postgres, url, cleanup: Cleanup::PostgresDatabase { admin_url, name } })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Directory(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::PostgresDatabase { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop runs inside the test's runtime, which cannot be blocked on; a thread
                // with its own runtime drops the database (closing the service's connections).
                let dropped = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                    runtime.block_on(async {
                        let mut admin = PgConnection::connect(&admin_url).await.ok()?;
                        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                            .execute(&mut admin)
                            .await
                            .ok()?;
                        admin.close().await.ok()
                    })
                });
                let _ = dropped.join();
            }
        }
    }
}

/// A new, empty directory under the system temp dir.
pub fn temp_dir(purpose: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("emporium-{purpose}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Drops PostgreSQL databases by name (those a test had a program create), forcing off whoever is
/// still connected.
pub fn drop_postgres_databases(names: &[String]) {
    let (admin_url, names) = (postgres_admin_url(), names.to_vec());
    // A thread of its own: this may run inside a runtime, which cannot be blocked on.
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        runtime.block_on(async {
            let mut admin = PgConnection::connect(&admin_url).await.ok()?;
            for name in names {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut admin)
                    .await;
            }
            admin.close().await.ok()
        })
    });
    let _ = dropped.join();
}
