//! API.md's Orders section through the gateway: checkout with idempotency keys, declines, out of
//! stock, the state machine, owners-only access, and a flash sale.

use std::{collections::BTreeMap, time::Duration};

use platform::{db::Db, with_db};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use testkit::{TestDatabase, TestResponse, on_both_backends};

use crate::{
    catalog::{create, product_body},
    common::*,
};

on_both_backends!(
    checkout_declines_out_of_stock_and_replays,
    owners_only_and_the_order_lifecycle,
    random_action_sequences_follow_the_state_machine,
    flash_sale_sells_exactly_the_stock,
    webhooks_are_verified_and_idempotent,
    order_events_carry_the_request_trace,
    a_saga_that_keeps_failing_is_counted_as_stuck,
    one_cart_is_ordered_once_under_racing_keys,
);

pub fn unique_sku(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]).to_uppercase()
}

pub fn address() -> Value {
    json!({"name": "Ada Lovelace", "line1": "1 Main Street", "city": "Berlin", "postal_code": "10115", "country": "DE"})
}

pub fn checkout_body(cart: &str, method: &str) -> Value {
    json!({"cart_id": cart, "shipping_address": address(), "payment_method": method})
}

pub async fn add_to_cart(shop: &TestShop, token: &str, sku: &str, quantity: i64) {
    let added = shop
        .gateway
        .post("/api/v1/carts/me/items")
        .bearer(token)
        .json(&json!({"sku": sku, "quantity": quantity}))
        .send()
        .await;
    assert_eq!(added.status, 200, "{}", String::from_utf8_lossy(&added.body));
}

pub async fn checkout(shop: &TestShop, token: &str, key: &str, body: &Value) -> TestResponse {
    shop.gateway.post("/api/v1/orders").bearer(token).header("idempotency-key", key).json(body).send().await
}

/// A new customer with a paid order of `quantity` × `sku`.
async fn paid_order(shop: &TestShop, sku: &str, quantity: i64) -> (String, Value) {
    let user = token(&shop.register(&unique_email("buyer")).await);
    add_to_cart(shop, &user, sku, quantity).await;
    let placed = checkout(shop, &user, &uuid::Uuid::new_v4().to_string(), &checkout_body("me", "pm_card_visa")).await;
    assert_eq!(placed.status, 201, "{}", String::from_utf8_lossy(&placed.body));
    (user, placed.json())
}

pub async fn available(shop: &TestShop, sku: &str) -> i64 {
    let stock = shop.catalog.get(&format!("/api/v1/inventory/{sku}")).bearer(&shop.admin_token().await).send().await;
    assert_eq!(stock.status, 200, "{}", String::from_utf8_lossy(&stock.body));
    stock.json()["available"].as_i64().unwrap()
}

pub async fn scalar(db: &Db, sql: &'static str) -> i64 {
    with_db!(db, |pool| sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await).expect("count")
}

async fn outbox_types(shop: &TestShop) -> Vec<String> {
    let db = shop.orders_db().await;
    let types =
        with_db!(&db, |pool| sqlx::query_scalar::<_, String>("SELECT event_type FROM event_outbox ORDER BY seq")
            .fetch_all(pool)
            .await)
        .unwrap();
    db.close().await;
    types
}

async fn checkout_declines_out_of_stock_and_replays(db: TestDatabase) {
    let shop = TestShop::start_with(db, |s| {
        s.orders.pricing.shipping_flat = 495;
        s.orders.pricing.free_shipping_over = Some(10_000);
        s.orders.pricing.tax_rates = BTreeMap::from([("DE".to_owned(), 1_900)]);
    })
    .await;
    let admin = shop.admin_token().await;
    let (shoe, tee) = (unique_sku("SHOE"), unique_sku("TEE"));
    create(&shop, &admin, &product_body("Order Shoe", &shoe, 1_999, 10)).await;
    create(&shop, &admin, &product_body("Order Tee", &tee, 500, 10)).await;
    let user = token(&shop.register(&unique_email("buyer")).await);
    add_to_cart(&shop, &user, &shoe, 2).await;
    add_to_cart(&shop, &user, &tee, 1).await;
    let body = checkout_body("me", "pm_card_visa");

    // The key is required, and so is a token.
    let no_key = shop.gateway.post("/api/v1/orders").bearer(&user).json(&body).send().await;
    assert!(no_key.problem(400)["detail"].as_str().unwrap().contains("Idempotency-Key"));
    let anonymous = shop.gateway.post("/api/v1/orders").header("idempotency-key", "k").json(&body).send().await;
    anonymous.problem(401);
    // Bad input changes nothing and is not remembered under the key.
    let mut bad = body.clone();
    bad["shipping_address"]["country"] = json!("Germany");
    bad["payment_method"] = json!("pm_card_unknown");
    let invalid = checkout(&shop, &user, "key-1", &bad).await.problem(422);
    let fields: Vec<&str> =
        invalid["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["shipping_address.country"]);
    bad["shipping_address"] = address();
    checkout(&shop, &user, "key-1", &bad).await.problem(422);

    // Paid: 2 × 19.99 + 5.00 = 44.98, shipping 4.95, 19% tax on 49.93 = 9.49 (rounded half up).
    let placed = checkout(&shop, &user, "key-1", &body).await;
    assert_eq!(placed.status, 201, "{}", String::from_utf8_lossy(&placed.body));
    assert_eq!(placed.header("content-type"), Some("application/json"));
    let order = placed.json();
    assert_eq!(order["status"], "paid");
    assert!(order["number"].as_str().unwrap().starts_with("EM-1"), "{}", order["number"]);
    assert_eq!(order["subtotal"], json!({"amount": 4_498, "currency": "EUR"}));
    assert_eq!(order["shipping"]["amount"], 495);
    assert_eq!(order["tax"]["amount"], 949);
    assert_eq!(order["total"]["amount"], 4_498 + 495 + 949);
    assert_eq!(order["lines"].as_array().unwrap().len(), 2);
    let shoe_line = order["lines"].as_array().unwrap().iter().find(|l| l["sku"] == shoe.as_str()).unwrap();
    assert_eq!((shoe_line["quantity"].as_i64(), shoe_line["line_total"]["amount"].as_i64()), (Some(2), Some(3_998)));
    assert_eq!(order["payment"]["provider"], "sandbox");
    assert_eq!(order["payment"]["status"], "succeeded");
    assert!(order["payment"]["reference"].as_str().unwrap().starts_with("sbx_pi_"));
    let history: Vec<&str> =
        order["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(history, ["pending_payment", "paid"]);
    assert_eq!(order["shipping_address"]["country"], "DE");
    // Stock left on hand; the cart is empty.
    assert_eq!(available(&shop, &shoe).await, 8);
    let cart = shop.gateway.get("/api/v1/carts/me").bearer(&user).send().await.json();
    assert_eq!(cart["item_count"], 0);

    // The same key and body replay the first answer; another body under it is refused.
    let replay = checkout(&shop, &user, "key-1", &body).await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json(), order);
    checkout(&shop, &user, "key-1", &checkout_body("me", "pm_card_mastercard")).await.problem(422);
    // Keys are per user: another user's identical key is theirs alone.
    let other = token(&shop.register(&unique_email("other")).await);
    checkout(&shop, &other, "key-1", &body).await.problem(422);

    // An empty cart; a cart that does not exist.
    let empty = checkout(&shop, &user, "key-2", &body).await.problem(422);
    assert!(empty["detail"].as_str().unwrap().contains("empty"));
    checkout(&shop, &user, "key-3", &checkout_body(&uuid::Uuid::new_v4().to_string(), "pm_card_visa"))
        .await
        .problem(404);

    // Declined: 402 with the order in payment_failed, its stock back, the cart kept.
    add_to_cart(&shop, &user, &shoe, 3).await;
    let declined =
        checkout(&shop, &user, "key-4", &checkout_body("me", "pm_card_chargeDeclinedInsufficientFunds")).await;
    assert_eq!(declined.status, 402, "{}", String::from_utf8_lossy(&declined.body));
    let failed = declined.json();
    assert_eq!(
        (failed["status"].as_str(), failed["payment"]["status"].as_str()),
        (Some("payment_failed"), Some("failed"))
    );
    // Why, in the card processors' words, also when the order is read again.
    assert_eq!(failed["payment"]["decline_code"], "insufficient_funds");
    let id = failed["id"].as_str().unwrap();
    let again = shop.gateway.get(&format!("/api/v1/orders/{id}")).bearer(&user).send().await.json();
    assert_eq!(again["payment"]["decline_code"], "insufficient_funds");
    assert_eq!(available(&shop, &shoe).await, 8);
    let cart = shop.gateway.get("/api/v1/carts/me").bearer(&user).send().await.json();
    assert_eq!(cart["item_count"], 3);
    assert_eq!(
        checkout(&shop, &user, "key-4", &checkout_body("me", "pm_card_chargeDeclinedInsufficientFunds")).await.status,
        402
    );

    // Out of stock at checkout (stock fell after the add): 409 naming the SKU, nothing held.
    let set =
        shop.gateway.put(&format!("/api/v1/inventory/{shoe}")).bearer(&admin).json(&json!({"on_hand": 2})).send().await;
    assert_eq!(set.status, 200, "{}", String::from_utf8_lossy(&set.body));
    let short = checkout(&shop, &user, "key-5", &body).await.problem(409);
    assert_eq!(short["shortages"][0]["sku"], shoe.as_str());
    assert_eq!(short["shortages"][0]["available"], 2);
    assert_eq!(short["shortages"][0]["reason"], "out_of_stock");
    assert_eq!(available(&shop, &shoe).await, 2);

    // My orders: the paid and the failed one, newest first.
    let mine = shop.gateway.get("/api/v1/orders").bearer(&user).send().await.json();
    let ids: Vec<&str> = mine["items"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [failed["id"].as_str().unwrap(), order["id"].as_str().unwrap()]);
    let one = shop.gateway.get(&format!("/api/v1/orders/{}", order["id"].as_str().unwrap())).bearer(&user).send().await;
    assert_eq!(one.json()["number"], order["number"]);

    // Each change was published through the outbox, the checkout's in saga order.
    let types = outbox_types(&shop).await;
    assert_eq!(
        types,
        ["order.placed", "order.paid", "fulfilment.requested", "order.placed", "order.payment_failed"],
        "{types:?}"
    );
    shop.stop().await;
}

async fn owners_only_and_the_order_lifecycle(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("LIFE");
    create(&shop, &admin, &product_body("Lifecycle Boot", &sku, 12_000, 20)).await;
    let (alice, first) = paid_order(&shop, &sku, 2).await;
    let (bob, _) = paid_order(&shop, &sku, 1).await;
    let id = first["id"].as_str().unwrap().to_owned();

    // Nobody else reaches Alice's order, by any route: the same 404 as for no order at all.
    let path = format!("/api/v1/orders/{id}");
    shop.gateway.get(&path).bearer(&bob).send().await.problem(404);
    shop.gateway.post(&format!("{path}/cancel")).bearer(&bob).send().await.problem(404);
    shop.gateway.get(&format!("/api/v1/orders/{}", uuid::Uuid::now_v7())).bearer(&alice).send().await.problem(404);
    shop.gateway.get("/api/v1/orders/not-a-uuid").bearer(&alice).send().await.problem(404);
    let bobs = shop.gateway.get("/api/v1/orders").bearer(&bob).send().await.json();
    assert!(bobs["items"].as_array().unwrap().iter().all(|o| o["id"] != id.as_str()));
    shop.gateway.get(&path).send().await.problem(401);
    // Only admins record shipments and list every order.
    shop.gateway
        .post(&format!("{path}/shipments"))
        .bearer(&alice)
        .json(&json!({"carrier": "DHL", "tracking_number": "1"}))
        .send()
        .await
        .problem(403);
    shop.gateway.get("/api/v1/admin/orders").bearer(&alice).send().await.problem(403);
    assert_eq!(shop.gateway.get(&path).bearer(&admin).send().await.status, 200);

    // paid → shipped → delivered; nothing else along the way.
    shop.gateway.post(&format!("{path}/delivery")).bearer(&admin).send().await.problem(409);
    shop.gateway
        .post(&format!("{path}/shipments"))
        .bearer(&admin)
        .json(&json!({"carrier": " ", "tracking_number": ""}))
        .send()
        .await
        .problem(422);
    let shipped = shop
        .gateway
        .post(&format!("{path}/shipments"))
        .bearer(&admin)
        .json(&json!({"carrier": "DHL", "tracking_number": "JD0146"}))
        .send()
        .await;
    assert_eq!(shipped.status, 200, "{}", String::from_utf8_lossy(&shipped.body));
    let shipped = shipped.json();
    assert_eq!((shipped["status"].as_str(), shipped["fulfilment"]["carrier"].as_str()), (Some("shipped"), Some("DHL")));
    assert!(shipped["fulfilment"]["shipped_at"].is_string());
    let late = shop.gateway.post(&format!("{path}/cancel")).bearer(&alice).send().await.problem(409);
    assert_eq!(late["order_status"], "shipped");
    shop.gateway
        .post(&format!("{path}/shipments"))
        .bearer(&admin)
        .json(&json!({"carrier": "DHL", "tracking_number": "2"}))
        .send()
        .await
        .problem(409);
    let delivered = shop.gateway.post(&format!("{path}/delivery")).bearer(&admin).send().await.json();
    assert_eq!(delivered["status"], "delivered");
    let history: Vec<&str> =
        delivered["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(history, ["pending_payment", "paid", "shipped", "delivered"]);

    // Cancelling a paid order refunds it and puts the stock back.
    let before = available(&shop, &sku).await;
    let (carol, second) = paid_order(&shop, &sku, 3).await;
    assert_eq!(available(&shop, &sku).await, before - 3);
    let second_path = format!("/api/v1/orders/{}", second["id"].as_str().unwrap());
    let cancelled = shop.gateway.post(&format!("{second_path}/cancel")).bearer(&carol).send().await;
    assert_eq!(cancelled.status, 200, "{}", String::from_utf8_lossy(&cancelled.body));
    let cancelled = cancelled.json();
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["payment"]["status"].as_str()),
        (Some("cancelled"), Some("refunded"))
    );
    assert_eq!(available(&shop, &sku).await, before);
    shop.gateway.post(&format!("{second_path}/cancel")).bearer(&carol).send().await.problem(409);
    let db = shop.orders_db().await;
    assert_eq!(scalar(&db, "SELECT CAST(COALESCE(SUM(refunded), 0) AS BIGINT) FROM sandbox_payments").await, 36_000);
    db.close().await;

    // The admin listing: filtered by status, paged by cursor, newest first.
    let paid = shop.gateway.get("/api/v1/admin/orders?status=paid").bearer(&admin).send().await.json();
    let paid: Vec<&str> = paid["items"].as_array().unwrap().iter().map(|o| o["status"].as_str().unwrap()).collect();
    assert_eq!(paid, ["paid"]);
    let (mut seen, mut cursor) = (Vec::new(), String::new());
    loop {
        let page = shop
            .gateway
            .get(&format!("/api/v1/admin/orders?limit=2&cursor={cursor}"))
            .bearer(&admin)
            .send()
            .await
            .json();
        seen.extend(page["items"].as_array().unwrap().iter().map(|o| o["status"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ["cancelled", "paid", "delivered"]);
    shop.gateway.get("/api/v1/admin/orders?status=lost").bearer(&admin).send().await.problem(422);
    shop.stop().await;
}

/// Random sequences of actions on orders answer exactly as the state machine says: 200 for a
/// documented transition, 409 for any other, and the order is unchanged by a 409.
async fn random_action_sequences_follow_the_state_machine(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("PROP");
    create(&shop, &admin, &product_body("Property Sock", &sku, 300, 500)).await;
    let seed: u64 = rand::random();
    eprintln!("state machine property test seed: {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    // A declined order starts in payment_failed, the others in paid.
    let user = token(&shop.register(&unique_email("prop")).await);
    add_to_cart(&shop, &user, &sku, 1).await;
    let failed = checkout(&shop, &user, "declined", &checkout_body("me", "pm_card_chargeDeclined")).await.json();
    let mut orders = vec![(user.clone(), failed)];
    for _ in 0..6 {
        let (owner, order) = paid_order(&shop, &sku, 1).await;
        orders.push((owner, order));
    }
    for (owner, order) in orders {
        let path = format!("/api/v1/orders/{}", order["id"].as_str().unwrap());
        let mut status = order["status"].as_str().unwrap().to_owned();
        for _ in 0..8 {
            let (action, target) = match rng.gen_range(0..4) {
                0 => ("cancel", "cancelled"),
                1 => ("cancel-admin", "cancelled"),
                2 => ("shipments", "shipped"),
                _ => ("delivery", "delivered"),
            };
            let allowed = matches!(
                (status.as_str(), target),
                ("paid", "cancelled") | ("paid", "shipped") | ("shipped", "delivered")
            );
            let response = match action {
                "cancel" => shop.gateway.post(&format!("{path}/cancel")).bearer(&owner).send().await,
                "cancel-admin" => shop.gateway.post(&format!("{path}/cancel")).bearer(&admin).send().await,
                "shipments" => {
                    shop.gateway
                        .post(&format!("{path}/shipments"))
                        .bearer(&admin)
                        .json(&json!({"carrier": "UPS", "tracking_number": "1Z"}))
                        .send()
                        .await
                }
                _ => shop.gateway.post(&format!("{path}/delivery")).bearer(&admin).send().await,
            };
            if allowed {
                assert_eq!(
                    response.status,
                    200,
                    "{action} from {status} (seed {seed}): {}",
                    String::from_utf8_lossy(&response.body)
                );
                status = target.to_owned();
            } else {
                assert_eq!(
                    response.problem(409)["order_status"],
                    status.as_str(),
                    "{action} from {status} (seed {seed})"
                );
            }
            let now = shop.gateway.get(&path).bearer(&owner).send().await.json();
            assert_eq!(now["status"], status.as_str(), "seed {seed}");
        }
    }
    shop.stop().await;
}

/// Twenty buyers race for five units: exactly five pay, the rest are told it is out of stock,
/// and nothing stays reserved.
async fn flash_sale_sells_exactly_the_stock(db: TestDatabase) {
    let backend = db.backend;
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("FLASH");
    create(&shop, &admin, &product_body("Flash Sale Lamp", &sku, 4_900, 5)).await;
    let mut buyers = Vec::new();
    for _ in 0..20 {
        let buyer = token(&shop.register(&unique_email("flash")).await);
        add_to_cart(&shop, &buyer, &sku, 1).await;
        buyers.push(buyer);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for buyer in buyers {
        let gateway = shop.gateway.clone();
        tasks.spawn(async move {
            gateway
                .post("/api/v1/orders")
                .bearer(&buyer)
                .header("idempotency-key", &uuid::Uuid::new_v4().to_string())
                .json(&checkout_body("me", "pm_card_visa"))
                .send()
                .await
        });
    }
    let mut statuses = BTreeMap::<u16, usize>::new();
    while let Some(response) = tasks.join_next().await {
        let response = response.unwrap();
        if response.status == 409 {
            assert_eq!(response.json()["shortages"][0]["sku"], sku.as_str());
        }
        *statuses.entry(response.status.as_u16()).or_default() += 1;
    }
    assert_eq!(statuses, BTreeMap::from([(201, 5), (409, 15)]), "on {backend:?}");
    assert_eq!(available(&shop, &sku).await, 0);
    let catalog = shop.catalog_db().await;
    assert_eq!(scalar(&catalog, "SELECT COUNT(*) FROM reservations WHERE state = 'held'").await, 0);
    assert_eq!(scalar(&catalog, "SELECT CAST(COALESCE(SUM(on_hand), 0) AS BIGINT) FROM inventory").await, 0);
    catalog.close().await;
    let orders = shop.orders_db().await;
    assert_eq!(scalar(&orders, "SELECT COUNT(*) FROM orders WHERE status = 'paid'").await, 5);
    assert_eq!(scalar(&orders, "SELECT COUNT(*) FROM sandbox_payments WHERE status = 'succeeded'").await, 5);
    orders.close().await;
    shop.stop().await;
}

/// Provider notifications: signed with the endpoint secret, refused when forged or stale,
/// handled once per event id.
async fn webhooks_are_verified_and_idempotent(db: TestDatabase) {
    const SECRET: &str = "whsec_test_secret";
    let shop =
        TestShop::start_with(db, |s| s.orders.payments.sandbox.webhook_secret = Some(SECRET.to_owned().into())).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("HOOK");
    create(&shop, &admin, &product_body("Webhook Mug", &sku, 1_000, 5)).await;
    let (_, order) = paid_order(&shop, &sku, 1).await;
    let body = json!({
        "id": format!("evt_{}", uuid::Uuid::new_v4().simple()),
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": order["payment"]["reference"], "metadata": {"order_id": order["id"]}}},
    })
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let send = |signature: String, body: String| {
        let gateway = shop.gateway.clone();
        async move {
            gateway
                .post("/api/v1/payments/webhooks/sandbox")
                .header("sandbox-signature", &signature)
                .raw("application/json", body)
                .send()
                .await
        }
    };
    let good = orders::payments::sign(SECRET.as_bytes(), now, body.as_bytes());
    let first = send(good.clone(), body.clone()).await;
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    assert_eq!(first.json()["duplicate"], false);
    assert_eq!(send(good.clone(), body.clone()).await.json()["duplicate"], true);
    // Forged, tampered with, stale, unsigned, or for a provider not in use.
    send(orders::payments::sign(b"guess", now, body.as_bytes()), body.clone()).await.problem(400);
    send(good.clone(), body.replace("succeeded", "failed")).await.problem(400);
    send(orders::payments::sign(SECRET.as_bytes(), now - 301, body.as_bytes()), body.clone()).await.problem(400);
    shop.gateway
        .post("/api/v1/payments/webhooks/sandbox")
        .raw("application/json", body.clone())
        .send()
        .await
        .problem(400);
    shop.gateway
        .post("/api/v1/payments/webhooks/paypal")
        .header("sandbox-signature", &good)
        .raw("application/json", body)
        .send()
        .await
        .problem(404);
    // The order is untouched by its notification, and the service counted what it did.
    let after = shop
        .gateway
        .get(&format!("/api/v1/orders/{}", order["id"].as_str().unwrap()))
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(after["history"], order["history"]);
    let metrics = String::from_utf8(shop.orders.get("/metrics").send().await.body.to_vec()).unwrap();
    for name in [
        "orders_checkout_duration_seconds",
        "orders_payment_provider_duration_seconds",
        "orders_webhooks_total",
        "orders_transitions_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    shop.stop().await;
}

/// Each order event carries the trace context of the request behind it: the checkout's for
/// `order.placed`, `order.paid` and `fulfilment.requested` (written by saga steps), the
/// cancellation's for `order.cancelled`, the admin's for `order.shipped`.
async fn order_events_carry_the_request_trace(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("TRACE");
    create(&shop, &admin, &product_body("Traced Tee", &sku, 2_500, 10)).await;
    let traced = |n: u32| (format!("{n:032x}"), format!("00-{n:032x}-00f067aa0ba902b7-01"));
    let buyer = token(&shop.register(&unique_email("traced")).await);
    let mut orders = Vec::new();
    for n in [1, 2] {
        add_to_cart(&shop, &buyer, &sku, 1).await;
        let placed = shop
            .gateway
            .post("/api/v1/orders")
            .bearer(&buyer)
            .header("idempotency-key", &uuid::Uuid::new_v4().to_string())
            .header("traceparent", &traced(n).1)
            .json(&checkout_body("me", "pm_card_visa"))
            .send()
            .await;
        assert_eq!(placed.status, 201, "{}", String::from_utf8_lossy(&placed.body));
        orders.push(placed.json()["id"].as_str().unwrap().to_owned());
    }
    let cancelled = shop
        .gateway
        .post(&format!("/api/v1/orders/{}/cancel", orders[0]))
        .bearer(&buyer)
        .header("traceparent", &traced(3).1);
    assert_eq!(cancelled.send().await.status, 200);
    let shipped = shop
        .gateway
        .post(&format!("/api/v1/orders/{}/shipments", orders[1]))
        .bearer(&admin)
        .header("traceparent", &traced(4).1)
        .json(&json!({"carrier": "DHL", "tracking_number": "JD1"}));
    assert_eq!(shipped.send().await.status, 200);

    let db = shop.orders_db().await;
    let envelopes: Vec<sqlx::types::Json<Value>> =
        with_db!(&db, |pool| sqlx::query_scalar("SELECT envelope FROM event_outbox ORDER BY seq")
            .fetch_all(pool)
            .await)
        .unwrap();
    db.close().await;
    let trace_of = |kind: &str, order: &str| -> Vec<String> {
        envelopes
            .iter()
            .filter(|e| e.0["type"] == kind && e.0["data"]["order_id"] == order)
            .map(|e| e.0["traceparent"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    for (kind, order, n) in [
        ("order.placed", &orders[0], 1),
        ("order.paid", &orders[0], 1),
        ("fulfilment.requested", &orders[0], 1),
        ("order.placed", &orders[1], 2),
        ("order.cancelled", &orders[0], 3),
        ("order.shipped", &orders[1], 4),
    ] {
        let traces = trace_of(kind, order);
        assert_eq!(traces.len(), 1, "one {kind} for {order}");
        assert!(traces[0].contains(&traced(n).0), "{kind} carries trace {n}: {}", traces[0]);
    }
}

/// A saga whose step keeps failing (a refund the provider refuses, say) is retried, and counted
/// in `orders_sagas_stuck` for an alert.
async fn a_saga_that_keeps_failing_is_counted_as_stuck(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("STUCK");
    create(&shop, &admin, &product_body("Stuck Sock", &sku, 900, 5)).await;
    let (_, order) = paid_order(&shop, &sku, 1).await;
    let order_id = uuid::Uuid::parse_str(order["id"].as_str().unwrap()).unwrap();
    let stuck = || async {
        let metrics = String::from_utf8(shop.orders.get("/metrics").send().await.body.to_vec()).unwrap();
        metrics.lines().find(|l| l.starts_with("orders_sagas_stuck ")).map(str::to_owned)
    };
    assert!(
        testkit::eventually(Duration::from_secs(5), || async {
            stuck().await.as_deref() == Some("orders_sagas_stuck 0")
        })
        .await
    );
    // As if its last step had failed that often: unfinished, with a lease that keeps the
    // sweeper away for the test's length.
    let db = shop.orders_db().await;
    let lease = platform::time::now() + chrono::Duration::hours(1);
    with_db!(&db, |pool| sqlx::query(
        "UPDATE sagas SET step = 'emptying', attempts = $1, lease_until = $2 WHERE order_id = $3"
    )
    .bind(orders::STUCK_AFTER)
    .bind(lease)
    .bind(order_id)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))
    .unwrap();
    assert!(
        testkit::eventually(Duration::from_secs(5), || async {
            stuck().await.as_deref() == Some("orders_sagas_stuck 1")
        })
        .await
    );
    // Finished after all: no longer stuck.
    with_db!(&db, |pool| sqlx::query("UPDATE sagas SET step = 'done' WHERE order_id = $1")
        .bind(order_id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
    .unwrap();
    db.close().await;
    assert!(
        testkit::eventually(Duration::from_secs(5), || async {
            stuck().await.as_deref() == Some("orders_sagas_stuck 0")
        })
        .await
    );
}

/// Five checkouts of one cart at once, each under its own key (a client that lost track of its
/// key): one order is placed and charged; the others are told the cart is being checked out
/// (409) or, once it was, that it is empty (422).
async fn one_cart_is_ordered_once_under_racing_keys(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("RACE");
    create(&shop, &admin, &product_body("Race Shoe", &sku, 1_500, 10)).await;
    let user = token(&shop.register(&unique_email("racer")).await);
    add_to_cart(&shop, &user, &sku, 2).await;
    let body = checkout_body("me", "pm_card_visa");
    let racers: Vec<_> = (0..5)
        .map(|i| {
            let (gateway, user, body) = (shop.gateway.clone(), user.clone(), body.clone());
            let key = format!("race-{i}");
            tokio::spawn(async move {
                gateway.post("/api/v1/orders").bearer(&user).header("idempotency-key", &key).json(&body).send().await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for racer in racers {
        answers.push(racer.await.unwrap());
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    for answer in answers.iter().filter(|a| a.status != 201) {
        match answer.status.as_u16() {
            409 => {
                let problem = answer.problem(409);
                assert!(problem["detail"].as_str().unwrap().contains("being checked out"), "{problem}");
                assert!(answer.header("retry-after").is_some());
            }
            422 => assert!(answer.problem(422)["detail"].as_str().unwrap().contains("empty")),
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&answer.body)),
        }
    }
    let mine = shop.gateway.get("/api/v1/orders").bearer(&user).send().await.json();
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "one order, one charge");
    assert_eq!(available(&shop, &sku).await, 8);
    shop.stop().await;
}
