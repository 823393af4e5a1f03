//! Layered configuration: built-in defaults, then an optional TOML file, then `EMPORIUM_*`
//! environment variables (`__` separates nesting: `EMPORIUM_IDENTITY__DATABASE_URL`).
//!
//! Each service owns its config type; this module only knows how to layer and extract, and
//! turns figment's errors into messages that name the offending key and where it came from.

use std::path::{Path, PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::{Deserialize, de::DeserializeOwned};

pub const ENV_PREFIX: &str = "EMPORIUM_";

/// Settings every service of one deployment shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Shared {
    /// Where the embedded mode keeps its SQLite databases and indexes.
    pub data_dir: PathBuf,
    pub auth: crate::auth::AuthConfig,
    /// The services already bound in this process; peers not among them are reached at their
    /// configured URLs.
    #[serde(skip)]
    pub bound: crate::service::Bound,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            auth: crate::auth::AuthConfig::default(),
            bound: crate::service::Bound::default(),
        }
    }
}

impl Shared {
    /// The embedded database of `service`, used when its `database_url` is not set.
    pub fn sqlite_url(&self, service: &str) -> String {
        format!("sqlite://{}/{service}.db", self.data_dir.display())
    }

    /// A service's database: the configured URL, or its embedded SQLite file.
    pub fn database_url(&self, service: &str, configured: Option<&str>) -> String {
        configured.map_or_else(|| self.sqlite_url(service), str::to_owned)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Loads `T` from defaults, `file` (when given) and the environment, in that order.
pub fn load<T: DeserializeOwned>(file: Option<&Path>) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::MissingFile(path.display().to_string()));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    figment.extract::<T>().map_err(|error| {
        let messages: Vec<String> = error.into_iter().map(|e| e.to_string()).collect();
        ConfigError::Invalid(messages.join("; "))
    })
}

/// Deserialises a string that the environment layer may have read as a number or boolean
/// (`EMPORIUM_X=1234567890`): use it on free-text fields such as passwords.
pub fn lenient_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(match Scalar::deserialize(deserializer)? {
        Scalar::Text(s) => s,
        Scalar::Unsigned(n) => n.to_string(),
        Scalar::Signed(n) => n.to_string(),
        Scalar::Float(n) => n.to_string(),
        Scalar::Bool(b) => b.to_string(),
    })
}

/// [`lenient_string`] for an optional secret.
pub fn lenient_secret<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<secrecy::SecretString>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Wrapper(#[serde(deserialize_with = "lenient_string")] String);
    Ok(Option::<Wrapper>::deserialize(deserializer)?.map(|Wrapper(s)| s.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Inner {
        url: String,
        port: u16,
        #[serde(deserialize_with = "lenient_string")]
        secret: String,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Root {
        name: String,
        inner: Inner,
    }

    #[test]
    // figment's `Jail` fixes the closure's error type; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    fn layers_file_then_env_and_reports_bad_keys() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("emporium.toml", "name = \"from-file\"\n[inner]\nport = 1\nurl = \"sqlite://x\"")?;
            jail.set_env("EMPORIUM_INNER__PORT", "8081");
            jail.set_env("EMPORIUM_INNER__SECRET", "1234567890");
            let root: Root = load(Some(Path::new("emporium.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(root.name, "from-file");
            assert_eq!(root.inner.port, 8081);
            assert_eq!(root.inner.url, "sqlite://x");
            assert_eq!(root.inner.secret, "1234567890");

            jail.set_env("EMPORIUM_INNER__PORT", "not-a-port");
            let error = load::<Root>(Some(Path::new("emporium.toml"))).unwrap_err().to_string();
            assert!(error.to_lowercase().contains("inner.port"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_named_file_must_exist() {
        let error = load::<Root>(Some(Path::new("/nonexistent/emporium.toml"))).unwrap_err();
        assert!(matches!(error, ConfigError::MissingFile(_)));
    }
}
