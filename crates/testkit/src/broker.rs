//! The RabbitMQ server tests share.
//!
//! Tests give themselves a unique namespace (exchange and queue names) on the one broker, so they
//! run side by side. The one test that stops and restarts the broker takes the broker lock
//! exclusively; every other broker test holds it shared, so none of them sees the restart.

use std::{fs::File, time::Duration};

/// The broker tests use.
pub fn amqp_url() -> String {
    std::env::var("EMPORIUM_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A unique name prefix for one test's topology.
pub fn unique_namespace(test: &str) -> String {
    format!("test-{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Whether the broker accepts TCP connections; when not, the test skips (or fails when backends
/// are required).
pub async fn broker_available() -> bool {
    let url = amqp_url();
    let authority = url.split("://").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or("127.0.0.1:5672");
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let reachable = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(host_port))
        .await
        .is_ok_and(|r| r.is_ok());
    if !reachable {
        crate::skip_or_fail(&format!("RabbitMQ at {host_port} is unreachable"));
    }
    reachable
}

/// Held while a test uses the broker.
pub struct BrokerLock(#[allow(dead_code)] File);

fn lock_file() -> File {
    let path = std::env::temp_dir().join("emporium-test-broker.lock");
    File::options().create(true).truncate(false).write(true).open(path).expect("open the broker lock file")
}

/// Shared use of the broker: many tests at once.
pub async fn broker_shared() -> BrokerLock {
    tokio::task::spawn_blocking(|| {
        let file = lock_file();
        file.lock_shared().expect("lock the broker (shared)");
        BrokerLock(file)
    })
    .await
    .expect("lock task")
}

/// Exclusive use of the broker, for a test that stops it.
pub async fn broker_exclusive() -> BrokerLock {
    tokio::task::spawn_blocking(|| {
        let file = lock_file();
        file.lock().expect("lock the broker (exclusive)");
        BrokerLock(file)
    })
    .await
    .expect("lock task")
}
