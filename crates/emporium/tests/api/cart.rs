//! API.md's Cart section through the gateway, with carts in SQLite (the embedded store) and in
//! Redis (the distributed one).

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{TestDatabase, on_both_backends};

use crate::{
    catalog::{create, product_body},
    common::*,
    orders::{add_to_cart, checkout, checkout_body},
};

on_both_backends!(
    every_cart_endpoint_and_error,
    concurrent_adds_never_lose_one_and_respect_the_cap,
    merging_a_guest_cart_into_mine,
    a_price_change_shows_on_the_next_read,
    idle_carts_expire,
    a_checkout_publishes_cart_checked_out_once,
    an_empty_cart_is_counted_in_the_shops_currency,
);

/// On PostgreSQL runs the distributed set-up: carts in Redis under a key prefix of the test's own.
async fn start(db: TestDatabase, configure: impl FnOnce(&mut emporium::Settings)) -> (TestShop, Option<String>) {
    let redis = db.backend == testkit::Backend::Postgres && testkit::redis_available().await;
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let shop = TestShop::start_with(db, |s| {
        if redis {
            s.cart.store_url = Some(testkit::redis_url());
            s.cart.key_prefix = prefix.clone();
        }
        configure(s);
    })
    .await;
    (shop, redis.then_some(prefix))
}

async fn finish(shop: TestShop, prefix: Option<String>) {
    shop.stop().await;
    if let Some(prefix) = prefix {
        let deleted = testkit::redis_delete_prefix(&prefix).await;
        assert!(deleted > 0, "the carts lived in Redis under {prefix}");
    }
}

async fn an_empty_cart_is_counted_in_the_shops_currency(db: TestDatabase) {
    let (shop, prefix) = start(db, |s| s.catalog.currency = "SEK".to_owned()).await;
    let zero = json!({"amount": 0, "currency": "SEK"});
    let guest = shop.gateway.post("/api/v1/carts").send().await.json();
    assert_eq!((&guest["subtotal"], &guest["currency"]), (&zero, &json!("SEK")));
    let user = token(&shop.register(&unique_email("empty")).await);
    let mine = shop.gateway.get("/api/v1/carts/me").bearer(&user).send().await;
    assert_eq!(mine.status, 200);
    let mine = mine.json();
    assert_eq!((&mine["subtotal"], &mine["currency"], &mine["items"]), (&zero, &json!("SEK"), &json!([])));
    finish(shop, prefix).await;
}

fn unique_sku(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]).to_uppercase()
}

async fn new_cart(shop: &TestShop) -> String {
    let created = shop.gateway.post("/api/v1/carts").send().await;
    assert_eq!(created.status, 201);
    created.json()["id"].as_str().unwrap().to_owned()
}

async fn add(shop: &TestShop, cart: &str, sku: &str, quantity: i64) -> testkit::TestResponse {
    shop.gateway
        .post(&format!("/api/v1/carts/{cart}/items"))
        .json(&json!({"sku": sku, "quantity": quantity}))
        .send()
        .await
}

fn line<'a>(cart: &'a Value, sku: &str) -> &'a Value {
    cart["items"].as_array().unwrap().iter().find(|i| i["sku"] == sku).unwrap_or(&Value::Null)
}

async fn every_cart_endpoint_and_error(db: TestDatabase) {
    let (shop, prefix) = start(db, |_| {}).await;
    let admin = shop.admin_token().await;
    let (shoe, tee) = (unique_sku("SHOE"), unique_sku("TEE"));
    create(&shop, &admin, &product_body("Cart Shoe", &shoe, 8_999, 5)).await;
    create(&shop, &admin, &product_body("Cart Tee", &tee, 1_500, 200)).await;
    let mut draft = product_body("Cart Draft", &unique_sku("DR"), 100, 5);
    draft["status"] = json!("draft");
    let draft_sku = create(&shop, &admin, &draft).await["variants"][0]["sku"].as_str().unwrap().to_owned();

    // A new guest cart: its id is a random (v4) UUID, the capability to use it.
    let created = shop.gateway.post("/api/v1/carts").send().await;
    assert_eq!(created.status, 201);
    let cart = created.json();
    let id = cart["id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    assert_eq!((cart["owner"].as_str(), cart["item_count"].as_i64()), (Some("guest"), Some(0)));
    // Empty, it is counted in the shop's currency all the same (a client reads Money, never null).
    assert_eq!((&cart["subtotal"], &cart["currency"]), (&json!({"amount": 0, "currency": "EUR"}), &json!("EUR")));

    let added = add(&shop, &id, &shoe, 2).await;
    assert_eq!(added.status, 200, "{}", String::from_utf8_lossy(&added.body));
    let added = add(&shop, &id, &tee, 3).await.json();
    assert_eq!(added["item_count"], 5);
    assert_eq!(added["currency"], "EUR");
    assert_eq!(added["subtotal"], json!({"amount": 2 * 8_999 + 3 * 1_500, "currency": "EUR"}));
    let shoe_line = line(&added, &shoe);
    assert_eq!(shoe_line["unit_price"], json!({"amount": 8_999, "currency": "EUR"}));
    assert_eq!(shoe_line["line_total"], json!({"amount": 17_998, "currency": "EUR"}));
    assert_eq!(shoe_line["title"], "Cart Shoe");
    assert_eq!(shoe_line["available"], 5);
    assert!(shoe_line["product_id"].is_string());
    assert_eq!(shop.gateway.get(&format!("/api/v1/carts/{id}")).send().await.json()["item_count"], 5);

    // Errors: unknown or unsellable SKU 404; beyond stock 409 saying how many; bad quantities 422.
    assert_eq!(add(&shop, &id, "NO-SUCH-SKU", 1).await.problem(404)["sku"], "NO-SUCH-SKU");
    add(&shop, &id, &draft_sku, 1).await.problem(404);
    let short = add(&shop, &id, &shoe, 4).await.problem(409);
    assert_eq!((short["available"].as_i64(), short["in_cart"].as_i64()), (Some(5), Some(2)));
    add(&shop, &id, &tee, 0).await.problem(422);
    add(&shop, &id, &tee, 100).await.problem(422);
    add(&shop, &id, &tee, 97).await.problem(422);
    shop.gateway.post(&format!("/api/v1/carts/{id}/items")).json(&json!({"sku": tee})).send().await.problem(422);
    shop.gateway
        .post(&format!("/api/v1/carts/{id}/items"))
        .json(&json!({"sku": tee, "quantity": "2"}))
        .send()
        .await
        .problem(400);
    shop.gateway.post(&format!("/api/v1/carts/{id}/items")).raw("text/plain", "x").send().await.problem(415);
    let unchanged = shop.gateway.get(&format!("/api/v1/carts/{id}")).send().await.json();
    assert_eq!(unchanged["item_count"], 5, "refused changes changed nothing");

    // Set, remove, clear.
    let set = shop.gateway.put(&format!("/api/v1/carts/{id}/items/{tee}")).json(&json!({"quantity": 7})).send().await;
    assert_eq!(line(&set.json(), &tee)["quantity"], 7);
    shop.gateway
        .put(&format!("/api/v1/carts/{id}/items/{shoe}"))
        .json(&json!({"quantity": 6}))
        .send()
        .await
        .problem(409);
    shop.gateway
        .put(&format!("/api/v1/carts/{id}/items/{tee}"))
        .json(&json!({"quantity": -1}))
        .send()
        .await
        .problem(422);
    let zero = shop.gateway.put(&format!("/api/v1/carts/{id}/items/{tee}")).json(&json!({"quantity": 0})).send().await;
    assert!(line(&zero.json(), &tee).is_null());
    add(&shop, &id, &tee, 1).await;
    let removed = shop.gateway.delete(&format!("/api/v1/carts/{id}/items/{tee}")).send().await;
    assert_eq!(removed.status, 200);
    assert!(line(&removed.json(), &tee).is_null());
    assert_eq!(shop.gateway.delete(&format!("/api/v1/carts/{id}")).send().await.status, 204);
    assert_eq!(shop.gateway.get(&format!("/api/v1/carts/{id}")).send().await.json()["item_count"], 0);

    // Carts nobody holds: 404, also for ids that are not ids.
    for path in [format!("/api/v1/carts/{}", uuid::Uuid::new_v4()), "/api/v1/carts/not-a-cart".to_owned()] {
        shop.gateway.get(&path).send().await.problem(404);
        shop.gateway.delete(&path).send().await.problem(404);
    }
    add(&shop, &uuid::Uuid::new_v4().to_string(), &tee, 1).await.problem(404);

    // `me` needs a token and is each user's own.
    shop.gateway.get("/api/v1/carts/me").send().await.problem(401);
    let (ann, bob) =
        (token(&shop.register(&unique_email("ann")).await), token(&shop.register(&unique_email("bob")).await));
    let mine =
        shop.gateway.post("/api/v1/carts/me/items").bearer(&ann).json(&json!({"sku": tee, "quantity": 2})).send().await;
    assert_eq!(mine.status, 200);
    assert_eq!(mine.json()["owner"], "user");
    let bobs = shop.gateway.get("/api/v1/carts/me").bearer(&bob).send().await.json();
    assert_eq!(bobs["item_count"], 0, "another user's cart is not mine");
    assert_ne!(bobs["id"], mine.json()["id"]);
    assert_eq!(shop.gateway.get("/api/v1/carts/me").bearer(&ann).send().await.json()["item_count"], 2);
    // A user cart's id does not open it as a guest cart.
    let ann_id = mine.json()["id"].as_str().unwrap().to_owned();
    shop.gateway.get(&format!("/api/v1/carts/{ann_id}")).send().await.problem(404);
    finish(shop, prefix).await;
}

async fn concurrent_adds_never_lose_one_and_respect_the_cap(db: TestDatabase) {
    let (shop, prefix) = start(db, |_| {}).await;
    let admin = shop.admin_token().await;
    let skus: Vec<String> = (0..4).map(|i| unique_sku(&format!("C{i}"))).collect();
    for (i, sku) in skus.iter().enumerate() {
        create(&shop, &admin, &product_body(&format!("Concurrent {i}"), sku, 1_000, 1_000)).await;
    }
    let scarce = unique_sku("SCARCE");
    create(&shop, &admin, &product_body("Scarce Item", &scarce, 1_000, 40)).await;
    let cart = new_cart(&shop).await;

    // 200 adds of one unit at once over four lines: all 200 land.
    let adds: Vec<_> = (0..200)
        .map(|i| {
            let (client, path, sku) =
                (shop.gateway.clone(), format!("/api/v1/carts/{cart}/items"), skus[i % 4].clone());
            tokio::spawn(async move { client.post(&path).json(&json!({"sku": sku, "quantity": 1})).send().await })
        })
        .collect();
    for add in adds {
        let added = add.await.unwrap();
        assert_eq!(added.status, 200, "{:?}: {}", added.headers, String::from_utf8_lossy(&added.body));
    }
    let after = shop.gateway.get(&format!("/api/v1/carts/{cart}")).send().await.json();
    assert_eq!(after["item_count"], 200);
    for sku in &skus {
        assert_eq!(line(&after, sku)["quantity"], 50);
    }

    // 150 adds of one unit on one line: exactly 99 land, the rest are refused by the cap.
    let capped = new_cart(&shop).await;
    let statuses = hammer(&shop, &capped, &skus[0], 150).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 99);
    assert_eq!(statuses.iter().filter(|s| **s == 422).count(), 51);
    assert_eq!(
        line(&shop.gateway.get(&format!("/api/v1/carts/{capped}")).send().await.json(), &skus[0])["quantity"],
        99
    );

    // 60 adds on 40 in stock: exactly 40 land, the rest are 409.
    let stocked = new_cart(&shop).await;
    let statuses = hammer(&shop, &stocked, &scarce, 60).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 40);
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 20);
    finish(shop, prefix).await;
}

async fn hammer(shop: &TestShop, cart: &str, sku: &str, times: usize) -> Vec<u16> {
    let adds: Vec<_> = (0..times)
        .map(|_| {
            let (client, path, sku) = (shop.gateway.clone(), format!("/api/v1/carts/{cart}/items"), sku.to_owned());
            tokio::spawn(async move {
                client.post(&path).json(&json!({"sku": sku, "quantity": 1})).send().await.status.as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::with_capacity(times);
    for add in adds {
        statuses.push(add.await.unwrap());
    }
    statuses
}

async fn merging_a_guest_cart_into_mine(db: TestDatabase) {
    let (shop, prefix) = start(db, |_| {}).await;
    let admin = shop.admin_token().await;
    let (a, b, c) = (unique_sku("MA"), unique_sku("MB"), unique_sku("MC"));
    create(&shop, &admin, &product_body("Merge A", &a, 1_000, 100)).await;
    create(&shop, &admin, &product_body("Merge B", &b, 2_000, 6)).await;
    create(&shop, &admin, &product_body("Merge C", &c, 3_000, 10)).await;
    let user = token(&shop.register(&unique_email("merge")).await);
    for (sku, quantity) in [(&a, 60), (&b, 4)] {
        let response = shop
            .gateway
            .post("/api/v1/carts/me/items")
            .bearer(&user)
            .json(&json!({"sku": sku, "quantity": quantity}))
            .send()
            .await;
        assert_eq!(response.status, 200);
    }
    let guest = new_cart(&shop).await;
    for (sku, quantity) in [(&a, 50), (&b, 3), (&c, 2)] {
        assert_eq!(add(&shop, &guest, sku, quantity).await.status, 200);
    }
    shop.gateway.post("/api/v1/carts/me/merge").json(&json!({"cart_id": guest})).send().await.problem(401);
    let merged =
        shop.gateway.post("/api/v1/carts/me/merge").bearer(&user).json(&json!({"cart_id": guest})).send().await;
    assert_eq!(merged.status, 200, "{}", String::from_utf8_lossy(&merged.body));
    let merged = merged.json();
    assert_eq!(line(&merged, &a)["quantity"], 99, "60 + 50, capped at 99");
    assert_eq!(line(&merged, &b)["quantity"], 6, "4 + 3, capped at the 6 in stock");
    assert_eq!(line(&merged, &c)["quantity"], 2);
    assert_eq!(merged["owner"], "user");
    // The guest cart is retired.
    shop.gateway.get(&format!("/api/v1/carts/{guest}")).send().await.problem(404);
    shop.gateway
        .post("/api/v1/carts/me/merge")
        .bearer(&user)
        .json(&json!({"cart_id": guest}))
        .send()
        .await
        .problem(404);
    shop.gateway
        .post("/api/v1/carts/me/merge")
        .bearer(&user)
        .json(&json!({"cart_id": "nope"}))
        .send()
        .await
        .problem(404);
    shop.gateway.post("/api/v1/carts/me/merge").bearer(&user).json(&json!({})).send().await.problem(422);
    finish(shop, prefix).await;
}

async fn a_price_change_shows_on_the_next_read(db: TestDatabase) {
    let (shop, prefix) = start(db, |_| {}).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("PRICE");
    let product = create(&shop, &admin, &product_body("Repriced", &sku, 5_000, 10)).await;
    let cart = new_cart(&shop).await;
    assert_eq!(line(&add(&shop, &cart, &sku, 2).await.json(), &sku)["unit_price"]["amount"], 5_000);
    let patch = json!({"variants": [{"sku": sku, "price": {"amount": 4_200, "currency": "EUR"}}]});
    let path = format!("/api/v1/products/{}", product["id"].as_str().unwrap());
    assert_eq!(shop.gateway.patch(&path).bearer(&admin).json(&patch).send().await.status, 200);
    // The catalog's event drops the cart's cached price (well before its TTL).
    let repriced = testkit::eventually(Duration::from_secs(2), || async {
        let cart = shop.gateway.get(&format!("/api/v1/carts/{cart}")).send().await.json();
        cart["subtotal"]["amount"] == 8_400
    })
    .await;
    assert!(repriced, "the cart shows the new price");
    finish(shop, prefix).await;
}

async fn idle_carts_expire(db: TestDatabase) {
    let (shop, prefix) = start(db, |s| s.cart.guest_ttl = Duration::from_secs(1)).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("TTL");
    create(&shop, &admin, &product_body("Short Lived", &sku, 100, 10)).await;
    let cart = new_cart(&shop).await;
    assert_eq!(add(&shop, &cart, &sku, 1).await.status, 200);
    // Activity keeps it alive…
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(shop.gateway.get(&format!("/api/v1/carts/{cart}")).send().await.status, 200);
    }
    // …idleness ends it.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    shop.gateway.get(&format!("/api/v1/carts/{cart}")).send().await.problem(404);
    shop.stop().await;
    if let Some(prefix) = prefix {
        assert_eq!(testkit::redis_delete_prefix(&prefix).await, 0, "Redis expired the cart's keys");
    }
}

/// What orders calls at checkout: the cart with current prices (only its holder's), and emptying
/// it once per order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_reads_and_empties_carts_over_grpc() {
    use rpc::cart::v1::{CompleteCheckoutRequest, GetForCheckoutRequest, carts_client::CartsClient};
    let shop = TestShop::start(TestDatabase::sqlite()).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("GRPC");
    create(&shop, &admin, &product_body("Checkout Item", &sku, 2_500, 10)).await;
    let registered = shop.register(&unique_email("grpc")).await;
    let (user, user_id) = (token(&registered), registered["user"]["id"].as_str().unwrap().to_owned());
    shop.gateway.post("/api/v1/carts/me/items").bearer(&user).json(&json!({"sku": sku, "quantity": 3})).send().await;
    let guest = new_cart(&shop).await;
    add(&shop, &guest, &sku, 1).await;

    let mut client = CartsClient::connect(shop.cart_grpc.clone()).await.unwrap();
    let mine = client
        .get_for_checkout(GetForCheckoutRequest { user_id: user_id.clone(), cart_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.lines.len(), 1);
    assert_eq!((mine.lines[0].sku.as_str(), mine.lines[0].quantity), (sku.as_str(), 3));
    assert_eq!(mine.subtotal.unwrap().amount, 7_500);
    assert_eq!(mine.currency, "EUR");
    // A guest cart is checked out by whoever holds its id.
    let held = client
        .get_for_checkout(GetForCheckoutRequest { user_id: user_id.clone(), cart_id: guest.clone() })
        .await
        .unwrap();
    assert_eq!(held.into_inner().lines[0].quantity, 1);
    let unknown = client
        .get_for_checkout(GetForCheckoutRequest { user_id: user_id.clone(), cart_id: uuid::Uuid::new_v4().to_string() })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let bad = client
        .get_for_checkout(GetForCheckoutRequest { user_id: "x".into(), cart_id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // Emptied once per order: a retry changes nothing, and items added later stay.
    let order = uuid::Uuid::now_v7().to_string();
    let complete = CompleteCheckoutRequest {
        user_id: user_id.clone(),
        cart_id: String::new(),
        order_id: order.clone(),
        lines: Vec::new(),
    };
    assert!(client.complete_checkout(complete.clone()).await.unwrap().into_inner().emptied);
    assert_eq!(shop.gateway.get("/api/v1/carts/me").bearer(&user).send().await.json()["item_count"], 0);
    shop.gateway.post("/api/v1/carts/me/items").bearer(&user).json(&json!({"sku": sku, "quantity": 1})).send().await;
    assert!(!client.complete_checkout(complete).await.unwrap().into_inner().emptied);
    assert_eq!(shop.gateway.get("/api/v1/carts/me").bearer(&user).send().await.json()["item_count"], 1);
}

/// The catalog going away: adds answer 503 at once (with Retry-After); reads still show the cart
/// with its last known prices, flagged stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_down_means_503_for_adds_and_stale_reads() {
    use emporium::{Service, Shop};
    let identity_db = TestDatabase::sqlite();
    let catalog_dir = testkit::temp_dir("catalog-alone");
    let mut catalog_settings = test_settings(&identity_db, catalog_dir.clone());
    catalog_settings.catalog.demo_catalog = Some(false);
    let stop_catalog = tokio_util::sync::CancellationToken::new();
    let catalog = Shop::start(catalog_settings.clone(), &[Service::Catalog], stop_catalog.clone()).await.unwrap();
    let opened = catalog::open(&catalog_settings.catalog, &catalog_settings.shared()).await.unwrap();
    let product = catalog::demo::generate_at(0, 1, 5, true).remove(0);
    let sku = product.variants[0].sku.to_string();
    opened.products.create(product, None).await.unwrap();

    // The rest of the shop runs apart, its cart asking that catalog.
    let mut settings = test_settings(&identity_db, testkit::temp_dir("shop-apart"));
    settings.cart.catalog_url = format!("http://{}", catalog.catalog_grpc.unwrap());
    settings.cart.price_ttl = Duration::from_millis(100);
    let stop_shop = tokio_util::sync::CancellationToken::new();
    let apart = Shop::start(settings.clone(), &[Service::Identity, Service::Cart, Service::Gateway], stop_shop.clone())
        .await
        .unwrap();
    let gateway = testkit::TestClient::new(format!("http://{}", apart.gateway.unwrap()));
    let cart = gateway.post("/api/v1/carts").send().await.json()["id"].as_str().unwrap().to_owned();
    let add = |quantity: i64| {
        let (gateway, path, sku) = (gateway.clone(), format!("/api/v1/carts/{cart}/items"), sku.clone());
        async move { gateway.post(&path).json(&json!({"sku": sku, "quantity": quantity})).send().await }
    };
    assert_eq!(add(1).await.status, 200);

    stop_catalog.cancel();
    catalog.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let refused = add(1).await;
    assert_eq!(refused.problem(503)["status"], 503);
    assert!(refused.header("retry-after").is_some());
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    let read = gateway.get(&format!("/api/v1/carts/{cart}")).send().await;
    assert_eq!(read.status, 200);
    let read = read.json();
    assert_eq!(read["prices_stale"], true);
    assert_eq!(line(&read, &sku)["stale"], true);
    assert_eq!(line(&read, &sku)["quantity"], 1);
    assert!(line(&read, &sku)["unit_price"]["amount"].as_i64().unwrap() > 0, "the last known price");
    stop_shop.cancel();
    apart.wait().await.unwrap();
    opened.products.store().db().close().await;
    let _ = std::fs::remove_dir_all(catalog_dir);
    let _ = std::fs::remove_dir_all(settings.data_dir);
}

/// Redis going away answers 503 at once; when it comes back the service uses it again, without
/// a restart. The test runs a Redis of its own, so restarting it disturbs no other test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_test() {
    let port = testkit::free_port();
    let Some(mut redis) = start_redis(port) else { return };
    let url = format!("redis://127.0.0.1:{port}/0");
    let shop = TestShop::start_with(TestDatabase::sqlite(), |s| s.cart.store_url = Some(url.clone())).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("REDIS");
    create(&shop, &admin, &product_body("Redis Item", &sku, 100, 10)).await;
    let cart = new_cart(&shop).await;
    assert_eq!(add(&shop, &cart, &sku, 1).await.status, 200);

    let _ = redis.kill();
    let _ = redis.wait();
    let started = std::time::Instant::now();
    let down = shop.gateway.get(&format!("/api/v1/carts/{cart}")).send().await;
    assert_eq!(down.problem(503)["status"], 503);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    shop.gateway.post("/api/v1/carts").send().await.problem(503);
    let ready = shop.gateway.get("/health/ready").send().await;
    assert_eq!(ready.status, 200, "the gateway is fine");

    let mut redis = start_redis(port).expect("Redis starts again");
    let back = testkit::eventually(Duration::from_secs(5), || async {
        shop.gateway.post("/api/v1/carts").send().await.status == 201
    })
    .await;
    assert!(back, "carts work again once Redis is back");
    let fresh = new_cart(&shop).await;
    assert_eq!(add(&shop, &fresh, &sku, 2).await.status, 200);
    shop.stop().await;
    let _ = redis.kill();
    let _ = redis.wait();
}

fn start_redis(port: u16) -> Option<std::process::Child> {
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(child) = child else {
        testkit::skip_or_fail("redis-server is not installed");
        return None;
    };
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child)
}

/// Every `cart.checked_out` event the shop's bus has published so far.
async fn checked_out_events(shop: &TestShop) -> Vec<events::CloudEvent> {
    let bus = shop.settings.events().await.unwrap().bus;
    let stop = tokio_util::sync::CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stopper.cancel();
    });
    let mut seen = Vec::new();
    bus.tail(events::TailFrom::Start, "cart.checked_out", stop, |event| {
        seen.push(event);
        true
    })
    .await
    .unwrap();
    seen
}

/// A checkout that empties a cart publishes `cart.checked_out` once (a replayed checkout does not
/// publish again); a declined one keeps the cart and publishes nothing. A guest cart's id, its
/// secret, never appears in the event.
async fn a_checkout_publishes_cart_checked_out_once(db: TestDatabase) {
    let (shop, prefix) = start(db, |_| {}).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("CHECKEDOUT");
    create(&shop, &admin, &product_body("Checked Out", &sku, 1_250, 20)).await;
    let registered = shop.register(&unique_email("checkout")).await;
    let (user, user_id) = (token(&registered), registered["user"]["id"].as_str().unwrap().to_owned());

    add_to_cart(&shop, &user, &sku, 2).await;
    let declined = checkout(&shop, &user, "declined", &checkout_body("me", "pm_card_chargeDeclined")).await;
    assert_eq!(declined.status, 402, "{}", String::from_utf8_lossy(&declined.body));
    let placed = checkout(&shop, &user, "placed", &checkout_body("me", "pm_card_visa")).await;
    assert_eq!(placed.status, 201, "{}", String::from_utf8_lossy(&placed.body));
    let replayed = checkout(&shop, &user, "placed", &checkout_body("me", "pm_card_visa")).await;
    assert_eq!(replayed.status, 201);

    let guest = new_cart(&shop).await;
    assert_eq!(add(&shop, &guest, &sku, 1).await.status, 200);
    let from_guest = checkout(&shop, &user, "guest", &checkout_body(&guest, "pm_card_visa")).await;
    assert_eq!(from_guest.status, 201, "{}", String::from_utf8_lossy(&from_guest.body));

    let order_ids = [placed.json()["id"].clone(), from_guest.json()["id"].clone()];
    let arrived =
        testkit::eventually(Duration::from_secs(10), || async { checked_out_events(&shop).await.len() >= 2 }).await;
    assert!(arrived, "both checkouts published");
    // Nothing more arrives: not for the declined checkout, not for the replay.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = checked_out_events(&shop).await;
    let found: Vec<(&Value, &Value)> = events.iter().map(|e| (&e.data["order_id"], &e.data["cart"])).collect();
    assert_eq!(found, [(&order_ids[0], &json!("user")), (&order_ids[1], &json!("guest"))]);
    for event in &events {
        assert_eq!(event.source, "/emporium/cart");
        assert_eq!(event.subject.as_deref(), Some(user_id.as_str()));
        assert_eq!(event.data["user_id"], user_id.as_str());
        assert!(!serde_json::to_string(event).unwrap().contains(&guest), "the guest cart's id stays secret");
    }
    // The services of the one-process shop share one metrics registry.
    let metrics = String::from_utf8(shop.orders.get("/metrics").send().await.body.to_vec()).unwrap();
    assert!(metrics.contains(r#"events_published_total{service="cart",type="cart.checked_out"}"#), "{metrics}");
    assert!(metrics.contains(r#"outbox_pending{service="cart"}"#), "{metrics}");
    finish(shop, prefix).await;
}
