//! The catalog's gRPC inventory service, as cart and orders call it: variants, and reservations
//! that never oversell, are idempotent by order id, and expire.

use std::time::Duration;

use rpc::catalog::v1::{
    CommitRequest, GetVariantsRequest, ReleaseRequest, ReservationLine, ReservationState, ReserveRequest,
    ShortageReason, inventory_client::InventoryClient,
};
use serde_json::{Value, json};
use testkit::{TestDatabase, on_both_backends};
use tonic::Code;
use uuid::Uuid;

use crate::{
    catalog::{create, product_body},
    common::*,
};

on_both_backends!(
    concurrent_reservations_never_oversell,
    overlapping_reservations_settle_without_deadlock,
    reservations_are_idempotent_and_settle,
    expired_reservations_come_back,
    shortages_and_bad_requests_reserve_nothing,
);

async fn client(shop: &TestShop) -> InventoryClient<tonic::transport::Channel> {
    InventoryClient::connect(shop.catalog_grpc.clone()).await.expect("the catalog's gRPC service accepts connections")
}

fn reserve(order_id: Uuid, lines: &[(&str, i64)]) -> ReserveRequest {
    ReserveRequest {
        order_id: order_id.to_string(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| ReservationLine { sku: (*sku).to_owned(), quantity: *quantity })
            .collect(),
        ttl_seconds: 0,
    }
}

async fn stock(shop: &TestShop, admin: &str, sku: &str) -> Value {
    shop.gateway.get(&format!("/api/v1/inventory/{sku}")).bearer(admin).send().await.json()
}

fn unique_sku(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..8]).to_uppercase()
}

async fn concurrent_reservations_never_oversell(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("FLASH");
    create(&shop, &admin, &product_body("Flash Sale Shoe", &sku, 5_000, 10)).await;
    let client = client(&shop).await;
    let attempts: Vec<_> = (0..100)
        .map(|_| {
            let mut client = client.clone();
            let request = reserve(Uuid::now_v7(), &[(&sku, 1)]);
            tokio::spawn(async move { client.reserve(request).await })
        })
        .collect();
    let mut reserved = 0;
    let mut short = 0;
    for attempt in attempts {
        let response = attempt.await.unwrap().expect("every call is answered").into_inner();
        if response.reserved {
            reserved += 1;
        } else {
            assert_eq!(response.shortages[0].reason, ShortageReason::OutOfStock as i32);
            short += 1;
        }
    }
    assert_eq!((reserved, short), (10, 90));
    assert_eq!(stock(&shop, &admin, &sku).await, json!({"sku": sku, "on_hand": 10, "reserved": 10, "available": 0}));
    // Stock cannot be set below what is reserved.
    let below =
        shop.gateway.put(&format!("/api/v1/inventory/{sku}")).bearer(&admin).json(&json!({"on_hand": 9})).send().await;
    assert_eq!(below.problem(409)["reserved"], 10);
    // The storefront shows it as sold out.
    let product = shop.gateway.get("/api/v1/products/flash-sale-shoe").send().await.json();
    assert_eq!(product["variants"][0]["stock_available"], 0);
}

/// Many orders over the same SKUs, their lines given in every order, reserved, committed and
/// released at once: every call is answered (a deadlock between two of them would fail one)
/// and the stock adds up.
async fn overlapping_reservations_settle_without_deadlock(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let skus: Vec<String> = ["RING-A", "RING-B", "RING-C"].iter().map(|p| unique_sku(p)).collect();
    for (n, sku) in skus.iter().enumerate() {
        create(&shop, &admin, &product_body(&format!("Ring {n}"), sku, 1_000, 1_000)).await;
    }
    let client = client(&shop).await;
    let orders: Vec<Uuid> = (0..60).map(|_| Uuid::now_v7()).collect();
    let calls: Vec<_> = orders
        .iter()
        .enumerate()
        .map(|(n, &order)| {
            let mut client = client.clone();
            // Rotated and reversed: each pair of SKUs appears in both orders.
            let mut lines: Vec<(&str, i64)> = skus.iter().map(|s| (s.as_str(), 2)).collect();
            lines.rotate_left(n % 3);
            if n % 2 == 1 {
                lines.reverse();
            }
            let request = reserve(order, &lines);
            tokio::spawn(async move {
                let reserved = client.reserve(request).await?.into_inner().reserved;
                let id = order.to_string();
                // Half are sold, half given back: both settle every line at once.
                if n % 2 == 0 {
                    client.commit(CommitRequest { order_id: id }).await?;
                } else {
                    client.release(ReleaseRequest { order_id: id }).await?;
                }
                Ok::<bool, tonic::Status>(reserved)
            })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap().expect("every call is answered"), "stock was ample");
    }
    for sku in &skus {
        assert_eq!(
            stock(&shop, &admin, sku).await,
            json!({"sku": sku, "on_hand": 940, "reserved": 0, "available": 940})
        );
    }
}

async fn reservations_are_idempotent_and_settle(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let (a, b) = (unique_sku("A"), unique_sku("B"));
    create(&shop, &admin, &product_body("Idempotent A", &a, 1_000, 5)).await;
    create(&shop, &admin, &product_body("Idempotent B", &b, 2_000, 5)).await;
    let mut client = client(&shop).await;

    let variants = client
        .get_variants(GetVariantsRequest { skus: vec![a.clone(), "NOPE-1".to_owned()] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(variants.missing, ["NOPE-1"]);
    assert_eq!(variants.variants[0].sku, a);
    assert_eq!(variants.variants[0].product_title, "Idempotent A");
    assert_eq!(variants.variants[0].available, 5);
    assert_eq!(variants.variants[0].price.as_ref().unwrap().amount, 1_000);

    let order = Uuid::now_v7();
    let first = client.reserve(reserve(order, &[(&a, 2), (&b, 1)])).await.unwrap().into_inner();
    assert!(first.reserved);
    assert_eq!(first.state, ReservationState::Held as i32);
    // The same call again (a retry) reserves nothing more; lines in another order are the same lines.
    let again = client.reserve(reserve(order, &[(&b, 1), (&a, 2)])).await.unwrap().into_inner();
    assert!(again.reserved);
    assert_eq!(again.expires_at_unix_ms, first.expires_at_unix_ms);
    assert_eq!(stock(&shop, &admin, &a).await["reserved"], 2);
    assert_eq!(stock(&shop, &admin, &b).await["reserved"], 1);
    // Other lines under the same order id are refused.
    let other = client.reserve(reserve(order, &[(&a, 3)])).await.unwrap_err();
    assert_eq!(other.code(), Code::FailedPrecondition);

    // Commit: the stock leaves on hand; twice is once.
    for _ in 0..2 {
        let committed = client.commit(CommitRequest { order_id: order.to_string() }).await.unwrap().into_inner();
        assert_eq!(committed.state, ReservationState::Committed as i32);
    }
    assert_eq!(stock(&shop, &admin, &a).await, json!({"sku": a, "on_hand": 3, "reserved": 0, "available": 3}));
    // Releasing a committed reservation returns the stock (a cancelled order); twice is once.
    for _ in 0..2 {
        let returned = client.release(ReleaseRequest { order_id: order.to_string() }).await.unwrap().into_inner();
        assert_eq!(returned.state, ReservationState::Returned as i32);
    }
    assert_eq!(stock(&shop, &admin, &a).await, json!({"sku": a, "on_hand": 5, "reserved": 0, "available": 5}));

    // A held reservation released before commit: stock back, and commit is refused afterwards.
    let held = Uuid::now_v7();
    assert!(client.reserve(reserve(held, &[(&b, 4)])).await.unwrap().into_inner().reserved);
    assert_eq!(stock(&shop, &admin, &b).await["available"], 1);
    let released = client.release(ReleaseRequest { order_id: held.to_string() }).await.unwrap().into_inner();
    assert_eq!(released.state, ReservationState::Released as i32);
    assert_eq!(stock(&shop, &admin, &b).await["available"], 5);
    let refused = client.commit(CommitRequest { order_id: held.to_string() }).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // A release that overtakes its reserve (a timed-out call, compensated): the late reserve holds nothing.
    let late = Uuid::now_v7();
    client.release(ReleaseRequest { order_id: late.to_string() }).await.unwrap();
    let after = client.reserve(reserve(late, &[(&a, 1)])).await.unwrap().into_inner();
    assert!(!after.reserved);
    assert_eq!(after.state, ReservationState::Released as i32);
    assert_eq!(stock(&shop, &admin, &a).await["reserved"], 0);
    let unknown = client.commit(CommitRequest { order_id: Uuid::now_v7().to_string() }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

async fn expired_reservations_come_back(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("EXP");
    create(&shop, &admin, &product_body("Expiring Hold", &sku, 1_000, 3)).await;
    let mut client = client(&shop).await;
    let order = Uuid::now_v7();
    let mut request = reserve(order, &[(&sku, 3)]);
    request.ttl_seconds = 1;
    assert!(client.reserve(request).await.unwrap().into_inner().reserved);
    assert_eq!(stock(&shop, &admin, &sku).await["available"], 0);
    // The sweeper (every 200 ms in tests) releases it once the second is up.
    let back = testkit::eventually(Duration::from_secs(5), || async {
        stock(&shop, &admin, &sku).await == json!({"sku": sku, "on_hand": 3, "reserved": 0, "available": 3})
    })
    .await;
    assert!(back, "expired stock came back");
    let late = client.commit(CommitRequest { order_id: order.to_string() }).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(stock(&shop, &admin, &sku).await["on_hand"], 3);
}

async fn shortages_and_bad_requests_reserve_nothing(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let (plenty, scarce, hidden) = (unique_sku("P"), unique_sku("S"), unique_sku("H"));
    create(&shop, &admin, &product_body("Plenty", &plenty, 1_000, 50)).await;
    create(&shop, &admin, &product_body("Scarce", &scarce, 1_000, 1)).await;
    let mut draft = product_body("Hidden", &hidden, 1_000, 9);
    draft["status"] = json!("draft");
    create(&shop, &admin, &draft).await;
    let mut client = client(&shop).await;

    let order = Uuid::now_v7();
    let response = client
        .reserve(reserve(order, &[(&plenty, 5), (&scarce, 2), (&hidden, 1), ("NO-SUCH-SKU", 1)]))
        .await
        .unwrap()
        .into_inner();
    assert!(!response.reserved);
    let mut shortages: Vec<(String, i64, i64, i32)> =
        response.shortages.into_iter().map(|s| (s.sku, s.requested, s.available, s.reason)).collect();
    shortages.sort();
    let mut expected = vec![
        (scarce.clone(), 2, 1, ShortageReason::OutOfStock as i32),
        (hidden.clone(), 1, 9, ShortageReason::NotForSale as i32),
        ("NO-SUCH-SKU".to_owned(), 1, 0, ShortageReason::UnknownSku as i32),
    ];
    expected.sort();
    assert_eq!(shortages, expected);
    // All or nothing: the line that could be reserved was not.
    assert_eq!(stock(&shop, &admin, &plenty).await["reserved"], 0);
    // Nothing recorded either: the same order id can reserve what is available.
    assert!(client.reserve(reserve(order, &[(&plenty, 5)])).await.unwrap().into_inner().reserved);

    let bad = [
        reserve(Uuid::now_v7(), &[]),
        reserve(Uuid::now_v7(), &[(&plenty, 0)]),
        reserve(Uuid::now_v7(), &[(&plenty, -1)]),
        reserve(Uuid::now_v7(), &[(&plenty, 1), (&plenty, 1)]),
        reserve(Uuid::now_v7(), &[("bad sku", 1)]),
        ReserveRequest { order_id: "not-a-uuid".to_owned(), ..reserve(Uuid::now_v7(), &[(&plenty, 1)]) },
    ];
    for request in bad {
        let status = client.reserve(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    for status in [
        client.commit(CommitRequest { order_id: "x".to_owned() }).await.unwrap_err(),
        client.release(ReleaseRequest { order_id: String::new() }).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    assert_eq!(stock(&shop, &admin, &plenty).await["reserved"], 5);
}
