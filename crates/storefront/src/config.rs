//! The storefront's settings: where it listens, where the public API is, and the key that seals
//! its session cookies.

use std::{net::SocketAddr, time::Duration};

use platform::secrets::MasterKeyConfig;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// The gateway, whose public API is all the storefront talks to (`http://gateway:8080`).
    /// None: the gateway of this process, or else `http://127.0.0.1:8080`.
    pub api_url: Option<String>,
    /// The shop's public address (`https://shop.example.com`) for canonical links, the sitemap
    /// and the social sign-in return address. None: the address the browser used, as the
    /// gateway forwards it (`X-Forwarded-Host`, `X-Forwarded-Proto`).
    pub public_url: Option<String>,
    /// The key that seals session cookies (which hold the shopper's tokens). Every replica needs
    /// the same; with none set, `<data_dir>/storefront.cookie-key` is made on first start.
    pub cookies: MasterKeyConfig,
    /// Time allowed for one call to the API.
    #[serde(with = "humantime_serde")]
    pub api_timeout: Duration,
    /// How long public catalog answers (a product, a listing, the categories) are reused for
    /// other shoppers; 0 turns the cache off. API.md promises a change is visible in search
    /// within a second: keep this at or below it.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// The name in the header and titles.
    pub shop_name: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8086)),
            api_url: None,
            public_url: None,
            cookies: MasterKeyConfig::default(),
            api_timeout: Duration::from_secs(10),
            cache_ttl: Duration::from_secs(1),
            shop_name: "Emporium".to_owned(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        for (key, url) in [("storefront.api_url", &self.api_url), ("storefront.public_url", &self.public_url)] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(format!("{key}: {url:?} is not an http:// or https:// URL"));
            }
        }
        if self.cache_ttl > Duration::from_secs(1) {
            return Err("storefront.cache_ttl: at most 1s (a change must show within a second)".to_owned());
        }
        if self.api_timeout.is_zero() {
            return Err("storefront.api_timeout must be positive".to_owned());
        }
        Ok(())
    }
}
