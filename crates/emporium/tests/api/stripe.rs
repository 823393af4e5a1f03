//! The Stripe adapter against `localstripe` (a Stripe API stand-in from PyPI that `.ci/run`
//! installs and starts on loopback): charge, decline, refund, and its signed webhooks.

use std::time::Duration;

use testkit::{TestClient, TestDatabase};

use crate::{
    catalog::{create, product_body},
    common::*,
    orders::{add_to_cart, available, checkout, checkout_body, scalar, unique_sku},
};

const SECRET_KEY: &str = "sk_test_emporium";

fn localstripe_url() -> String {
    std::env::var("EMPORIUM_TEST_STRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".to_owned())
}

/// The stand-in, when it answers.
async fn localstripe() -> Option<TestClient> {
    let url = localstripe_url();
    let client = TestClient::new(url.clone());
    let probe =
        tokio::time::timeout(Duration::from_secs(2), client.get("/v1/customers").bearer(SECRET_KEY).try_send()).await;
    if matches!(probe, Ok(Ok(ref r)) if r.status == 200) {
        Some(client)
    } else {
        testkit::skip_or_fail(&format!("localstripe at {url} is unreachable (`.ci/run` starts it)"));
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_charges_declines_refunds_and_webhooks() {
    let Some(stripe) = localstripe().await else { return };
    let webhook_secret = format!("whsec_{}", uuid::Uuid::new_v4().simple());
    let shop = TestShop::start_with(TestDatabase::sqlite(), |s| {
        s.orders.payments.provider = "stripe".to_owned();
        s.orders.payments.stripe.api_base = localstripe_url();
        s.orders.payments.stripe.secret_key = Some(SECRET_KEY.to_owned().into());
        s.orders.payments.stripe.webhook_secret = Some(webhook_secret.clone().into());
    })
    .await;
    // localstripe delivers every event to every registered endpoint, signed with its secret.
    let endpoint = format!("{}/api/v1/payments/webhooks/stripe", shop.orders.base());
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("url", &endpoint)
        .append_pair("secret", &webhook_secret)
        .finish();
    let registered = stripe
        .post(&format!("/_config/webhooks/{}", uuid::Uuid::new_v4().simple()))
        .raw("application/x-www-form-urlencoded", form)
        .send()
        .await;
    assert_eq!(registered.status, 200);

    let admin = shop.admin_token().await;
    let sku = unique_sku("STRIPE");
    create(&shop, &admin, &product_body("Stripe Teapot", &sku, 3_450, 10)).await;
    let user = token(&shop.register(&unique_email("stripe")).await);

    // Charged: a PaymentIntent, confirmed in the same call.
    add_to_cart(&shop, &user, &sku, 2).await;
    let paid = checkout(&shop, &user, "stripe-1", &checkout_body("me", "pm_card_visa")).await;
    assert_eq!(paid.status, 201, "{}", String::from_utf8_lossy(&paid.body));
    let order = paid.json();
    assert_eq!((order["status"].as_str(), order["payment"]["provider"].as_str()), (Some("paid"), Some("stripe")));
    let intent = order["payment"]["reference"].as_str().unwrap().to_owned();
    assert!(intent.starts_with("pi_"), "{intent}");
    let remote = stripe.get(&format!("/v1/payment_intents/{intent}")).bearer(SECRET_KEY).send().await.json();
    assert_eq!((remote["status"].as_str(), remote["amount"].as_i64()), (Some("succeeded"), Some(6_900)));
    assert_eq!(remote["metadata"]["order_id"], order["id"]);

    // Its webhook arrives signed and is accepted (localstripe sends it about a second later).
    let db = shop.orders_db().await;
    let delivered = testkit::eventually(Duration::from_secs(10), || async {
        scalar(&db, "SELECT COUNT(*) FROM webhook_events WHERE provider = 'stripe'").await > 0
    })
    .await;
    assert!(delivered, "localstripe's payment_intent.succeeded reached the webhook endpoint");

    // Declined: localstripe's card that fails when charged.
    add_to_cart(&shop, &user, &sku, 1).await;
    let declined = checkout(&shop, &user, "stripe-2", &checkout_body("me", "pm_card_chargeCustomerFail")).await;
    assert_eq!(declined.status, 402, "{}", String::from_utf8_lossy(&declined.body));
    assert_eq!(declined.json()["payment"]["status"], "failed");
    assert_eq!(available(&shop, &sku).await, 8);
    // Not a payment method id at all: refused before anything happens.
    checkout(&shop, &user, "stripe-3", &checkout_body("me", "card_4242")).await.problem(422);

    // Cancelled: refunded through Stripe's refunds API, the stock back.
    let path = format!("/api/v1/orders/{}/cancel", order["id"].as_str().unwrap());
    let cancelled = shop.gateway.post(&path).bearer(&user).send().await;
    assert_eq!(cancelled.status, 200, "{}", String::from_utf8_lossy(&cancelled.body));
    assert_eq!(cancelled.json()["payment"]["status"], "refunded");
    let remote = stripe.get(&format!("/v1/payment_intents/{intent}")).bearer(SECRET_KEY).send().await.json();
    assert_eq!(remote["charges"]["data"][0]["amount_refunded"], 6_900);
    assert_eq!(available(&shop, &sku).await, 10);
    db.close().await;
    shop.stop().await;
}
