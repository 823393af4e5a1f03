//! The RabbitMQ server tests share.
//!
//! Each test gets a virtual host of its own ([`TestBroker`]), deleted when the test ends, so tests
//! run side by side and whatever a test declared (queues of consumers it did not know it had
//! included) goes with it: queues left behind would pile up on the broker run after run. The one
//! test that stops and restarts the broker takes the broker lock exclusively; every other broker
//! test holds it shared, so none of them sees the restart.

use std::{
    fs::File,
    process::Command,
    sync::Once,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// The broker tests use.
pub fn amqp_url() -> String {
    std::env::var("EMPORIUM_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Whether the broker accepts TCP connections; when not, the test skips (or fails when backends
/// are required).
async fn broker_available() -> bool {
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
struct BrokerLock(#[allow(dead_code)] File);

fn lock_file() -> File {
    let path = std::env::temp_dir().join("emporium-test-broker.lock");
    File::options().create(true).truncate(false).write(true).open(path).expect("open the broker lock file")
}

/// Shared use of the broker: many tests at once.
async fn broker_shared() -> BrokerLock {
    tokio::task::spawn_blocking(|| {
        let file = lock_file();
        file.lock_shared().expect("lock the broker (shared)");
        BrokerLock(file)
    })
    .await
    .expect("lock task")
}

/// Exclusive use of the broker, for a test that stops it.
async fn broker_exclusive() -> BrokerLock {
    tokio::task::spawn_blocking(|| {
        let file = lock_file();
        file.lock().expect("lock the broker (exclusive)");
        BrokerLock(file)
    })
    .await
    .expect("lock task")
}

/// Test virtual hosts are named `emporium-test-{unix seconds}-{test}-{random}`.
const VHOST_PREFIX: &str = "emporium-test-";

/// A test's own virtual host on the broker, with the broker lock held; dropping it deletes the
/// virtual host and everything in it.
pub struct TestBroker {
    /// The AMQP URL of the test's virtual host.
    pub url: String,
    /// A unique prefix for exchange and queue names, for code that wants one.
    pub namespace: String,
    vhost: String,
    _lock: BrokerLock,
}

impl TestBroker {
    /// A virtual host beside other tests'; `None` when the broker is unreachable and the test
    /// skips (it fails instead when backends are required).
    pub async fn shared(test: &str) -> Option<Self> {
        if !broker_available().await {
            return None;
        }
        Some(Self::create(test, broker_shared().await).await)
    }

    /// A virtual host with no other test on the broker: for a test that stops it.
    pub async fn exclusive(test: &str) -> Option<Self> {
        if !broker_available().await {
            return None;
        }
        Some(Self::create(test, broker_exclusive().await).await)
    }

    async fn create(test: &str, lock: BrokerLock) -> Self {
        static SWEEP: Once = Once::new();
        let random = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let vhost = format!("{VHOST_PREFIX}{}-{test}-{random}", unix_seconds());
        let created = vhost.clone();
        tokio::task::spawn_blocking(move || {
            SWEEP.call_once(sweep_abandoned_vhosts);
            rabbitmqctl(&["add_vhost", &created]);
            rabbitmqctl(&["set_permissions", "-p", &created, &user(), ".*", ".*", ".*"]);
        })
        .await
        .expect("vhost task");
        let base = amqp_url();
        let authority_end = base.find("://").map_or(0, |at| at + 3);
        let base = base[authority_end..].find('/').map_or(base.as_str(), |at| &base[..authority_end + at]);
        let url = format!("{base}/{}", encode(&vhost));
        Self { url, namespace: format!("test-{test}-{random}"), vhost, _lock: lock }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Err(error) = try_rabbitmqctl(&["delete_vhost", &self.vhost]) {
            eprintln!("could not delete the test vhost {}: {error}", self.vhost);
        }
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The user of the test URL, who is given the virtual hosts.
fn user() -> String {
    let url = amqp_url();
    let authority = url.split("://").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or("");
    authority.rsplit_once('@').and_then(|(credentials, _)| credentials.split(':').next()).unwrap_or("guest").to_owned()
}

/// Percent-encodes a virtual host name for the URL path (test names are plain, but be exact).
fn encode(vhost: &str) -> String {
    vhost
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
}

fn try_rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let output = Command::new("rabbitmqctl").args(args).output().map_err(|e| format!("rabbitmqctl: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

fn rabbitmqctl(args: &[&str]) {
    if let Err(error) = try_rabbitmqctl(args) {
        panic!("{error}");
    }
}

/// Deletes the virtual hosts of test runs that died before cleaning up: those older than any test
/// runs, so none that a test running now still uses.
fn sweep_abandoned_vhosts() {
    let Ok(listed) = try_rabbitmqctl(&["list_vhosts", "--quiet", "--no-table-headers"]) else { return };
    let cutoff = unix_seconds().saturating_sub(3 * 3600);
    for vhost in listed.lines().map(str::trim) {
        let created = vhost.strip_prefix(VHOST_PREFIX).and_then(|rest| rest.split('-').next()?.parse::<u64>().ok());
        if created.is_some_and(|at| at < cutoff) {
            let _ = try_rabbitmqctl(&["delete_vhost", vhost]);
        }
    }
}
