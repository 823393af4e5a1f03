//! OWASP API9:2023, improper inventory management. The gateway answers only what its document
//! names: old and future API versions, debugging and framework endpoints, the services' internal
//! gRPC methods, other methods on documented paths, all get an error, never a 2xx or 3xx. The
//! gateway's own operational endpoints (health, metrics, the document and its viewer) are in the
//! document too.

use serde_json::Value;
use testkit::TestDatabase;

use crate::common::*;

/// A documented operation whose path template matches `path`.
fn documented(document: &Value, method: &str, path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    document["paths"].as_object().unwrap().iter().any(|(template, item)| {
        let pattern: Vec<&str> = template.split('/').collect();
        item.get(method.to_lowercase()).is_some()
            && pattern.len() == segments.len()
            && pattern.iter().zip(&segments).all(|(p, s)| (p.starts_with('{') && !s.is_empty()) || p == s)
    })
}

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "PATCH", "DELETE"];

/// Paths a scanner tries first.
const GUESSES: [&str; 42] = [
    "/",
    "/index.html",
    "/openapi.json",
    "/api/openapi.json",
    "/api/v1",
    "/api/v1/",
    "/api/v0/products",
    "/api/v2/products",
    "/api/v2/users/me",
    "/v1/products",
    "/api/v1/admin",
    "/api/v1/admin/users",
    "/api/v1/admin/carts",
    "/api/v1/internal/contacts",
    "/api/v1/debug",
    "/debug/pprof/",
    "/debug/vars",
    "/.env",
    "/.git/config",
    "/actuator/health",
    "/server-status",
    "/swagger-ui",
    "/swagger-ui/index.html",
    "/api-docs",
    "/v3/api-docs",
    "/graphql",
    "/.well-known/openid-configuration",
    "/api/v1/users/me/sessions",
    "/api/v1/users/me/password",
    "/api/v1/products/export",
    "/api/v1/products/import",
    "/api/v1/inventory",
    "/api/v1/orders/export",
    "/api/v1/admin/orders/export",
    "/api/v1/payments",
    "/api/v1/payments/webhooks",
    "/api/v1/carts/me/checkout",
    "/health",
    "/status",
    "/metrics/json",
    "/openapi.yaml",
    "/api/v1/openapi.yaml",
];

/// The services' gRPC methods, which are for each other and never for clients.
const GRPC: [&str; 8] = [
    "/emporium.catalog.v1.Inventory/GetVariants",
    "/emporium.catalog.v1.Inventory/Reserve",
    "/emporium.catalog.v1.Inventory/Commit",
    "/emporium.catalog.v1.Inventory/Release",
    "/emporium.cart.v1.Carts/GetForCheckout",
    "/emporium.cart.v1.Carts/CompleteCheckout",
    "/emporium.identity.v1.Identity/GetContact",
    "/emporium.identity.v1.Identity/GetOneTimeLink",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_answers_that_the_document_does_not_name() {
    let shop = TestShop::start(TestDatabase::sqlite()).await;
    let admin = shop.admin_token().await;
    let document = shop.gateway.get("/api/v1/openapi.json").send().await.json();

    let mut answered = Vec::new();
    let mut probe = async |method: &str, path: &str, token: Option<&str>| {
        let mut request = shop.gateway.request(method.parse().unwrap(), path);
        if let Some(token) = token {
            request = request.bearer(token);
        }
        if method != "GET" {
            request = request.raw("application/json", "{}");
        }
        let answer = request.send().await;
        if answer.status.as_u16() < 400 && !documented(&document, method, path) {
            answered.push(format!("{method} {path} → {}", answer.status));
        }
        answer.status.as_u16()
    };

    // Guesses, by every method, anonymously and as an administrator (who may see the most).
    for path in GUESSES {
        for method in METHODS {
            for token in [None, Some(admin.as_str())] {
                probe(method, path, token).await;
            }
        }
    }
    // Every documented path by the methods it does not document, with ids that exist or not.
    let paths: Vec<String> = document["paths"].as_object().unwrap().keys().cloned().collect();
    for template in &paths {
        let path = template
            .split('/')
            .map(|s| if s.starts_with('{') { uuid::Uuid::now_v7().to_string() } else { s.to_owned() })
            .collect::<Vec<_>>()
            .join("/");
        for method in METHODS {
            if document["paths"][template].get(method.to_lowercase()).is_none() {
                probe(method, &path, Some(&admin)).await;
            }
        }
        probe("TRACE", &path, Some(&admin)).await;
    }
    // The services' internal gRPC, as a client could send it through the gateway.
    for path in GRPC {
        let answer = shop
            .gateway
            .post(path)
            .header("te", "trailers")
            .raw("application/grpc", vec![0u8, 0, 0, 0, 0])
            .bearer(&admin)
            .send()
            .await;
        assert!(answer.status.as_u16() >= 400, "{path}: {}", answer.status);
        assert!(answer.header("grpc-status").is_none(), "{path}: a gRPC service answered");
    }
    // The gateway's own endpoints are in it.
    for path in ["/health/live", "/health/ready", "/metrics", "/api/v1/openapi.json", "/docs/"] {
        assert!(documented(&document, "GET", path), "{path} is documented");
        assert_eq!(probe("GET", path, None).await, 200, "{path}");
    }
    assert!(answered.is_empty(), "answered but not in the document: {answered:#?}");
    // Metrics are for a scraper beside the gateway: forwarded by a proxy, they are not there.
    let forwarded = shop.gateway.get("/metrics").header("x-forwarded-for", "203.0.113.9").send().await;
    forwarded.problem(404);
    shop.stop().await;
}
