//! The merged OpenAPI document: every upstream's own document (generated from its code),
//! combined into one at `/api/v1/openapi.json`, and rendered at `/docs`.
//!
//! Documents are fetched from the services when asked for and cached briefly; a service that is
//! down leaves its operations out until it is back, rather than failing the whole document.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, routing::get};
use platform::http::{client::get_json, openapi::BearerAuth};
use utoipa::{
    Modify,
    openapi::{InfoBuilder, OpenApi, OpenApiBuilder},
};

use crate::proxy::Upstream;

const CACHE_FOR: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";

pub struct Documents {
    upstreams: Vec<Arc<Upstream>>,
    cache: Mutex<Option<(Instant, Arc<OpenApi>)>>,
}

impl Documents {
    pub fn new(upstreams: Vec<Arc<Upstream>>) -> Self {
        Self { upstreams, cache: Mutex::new(None) }
    }

    pub async fn merged(&self) -> Arc<OpenApi> {
        if let Some((at, doc)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return doc.clone();
        }
        let mut merged = base();
        let mut complete = true;
        for upstream in &self.upstreams {
            match fetch(upstream).await {
                Some(doc) => merged.merge(doc),
                None => complete = false,
            }
        }
        BearerAuth.modify(&mut merged);
        let merged = Arc::new(merged);
        // An incomplete document is served but not cached, so it heals as soon as the service is back.
        if complete {
            *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), merged.clone()));
        }
        merged
    }
}

fn base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Emporium API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The public API of the Emporium shop. Money is in integer minor units; errors are \
                     RFC 9457 problem details; every response carries X-Request-Id.",
                ))
                .build(),
        )
        .build()
}

async fn fetch(upstream: &Upstream) -> Option<OpenApi> {
    let path = upstream.openapi_path()?;
    for base in upstream.candidates() {
        let url = format!("{}{}", base.to_string().trim_end_matches('/'), path);
        match get_json::<OpenApi>(upstream.client(), &url, FETCH_TIMEOUT).await {
            Ok(doc) => return Some(doc),
            Err(error) => {
                tracing::warn!(upstream = %upstream.name, error = %error, "could not fetch the OpenAPI document")
            }
        }
    }
    None
}

/// `/api/v1/openapi.json` and the Swagger UI at `/docs` (assets compiled in: works offline).
pub fn router(documents: Arc<Documents>) -> Router {
    let ui = utoipa_swagger_ui::SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::new([DOCUMENT_PATH]));
    Router::new()
        .route(
            DOCUMENT_PATH,
            get(|State(docs): State<Arc<Documents>>| async move { Json(docs.merged().await.as_ref().clone()) }),
        )
        .with_state(documents)
        .merge(ui)
}
