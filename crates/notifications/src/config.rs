//! The notifications service's configuration.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use platform::db::PoolConfig;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// `postgres://…` or `sqlite://…`; the embedded SQLite file under the data directory when unset.
    pub database_url: Option<String>,
    pub pool: PoolConfig,
    /// Identity's gRPC service: the addresses written to and the one-time links.
    pub identity_url: String,
    /// Deadline of each call to identity.
    #[serde(with = "humantime_serde")]
    pub identity_timeout: Duration,
    /// The shop's name, in every message.
    pub shop_name: String,
    /// The shop's public address as customers reach it: links in emails point below it
    /// (`/account/verify-email?token=…`, `/account/reset-password?token=…`, `/orders/{id}`).
    pub public_url: String,
    /// The sender, `Name <address>`.
    pub from: String,
    pub smtp: SmtpConfig,
    /// A directory of templates replacing the built-in ones of the same name (`order_placed.html`,
    /// `layout.txt`, …); read at start.
    pub templates_dir: Option<PathBuf>,
    /// Where messages are written as `.eml` files when no SMTP server is configured; the data
    /// directory's `mailbox` when unset.
    pub mailbox_dir: Option<PathBuf>,
    /// How often the sender looks for due messages (new ones wake it at once).
    #[serde(with = "humantime_serde")]
    pub send_interval: Duration,
    /// Messages sent at once.
    pub batch_size: u32,
    /// Attempts before a message that keeps failing temporarily is given up (`failed`).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each one.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// The longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8085)),
            database_url: None,
            pool: PoolConfig::default(),
            identity_url: "http://127.0.0.1:9081".to_owned(),
            identity_timeout: Duration::from_secs(2),
            shop_name: "Emporium".to_owned(),
            public_url: "http://127.0.0.1:8080".to_owned(),
            from: "Emporium <shop@localhost>".to_owned(),
            smtp: SmtpConfig::default(),
            templates_dir: None,
            mailbox_dir: None,
            send_interval: Duration::from_secs(1),
            batch_size: 16,
            max_attempts: 15,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
        }
    }
}

/// The mail server messages are handed to. Without a `url`, messages go to the mailbox
/// directory instead.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// `smtp://host:587` (STARTTLS required), `smtps://host:465` (TLS from the first byte), or
    /// `smtp://host:25?tls=none` (no encryption: a relay on the same host only).
    pub url: Option<String>,
    pub username: Option<String>,
    #[serde(deserialize_with = "platform::config::lenient_secret")]
    pub password: Option<SecretString>,
    /// A PEM file of certificates to trust besides the public roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Deadline of one message's delivery to the server.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self { url: None, username: None, password: None, ca_file: None, timeout: Duration::from_secs(10) }
    }
}

impl Config {
    /// Checks what types alone cannot; each message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        problems.extend(platform::db::check_database_url("notifications", self.database_url.as_deref()));
        problems.extend(platform::grpc::check_peer_urls("notifications.identity_url", &self.identity_url));
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            problems.push("notifications.public_url must be an http:// or https:// URL".to_owned());
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            problems.push("notifications.from must be an address such as `Shop <shop@example.com>`".to_owned());
        }
        if let Some(url) = &self.smtp.url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            problems.push("notifications.smtp.url must start with smtp:// or smtps://".to_owned());
        }
        if self.smtp.username.is_some() != self.smtp.password.is_some() {
            problems.push("notifications.smtp.username and password go together".to_owned());
        }
        if self.batch_size == 0 || self.max_attempts == 0 || self.send_interval.is_zero() || self.retry_base.is_zero() {
            problems
                .push("notifications.batch_size, max_attempts, send_interval and retry_base must be positive".into());
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}
