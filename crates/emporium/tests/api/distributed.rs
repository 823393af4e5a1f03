//! The distributed way to run: each service started on its own (`emporium serve identity`,
//! `emporium serve gateway`), wired only by configuration, as separate deployments are.

use std::time::Duration;

use emporium::{Service, Shop};
use serde_json::json;
use testkit::{TestClient, TestDatabase, on_both_backends};
use tokio_util::sync::CancellationToken;

use crate::common::*;

on_both_backends!(separately_started_services_work_together, password_hashes_are_upgraded_on_login);

async fn separately_started_services_work_together(db: TestDatabase) {
    let data_dir = testkit::temp_dir("distributed");
    let settings = test_settings(&db, data_dir.clone());
    let (stop_identity, stop_gateway) = (CancellationToken::new(), CancellationToken::new());

    let identity = Shop::start(settings.clone(), &[Service::Identity], stop_identity.clone()).await.unwrap();
    let identity_addr = identity.identity.unwrap();
    assert!(identity.gateway.is_none());

    // The gateway knows identity only by URL; the key set's URL is derived from it.
    let mut gateway_settings = settings.clone();
    gateway_settings.gateway.upstreams.get_mut("identity").unwrap().urls = vec![format!("http://{identity_addr}")];
    let gateway = Shop::start(gateway_settings, &[Service::Gateway], stop_gateway.clone()).await.unwrap();
    assert!(gateway.identity.is_none());
    let client = TestClient::new(format!("http://{}", gateway.gateway.unwrap()));

    let email = unique_email("distributed");
    let registered = client
        .post("/api/v1/auth/register")
        .json(&json!({"email": email, "password": PASSWORD, "name": "Dee"}))
        .send()
        .await;
    assert_eq!(registered.status, 201);
    let me = client.get("/api/v1/users/me").bearer(&token(&registered.json())).send().await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["email"], email.as_str());

    let ready = TestClient::new(format!("http://{identity_addr}")).get("/health/ready").send().await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["checks"]["database"], "ok");

    // Identity going away makes the gateway answer 503 promptly, not hang.
    stop_identity.cancel();
    identity.wait().await.unwrap();
    let started = std::time::Instant::now();
    let down = client.post("/api/v1/auth/login").json(&json!({"email": email, "password": PASSWORD})).send().await;
    down.problem(503);
    assert!(down.header("retry-after").is_some());
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
    let ready = client.get("/health/ready").send().await;
    assert_eq!(ready.status, 200, "the gateway itself stays ready: it has no state of its own to lose");
    stop_gateway.cancel();
    gateway.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(data_dir);
}

async fn password_hashes_are_upgraded_on_login(db: TestDatabase) {
    let email = unique_email("rehash");
    let shop = TestShop::start(db).await;
    shop.register(&email).await;
    let (settings, db) = shop.release().await;
    let stored = |db_url: String| async move {
        let db = platform::db::Db::connect(&db_url, &Default::default()).await.unwrap();
        let hash: String = platform::with_db!(&db, |pool| sqlx::query_scalar(
            "SELECT password_hash FROM users WHERE email_normalized LIKE 'rehash-%'"
        )
        .fetch_one(pool)
        .await)
        .unwrap();
        db.close().await;
        hash
    };
    let before = stored(db.url.clone()).await;
    assert!(before.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{before}");

    // The operator raises the cost; the next successful login rehashes with the new parameters.
    let shop = TestShop::start_with(db, |s| {
        // The first shop's settings, in this shop's own data directory.
        let data_dir = s.data_dir.clone();
        *s = settings;
        s.data_dir = data_dir;
        s.identity.password_hashing.iterations = 2;
    })
    .await;
    assert_eq!(shop.login(&email, PASSWORD).await.status, 200);
    let (_, db) = shop.release().await;
    let after = stored(db.url.clone()).await;
    assert!(after.starts_with("$argon2id$v=19$m=1024,t=2,p=1$"), "{after}");
}

/// Two catalog replicas on one PostgreSQL database and RabbitMQ, each with its own search index
/// and its own event queue: a product written through one is searchable on both within a second,
/// and a replica started later builds its index with everything already there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_replicas_keep_their_own_indexes_fresh() {
    let Some(broker) = testkit::broker::TestBroker::shared("catalog-replicas").await else { return };
    let (Some(identity_db), Some(catalog_db)) = (
        TestDatabase::create(testkit::Backend::Postgres).await,
        TestDatabase::create(testkit::Backend::Postgres).await,
    ) else {
        return;
    };
    let replica = |name: &str| {
        let mut settings = test_settings(&identity_db, testkit::temp_dir(name));
        settings.catalog.database_url = Some(catalog_db.url.clone());
        settings.catalog.replica_id = Some(name.to_owned());
        settings.events.url = broker.url.clone();
        settings.events.namespace = broker.namespace.clone();
        settings
    };
    let (settings_a, settings_b) = (replica("replica-a"), replica("replica-b"));
    let stop = CancellationToken::new();
    let a = Shop::start(settings_a.clone(), &[Service::Catalog], stop.clone()).await.unwrap();
    let client_a = TestClient::new(format!("http://{}", a.catalog.unwrap()));

    // A product written before replica b exists: b's first index build has it.
    let opened = catalog::open(&settings_a.catalog, &settings_a.shared()).await.unwrap();
    let mut products = catalog::demo::generate_at(0, 2, 77, true);
    let (first, second) = (products.remove(0), products.remove(0));
    let (first_title, second_title) = (first.title.clone(), second.title.clone());
    opened.products.create(first, None).await.unwrap();
    let b = Shop::start(settings_b.clone(), &[Service::Catalog], stop.clone()).await.unwrap();
    let client_b = TestClient::new(format!("http://{}", b.catalog.unwrap()));
    let found = |client: &TestClient, title: &str| {
        let path = format!("/api/v1/products?q={}", title.replace(' ', "+"));
        let (client, title) = (client.clone(), title.to_owned());
        async move {
            let page = client.get(&path).send().await.json();
            page["items"].as_array().is_some_and(|items| items.iter().any(|p| p["title"] == title.as_str()))
        }
    };
    assert!(found(&client_b, &first_title).await, "built from the database at start");
    assert!(testkit::eventually(Duration::from_secs(1), || found(&client_a, &first_title)).await);

    // A product written now reaches both indexes through their own queues.
    let started = std::time::Instant::now();
    opened.products.create(second, None).await.unwrap();
    for client in [&client_a, &client_b] {
        assert!(testkit::eventually(Duration::from_secs(1), || found(client, &second_title)).await);
    }
    assert!(started.elapsed() < Duration::from_millis(1500), "took {:?}", started.elapsed());

    stop.cancel();
    a.wait().await.unwrap();
    b.wait().await.unwrap();
    opened.products.store().db().close().await;
    for settings in [settings_a, settings_b] {
        let _ = std::fs::remove_dir_all(settings.data_dir);
    }
}

/// One catalog replica down costs shoppers nothing: the gateway, the cart and orders each know
/// both replicas (the cart and orders as a list of gRPC URLs) and move on to the live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_replica_down_costs_nothing() {
    let Some(broker) = testkit::broker::TestBroker::shared("catalog-down").await else { return };
    let (Some(identity_db), Some(catalog_db), Some(orders_db)) = (
        TestDatabase::create(testkit::Backend::Postgres).await,
        TestDatabase::create(testkit::Backend::Postgres).await,
        TestDatabase::create(testkit::Backend::Postgres).await,
    ) else {
        return;
    };
    let configure = |name: &str| {
        let mut settings = test_settings(&identity_db, testkit::temp_dir(name));
        settings.catalog.database_url = Some(catalog_db.url.clone());
        settings.catalog.replica_id = Some(name.to_owned());
        settings.orders.database_url = Some(orders_db.url.clone());
        settings.events.url = broker.url.clone();
        settings.events.namespace = broker.namespace.clone();
        settings
    };
    let (stop_a, stop_rest) = (CancellationToken::new(), CancellationToken::new());
    let identity = Shop::start(configure("identity"), &[Service::Identity], stop_rest.clone()).await.unwrap();
    // The replicas check tokens with identity's keys, found through its upstream.
    let configure = |name: &str| {
        let mut settings = configure(name);
        settings.gateway.upstreams.get_mut("identity").unwrap().urls =
            vec![format!("http://{}", identity.identity.unwrap())];
        settings
    };
    let a = Shop::start(configure("catalog-a"), &[Service::Catalog], stop_a.clone()).await.unwrap();
    let b = Shop::start(configure("catalog-b"), &[Service::Catalog], stop_rest.clone()).await.unwrap();
    let grpc = format!("http://{},http://{}", a.catalog_grpc.unwrap(), b.catalog_grpc.unwrap());
    let mut front = configure("front");
    front.cart.catalog_url = grpc.clone();
    front.orders.catalog_url = grpc;
    front.gateway.upstreams.get_mut("catalog").unwrap().urls =
        vec![format!("http://{}", a.catalog.unwrap()), format!("http://{}", b.catalog.unwrap())];
    let services = [Service::Cart, Service::Orders, Service::Gateway];
    let shop = Shop::start(front.clone(), &services, stop_rest.clone()).await.unwrap();
    let gateway = TestClient::new(format!("http://{}", shop.gateway.unwrap()));

    let login = gateway.post("/api/v1/auth/login").json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}));
    let admin = token(&login.send().await.json());
    let sku = format!("DOWN-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]).to_uppercase();
    let created = gateway
        .post("/api/v1/products")
        .bearer(&admin)
        .json(&crate::catalog::product_body("Replica Shoe", &sku, 2_500, 50))
        .send()
        .await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let product = created.json()["id"].as_str().unwrap().to_owned();
    let registered = gateway
        .post("/api/v1/auth/register")
        .json(&json!({"email": unique_email("replicas"), "password": PASSWORD, "name": "Rep"}))
        .send()
        .await;
    let user = token(&registered.json());
    let shop_once = |round: usize| {
        let (gateway, user, sku, product) = (gateway.clone(), user.clone(), sku.clone(), product.clone());
        async move {
            let read = gateway.get(&format!("/api/v1/products/{product}")).send().await;
            assert_eq!(read.status, 200, "round {round}: product read");
            let added = gateway
                .post("/api/v1/carts/me/items")
                .bearer(&user)
                .json(&json!({"sku": sku, "quantity": 1}))
                .send()
                .await;
            assert_eq!(added.status, 200, "round {round}: {}", String::from_utf8_lossy(&added.body));
            let body = json!({"cart_id": "me", "shipping_address": crate::orders::address(), "payment_method": "pm_card_visa"});
            let key = uuid::Uuid::new_v4().to_string();
            let placed =
                gateway.post("/api/v1/orders").bearer(&user).header("idempotency-key", &key).json(&body).send().await;
            assert_eq!(placed.status, 201, "round {round}: {}", String::from_utf8_lossy(&placed.body));
        }
    };
    shop_once(0).await;
    stop_a.cancel();
    a.wait().await.unwrap();
    for round in 1..=6 {
        shop_once(round).await;
    }
    stop_rest.cancel();
    shop.wait().await.unwrap();
    b.wait().await.unwrap();
    identity.wait().await.unwrap();
}
