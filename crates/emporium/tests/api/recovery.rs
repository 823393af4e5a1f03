//! Crash recovery: the real `emporium` binary is started with fault injection, exits in the
//! middle of a checkout (right after a saga step's effect, before the step is recorded), and is
//! started again. Every checkout must then end final, with stock and payments that agree with
//! the orders: nothing charged twice, nothing charged without an order, nothing left reserved.

use std::{process::Stdio, time::Duration};

use platform::db::Db;
use serde_json::json;
use testkit::{TestClient, TestDatabase, on_both_backends};
use tokio::process::{Child, Command};

use crate::{
    catalog::product_body,
    common::{ADMIN_EMAIL, ADMIN_PASSWORD, new_master_key, token, unique_email},
    orders::{checkout_body, scalar, unique_sku},
};

on_both_backends!(a_crash_at_every_saga_step_is_recovered_on_restart);

/// Every fault point: the checkout's steps, a declined checkout's release, a cancellation's refund.
const POINTS: [&str; 7] = ["reserve", "create", "charge", "commit", "empty", "release", "refund"];
const STOCK: i64 = 50;

/// The whole shop as a child process, on fixed ports, its databases and data directory.
struct Process {
    env: Vec<(String, String)>,
    gateway: TestClient,
}

impl Process {
    fn new(identity: &TestDatabase, catalog: &TestDatabase, orders: &TestDatabase, data_dir: &std::path::Path) -> Self {
        let gateway_port = testkit::free_port();
        let mut env: Vec<(String, String)> = [
            ("DATA_DIR", data_dir.display().to_string()),
            ("BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
            ("BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
            ("IDENTITY__DATABASE_URL", identity.url.clone()),
            ("IDENTITY__SECRETS__MASTER_KEY", new_master_key()),
            ("IDENTITY__PASSWORD_HASHING__MEMORY_KIB", "1024".to_owned()),
            ("IDENTITY__PASSWORD_HASHING__ITERATIONS", "1".to_owned()),
            ("CATALOG__DATABASE_URL", catalog.url.clone()),
            ("CATALOG__DEMO_CATALOG", "false".to_owned()),
            ("CATALOG__SWEEP_INTERVAL", "200ms".to_owned()),
            ("ORDERS__DATABASE_URL", orders.url.clone()),
            ("ORDERS__SWEEP_INTERVAL", "200ms".to_owned()),
            ("ORDERS__RPC_TIMEOUT", "1s".to_owned()),
            ("ORDERS__PAYMENTS__TIMEOUT", "2s".to_owned()),
            ("ORDERS__SAGA_LEASE", "3s".to_owned()),
            ("GATEWAY__LISTEN", format!("127.0.0.1:{gateway_port}")),
        ]
        .into_iter()
        .map(|(k, v)| (format!("EMPORIUM_{k}"), v))
        .collect();
        for variable in emporium::Settings::SERVICE_LISTEN_VARIABLES {
            env.push((variable.to_owned(), format!("127.0.0.1:{}", testkit::free_port())));
        }
        Self { env, gateway: TestClient::new(format!("http://127.0.0.1:{gateway_port}")) }
    }

    /// Starts the shop (exiting after `crash_after` when given) and waits until it serves.
    async fn start(&self, crash_after: Option<&str>) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_emporium"));
        command
            .arg("serve")
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(point) = crash_after {
            command.env("EMPORIUM_ORDERS__CRASH_AFTER", point);
        }
        let mut child = command.spawn().expect("the emporium binary starts");
        let ready = testkit::eventually(Duration::from_secs(60), || async {
            // The gateway is up, and through it the orders service answers.
            let probe =
                tokio::time::timeout(Duration::from_secs(2), self.gateway.get("/api/v1/orders").try_send()).await;
            matches!(probe, Ok(Ok(response)) if response.status == 401)
        })
        .await;
        if !ready {
            let _ = child.kill().await;
            panic!("the shop did not start");
        }
        child
    }
}

/// A request sent again while the shop, just restarted on a machine busy with other tests, says
/// it is busy (503 with `Retry-After`), as a client would.
async fn answered<F, Fut>(send: F) -> testkit::TestResponse
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = testkit::TestResponse>,
{
    for _ in 0..10 {
        let response = send().await;
        if response.status != 503 {
            return response;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    send().await
}

async fn a_crash_at_every_saga_step_is_recovered_on_restart(db: TestDatabase) {
    let (Some(catalog_db), Some(orders_db)) =
        (TestDatabase::create(db.backend).await, TestDatabase::create(db.backend).await)
    else {
        return;
    };
    let data_dir = testkit::temp_dir("recovery");
    let process = Process::new(&db, &catalog_db, &orders_db, &data_dir);
    let sku = unique_sku("CRASH");
    let mut expected = Vec::new();
    for (n, point) in POINTS.into_iter().enumerate() {
        let mut crashing = process.start(Some(point)).await;
        let gateway = &process.gateway;
        let login = answered(|| {
            gateway.post("/api/v1/auth/login").json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})).send()
        })
        .await;
        let admin = token(&login.json());
        if n == 0 {
            let body = product_body("Crash Test Kettle", &sku, 2_500, STOCK);
            let created = gateway.post("/api/v1/products").bearer(&admin).json(&body).send().await;
            assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
        }
        let email = unique_email("crash");
        let registered = answered(|| {
            let body = json!({"email": email, "password": crate::common::PASSWORD, "name": "C"});
            gateway.post("/api/v1/auth/register").json(&body).send()
        })
        .await;
        let user = token(&registered.json());
        let quantity = n as i64 + 1;
        let added = gateway
            .post("/api/v1/carts/me/items")
            .bearer(&user)
            .json(&json!({"sku": sku, "quantity": quantity}))
            .send()
            .await;
        assert_eq!(added.status, 200);
        let key = format!("crash-{point}");
        let (method, answer) = if point == "release" { ("pm_card_chargeDeclined", 402) } else { ("pm_card_visa", 201) };
        let body = checkout_body("me", method);
        // The process exits mid-checkout (or, for `refund`, mid-cancellation): the client sees
        // the connection drop.
        let request = gateway.post("/api/v1/orders").bearer(&user).header("idempotency-key", &key).json(&body);
        let interrupted = tokio::time::timeout(Duration::from_secs(30), async { request.try_send().await }).await;
        let mut cancelled = None;
        if point == "refund" {
            let order = interrupted.unwrap().unwrap().json();
            let path = format!("/api/v1/orders/{}/cancel", order["id"].as_str().unwrap());
            let cancel = gateway.post(&path).bearer(&user).try_send().await;
            assert!(!matches!(cancel, Ok(ref r) if r.status == 200), "the cancellation was interrupted");
            cancelled = Some(order);
        } else {
            assert!(
                !matches!(interrupted, Ok(Ok(ref r)) if r.status == answer),
                "the checkout was interrupted at {point}"
            );
        }
        let status =
            tokio::time::timeout(Duration::from_secs(30), crashing.wait()).await.expect("the process exits").unwrap();
        assert_eq!(status.code(), Some(86), "fault injection at {point} exits the process");

        // Restarted without the fault: the checkout is finished (or, if it had not placed the
        // order yet, undone) and the client's retry under the same key gets a paid order.
        let mut restarted = process.start(None).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let order = loop {
            let retry =
                gateway.post("/api/v1/orders").bearer(&user).header("idempotency-key", &key).json(&body).send().await;
            if retry.status == answer {
                break retry.json();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the checkout interrupted at {point} was not finished: {}",
                retry.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let expected_status = match point {
            "release" => "payment_failed",
            "refund" => "cancelled",
            _ => "paid",
        };
        if let Some(cancelled) = &cancelled {
            assert_eq!(order["id"], cancelled["id"], "the replay is the first answer");
        }
        expected.push((expected_status, quantity));
        // Every saga has finished once the sweeper caught up.
        let orders = Db::connect(&orders_db.url, &Default::default()).await.unwrap();
        let settled = testkit::eventually(Duration::from_secs(20), || async {
            scalar(&orders, "SELECT COUNT(*) FROM sagas WHERE step NOT IN ('done', 'failed', 'rejected', 'abandoned')")
                .await
                == 0
        })
        .await;
        assert!(settled, "sagas left unfinished after a crash at {point}");
        orders.close().await;
        let id = order["id"].as_str().unwrap();
        let now = gateway.get(&format!("/api/v1/orders/{id}")).bearer(&user).send().await.json();
        assert_eq!(now["status"], expected_status, "after a crash at {point}");
        if point == "refund" {
            assert_eq!(now["payment"]["status"], "refunded");
        }
        // The cart is emptied once the saga is done (after a late crash, by the sweeper).
        let cart = gateway.get("/api/v1/carts/me").bearer(&user).send().await.json();
        let left = if point == "release" { quantity } else { 0 };
        assert_eq!(cart["item_count"], left, "the cart after a crash at {point}");
        restarted.kill().await.unwrap();
    }

    // Stock and payments agree with the orders.
    let count = |status: &str| expected.iter().filter(|(s, _)| *s == status).count() as i64;
    let sold: i64 = expected.iter().filter(|(s, _)| *s == "paid").map(|(_, q)| q).sum();
    let orders = Db::connect(&orders_db.url, &Default::default()).await.unwrap();
    assert_eq!(scalar(&orders, "SELECT COUNT(*) FROM orders").await, POINTS.len() as i64);
    assert_eq!(scalar(&orders, "SELECT COUNT(*) FROM orders WHERE status = 'paid'").await, count("paid"));
    assert_eq!(scalar(&orders, "SELECT COUNT(*) FROM orders WHERE status = 'payment_failed'").await, 1);
    assert_eq!(scalar(&orders, "SELECT COUNT(*) FROM orders WHERE status = 'cancelled'").await, 1);
    // One charge per order, for its total, and none without an order; the cancelled one refunded.
    assert_eq!(scalar(&orders, "SELECT COUNT(*) FROM sandbox_payments").await, POINTS.len() as i64);
    assert_eq!(
        scalar(
            &orders,
            "SELECT COUNT(*) FROM sandbox_payments p JOIN orders o ON o.id = p.order_id AND o.total = p.amount"
        )
        .await,
        POINTS.len() as i64
    );
    assert_eq!(
        scalar(&orders, "SELECT COUNT(*) FROM sandbox_payments p JOIN orders o ON o.id = p.order_id WHERE p.refunded = p.amount AND o.status = 'cancelled'").await,
        1
    );
    assert_eq!(scalar(&orders, "SELECT COUNT(*) FROM sandbox_refunds").await, 1);
    orders.close().await;
    let catalog = Db::connect(&catalog_db.url, &Default::default()).await.unwrap();
    assert_eq!(scalar(&catalog, "SELECT COUNT(*) FROM reservations WHERE state = 'held'").await, 0);
    assert_eq!(scalar(&catalog, "SELECT COUNT(*) FROM reservations WHERE state = 'committed'").await, count("paid"));
    assert_eq!(scalar(&catalog, "SELECT COUNT(*) FROM reservations WHERE state = 'returned'").await, 1);
    assert_eq!(scalar(&catalog, "SELECT CAST(SUM(on_hand) AS BIGINT) FROM inventory").await, STOCK - sold);
    assert_eq!(scalar(&catalog, "SELECT CAST(SUM(reserved) AS BIGINT) FROM inventory").await, 0);
    catalog.close().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
