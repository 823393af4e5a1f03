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
use platform::http::{
    client::get_json,
    openapi::{BearerAuth, Rejections, declare_problem, operations_mut},
};
use serde_json::{Value, json};
use utoipa::{
    Modify, OpenApi as _,
    openapi::{HeaderBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder, RefOr, Type},
};

use crate::proxy::Upstream;

const CACHE_FOR: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";

pub struct Documents {
    upstreams: Vec<Arc<Upstream>>,
    cache: Mutex<Option<(Instant, Arc<Value>)>>,
}

impl Documents {
    pub fn new(upstreams: Vec<Arc<Upstream>>) -> Self {
        Self { upstreams, cache: Mutex::new(None) }
    }

    pub async fn merged(&self) -> Arc<Value> {
        if let Some((at, doc)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return doc.clone();
        }
        let mut merged = base();
        merged.merge(OwnOperations::openapi());
        let mut complete = true;
        for upstream in &self.upstreams {
            match fetch(upstream).await {
                Some(doc) => merged.merge(doc),
                None => complete = false,
            }
        }
        BearerAuth.modify(&mut merged);
        Rejections.modify(&mut merged);
        GatewayAnswers.modify(&mut merged);
        let mut merged = serde_json::to_value(&merged).unwrap_or_default();
        add_links(&mut merged);
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

/// The gateway's own operations, on the same port as the API: what load balancers, Prometheus
/// and people reading the API reach. They are documented like the rest so that nothing answers
/// that the document does not name (OWASP API9, improper inventory).
#[derive(utoipa::OpenApi)]
#[openapi(paths(live, ready, metrics, document, viewer, viewer_file))]
struct OwnOperations;

/// Whether the gateway's process runs.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "It runs", body = Object, content_type = "application/json")))]
#[allow(dead_code)]
fn live() {}

/// Whether the gateway takes requests (it has no dependency of its own to check).
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, description = "It takes requests", body = Object, content_type = "application/json")))]
#[allow(dead_code)]
fn ready() {}

/// The gateway's metrics in Prometheus' text format, for a scraper on a private network: a
/// request from a public address, or forwarded by a proxy, gets 404.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
    (status = 404, description = "Not for this caller", body = platform::Problem, content_type = "application/problem+json"),
))]
#[allow(dead_code)]
fn metrics() {}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", body = Object, content_type = "application/json")))]
#[allow(dead_code)]
fn document() {}

/// This document, to read in a browser.
#[utoipa::path(get, path = "/docs/", tag = "operations",
    responses((status = 200, description = "The documentation viewer", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn viewer() {}

/// The documentation viewer's files (scripts, style sheets, its configuration).
#[utoipa::path(get, path = "/docs/{file}", tag = "operations",
    params(("file" = String, Path, description = "A file of the viewer")),
    responses((status = 200, description = "The file", body = String, content_type = "*/*")))]
#[allow(dead_code)]
fn viewer_file() {}

/// What the gateway itself may answer for any operation, before or instead of the service.
struct GatewayAnswers;

impl Modify for GatewayAnswers {
    fn modify(&self, openapi: &mut OpenApi) {
        for operation in operations_mut(openapi) {
            declare_problem(operation, 429, "Over a rate limit; retry after `Retry-After` seconds");
            if let Some(RefOr::T(response)) = operation.responses.responses.get_mut("429") {
                let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).build();
                let header = HeaderBuilder::new().schema(seconds).description(Some("Seconds to wait")).build();
                response.headers.entry("Retry-After".to_owned()).or_insert(header);
            }
            declare_problem(operation, 502, "The service failed to answer");
            declare_problem(operation, 503, "The service is down or busy; retry after `Retry-After` seconds");
            declare_problem(operation, 504, "The service did not answer in time");
        }
    }
}

/// (source path, method, status, link name, target path, target method, parameters, request body)
type LinkSpec =
    (&'static str, &'static str, &'static str, &'static str, &'static str, &'static str, Value, Option<Value>);

/// How the resources one operation makes are used by the next ones (OpenAPI links), so that a
/// client, or a fuzzer's stateful phase, can follow a shopper from a new cart to an order, and
/// an administrator from a new product to its stock. Each names its target by path and method;
/// the contract test checks that every target exists in the served document.
/// How many links a complete document carries: what the contract test holds the served one to,
/// since a link whose source or target is missing is left out.
pub fn link_count() -> usize {
    links().len()
}

fn links() -> Vec<LinkSpec> {
    let cart = || json!({ "path.cart_id": "$response.body#/id" });
    let same_cart = || json!({ "path.cart_id": "$request.path.cart_id" });
    let product = || json!({ "path.id": "$response.body#/id" });
    let order = || json!({ "path.id": "$response.body#/id" });
    let line = || json!({ "path.cart_id": "$request.path.cart_id", "path.sku": "$response.body#/items/0/sku" });
    vec![
        ("/api/v1/carts", "post", "201", "read", "/api/v1/carts/{cart_id}", "get", cart(), None),
        ("/api/v1/carts", "post", "201", "add", "/api/v1/carts/{cart_id}/items", "post", cart(), None),
        ("/api/v1/carts", "post", "201", "empty", "/api/v1/carts/{cart_id}", "delete", cart(), None),
        ("/api/v1/carts/{cart_id}/items", "post", "200", "read", "/api/v1/carts/{cart_id}", "get", same_cart(), None),
        (
            "/api/v1/carts/{cart_id}/items",
            "post",
            "200",
            "set",
            "/api/v1/carts/{cart_id}/items/{sku}",
            "put",
            line(),
            None,
        ),
        (
            "/api/v1/carts/{cart_id}/items",
            "post",
            "200",
            "remove",
            "/api/v1/carts/{cart_id}/items/{sku}",
            "delete",
            line(),
            None,
        ),
        (
            "/api/v1/carts/{cart_id}/items",
            "post",
            "200",
            "checkout",
            "/api/v1/orders",
            "post",
            json!({}),
            Some(json!({ "cart_id": "$request.path.cart_id" })),
        ),
        ("/api/v1/orders", "post", "201", "read", "/api/v1/orders/{id}", "get", order(), None),
        ("/api/v1/orders", "post", "201", "cancel", "/api/v1/orders/{id}/cancel", "post", order(), None),
        ("/api/v1/orders", "post", "201", "ship", "/api/v1/orders/{id}/shipments", "post", order(), None),
        ("/api/v1/orders", "post", "201", "deliver", "/api/v1/orders/{id}/delivery", "post", order(), None),
        ("/api/v1/products", "post", "201", "read", "/api/v1/products/{id}", "get", product(), None),
        ("/api/v1/products", "post", "201", "change", "/api/v1/products/{id}", "patch", product(), None),
        ("/api/v1/products", "post", "201", "archive", "/api/v1/products/{id}", "delete", product(), None),
        (
            "/api/v1/products",
            "post",
            "201",
            "stock",
            "/api/v1/inventory/{sku}",
            "put",
            json!({ "path.sku": "$response.body#/variants/0/sku" }),
            None,
        ),
        (
            "/api/v1/products",
            "post",
            "201",
            "read_stock",
            "/api/v1/inventory/{sku}",
            "get",
            json!({ "path.sku": "$response.body#/variants/0/sku" }),
            None,
        ),
        (
            "/api/v1/users",
            "get",
            "200",
            "roles",
            "/api/v1/users/{id}/roles",
            "put",
            json!({ "path.id": "$response.body#/items/0/id" }),
            None,
        ),
        (
            "/api/v1/admin/notifications",
            "get",
            "200",
            "resend",
            "/api/v1/admin/notifications/{id}/resend",
            "post",
            json!({ "path.id": "$response.body#/items/0/id" }),
            None,
        ),
    ]
}

/// `#/paths/…/method`, escaped as a JSON pointer.
fn operation_ref(path: &str, method: &str) -> String {
    format!("#/paths/{}/{method}", path.replace('~', "~0").replace('/', "~1"))
}

/// Written into the served JSON rather than through utoipa's `Link`, which names its members in
/// snake case (`operation_ref`), where OpenAPI says `operationRef`.
fn add_links(document: &mut Value) {
    for (path, method, status, name, target, target_method, parameters, body) in links() {
        // A service that is down leaves its operations out: so do the links to them.
        let target = operation_ref(target, target_method);
        if document.pointer(&target[1..]).is_none() {
            continue;
        }
        let pointer = format!("{}/responses/{status}", &operation_ref(path, method)[1..]);
        let Some(response) = document.pointer_mut(&pointer).and_then(Value::as_object_mut) else { continue };
        let mut link = json!({ "operationRef": target, "parameters": parameters });
        if let Some(body) = body {
            link["requestBody"] = body;
        }
        let links = response.entry("links").or_insert_with(|| json!({}));
        links[name] = link;
    }
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
        .merge(Router::from(ui).layer(axum::middleware::map_response(missing_file_is_a_problem)))
}

/// The viewer answers a file it does not have with an empty 404; ours says so as every 404 does.
async fn missing_file_is_a_problem(response: axum::response::Response) -> axum::response::Response {
    if response.status() == http::StatusCode::NOT_FOUND && !response.headers().contains_key(http::header::CONTENT_TYPE)
    {
        return axum::response::IntoResponse::into_response(platform::server::not_found().await);
    }
    response
}
