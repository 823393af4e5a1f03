//! OWASP API Security Top 10 (2023), API8 Security Misconfiguration, through the gateway: every
//! answer (data, problem, document, page, preflight) forbids content sniffing and names no server
//! software, token answers are never cached, and browsers from origins the shop did not name get
//! no CORS grant.

use http::Method;
use serde_json::json;
use testkit::{TestDatabase, TestResponse};

use crate::common::*;

const SHOP: &str = "https://shop.example.com";

#[track_caller]
fn assert_hardened(what: &str, response: &TestResponse) {
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"), "{what}: X-Content-Type-Options");
    assert_eq!(response.header("server"), None, "{what}: no Server header");
    assert_eq!(response.header("x-powered-by"), None, "{what}: no X-Powered-By");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_forbids_sniffing_and_names_no_software() {
    let shop = TestShop::start_with(TestDatabase::sqlite(), |settings| {
        settings.gateway.cors.allowed_origins = vec![SHOP.to_owned()];
    })
    .await;
    let gateway = &shop.gateway;
    let email = unique_email("misconfig");
    let registered = gateway
        .post("/api/v1/auth/register")
        .json(&json!({"email": email, "password": PASSWORD, "name": "Ada"}))
        .send()
        .await;
    assert_eq!(registered.status, 201);
    let answers = [
        ("a product list", gateway.get("/api/v1/products?limit=1").send().await),
        ("a 404 problem", gateway.get("/api/v1/products/no-such-product").send().await),
        ("a gateway 404", gateway.get("/no/such/route").send().await),
        ("a 405", gateway.request(Method::TRACE, "/api/v1/products").send().await),
        ("a 401", gateway.get("/api/v1/users/me").send().await),
        ("a 415", gateway.post("/api/v1/auth/login").raw("application/x-www-form-urlencoded", "email=x").send().await),
        ("the OpenAPI document", gateway.get("/api/v1/openapi.json").send().await),
        ("the docs page", gateway.get("/docs/").send().await),
        ("registration", registered),
        ("a login", shop.login(&email, PASSWORD).await),
        (
            "a preflight",
            gateway
                .request(Method::OPTIONS, "/api/v1/carts")
                .header("origin", SHOP)
                .header("access-control-request-method", "POST")
                .send()
                .await,
        ),
    ];
    for (what, answer) in &answers {
        assert_hardened(what, answer);
    }
    for (what, answer) in &answers[8..10] {
        assert_eq!(answer.header("cache-control"), Some("no-store"), "{what}: tokens are never cached");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_grants_only_the_origins_the_shop_names() {
    let shop = TestShop::start_with(TestDatabase::sqlite(), |settings| {
        settings.gateway.cors.allowed_origins = vec![SHOP.to_owned()];
    })
    .await;
    let preflight = |origin: &'static str| {
        shop.gateway
            .request(Method::OPTIONS, "/api/v1/carts")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let named = preflight(SHOP).await;
    assert_eq!(named.header("access-control-allow-origin"), Some(SHOP));
    for stranger in ["https://evil.example", "null", "https://shop.example.com.evil.example"] {
        let refused = preflight(stranger).await;
        assert_eq!(refused.header("access-control-allow-origin"), None, "preflight from {stranger}");
        let read = shop.gateway.get("/api/v1/products?limit=1").header("origin", stranger).send().await;
        assert_eq!(read.status, 200, "the request itself is answered; the browser withholds it");
        assert_eq!(read.header("access-control-allow-origin"), None, "a read from {stranger}");
        assert_eq!(read.header("access-control-allow-credentials"), None);
    }

    // A shop that names no origin grants none.
    let closed = TestShop::start(TestDatabase::sqlite()).await;
    let answer = closed.gateway.get("/api/v1/products?limit=1").header("origin", SHOP).send().await;
    assert_eq!(answer.header("access-control-allow-origin"), None);
}
