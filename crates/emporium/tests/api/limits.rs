//! API.md's Limits through the gateway: budgets for reads, writes and sign-ins per address and per
//! user, in this process or shared by gateway replicas through Redis, and what a Redis that is
//! down changes.

use std::time::Duration;

use emporium::{Service, Shop};
use gateway::limits::Quota;
use serde_json::json;
use testkit::{TestClient, TestDatabase, TestResponse};
use tokio_util::sync::CancellationToken;

use crate::common::*;

fn per_minute(requests: u32) -> Quota {
    Quota { requests, per: Duration::from_secs(60) }
}

/// Tight budgets: 5 reads, 3 writes and 2 sign-ins a minute.
fn tight(settings: &mut emporium::Settings) {
    let limits = &mut settings.gateway.rate_limits;
    (limits.read, limits.write, limits.auth) = (per_minute(5), per_minute(3), per_minute(2));
}

#[track_caller]
fn assert_limited(response: &TestResponse, budget: &str) {
    let problem = response.problem(429);
    assert_eq!(problem["type"], "urn:emporium:problem:rate-limited");
    let retry: u64 = response.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(problem["detail"].as_str().unwrap().contains(budget), "{problem}");
    let state = response.header("ratelimit").expect("RateLimit");
    assert!(state.starts_with(&format!("\"{budget}\";r=0;t=")), "{state}");
}

async fn products(client: &TestClient) -> TestResponse {
    client.get("/api/v1/products").send().await
}

/// A user signed in directly at identity, so that no sign-in budget is spent at the gateway.
async fn user_token(shop: &TestShop) -> String {
    let registered = shop
        .identity
        .post("/api/v1/auth/register")
        .json(&json!({"email": unique_email("limits"), "password": PASSWORD, "name": "Lim"}))
        .send()
        .await;
    assert_eq!(registered.status, 201);
    token(&registered.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_writes_and_sign_ins_each_have_a_budget() {
    let shop = TestShop::start_with(TestDatabase::sqlite(), tight).await;
    for left in (0..5).rev() {
        let read = products(&shop.gateway).await;
        assert_eq!(read.status, 200);
        assert_eq!(read.header("ratelimit-policy"), Some("\"read\";q=5;w=60"));
        let state = read.header("ratelimit").unwrap();
        assert!(state.starts_with(&format!("\"read\";r={left};t=")), "{state}");
    }
    let refused = products(&shop.gateway).await;
    assert_limited(&refused, "read");

    // A signed-in user spends a budget of their own, not the address's.
    let user = user_token(&shop).await;
    let me = shop.gateway.get("/api/v1/users/me").bearer(&user).send().await;
    assert_eq!(me.status, 200);
    assert!(me.header("ratelimit").unwrap().starts_with("\"read\";r=4;"), "{:?}", me.header("ratelimit"));

    // Writes: three, then 429; a refused write reaches no service.
    for _ in 0..3 {
        assert_eq!(shop.gateway.post("/api/v1/carts").send().await.status, 201);
    }
    assert_limited(&shop.gateway.post("/api/v1/carts").send().await, "write");

    // Sign-ins: two wrong passwords answered, then 429 before identity sees a third.
    let login = || {
        shop.gateway.post("/api/v1/auth/login").json(&json!({"email": "x@example.com", "password": "wrong-password"}))
    };
    assert_eq!(login().send().await.status, 401);
    assert_eq!(login().send().await.status, 401);
    assert_limited(&login().send().await, "auth");
    let metrics = String::from_utf8(shop.gateway.get("/metrics").send().await.body.to_vec()).unwrap();
    for budget in ["read", "write", "auth"] {
        let line = format!("gateway_rate_limited_total{{budget=\"{budget}\"}} ");
        assert!(metrics.lines().any(|l| l.starts_with(&line) && !l.ends_with(" 0")), "{line} in {metrics}");
    }
    shop.stop().await;
}

/// Two gateway replicas on one Redis spend one budget; a Redis that is down lets reads through
/// and keeps the other budgets per replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_replicas_share_budgets_through_redis() {
    if !testkit::redis_available().await {
        return;
    }
    let prefix = format!("test-limits-{}", uuid::Uuid::new_v4().simple());
    let shop = TestShop::start_with(TestDatabase::sqlite(), |settings| {
        tight(settings);
        settings.gateway.rate_limits.redis_url = Some(testkit::redis_url());
        settings.gateway.rate_limits.key_prefix = prefix.clone();
    })
    .await;
    // A second gateway, alone in its process as a replica would be, in front of the same catalog.
    let mut replica = shop.settings.clone();
    replica.gateway.upstreams.get_mut("catalog").unwrap().urls = vec![shop.catalog.base().to_owned()];
    replica.gateway.upstreams.get_mut("identity").unwrap().urls = vec![shop.identity.base().to_owned()];
    let stop = CancellationToken::new();
    let second = Shop::start(replica.clone(), &[Service::Gateway], stop.clone()).await.unwrap();
    let second_client = TestClient::new(format!("http://{}", second.gateway.unwrap()));

    for client in [&shop.gateway, &second_client, &shop.gateway, &second_client, &shop.gateway] {
        assert_eq!(products(client).await.status, 200);
    }
    assert_limited(&products(&second_client).await, "read");
    assert_limited(&products(&shop.gateway).await, "read");
    stop.cancel();
    second.wait().await.unwrap();

    // Redis down (nothing listens there): reads pass uncounted, writes count on this replica.
    replica.gateway.rate_limits.redis_url = Some(format!("redis://127.0.0.1:{}", testkit::free_port()));
    replica.gateway.upstreams.get_mut("cart").unwrap().urls = vec![shop.cart.base().to_owned()];
    let stop = CancellationToken::new();
    let cut_off = Shop::start(replica, &[Service::Gateway], stop.clone()).await.unwrap();
    let cut_off_client = TestClient::new(format!("http://{}", cut_off.gateway.unwrap()));
    for _ in 0..8 {
        let read = products(&cut_off_client).await;
        assert_eq!(read.status, 200);
        assert!(read.header("ratelimit").is_none(), "nothing was counted");
    }
    for _ in 0..3 {
        assert_eq!(cut_off_client.post("/api/v1/carts").send().await.status, 201);
    }
    assert_limited(&cut_off_client.post("/api/v1/carts").send().await, "write");
    stop.cancel();
    cut_off.wait().await.unwrap();
    shop.stop().await;
    assert!(testkit::redis_delete_prefix(&prefix).await > 0, "the budgets lived in Redis under {prefix}");
}
