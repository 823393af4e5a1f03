//! Layered configuration: built-in defaults, then an optional TOML file, then `EMPORIUM_*`
//! environment variables (`__` separates nesting: `EMPORIUM_IDENTITY__DATABASE_URL`).
//!
//! Each service owns its config type; this module only knows how to layer and extract, and
//! turns figment's errors into messages that name the offending key and where it came from.
//! Config types refuse keys they do not know (`#[serde(deny_unknown_fields)]`): a misspelt key
//! silently left at its default is a production incident waiting, so it stops the process with
//! the nearest valid key suggested.

use std::path::{Path, PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::{Deserialize, de::DeserializeOwned};

pub const ENV_PREFIX: &str = "EMPORIUM_";

/// `EMPORIUM_*` variables read by something other than the settings (the command line, the test
/// harness, the log shipper's configuration and its start script), which therefore are not
/// unknown keys.
const NOT_SETTINGS: [&str; 5] = ["CONFIG", "ADMIN_PASSWORD", "REQUIRE_BACKENDS", "LOG_FILE", "FLASH_SALE_BUYERS"];
const NOT_SETTINGS_PREFIXES: [&str; 3] = ["TEST_", "CHAOS_", "SYSLOG_NG_"];

fn is_setting(key: &str) -> bool {
    !NOT_SETTINGS.iter().any(|name| key.eq_ignore_ascii_case(name))
        && !NOT_SETTINGS_PREFIXES
            .iter()
            .any(|prefix| key.get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix)))
}

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
    /// The sessions this process's verifiers refuse (one list per process, fed from events).
    #[serde(skip)]
    pub revocations: std::sync::Arc<crate::auth::Revocations>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            auth: crate::auth::AuthConfig::default(),
            bound: crate::service::Bound::default(),
            revocations: crate::auth::Revocations::new(),
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
    figment = figment.merge(Env::prefixed(ENV_PREFIX).filter(|key| is_setting(key.as_str())).split("__"));
    figment.extract::<T>().map_err(|error| {
        let messages: Vec<String> = error.into_iter().map(|e| describe(&figment, e)).collect();
        ConfigError::Invalid(messages.join("; "))
    })
}

/// figment's own message, or for an unknown key: the key as its source spells it (a dotted key
/// in a file, a variable in the environment) and the nearest key that exists.
fn describe(figment: &Figment, error: figment::Error) -> String {
    let figment::error::Kind::UnknownField(field, expected) = &error.kind else {
        return error.to_string();
    };
    let mut path: Vec<&str> = error.path.iter().map(String::as_str).collect();
    if path.last() != Some(&field.as_str()) {
        path.push(field);
    }
    let suggestion = nearest(field, expected);
    let suggested: Option<Vec<&str>> = suggestion
        .as_ref()
        .map(|valid| path[..path.len() - 1].iter().copied().chain(valid.iter().map(String::as_str)).collect());
    let metadata = figment.find_metadata(&path.join("."));
    let (unknown, nearest) = if metadata.is_some_and(|m| m.name.contains("environment")) {
        let variable = |keys: &[&str]| format!("{ENV_PREFIX}{}", keys.join("__").to_ascii_uppercase());
        (format!("unknown environment variable {}", variable(&path)), suggested.map(|keys| variable(&keys)))
    } else {
        let place = match metadata.and_then(|m| m.source.as_ref()) {
            Some(figment::Source::File(file)) => format!(" in {}", file.display()),
            _ => String::new(),
        };
        (format!("unknown key `{}`{place}", path.join(".")), suggested.map(|keys| format!("`{}`", keys.join("."))))
    };
    match nearest {
        Some(nearest) => format!("{unknown}; did you mean {nearest}?"),
        None => unknown,
    }
}

/// The valid key `unknown` most likely meant, as the keys below the unknown one's table. Levels
/// of an environment variable are separated by `__`, so `gateway_listen` (one underscore) is
/// taken to mean the `gateway` table's `listen`.
fn nearest(unknown: &str, expected: &[&str]) -> Option<Vec<String>> {
    let unknown = unknown.to_ascii_lowercase();
    if let Some(table) = expected.iter().find(|name| unknown.starts_with(&format!("{name}_"))) {
        return Some(vec![(*table).to_owned(), unknown[table.len() + 1..].to_owned()]);
    }
    expected
        .iter()
        .map(|name| (strsim::jaro_winkler(&unknown, name), *name))
        .filter(|(similarity, _)| *similarity >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| vec![name.to_owned()])
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
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        url: String,
        port: u16,
        #[serde(deserialize_with = "lenient_string")]
        secret: String,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
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
    #[allow(clippy::result_large_err)]
    fn an_unknown_key_is_named_with_the_nearest_valid_one() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("emporium.toml", "name = \"x\"\n[inner]\nprot = 1")?;
            let error = load::<Root>(Some(Path::new("emporium.toml"))).unwrap_err().to_string();
            assert!(error.contains("unknown key `inner.prot` in "), "{error}");
            assert!(error.contains("emporium.toml; did you mean `inner.port`?"), "{error}");

            jail.create_file("emporium.toml", "[innr]\nport = 1")?;
            let error = load::<Root>(Some(Path::new("emporium.toml"))).unwrap_err().to_string();
            assert!(error.contains("did you mean `inner`?"), "{error}");

            jail.create_file("emporium.toml", "")?;
            jail.set_env("EMPORIUM_INNER__URLS", "sqlite://x");
            let error = load::<Root>(Some(Path::new("emporium.toml"))).unwrap_err().to_string();
            assert!(
                error.contains("unknown environment variable EMPORIUM_INNER__URLS; did you mean EMPORIUM_INNER__URL?"),
                "{error}"
            );
            jail.set_env("EMPORIUM_INNER__URLS", "");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn one_underscore_between_levels_is_corrected_and_nothing_far_is_suggested() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("EMPORIUM_INNER_PORT", "1");
            let error = load::<Root>(None).unwrap_err().to_string();
            assert!(error.contains("EMPORIUM_INNER_PORT; did you mean EMPORIUM_INNER__PORT?"), "{error}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("EMPORIUM_COLOUR", "blue");
            let error = load::<Root>(None).unwrap_err().to_string();
            assert!(error.ends_with("unknown environment variable EMPORIUM_COLOUR"), "{error}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn variables_of_the_harness_and_the_command_line_are_not_settings() {
        figment::Jail::expect_with(|jail| {
            for name in
                ["EMPORIUM_CONFIG", "EMPORIUM_REQUIRE_BACKENDS", "EMPORIUM_TEST_POSTGRES_URL", "EMPORIUM_CHAOS_SECONDS"]
            {
                jail.set_env(name, "1");
            }
            let root: Root = load(None).map_err(|e| e.to_string())?;
            assert_eq!(root.inner.port, 0);
            Ok(())
        });
    }

    #[test]
    fn a_named_file_must_exist() {
        let error = load::<Root>(Some(Path::new("/nonexistent/emporium.toml"))).unwrap_err();
        assert!(matches!(error, ConfigError::MissingFile(_)));
    }
}
