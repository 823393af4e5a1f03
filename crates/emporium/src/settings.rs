//! The whole process's settings: shared ones, logging, and each service's own section.
//!
//! Loaded in layers (defaults → `--config FILE` → `EMPORIUM_*` environment); see
//! `platform::config`.

use std::path::{Path, PathBuf};

use platform::{auth::AuthConfig, config::Shared, telemetry::LogConfig};
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where embedded databases and indexes live (`./data`).
    pub data_dir: PathBuf,
    pub auth: AuthConfig,
    pub log: LogConfig,
    /// `EMPORIUM_BOOTSTRAP_ADMIN_EMAIL`
    pub bootstrap_admin_email: Option<String>,
    /// `EMPORIUM_BOOTSTRAP_ADMIN_PASSWORD`
    #[serde(deserialize_with = "platform::config::lenient_secret")]
    pub bootstrap_admin_password: Option<SecretString>,
    pub identity: identity::Config,
    pub gateway: gateway::Config,
}

impl Default for Settings {
    fn default() -> Self {
        let shared = Shared::default();
        Self {
            data_dir: shared.data_dir,
            auth: shared.auth,
            log: LogConfig::default(),
            bootstrap_admin_email: None,
            bootstrap_admin_password: None,
            identity: identity::Config::default(),
            gateway: gateway::Config::default(),
        }
    }
}

impl Settings {
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut settings: Settings = platform::config::load(file)?;
        settings.identity.bootstrap_admin = match (&settings.bootstrap_admin_email, &settings.bootstrap_admin_password) {
            (Some(email), Some(password)) => {
                Some(identity::BootstrapAdmin { email: email.clone(), password: password.clone() })
            }
            _ => None,
        };
        settings.identity.validate().map_err(anyhow::Error::msg)?;
        settings.gateway.validate().map_err(anyhow::Error::msg)?;
        Ok(settings)
    }

    pub fn shared(&self) -> Shared {
        Shared { data_dir: self.data_dir.clone(), auth: self.auth.clone() }
    }
}
