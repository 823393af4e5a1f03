//! OWASP API10:2023, unsafe consumption of APIs. What a payment provider or a sign-in provider
//! answers is checked before the shop acts on it: HTML where JSON was due, a "succeeded" for
//! another amount or currency or with no id, a token answer without a token, a garbled ID token,
//! a body too large to read. A payment answer that does not read right leaves the outcome
//! unknown: the checkout answers 503, nothing is paid, and the charge is asked again under its
//! idempotency key until the answer reads right (then paid once). A sign-in answer that does not
//! is a refused sign-in, and no account is made.

use std::sync::{Arc, Mutex};

use axum::{Router, http::StatusCode, response::IntoResponse, routing::any};
use serde_json::json;
use testkit::{
    TestDatabase,
    browser::query_param,
    providers::{Account, FakeProviders},
};

use crate::{
    catalog::{create, product_body},
    common::*,
    orders::{add_to_cart, available, checkout, checkout_body, unique_sku},
    server_side_request_forgery::{shop_with_providers, sign_in},
    social::{CLIENT_ID, CLIENT_SECRET},
};

/// What the stand-in answers next: a status, a content type and a body.
type Answer = Arc<Mutex<(StatusCode, &'static str, Vec<u8>)>>;

/// A server that answers every request with whatever the test set last.
async fn misbehaving() -> (String, Answer) {
    let answer: Answer = Arc::new(Mutex::new((StatusCode::OK, "application/json", b"{}".to_vec())));
    let current = answer.clone();
    let app = Router::new().fallback(any(move || {
        let (status, content_type, body) = current.lock().unwrap().clone();
        async move { (status, [("content-type", content_type)], body).into_response() }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, answer)
}

fn set(answer: &Answer, status: StatusCode, content_type: &'static str, body: impl Into<Vec<u8>>) {
    *answer.lock().unwrap() = (status, content_type, body.into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_answer_is_taken_only_when_it_reads_right() {
    let (url, answer) = misbehaving().await;
    let shop = TestShop::start_with(TestDatabase::sqlite(), |s| {
        s.orders.payments.provider = "stripe".to_owned();
        s.orders.payments.stripe.api_base = url.clone();
        s.orders.payments.stripe.secret_key = Some("sk_test_unsafe".to_owned().into());
    })
    .await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("UNSAFE");
    create(&shop, &admin, &product_body("Trusted Teapot", &sku, 2_500, 10)).await;
    let intent = |amount: i64, currency: &str| {
        json!({"id": "pi_unsafe1", "object": "payment_intent", "status": "succeeded", "amount": amount, "currency": currency})
            .to_string()
    };

    // A 2xx that is not a payment intent for this charge says nothing of whether the card was
    // charged: the checkout answers 503, the order waits with its stock held, and the charge is
    // asked again under the same idempotency key.
    let unreadable: [(&str, &'static str, String); 7] = [
        ("an HTML page", "text/html", "<html><body>Welcome!</body></html>".to_owned()),
        ("truncated JSON", "application/json", r#"{"id": "pi_1", "status": "succ"#.to_owned()),
        ("another amount", "application/json", intent(1, "eur")),
        ("another currency", "application/json", intent(2_500, "usd")),
        ("no id", "application/json", json!({"status": "succeeded", "amount": 2_500, "currency": "eur"}).to_string()),
        ("a list", "application/json", "[]".to_owned()),
        ("a body too large to read", "application/json", format!(r#"{{"pad": "{}"}}"#, "x".repeat(3 * 1024 * 1024))),
    ];
    let mut buyers = Vec::new();
    for (n, (what, content_type, body)) in unreadable.into_iter().enumerate() {
        set(&answer, StatusCode::OK, content_type, body);
        // A buyer each: a cart whose checkout is unfinished cannot be checked out again.
        let buyer = token(&shop.register(&unique_email("unsafe")).await);
        add_to_cart(&shop, &buyer, &sku, 1).await;
        let placed = checkout(&shop, &buyer, &format!("unsafe-{n}"), &checkout_body("me", "pm_card_visa")).await;
        placed.problem(503);
        assert!(placed.header("retry-after").is_some(), "{what}");
        let orders = shop.gateway.get("/api/v1/orders").bearer(&buyer).send().await.json();
        assert!(orders["items"].as_array().unwrap().iter().all(|o| o["status"] != "paid"), "{what}: {orders}");
        buyers.push(buyer);
    }
    assert_eq!(available(&shop, &sku).await, 3, "each waiting order holds its unit");

    // The provider answers right again: each charge, asked again with its key, is paid once.
    set(&answer, StatusCode::OK, "application/json", intent(2_500, "eur"));
    for buyer in &buyers {
        let paid = testkit::eventually(std::time::Duration::from_secs(30), || async {
            let orders = shop.gateway.get("/api/v1/orders").bearer(buyer).send().await.json();
            orders["items"].as_array().is_some_and(|o| o.len() == 1 && o[0]["status"] == "paid")
        })
        .await;
        assert!(paid, "a waiting order is paid once the answers read right");
    }
    assert_eq!(available(&shop, &sku).await, 3);
    shop.stop().await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sign_in_answers_make_no_account() {
    let (url, answer) = misbehaving().await;
    let fakes = FakeProviders::start(CLIENT_ID, CLIENT_SECRET).await;
    let cases: Vec<(&str, &str, StatusCode, &'static str, String)> = vec![
        ("token_endpoint", "an HTML page", StatusCode::OK, "text/html", "<html>sign in again</html>".to_owned()),
        (
            "token_endpoint",
            "no ID token",
            StatusCode::OK,
            "application/json",
            json!({"access_token": "at"}).to_string(),
        ),
        (
            "token_endpoint",
            "an ID token that is a number",
            StatusCode::OK,
            "application/json",
            json!({"id_token": 5}).to_string(),
        ),
        (
            "token_endpoint",
            "an ID token that is no JWT",
            StatusCode::OK,
            "application/json",
            json!({"id_token": "a.b"}).to_string(),
        ),
        (
            "token_endpoint",
            "a body too large",
            StatusCode::OK,
            "application/json",
            format!(r#"{{"id_token": "{}"}}"#, "x".repeat(2 * 1024 * 1024)),
        ),
        (
            "jwks_uri",
            "keys that are not keys",
            StatusCode::OK,
            "application/json",
            json!({"keys": [{"kty": "none"}, 7]}).to_string(),
        ),
        ("jwks_uri", "an HTML page for keys", StatusCode::OK, "text/html", "<html>keys</html>".to_owned()),
    ];
    let (shop, gateway) = shop_with_providers(TestDatabase::sqlite(), &fakes, cases.len()).await;
    fakes.sign_in_as(Some(Account::new("consumed", Some(("consumed@example.com", true)))));
    for (n, (member, what, status, content_type, body)) in cases.into_iter().enumerate() {
        set(&answer, status, content_type, body);
        let endpoint = format!("{url}/{member}");
        fakes.discovery_names(serde_json::Value::Object([(member.to_owned(), json!(endpoint))].into_iter().collect()));
        let location = sign_in(&gateway, &fakes, &format!("p{n}")).await;
        assert_eq!(query_param(&location, "code"), None, "{what}: {location}");
        assert!(query_param(&location, "error").is_some(), "{what}: {location}");
    }
    assert_eq!(shop.count("SELECT COUNT(*) FROM users WHERE email_normalized = 'consumed@example.com'").await, 0);
    shop.stop().await;
}
