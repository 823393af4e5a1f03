//! What Emporium's tests share.
//!
//! Tests run against the real servers: each gets its own PostgreSQL database (created here,
//! dropped when the test ends) or its own SQLite file. When PostgreSQL is unreachable a test
//! skips with a printed reason, unless `EMPORIUM_REQUIRE_BACKENDS=1` (as in CI), where it fails.
#![forbid(unsafe_code)]

pub mod broker;
pub mod browser;
pub mod bulk;
pub mod client;
mod database;
pub mod oidc;
pub mod otlp;
pub mod providers;
mod redis;
pub mod smtp;
pub mod tls;

pub use browser::Browser;
pub use client::{TestClient, TestResponse};
pub use database::{Backend, TestDatabase, drop_postgres_databases, postgres_admin_url, temp_dir};
pub use redis::{redis_available, redis_delete_prefix, redis_url};

/// A free loopback port, for a server that must be told its address before it binds. It is
/// picked below Linux's ephemeral range (32768–60999), where servers on port 0 and outgoing
/// connections take theirs, so that none of those takes it meanwhile.
pub fn free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..100 {
        let port = rng.gen_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range")
}

/// Whether missing backends fail tests instead of skipping them.
pub fn backends_required() -> bool {
    std::env::var("EMPORIUM_REQUIRE_BACKENDS").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Whether `program` runs here and succeeds with `args`: how a test finds out that a tool `.ci/run`
/// installs is there.
pub async fn runs(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> bool {
    tokio::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success())
}

/// Reports that a test cannot run here: a skip, or (when backends are required) a failure.
pub fn skip_or_fail(reason: &str) {
    if backends_required() {
        panic!("EMPORIUM_REQUIRE_BACKENDS=1 but {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// Polls `condition` until it holds or `limit` passes; whether it held.
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    condition().await
}

/// Defines `sqlite` and `postgres` variants of an async test taking a [`TestDatabase`].
///
/// ```ignore
/// testkit::on_both_backends!(registers_a_user);
/// async fn registers_a_user(db: testkit::TestDatabase) { ... }
/// ```
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    if let Some(db) = $crate::TestDatabase::create($crate::Backend::Sqlite).await {
                        super::$test(db).await;
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(db) = $crate::TestDatabase::create($crate::Backend::Postgres).await {
                        super::$test(db).await;
                    }
                }
            }
        )+
    };
}
