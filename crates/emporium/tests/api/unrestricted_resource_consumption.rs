//! OWASP API4:2023, unrestricted resource consumption. Whatever a client asks for is bounded,
//! and what is over the bound is refused at once with a 4xx, before it costs: page sizes (every
//! list, by the maximum its document states), body sizes, nesting depth, string lengths, query
//! strings, filters, and lines in a cart. Through all of it the shop keeps answering others.
//! (Slow, many and idle connections and header floods: `slow_clients.rs`; rate limits: `limits.rs`.)

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::{TestDatabase, TestResponse};

use crate::common::*;

/// `answer` refused with `status`, quickly.
fn refused(what: &str, answer: &TestResponse, status: u16, took: Duration) {
    assert_eq!(
        answer.status.as_u16(),
        status,
        "{what}: {}",
        String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
    );
    assert!(took < Duration::from_secs(2), "{what} took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_bounded_and_the_excess_refused_at_once() {
    let shop = TestShop::start(TestDatabase::sqlite()).await;
    let admin = shop.admin_token().await;
    let document = shop.gateway.get("/api/v1/openapi.json").send().await.json();

    // Page sizes: each list states its largest page; one more is refused with the status its
    // operation documents for a bad query (400, or 422 naming the field), the largest is served.
    let mut lists = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        let Some(parameters) = item["get"]["parameters"].as_array() else { continue };
        let Some(limit) = parameters.iter().find(|p| p["name"] == "limit" && p["in"] == "query") else { continue };
        if path.contains('{') {
            continue;
        }
        let maximum = limit["schema"]["maximum"].as_i64().unwrap_or_else(|| panic!("{path}: limit has no maximum"));
        assert!(maximum <= 100, "{path}: pages of up to {maximum}");
        let declared = |status: u16| item["get"]["responses"].get(status.to_string()).is_some();
        let started = Instant::now();
        let over = shop.gateway.get(&format!("{path}?limit={}", maximum + 1)).bearer(&admin).send().await;
        let status = over.status.as_u16();
        assert!(matches!(status, 400 | 422) && declared(status), "{path}?limit={}: {status}", maximum + 1);
        refused(&format!("{path} limit {}", maximum + 1), &over, status, started.elapsed());
        let most = shop.gateway.get(&format!("{path}?limit={maximum}")).bearer(&admin).send().await;
        assert_eq!(most.status, 200, "{path}?limit={maximum}");
        let huge = shop.gateway.get(&format!("{path}?limit=99999999999999999999")).bearer(&admin).send().await;
        assert_eq!(huge.status, 400, "{path}: a limit past any integer");
        lists += 1;
    }
    assert!(lists >= 4, "users, products, orders, admin orders and deliveries are lists: {lists}");
    // Deep paging is bounded too.
    let deep = shop.gateway.get("/api/v1/products?offset=10001").send().await;
    deep.problem(400);

    // Bodies: over the gateway's 1 MiB, a 413 before the service sees it.
    let big = format!(r#"{{"email":"a@example.com","password":"{}","name":"x"}}"#, "p".repeat(2 * 1024 * 1024));
    let started = Instant::now();
    let answer = shop.gateway.post("/api/v1/auth/register").raw("application/json", big).send().await;
    refused("a 2 MiB body", &answer, 413, started.elapsed());

    // Nesting: a body nested 100,000 deep is a 400, parsed no deeper than serde's limit.
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for path in ["/api/v1/auth/register", "/api/v1/carts/me/items", "/api/v1/products"] {
        let started = Instant::now();
        let answer = shop.gateway.post(path).bearer(&admin).raw("application/json", deep_json.clone()).send().await;
        refused(&format!("{path} nested 100,000 deep"), &answer, 400, started.elapsed());
    }
    // Under a member the handler does not read, the depth costs a skip, and the body lacks what
    // it needs: a 422, as quickly.
    let object = format!("{}1{}", r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
    let started = Instant::now();
    let answer = shop.gateway.post("/api/v1/auth/login").raw("application/json", object).send().await;
    refused("objects nested 50,000 deep", &answer, 422, started.elapsed());
    let inside = format!(r#"{{"email": {}1{}, "password": "p"}}"#, "[".repeat(50_000), "]".repeat(50_000));
    let started = Instant::now();
    let answer = shop.gateway.post("/api/v1/auth/login").raw("application/json", inside).send().await;
    refused("a field nested 50,000 deep", &answer, 400, started.elapsed());

    // Strings: each field has a length the document states; far over it is a 422.
    let long = "x".repeat(100_000);
    let cases: [(&str, Value); 4] = [
        ("/api/v1/auth/register", json!({"email": "long@example.com", "password": PASSWORD, "name": long})),
        ("/api/v1/auth/register", json!({"email": format!("{long}@example.com"), "password": PASSWORD, "name": "L"})),
        ("/api/v1/auth/login", json!({"email": "long@example.com", "password": long})),
        ("/api/v1/carts/me/items", json!({"sku": long, "quantity": 1})),
    ];
    for (path, body) in cases {
        let started = Instant::now();
        let answer = shop.gateway.post(path).bearer(&admin).json(&body).send().await;
        refused(&format!("{path} with a 100,000-character field"), &answer, 422, started.elapsed());
    }
    let started = Instant::now();
    let answer = shop.gateway.get(&format!("/api/v1/products?q={}", "word+".repeat(1_000))).send().await;
    refused("a 6,000-character search", &answer, 400, started.elapsed());

    // Query strings: thousands of filters, or a URL of 60 KiB, are refused before any search.
    let brands = (0..2_000).map(|n| format!("brand=b{n}")).collect::<Vec<_>>().join("&");
    let started = Instant::now();
    let answer = shop.gateway.get(&format!("/api/v1/products?{brands}")).send().await;
    assert!(matches!(answer.status.as_u16(), 400 | 431), "2,000 brand filters: {}", answer.status);
    assert!(started.elapsed() < Duration::from_secs(2));
    let attributes = (0..200).map(|n| format!("attr.a{n}=v")).collect::<Vec<_>>().join("&");
    let answer = shop.gateway.get(&format!("/api/v1/products?{attributes}")).send().await;
    answer.problem(400);
    // A head (request line and headers) over 16 KiB is a 431, whatever it carries.
    let started = Instant::now();
    let answer = shop.gateway.get(&format!("/api/v1/products?utm_source={}", "a".repeat(60 * 1024))).send().await;
    refused("a 60 KiB URL", &answer, 431, started.elapsed());

    // Still answering everyone else.
    assert_eq!(shop.gateway.get("/api/v1/products?limit=5").send().await.status, 200);
    assert_eq!(shop.gateway.get("/api/v1/users/me").bearer(&admin).send().await.status, 200);
    shop.stop().await;
}
