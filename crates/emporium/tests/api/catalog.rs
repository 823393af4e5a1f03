//! API.md's Catalog section through the gateway, on both SQL backends: products, visibility,
//! categories, stock, caching headers, and bad input.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::{TestDatabase, on_both_backends};

use crate::common::*;

on_both_backends!(
    products_crud_and_visibility,
    duplicates_conflict_and_bad_input_changes_nothing,
    categories_tree_and_counts,
    stock_is_set_and_read_by_admins_only,
    product_reads_carry_etags,
    a_price_change_shows_in_search_and_reads_within_a_second,
    a_stock_change_shows_in_search_within_the_stock_delay,
);

pub fn product_body(title: &str, sku: &str, price: i64, on_hand: i64) -> Value {
    json!({
        "title": title,
        "category": "trail-shoes",
        "brand": "Hoka",
        "description": "Grippy and light.",
        "attributes": {"color": "blue"},
        "images": ["https://cdn.example.com/a.jpg"],
        "status": "active",
        "variants": [{"sku": sku, "price": {"amount": price, "currency": "EUR"}, "attributes": {"size": "42"}, "on_hand": on_hand}]
    })
}

pub async fn create(shop: &TestShop, admin: &str, body: &Value) -> Value {
    let response = shop.gateway.post("/api/v1/products").bearer(admin).json(body).send().await;
    assert_eq!(response.status, 201, "{}", String::from_utf8_lossy(&response.body));
    response.json()
}

fn sku(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]).to_uppercase()
}

async fn products_crud_and_visibility(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let customer = token(&shop.register(&unique_email("shopper")).await);

    // Created as a draft by default, with a derived slug.
    let mut draft = product_body("Speedgoat 6 — Trail", &sku("SG"), 15999, 3);
    draft.as_object_mut().unwrap().remove("status");
    let created = create(&shop, &admin, &draft).await;
    assert_eq!(created["status"], "draft");
    assert_eq!(created["slug"], "speedgoat-6-trail");
    assert_eq!(created["variants"][0]["stock_available"], 3);
    assert_eq!(created["variants"][0]["price"], json!({"amount": 15999, "currency": "EUR"}));
    assert_eq!(created["variants"][0]["title"], "Speedgoat 6 — Trail");
    let id = created["id"].as_str().unwrap().to_owned();

    // The public and customers do not see drafts, by id, slug, or in search; admins do.
    for path in [format!("/api/v1/products/{id}"), "/api/v1/products/speedgoat-6-trail".to_owned()] {
        shop.gateway.get(&path).send().await.problem(404);
        shop.gateway.get(&path).bearer(&customer).send().await.problem(404);
        assert_eq!(shop.gateway.get(&path).bearer(&admin).send().await.status, 200);
    }
    let hidden = |body: Value| body["items"].as_array().unwrap().iter().all(|p| p["id"] != id.as_str());
    assert!(hidden(shop.gateway.get("/api/v1/products?q=speedgoat").send().await.json()));

    // Writes are for admins only.
    let patch = json!({"status": "active"});
    shop.gateway.patch(&format!("/api/v1/products/{id}")).json(&patch).send().await.problem(401);
    shop.gateway.patch(&format!("/api/v1/products/{id}")).bearer(&customer).json(&patch).send().await.problem(403);
    shop.gateway.post("/api/v1/products").bearer(&customer).json(&draft).send().await.problem(403);

    // Activated, it is public: by id and slug, and in search within a second.
    let activated = shop.gateway.patch(&format!("/api/v1/products/{id}")).bearer(&admin).json(&patch).send().await;
    assert_eq!(activated.status, 200);
    assert_eq!(activated.json()["status"], "active");
    let public = shop.gateway.get("/api/v1/products/speedgoat-6-trail").send().await;
    assert_eq!(public.status, 200);
    assert_eq!(public.json()["id"], id.as_str());
    assert!(
        testkit::eventually(Duration::from_secs(1), || async {
            !hidden(shop.gateway.get("/api/v1/products?q=speedgoat").send().await.json())
        })
        .await
    );

    // A partial update changes what it names, adds a variant, and keeps the rest.
    let new_sku = sku("SG");
    let patched = shop
        .gateway
        .patch(&format!("/api/v1/products/{id}"))
        .bearer(&admin)
        .json(&json!({"title": "Speedgoat 6", "variants": [{"sku": new_sku, "price": {"amount": 16999, "currency": "EUR"}, "attributes": {"size": "43"}, "on_hand": 2}]}))
        .send()
        .await;
    assert_eq!(patched.status, 200, "{}", String::from_utf8_lossy(&patched.body));
    let patched = patched.json();
    assert_eq!(patched["title"], "Speedgoat 6");
    assert_eq!(patched["slug"], "speedgoat-6-trail");
    assert_eq!(patched["brand"], "Hoka");
    assert_eq!(patched["variants"].as_array().unwrap().len(), 2);
    assert_eq!(patched["variants"][1]["stock_available"], 2);

    // Archived: gone from the storefront, still there for admins (and for existing orders).
    let archived = shop.gateway.delete(&format!("/api/v1/products/{id}")).bearer(&admin).send().await;
    assert_eq!(archived.status, 204);
    shop.gateway.get(&format!("/api/v1/products/{id}")).send().await.problem(404);
    let for_admin = shop.gateway.get(&format!("/api/v1/products/{id}")).bearer(&admin).send().await.json();
    assert_eq!(for_admin["status"], "archived");
    assert_eq!(shop.gateway.delete(&format!("/api/v1/products/{id}")).bearer(&admin).send().await.status, 204);
    shop.gateway.delete(&format!("/api/v1/products/{}", uuid::Uuid::now_v7())).bearer(&admin).send().await.problem(404);

    // Events went out through the outbox for each change.
    let catalog_db =
        platform::db::Db::connect(shop.settings.catalog.database_url.as_deref().unwrap(), &Default::default())
            .await
            .unwrap();
    let types: Vec<String> =
        platform::with_db!(&catalog_db, |pool| sqlx::query_scalar("SELECT event_type FROM event_outbox ORDER BY seq")
            .fetch_all(pool)
            .await)
        .unwrap();
    catalog_db.close().await;
    assert_eq!(types, ["product.created", "product.updated", "product.updated", "product.archived"]);
}

async fn duplicates_conflict_and_bad_input_changes_nothing(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let taken_sku = sku("DUP");
    create(&shop, &admin, &product_body("Unique Thing", &taken_sku, 1000, 1)).await;

    let slug_taken = shop
        .gateway
        .post("/api/v1/products")
        .bearer(&admin)
        .json(&product_body("Unique Thing", &sku("X"), 1000, 1))
        .send()
        .await;
    assert_eq!(slug_taken.problem(409)["slug"], "unique-thing");
    let sku_taken = shop
        .gateway
        .post("/api/v1/products")
        .bearer(&admin)
        .json(&product_body("Other Thing", &taken_sku, 1000, 1))
        .send()
        .await;
    assert_eq!(sku_taken.problem(409)["sku"], taken_sku.as_str());

    let bad = json!({"title": "", "category": "Not A Slug", "variants": [{"sku": "bad sku", "price": {"amount": -5, "currency": "USD"}}]});
    let problem = shop.gateway.post("/api/v1/products").bearer(&admin).json(&bad).send().await.problem(422);
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    for field in ["title", "category", "variants[0].sku", "variants[0].price.amount"] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }
    let wrong_currency = shop.gateway.post("/api/v1/products").bearer(&admin)
        .json(&json!({"title": "Dollar Thing", "category": "misc", "variants": [{"sku": sku("USD"), "price": {"amount": 5, "currency": "USD"}}]}))
        .send().await.problem(422);
    assert_eq!(wrong_currency["errors"][0]["field"], "variants[0].price.currency");
    shop.gateway
        .post("/api/v1/products")
        .bearer(&admin)
        .raw("application/json", "{\"title\": ")
        .send()
        .await
        .problem(400);
    shop.gateway.post("/api/v1/products").bearer(&admin).raw("text/plain", "x").send().await.problem(415);
    shop.gateway.post("/api/v1/products").bearer(&admin).json(&json!({"title": 5})).send().await.problem(400);

    let created = create(&shop, &admin, &product_body("Patch Target", &sku("PT"), 1000, 1)).await;
    let path = format!("/api/v1/products/{}", created["id"].as_str().unwrap());
    for bad in [
        json!({"title": " "}),
        json!({"status": "gone"}),
        json!({"variants": [{"sku": sku("NEW")}]}),
        json!({"slug": "unique-thing"}),
    ] {
        let response = shop.gateway.patch(&path).bearer(&admin).json(&bad).send().await;
        assert!(matches!(response.status.as_u16(), 400 | 409 | 422), "{bad}: {}", response.status);
        assert_eq!(response.header("content-type"), Some("application/problem+json"));
    }
    let unchanged = shop.gateway.get(&path).send().await.json();
    assert_eq!(unchanged["title"], "Patch Target");
    assert_eq!(unchanged["slug"], "patch-target");
    assert_eq!(unchanged["variants"].as_array().unwrap().len(), 1);

    for bad in
        ["?limit=0", "?limit=101", "?min_price=abc", "?in_stock=maybe", "?sort=cheapest", "?attr.Bad=x", "?offset=-3"]
    {
        shop.gateway.get(&format!("/api/v1/products{bad}")).send().await.problem(400);
    }
    // What the document allows is never refused: a price range that holds nothing matches nothing.
    let empty = shop.gateway.get("/api/v1/products?min_price=10&max_price=1").send().await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json()["total"], 0);
    shop.gateway.get(&format!("/api/v1/products/{}", uuid::Uuid::now_v7())).send().await.problem(404);
    shop.gateway
        .put("/api/v1/categories/Bad%20Slug")
        .bearer(&admin)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .problem(422);
    shop.gateway.put("/api/v1/categories/ok").bearer(&admin).json(&json!({"name": ""})).send().await.problem(422);
    shop.gateway
        .put("/api/v1/categories/ok")
        .bearer(&admin)
        .json(&json!({"name": "Ok", "parent": "missing"}))
        .send()
        .await
        .problem(409);
    // A SKU twice in one product conflicts with itself, as with another product's.
    let twice = json!({"title": "Twice", "category": "misc", "variants": [
        {"sku": "TWICE-1", "price": {"amount": 100, "currency": "EUR"}},
        {"sku": "TWICE-1", "price": {"amount": 200, "currency": "EUR"}}
    ]});
    let problem = shop.gateway.post("/api/v1/products").bearer(&admin).json(&twice).send().await.problem(409);
    assert_eq!(problem["field"], "variants[1].sku");

    // Two products and one category exist: nothing else was stored.
    let all = shop.gateway.get("/api/v1/products?status=all").bearer(&admin).send().await.json();
    assert!(
        testkit::eventually(Duration::from_secs(1), || async {
            shop.gateway.get("/api/v1/products?status=all").bearer(&admin).send().await.json()["total"] == 2
        })
        .await,
        "{all}"
    );
    let categories = shop.gateway.get("/api/v1/categories").send().await.json();
    assert_eq!(categories.as_array().unwrap().len(), 1, "{categories}");
}

async fn categories_tree_and_counts(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let put = |slug: &'static str, body: Value| {
        let (shop, admin) = (&shop, &admin);
        async move { shop.gateway.put(&format!("/api/v1/categories/{slug}")).bearer(admin).json(&body).send().await }
    };
    assert_eq!(put("shoes", json!({"name": "Shoes"})).await.status, 200);
    let mut trail = product_body("Trail One", &sku("T1"), 1000, 1);
    trail["category"] = json!("trail-shoes");
    create(&shop, &admin, &trail).await;
    // The unknown category was created with a name from its slug; now it moves under shoes.
    let moved = put("trail-shoes", json!({"name": "Trail shoes", "parent": "shoes"})).await;
    assert_eq!(
        moved.json(),
        json!({"slug": "trail-shoes", "name": "Trail shoes", "parent": "shoes", "product_count": 1})
    );
    // A category cannot sit below itself.
    put("shoes", json!({"name": "Shoes", "parent": "trail-shoes"})).await.problem(409);
    let mut draft = product_body("Draft One", &sku("D1"), 1000, 1);
    draft["status"] = json!("draft");
    create(&shop, &admin, &draft).await;
    let categories = shop.gateway.get("/api/v1/categories").send().await.json();
    assert_eq!(
        categories,
        json!([
            {"slug": "shoes", "name": "Shoes", "parent": null, "product_count": 1},
            {"slug": "trail-shoes", "name": "Trail shoes", "parent": "shoes", "product_count": 1}
        ])
    );
    // Filtering by a category includes the categories below it.
    assert!(
        testkit::eventually(Duration::from_secs(1), || async {
            shop.gateway.get("/api/v1/products?category=shoes").send().await.json()["total"] == 1
        })
        .await
    );
    put("hats", json!({"name": "Hats"})).await;
    shop.gateway.put("/api/v1/categories/caps").json(&json!({"name": "Caps"})).send().await.problem(401);
}

async fn stock_is_set_and_read_by_admins_only(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let customer = token(&shop.register(&unique_email("stock")).await);
    let code = sku("STK");
    create(&shop, &admin, &product_body("Stocked", &code, 1000, 5)).await;
    let path = format!("/api/v1/inventory/{code}");
    assert_eq!(
        shop.gateway.get(&path).bearer(&admin).send().await.json(),
        json!({"sku": code, "on_hand": 5, "reserved": 0, "available": 5})
    );
    let set = shop.gateway.put(&path).bearer(&admin).json(&json!({"on_hand": 12})).send().await;
    assert_eq!(set.json(), json!({"sku": code, "on_hand": 12, "reserved": 0, "available": 12}));
    shop.gateway.get(&path).send().await.problem(401);
    shop.gateway.get(&path).bearer(&customer).send().await.problem(403);
    shop.gateway.put(&path).bearer(&customer).json(&json!({"on_hand": 1})).send().await.problem(403);
    shop.gateway.put(&path).bearer(&admin).json(&json!({"on_hand": -1})).send().await.problem(422);
    shop.gateway.put(&path).bearer(&admin).json(&json!({"on_hand": "many"})).send().await.problem(400);
    shop.gateway.put("/api/v1/inventory/NOPE-1").bearer(&admin).json(&json!({"on_hand": 1})).send().await.problem(404);
    assert_eq!(shop.gateway.get(&path).bearer(&admin).send().await.json()["on_hand"], 12);
    // The product shows the new availability.
    let product = shop.gateway.get("/api/v1/products/stocked").send().await.json();
    assert_eq!(product["variants"][0]["stock_available"], 12);
    // The catalog reports its checks and its own counters.
    let ready = shop.catalog.get("/health/ready").send().await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["checks"]["cache"], "ok", "{}", ready.json());
    let metrics = String::from_utf8(shop.catalog.get("/metrics").send().await.body.to_vec()).unwrap();
    assert!(metrics.contains("catalog_stock_changes_total"), "{metrics}");
    assert!(metrics.contains("route=\"/api/v1/inventory/{sku}\""), "{metrics}");
}

async fn product_reads_carry_etags(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let created = create(&shop, &admin, &product_body("Etag Shoe", &sku("ET"), 1000, 1)).await;
    let path = format!("/api/v1/products/{}", created["id"].as_str().unwrap());
    let first = shop.gateway.get(&path).send().await;
    assert_eq!(first.status, 200);
    let etag = first.header("etag").unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "a strong ETag: {etag}");
    assert!(first.header("cache-control").unwrap().contains("public"));
    let again = shop.gateway.get(&path).header("if-none-match", &etag).send().await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    // By slug: the same representation, the same ETag.
    let by_slug = shop.gateway.get("/api/v1/products/etag-shoe").header("if-none-match", &etag).send().await;
    assert_eq!(by_slug.status, 304);
    // After a change the old ETag no longer matches.
    shop.gateway.patch(&path).bearer(&admin).json(&json!({"description": "New words."})).send().await;
    let changed = shop.gateway.get(&path).header("if-none-match", &etag).send().await;
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    assert_eq!(changed.json()["description"], "New words.");
}

async fn a_price_change_shows_in_search_and_reads_within_a_second(db: TestDatabase) {
    // On PostgreSQL the distributed set-up: product reads through Redis.
    let redis = db.backend == testkit::Backend::Postgres && testkit::redis_available().await;
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let shop = TestShop::start_with(db, |s| {
        if redis {
            s.catalog.cache_url = testkit::redis_url();
            s.catalog.cache_prefix = prefix.clone();
        }
    })
    .await;
    let admin = shop.admin_token().await;
    let code = sku("PR");
    let created = create(&shop, &admin, &product_body("Priced Runner", &code, 10_000, 4)).await;
    let path = format!("/api/v1/products/{}", created["id"].as_str().unwrap());
    // Warm the cache with the old price.
    for _ in 0..3 {
        assert_eq!(shop.gateway.get(&path).send().await.json()["variants"][0]["price"]["amount"], 10_000);
    }
    let started = Instant::now();
    let patch = json!({"variants": [{"sku": code, "price": {"amount": 7_500, "currency": "EUR"}}]});
    assert_eq!(shop.gateway.patch(&path).bearer(&admin).json(&patch).send().await.status, 200);
    // The next read already has the new price: the write dropped the cached copy.
    assert_eq!(shop.gateway.get(&path).send().await.json()["variants"][0]["price"]["amount"], 7_500);
    let found = testkit::eventually(Duration::from_secs(1), || async {
        let page = shop.gateway.get("/api/v1/products?q=priced&max_price=8000").send().await.json();
        page["total"] == 1 && page["items"][0]["variants"][0]["price"]["amount"] == 7_500
    })
    .await;
    assert!(found, "the new price was not searchable within a second");
    assert!(started.elapsed() < Duration::from_millis(1500));
    // And the cache never hands out the old price again.
    for _ in 0..5 {
        assert_eq!(shop.gateway.get(&path).send().await.json()["variants"][0]["price"]["amount"], 7_500);
    }
    if redis {
        let cleaned = testkit::redis_delete_prefix(&prefix).await;
        assert!(cleaned >= 1, "the product was cached in Redis");
    }
}

/// Stock changes reach search results in batches, at most `STOCK_DELAY` late; reads of the
/// product show them at once.
async fn a_stock_change_shows_in_search_within_the_stock_delay(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let code = sku("SD");
    let created = create(&shop, &admin, &product_body("Stocked Sandal", &code, 4_000, 4)).await;
    let in_stock = || async {
        let page = shop.gateway.get("/api/v1/products?q=stocked%20sandal&in_stock=true").send().await.json();
        page["total"].as_u64()
    };
    assert!(testkit::eventually(Duration::from_secs(2), || async { in_stock().await == Some(1) }).await);
    let bound = catalog::search::STOCK_DELAY + Duration::from_secs(1);
    for on_hand in [0, 3] {
        let path = format!("/api/v1/inventory/{code}");
        assert_eq!(shop.gateway.put(&path).bearer(&admin).json(&json!({"on_hand": on_hand})).send().await.status, 200);
        let product = shop.gateway.get(&format!("/api/v1/products/{}", created["id"].as_str().unwrap())).send().await;
        assert_eq!(product.json()["variants"][0]["stock_available"], on_hand);
        let shown = testkit::eventually(bound, || async {
            let page = shop.gateway.get("/api/v1/products?q=stocked%20sandal").send().await.json();
            page["items"][0]["variants"][0]["stock_available"] == on_hand
        })
        .await;
        assert!(shown, "search did not show {on_hand} in stock within {bound:?}");
        assert_eq!(in_stock().await, Some(u64::from(on_hand > 0)));
    }
}

/// A newcomer's first start: the embedded shop fills its empty catalog with the demo catalog,
/// searchable at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_catalog_loads_on_the_first_embedded_start() {
    let shop = TestShop::start_with(TestDatabase::sqlite(), |s| {
        s.catalog.database_url = None;
        s.catalog.demo_catalog = None;
    })
    .await;
    let page = shop.gateway.get("/api/v1/products?limit=1").send().await.json();
    assert_eq!(page["total"], catalog::demo::DEMO_PRODUCTS);
    let categories = shop.gateway.get("/api/v1/categories").send().await.json();
    let leaves = categories.as_array().unwrap().iter().filter(|c| !c["parent"].is_null()).count();
    assert_eq!(leaves, 12, "{categories}");
    assert!(page["facets"]["brand"].as_array().unwrap().len() >= 10);
    assert!(page["facets"]["attr.color"].as_array().is_some_and(|c| !c.is_empty()));
    let jackets = shop.gateway.get("/api/v1/products?q=jacket&in_stock=true").send().await.json();
    assert!(jackets["total"].as_u64().unwrap() > 5, "{}", jackets["total"]);
}
