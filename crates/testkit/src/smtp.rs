//! A real SMTP server for tests, built on the `aiosmtpd` Python package: authentication,
//! STARTTLS or TLS from the first byte (with a self-signed certificate made by `openssl`, which
//! the client is told to trust), and a domain whose recipients it refuses for good (550). It
//! records every accepted message with its decoded parts. It can be stopped and started again
//! on the same port, as a mail server that goes down and comes back. `.ci/run` installs the
//! package into a virtual environment under `$HOME/.cache/emporium` and names its interpreter in
//! `EMPORIUM_TEST_SMTP_PYTHON`.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

const SCRIPT: &str = include_str!("../smtp/server.py");

/// How the server secures its connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tls {
    /// Plain text (a relay on the same host).
    None,
    /// STARTTLS, required before authentication and mail.
    #[default]
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
}

#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Required credentials, when set.
    pub auth: Option<(String, String)>,
    pub tls: Tls,
    /// Recipients at this domain are refused with 550.
    pub reject_domain: Option<String>,
}

/// A running server; it stops when dropped.
pub struct SmtpServer {
    pub port: u16,
    /// The certificate to trust, when the server speaks TLS.
    pub ca_file: Option<PathBuf>,
    options: SmtpOptions,
    dir: PathBuf,
    out: PathBuf,
    child: Option<Child>,
}

/// The interpreter of the virtual environment that has `aiosmtpd`.
pub fn python() -> PathBuf {
    std::env::var_os("EMPORIUM_TEST_SMTP_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/emporium/smtp-venv/bin/python")
    })
}

impl SmtpServer {
    /// `None` (the test skips, or fails when backends are required) when `aiosmtpd` is not
    /// installed.
    pub async fn start(options: SmtpOptions) -> Option<Self> {
        let installed = Command::new(python())
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success());
        if !installed {
            crate::skip_or_fail(&format!("aiosmtpd is not installed for {}", python().display()));
            return None;
        }
        let dir = crate::temp_dir("smtp");
        std::fs::create_dir_all(&dir).expect("the server's directory");
        // A private CA and a server certificate it signed, as an operator's own mail relay
        // would have: the client is told to trust the CA.
        let ca_file = (options.tls != Tls::None).then(|| {
            std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext.cnf");
            let openssl = |args: &[&str]| {
                let made = std::process::Command::new("openssl")
                    .args(args)
                    .current_dir(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("openssl runs");
                assert!(made.success(), "openssl {args:?}");
            };
            openssl(
                &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=Emporium Test CA", "-days", "2"]
                    .into_iter()
                    .chain(["-keyout", "ca.key", "-out", "ca.pem"])
                    .collect::<Vec<_>>(),
            );
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "req.csr",
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                "req.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "cert.pem",
            ]);
            dir.join("ca.pem")
        });
        let mut server =
            Self { port: crate::free_port(), ca_file, out: dir.join("messages.jsonl"), dir, options, child: None };
        server.restart().await;
        Some(server)
    }

    pub fn tls(&self) -> Tls {
        self.options.tls
    }

    /// Starts the server (again) on its port, with the messages received so far kept.
    pub async fn restart(&mut self) {
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
            command.stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true).spawn().expect("python starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        assert!(matches!(first, Ok(Ok(Some(ref line))) if line == "ready"), "the SMTP server did not start");
        self.child = Some(child);
    }

    /// Stops the server: a mail server that is down.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }

    /// Every accepted message: `{mail_from, rcpt_tos, subject, from, to, message_id, text, html,
    /// data (raw), auth_user, tls}`.
    pub async fn messages(&self) -> Vec<Value> {
        let text = tokio::fs::read_to_string(&self.out).await.unwrap_or_default();
        text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// The messages, once there are at least `count` (or what came within `within`).
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let messages = self.messages().await;
            if messages.len() >= count || Instant::now() > deadline {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
