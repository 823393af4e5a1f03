//! OWASP API5:2023, broken function level authorization. Every administrator's operation is
//! refused to a customer (403) and to an anonymous caller (401), changing nothing. The list of
//! operations is checked against the served OpenAPI document: an operation added without being
//! classed here as an administrator's or not fails this test.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use testkit::{TestDatabase, on_both_backends};

use crate::{
    catalog::{create, product_body},
    common::*,
    orders::unique_sku,
};

on_both_backends!(every_admin_operation_is_refused_to_customers_and_anonymous_callers);

/// API.md's operations for administrators only, as `METHOD path` in the document's spelling.
const ADMIN: [&str; 13] = [
    "GET /api/v1/users",
    "PUT /api/v1/users/{id}/roles",
    "POST /api/v1/products",
    "PATCH /api/v1/products/{id}",
    "DELETE /api/v1/products/{id}",
    "GET /api/v1/inventory/{sku}",
    "PUT /api/v1/inventory/{sku}",
    "PUT /api/v1/categories/{slug}",
    "GET /api/v1/admin/orders",
    "POST /api/v1/orders/{id}/shipments",
    "POST /api/v1/orders/{id}/delivery",
    "GET /api/v1/admin/notifications",
    "POST /api/v1/admin/notifications/{id}/resend",
];

/// Every other operation: for anyone, for a user on their own things, or for an order's owner
/// as well as an administrator (`GET /orders/{id}`, cancel), which the object-level tests cover.
const NOT_ADMIN: [&str; 64] = [
    "POST /api/v1/auth/register",
    "POST /api/v1/auth/login",
    "POST /api/v1/auth/refresh",
    "POST /api/v1/auth/logout",
    "GET /api/v1/auth/providers",
    "GET /api/v1/auth/oauth/{provider}/authorize",
    "GET /api/v1/auth/oauth/{provider}/callback",
    "POST /api/v1/auth/oauth/exchange",
    "POST /api/v1/auth/email/verify",
    "POST /api/v1/auth/email/resend",
    "POST /api/v1/auth/password/forgot",
    "POST /api/v1/auth/password/reset",
    "GET /api/v1/users/me",
    "PATCH /api/v1/users/me",
    "GET /api/v1/users/me/identities",
    "DELETE /api/v1/users/me/identities/{provider}",
    "GET /.well-known/jwks.json",
    "GET /api/v1/products",
    "GET /api/v1/products/suggest",
    "GET /api/v1/products/{id}",
    "GET /api/v1/categories",
    "POST /api/v1/carts",
    "GET /api/v1/carts/{cart_id}",
    "DELETE /api/v1/carts/{cart_id}",
    "POST /api/v1/carts/{cart_id}/items",
    "PUT /api/v1/carts/{cart_id}/items/{sku}",
    "DELETE /api/v1/carts/{cart_id}/items/{sku}",
    "POST /api/v1/carts/me/merge",
    "POST /api/v1/orders",
    "GET /api/v1/orders",
    "GET /api/v1/orders/{id}",
    "POST /api/v1/orders/{id}/cancel",
    // The payment provider's, checked by its signature.
    "POST /api/v1/payments/webhooks/{provider}",
    // The gateway's own; `/metrics` only for a scraper on a private network.
    "GET /health/live",
    "GET /health/ready",
    "GET /metrics",
    "GET /api/v1/openapi.json",
    "GET /docs/",
    "GET /docs/{file}",
    // The storefront's pages and their forms: a shopper's, signed in or not.
    "GET /",
    "GET /search",
    "GET /search/suggest",
    "GET /c/{category}",
    "GET /p/{slug}",
    "GET /cart",
    "POST /cart/items",
    "POST /cart/items/{sku}",
    "POST /cart/items/{sku}/remove",
    "GET /checkout",
    "POST /checkout",
    "POST /checkout/guest",
    "GET /login",
    "POST /login",
    "GET /login/with/{provider}",
    "GET /login/callback",
    "GET /register",
    "POST /register",
    "POST /logout",
    "GET /account",
    "GET /orders/{id}",
    "POST /orders/{id}/cancel",
    "GET /robots.txt",
    "GET /sitemap.xml",
    "GET /static/{file}",
];

fn documented(document: &Value) -> BTreeSet<String> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "patch", "delete"] {
            if item.get(method).is_some() {
                operations.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    operations
}

async fn every_admin_operation_is_refused_to_customers_and_anonymous_callers(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let customer_session = shop.register(&unique_email("customer")).await;
    let customer = token(&customer_session);
    let customer_id = customer_session["user"]["id"].as_str().unwrap().to_owned();

    let document = shop.gateway.get("/api/v1/openapi.json").send().await.json();
    let classed: BTreeSet<String> = ADMIN.iter().chain(NOT_ADMIN.iter()).map(|s| (*s).to_owned()).collect();
    let served = documented(&document);
    let unclassed: Vec<&String> = served.difference(&classed).collect();
    assert!(unclassed.is_empty(), "operations not classed as an administrator's or not: {unclassed:?}");
    let gone: Vec<&String> = classed.difference(&served).collect();
    assert!(gone.is_empty(), "classed here but not in the document: {gone:?}");

    // Real targets, so that a refusal is about the caller and not a missing object.
    let sku = unique_sku("BFLA");
    let product = create(&shop, &admin, &product_body("Guarded Boot", &sku, 7_000, 5)).await;
    let product_id = product["id"].as_str().unwrap();
    let order = uuid::Uuid::now_v7();
    let delivery = uuid::Uuid::now_v7();
    let target = |operation: &str| {
        operation
            .replace("{id}/roles", &format!("{customer_id}/roles"))
            .replace("products/{id}", &format!("products/{product_id}"))
            .replace("{sku}", &sku)
            .replace("{slug}", "guarded")
            .replace("orders/{id}", &format!("orders/{order}"))
            .replace("notifications/{id}", &format!("notifications/{delivery}"))
    };
    let body = |operation: &str| match operation {
        "PUT /api/v1/users/{id}/roles" => json!({"roles": ["customer", "admin"]}),
        "POST /api/v1/products" => product_body("Sneaky Boot", &unique_sku("SNEAK"), 1, 1000),
        "PATCH /api/v1/products/{id}" => json!({"title": "Defaced"}),
        "PUT /api/v1/inventory/{sku}" => json!({"on_hand": 100_000}),
        "PUT /api/v1/categories/{slug}" => json!({"name": "Guarded"}),
        "POST /api/v1/orders/{id}/shipments" => json!({"carrier": "DHL", "tracking_number": "1"}),
        _ => json!({}),
    };
    for operation in ADMIN {
        let (method, path) = operation.split_once(' ').unwrap();
        let path = target(path);
        let method: http::Method = method.parse().unwrap();
        for (caller, expected) in [(Some(customer.as_str()), 403), (None, 401)] {
            let mut request = shop.gateway.request(method.clone(), &path);
            if method != http::Method::GET {
                request = request.json(&body(operation));
            }
            if let Some(token) = caller {
                request = request.bearer(token);
            }
            let answer = request.send().await;
            assert_eq!(
                answer.status.as_u16(),
                expected,
                "{operation} as {caller:?}: {}",
                String::from_utf8_lossy(&answer.body)
            );
            answer.problem(expected);
        }
    }

    // Nothing changed: the customer is no administrator, the product and its stock are intact,
    // no category was made.
    let me = shop.gateway.get("/api/v1/users/me").bearer(&customer).send().await.json();
    assert_eq!(me["roles"], json!(["customer"]));
    let read = shop.gateway.get(&format!("/api/v1/products/{product_id}")).send().await.json();
    assert_eq!((read["title"].as_str(), read["status"].as_str()), (Some("Guarded Boot"), Some("active")));
    let stock = shop.gateway.get(&format!("/api/v1/inventory/{sku}")).bearer(&admin).send().await.json();
    assert_eq!(stock["on_hand"], 5);
    let sneaky = shop.gateway.get("/api/v1/products?q=Sneaky").send().await.json();
    assert_eq!(sneaky["total"], 0);
    let categories = shop.gateway.get("/api/v1/categories").send().await.json();
    assert!(categories.as_array().unwrap().iter().all(|c| c["slug"] != "guarded"), "{categories}");
    shop.stop().await;
}
