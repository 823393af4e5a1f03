//! A real SMTP server for tests, built on the `aiosmtpd` Python package (`smtp/server.py`):
//! authentication, STARTTLS or TLS from the first byte (with a certificate made by `openssl`,
//! whose CA the client is told to trust), and a domain whose recipients it refuses for good
//! (550). It records every accepted message with its decoded parts. It can be stopped and
//! started again on the same port, as a mail server that goes down and comes back. `.ci/run`
//! installs the package into a virtual environment under `$HOME/.cache/emporium` and names its
//! interpreter in `EMPORIUM_TEST_SMTP_PYTHON`.

use std::{fs::File, path::PathBuf, process::Stdio, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    time::Instant,
};

/// The script travels inside the test binary: a path to it could name a checkout that is gone
/// (builds share their artifacts between checkouts).
const SCRIPT: &str = include_str!("../smtp/server.py");

/// How the server secures its connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tls {
    /// Plain text (a relay on the same host); authentication, when required, in clear.
    None,
    /// STARTTLS, required before authentication and mail: a provider's submission port (587).
    #[default]
    StartTls,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
}

#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Credentials required (AUTH PLAIN or LOGIN) before MAIL, when set; others get 535.
    pub auth: Option<(String, String)>,
    pub tls: Tls,
    /// Recipients at this domain are refused for good: `550 5.1.1 mailbox unavailable`.
    pub reject_domain: Option<String>,
}

/// A running server; it stops, and its files go, when dropped.
pub struct SmtpServer {
    pub port: u16,
    /// The certificate to trust (the CA that signed the server's), when the server speaks TLS.
    pub ca_file: Option<PathBuf>,
    /// One JSON object per accepted message, appended by the server.
    out: PathBuf,
    /// The certificates, the messages and the server's stderr.
    dir: PathBuf,
    /// `None` while stopped.
    child: Option<Child>,
    options: SmtpOptions,
}

/// The interpreter of the virtual environment that has `aiosmtpd`.
pub fn python() -> PathBuf {
    std::env::var_os("EMPORIUM_TEST_SMTP_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/emporium/smtp-venv/bin/python")
    })
}

impl SmtpServer {
    /// A server on a free loopback port. `None` (the test skips, or fails when backends are
    /// required) when `aiosmtpd` is not installed, or `openssl` is not when TLS is asked for.
    pub async fn start(options: SmtpOptions) -> Option<Self> {
        let python = python();
        if !succeeds(Command::new(&python).args(["-c", "import aiosmtpd"])).await {
            crate::skip_or_fail(&format!("aiosmtpd is not installed for {}", python.display()));
            return None;
        }
        if options.tls != Tls::None && !succeeds(Command::new("openssl").arg("version")).await {
            crate::skip_or_fail("openssl, which makes the SMTP server's certificate, is not installed");
            return None;
        }
        let dir = crate::temp_dir("smtp");
        let ca_file = match options.tls {
            Tls::None => None,
            Tls::StartTls | Tls::Implicit => Some(crate::tls::certificates(&dir).await),
        };
        let mut server =
            Self { port: crate::free_port(), ca_file, out: dir.join("messages.jsonl"), dir, child: None, options };
        server.restart().await;
        Some(server)
    }

    pub fn tls(&self) -> Tls {
        self.options.tls
    }

    /// Starts the server (again, stopping it first if it runs) on its port, with its options
    /// and certificate, and the messages received so far kept.
    pub async fn restart(&mut self) {
        self.stop().await;
        // Its stderr goes to a file rather than the test's output: nothing reads a pipe while
        // it runs, and the file says why it did not start when it does not.
        let log = self.dir.join("server.log");
        let stderr = File::options().create(true).append(true).open(&log).expect("the SMTP server's log");
        let mut command = Command::new(python());
        command.args(["-c", SCRIPT, "--port", &self.port.to_string()]).arg("--out").arg(&self.out);
        if let Some((user, password)) = &self.options.auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        if self.options.tls != Tls::None {
            command.arg("--tls-cert").arg(self.dir.join("cert.pem")).arg("--tls-key").arg(self.dir.join("key.pem"));
        }
        if self.options.tls == Tls::Implicit {
            command.arg("--implicit-tls");
        }
        if let Some(domain) = &self.options.reject_domain {
            command.args(["--reject-domain", domain]);
        }
        let mut child =
            command.stdout(Stdio::piped()).stderr(stderr).kill_on_drop(true).spawn().expect("python starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        if !matches!(first, Ok(Ok(Some(ref line))) if line == "ready") {
            let said = tokio::fs::read_to_string(&log).await.unwrap_or_default();
            panic!("the SMTP server did not start on port {}: {said}", self.port);
        }
        self.child = Some(child);
    }

    /// Stops the server: a mail server that is down (connections to its port are refused).
    /// What it accepted is already on file: it writes each message before answering 250.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL, then waits for the exit, after which the port is free again.
            let _ = child.kill().await;
        }
    }

    /// Every accepted message, in order: `{mail_from, rcpt_tos, subject, from, to, message_id,
    /// text, html, data (raw), auth_user, tls}` (`text` and `html` are the decoded parts, null
    /// when absent; `rcpt_tos` has the accepted recipients only).
    pub async fn messages(&self) -> Vec<Value> {
        let text = tokio::fs::read_to_string(&self.out).await.unwrap_or_default();
        // A line still being written is not JSON yet: it is read the next time.
        text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// The messages, once there are at least `count` (or what came within `within`).
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let messages = self.messages().await;
            if messages.len() >= count || Instant::now() >= deadline {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `command` runs and succeeds, its output discarded.
async fn succeeds(command: &mut Command) -> bool {
    command.stdout(Stdio::null()).stderr(Stdio::null()).status().await.is_ok_and(|status| status.success())
}
