//! The storefront: the shop's pages, rendered on the server from templates, for people with a
//! browser. It keeps no data: everything it shows or does goes through the public API at the
//! gateway, exactly as any other client's calls do (API.md), which is what proves that API is
//! enough to run a shop. Its session is a sealed cookie (`session`).
//!
//! Every page works without JavaScript; HTMX (vendored, served from here) only makes the
//! search box suggest and the cart update without a page load.
//!
//! Its surface is the one every service has: [`Config`] and [`build`].
#![forbid(unsafe_code)]

mod api;
mod assets;
pub mod config;
mod openapi;
mod pages;
mod session;
mod views;

use std::{
    path::Path,
    sync::{Arc, OnceLock},
};

use platform::{
    config::Shared,
    health::Health,
    secrets::MasterKey,
    service::{Server, StartError},
};

pub use config::Config;
pub use openapi::ApiDoc;

/// The name this service goes by in logs and metrics.
pub const SERVICE: &str = platform::service::names::STOREFRONT;

/// Where the storefront finds the public API when the gateway is started in the same process:
/// it is bound after the storefront, and set here once it is.
pub type GatewayUrl = Arc<OnceLock<String>>;

/// What every page handler reaches.
pub struct App {
    config: Config,
    api: api::Api,
    cookies: session::Cookies,
    assets: assets::Assets,
    sitemap: pages::seo::SitemapCache,
    refreshes: pages::Refreshes,
}

/// Binds the storefront. `gateway` is set when this process starts the gateway too; otherwise
/// the configured `api_url` (or `http://127.0.0.1:8080`) is the API.
pub async fn build(config: Config, shared: &Shared, gateway: Option<GatewayUrl>) -> Result<Server, StartError> {
    config.validate().map_err(StartError::Config)?;
    let default_key = shared.data_dir.join("storefront.cookie-key");
    let key = load_key(&config, &default_key)?;
    let gateway = match (&config.api_url, gateway) {
        (Some(url), _) => api::Gateway::Url(url.trim_end_matches('/').to_owned()),
        (None, Some(cell)) => api::Gateway::Later(cell),
        (None, None) => api::Gateway::Url("http://127.0.0.1:8080".to_owned()),
    };
    let app = Arc::new(App {
        api: api::Api::new(gateway, config.api_timeout, config.cache_ttl),
        cookies: session::Cookies::new(key),
        assets: assets::Assets::load(),
        sitemap: pages::seo::SitemapCache::default(),
        refreshes: pages::Refreshes::default(),
        config,
    });
    let listen = app.config.listen;
    let router = platform::server::finish(SERVICE, pages::router(app), Health::new())
        .layer(axum::middleware::map_response(pages::errors::html_for_people));
    Server::bind(SERVICE, listen, router).await
}

fn load_key(config: &Config, default_file: &Path) -> Result<MasterKey, StartError> {
    if let Some(dir) = default_file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StartError::Config(format!("{}: {e}", dir.display())))?;
    }
    MasterKey::load(&config.cookies, Some(default_file))
        .map_err(|e| StartError::Config(format!("storefront.cookies: {e}")))
}
