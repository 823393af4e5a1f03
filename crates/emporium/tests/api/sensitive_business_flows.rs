//! OWASP API6:2023, unrestricted access to sensitive business flows. A script that tries to buy
//! out a product cannot keep shoppers from it: carts hold no stock (only a paid checkout takes
//! it), a checkout that is declined or abandoned gives its stock back at once, a line holds at
//! most 99, and the script's own budgets (writes per user, sign-ins and sign-ups per address)
//! run out long before a shopper's do.

use std::time::Duration;

use serde_json::json;
use testkit::TestDatabase;

use crate::{
    catalog::{create, product_body},
    common::*,
    orders::{add_to_cart, checkout, checkout_body, unique_sku},
};

/// Units for sale, read from the catalog itself (signing in again would spend sign-in budget).
async fn available(shop: &TestShop, admin: &str, sku: &str) -> i64 {
    shop.catalog.get(&format!("/api/v1/inventory/{sku}")).bearer(admin).send().await.json()["available"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_cannot_hold_the_stock_or_outrun_its_budgets() {
    let shop = TestShop::start_with(TestDatabase::sqlite(), |s| {
        let minute = Duration::from_secs(60);
        s.gateway.rate_limits.auth = gateway::limits::Quota { requests: 6, per: minute };
        s.gateway.rate_limits.write = gateway::limits::Quota { requests: 40, per: minute };
    })
    .await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("DROP");
    create(&shop, &admin, &product_body("Limited Drop", &sku, 19_900, 5)).await;
    let script = token(&shop.register(&unique_email("script")).await);
    let shopper = token(&shop.register(&unique_email("shopper")).await);

    // The script fills its cart and eight guest carts with every unit there is.
    add_to_cart(&shop, &script, &sku, 5).await;
    for _ in 0..8 {
        let cart = shop.gateway.post("/api/v1/carts").send().await.json()["id"].as_str().unwrap().to_owned();
        let added = shop
            .gateway
            .post(&format!("/api/v1/carts/{cart}/items"))
            .json(&json!({"sku": sku, "quantity": 5}))
            .send()
            .await;
        assert_eq!(added.status, 200, "{}", String::from_utf8_lossy(&added.body));
    }
    assert_eq!(available(&shop, &admin, &sku).await, 5, "carts hold no stock");
    // Nor can a line hold more than a person buys.
    let greedy = shop
        .gateway
        .post("/api/v1/carts/me/items")
        .bearer(&script)
        .json(&json!({"sku": sku, "quantity": 99}))
        .send()
        .await;
    assert!(matches!(greedy.status.as_u16(), 409 | 422), "{}", greedy.status);

    // Checkouts it cannot pay for give their stock back at once, each time.
    for attempt in 0..3 {
        let key = format!("script-{attempt}");
        let declined = checkout(&shop, &script, &key, &checkout_body("me", "pm_card_chargeDeclined")).await;
        assert_eq!(declined.status, 402, "{}", String::from_utf8_lossy(&declined.body));
        assert_eq!(available(&shop, &admin, &sku).await, 5, "a declined checkout holds nothing");
    }

    // A shopper buys meanwhile.
    add_to_cart(&shop, &shopper, &sku, 1).await;
    let bought = checkout(&shop, &shopper, "shopper-1", &checkout_body("me", "pm_card_visa")).await;
    assert_eq!(bought.status, 201, "{}", String::from_utf8_lossy(&bought.body));
    assert_eq!(available(&shop, &admin, &sku).await, 4);

    // The script's writes run out; the shopper's budget is their own.
    let mut refused = None;
    for n in 0..60 {
        let answer = shop
            .gateway
            .put(&format!("/api/v1/carts/me/items/{sku}"))
            .bearer(&script)
            .json(&json!({"quantity": 1 + n % 4}))
            .send()
            .await;
        if answer.status == 429 {
            assert!(answer.header("retry-after").is_some());
            refused = Some(n);
            break;
        }
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    }
    let refused = refused.expect("the script's writes are limited");
    assert!(refused <= 40, "refused after {refused} more writes");
    let shopper_adds = shop
        .gateway
        .put(&format!("/api/v1/carts/me/items/{sku}"))
        .bearer(&shopper)
        .json(&json!({"quantity": 1}))
        .send()
        .await;
    assert_eq!(shopper_adds.status, 200, "{}", String::from_utf8_lossy(&shopper_adds.body));

    // Making accounts to start over runs out too: sign-ups and sign-ins share a budget per address.
    let mut signed_up = 0;
    loop {
        let answer = shop.register_raw(&unique_email("sock"), PASSWORD).await;
        if answer.status == 429 {
            break;
        }
        assert_eq!(answer.status, 201);
        signed_up += 1;
        assert!(signed_up <= 6, "sign-ups are limited");
    }
    shop.stop().await;
}
