//! The notifications service end to end, on both SQL backends, against a real SMTP server on
//! loopback (Python's aiosmtpd, with authentication and STARTTLS): the emails events cause,
//! their links working through the gateway, exactly one email per event, an SMTP server that is
//! down delaying mail without losing it, permanent refusals visible to administrators, and the
//! embedded mailbox.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{
    TestDatabase, on_both_backends,
    smtp::{SmtpOptions, SmtpServer, Tls},
};

use crate::{
    catalog::{create, product_body},
    common::*,
    orders::{add_to_cart, checkout, checkout_body, unique_sku},
};

on_both_backends!(
    verification_and_reset_emails_work_through_the_gateway,
    an_order_writes_to_its_customer_at_each_step,
    a_mail_server_that_is_down_delays_mail_and_loses_none,
    refused_mail_is_visible_and_can_be_sent_again,
);

const SMTP_USER: &str = "shop";
const SMTP_PASSWORD: &str = "smtp-secret-1";

/// A shop whose notifications go to `server`.
async fn shop_with(db: TestDatabase, server: &SmtpServer) -> TestShop {
    let (port, ca_file, tls) = (server.port, server.ca_file.clone(), server.tls());
    TestShop::start_with(db, move |settings| {
        let n = &mut settings.notifications;
        n.smtp.url = Some(match tls {
            Tls::Implicit => format!("smtps://localhost:{port}"),
            Tls::StartTls => format!("smtp://localhost:{port}"),
            Tls::None => format!("smtp://localhost:{port}?tls=none"),
        });
        n.smtp.username = Some(SMTP_USER.to_owned());
        n.smtp.password = Some(SMTP_PASSWORD.to_owned().into());
        n.smtp.ca_file = ca_file;
        n.smtp.timeout = Duration::from_secs(3);
        n.shop_name = "Test Shop".to_owned();
        n.public_url = "https://shop.example".to_owned();
        n.from = "Test Shop <orders@shop.example>".to_owned();
        n.send_interval = Duration::from_millis(100);
        n.retry_base = Duration::from_millis(200);
        n.retry_max = Duration::from_millis(500);
        n.max_attempts = 1000;
    })
    .await
}

async fn smtp(tls: Tls) -> Option<SmtpServer> {
    SmtpServer::start(SmtpOptions {
        auth: Some((SMTP_USER.to_owned(), SMTP_PASSWORD.to_owned())),
        tls,
        reject_domain: Some("refused.example".to_owned()),
    })
    .await
}

/// The messages to `to` so far.
async fn mail_now(server: &SmtpServer, to: &str) -> Vec<Value> {
    let to = json!(to);
    server.messages().await.into_iter().filter(|m| m["rcpt_tos"].as_array().is_some_and(|r| r.contains(&to))).collect()
}

/// The messages to `to`, once there are `count` (or what came within 10 s).
async fn mail_to(server: &SmtpServer, to: &str, count: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = mail_now(server, to).await;
        if found.len() >= count || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A message's HTML part with the entities the template engine writes for `/` and `&` read back,
/// as a mail client shows it.
fn html(message: &Value) -> String {
    message["html"].as_str().unwrap().replace("&#x2f;", "/").replace("&amp;", "&")
}

/// The token of the first link to `path` in a message's text part.
fn token_in(message: &Value, path: &str) -> String {
    let text = message["text"].as_str().unwrap();
    let start = text.find(&format!("https://shop.example{path}?token=")).unwrap_or_else(|| panic!("no link in {text}"));
    let rest = &text[start..];
    let link = rest.split_whitespace().next().unwrap();
    link.split("token=").nth(1).unwrap().trim_end_matches(['.', ')', '>']).to_owned()
}

async fn verification_and_reset_emails_work_through_the_gateway(db: TestDatabase) {
    let Some(server) = smtp(Tls::StartTls).await else { return };
    let shop = shop_with(db, &server).await;
    let email = unique_email("mailed");
    shop.register(&email).await;

    let mail = mail_to(&server, &email, 1).await;
    assert_eq!(mail.len(), 1, "one verification email: {mail:?}");
    let verify = &mail[0];
    assert_eq!(verify["tls"], true, "sent over STARTTLS");
    assert_eq!(verify["auth_user"], SMTP_USER);
    assert_eq!(verify["mail_from"], "orders@shop.example");
    assert!(verify["subject"].as_str().unwrap().contains("Test Shop"), "{verify}");
    assert!(verify["to"].as_str().unwrap().contains(&email));
    let html = html(verify);
    assert!(html.contains("Test User") && html.contains("https://shop.example/account/verify-email?token="));
    let token = token_in(verify, "/account/verify-email");
    assert!(html.contains(&token), "both parts carry the link");
    let verified = shop.gateway.post("/api/v1/auth/email/verify").json(&json!({"token": token})).send().await;
    assert_eq!(verified.status, 204, "{}", String::from_utf8_lossy(&verified.body));
    let me = shop.gateway.get("/api/v1/users/me").bearer(&token_of(&shop, &email).await).send().await.json();
    assert_eq!(me["email_verified"], true);

    // Forgot → the email → reset through the gateway; an unknown address gets no mail.
    let nobody = unique_email("nobody");
    for address in [&email, &nobody] {
        let asked = shop.gateway.post("/api/v1/auth/password/forgot").json(&json!({"email": address})).send().await;
        assert_eq!(asked.status, 202);
    }
    let mail = mail_to(&server, &email, 2).await;
    assert_eq!(mail.len(), 2);
    let reset = &mail[1];
    assert!(reset["subject"].as_str().unwrap().to_lowercase().contains("password"), "{reset}");
    let token = token_in(reset, "/account/reset-password");
    let done = shop
        .gateway
        .post("/api/v1/auth/password/reset")
        .json(&json!({"token": token, "password": "a fresh passphrase"}))
        .send()
        .await;
    assert_eq!(done.status, 204);
    assert_eq!(shop.login(&email, "a fresh passphrase").await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(mail_now(&server, &nobody).await.is_empty(), "no mail for an address no account has");
    // No secret in any event: the tokens were only ever in the emails.
    let db = shop.db().await;
    let envelopes: Vec<String> =
        platform::with_db!(&db, |pool| sqlx::query_scalar("SELECT CAST(envelope AS TEXT) FROM event_outbox")
            .fetch_all(pool)
            .await)
        .unwrap();
    db.close().await;
    assert!(envelopes.iter().all(|e| !e.contains(&token)));
}

async fn token_of(shop: &TestShop, email: &str) -> String {
    token(&shop.login(email, PASSWORD).await.json())
}

async fn an_order_writes_to_its_customer_at_each_step(db: TestDatabase) {
    let Some(server) = smtp(Tls::Implicit).await else { return };
    let shop = shop_with(db, &server).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("MAIL");
    create(&shop, &admin, &product_body("Mailed Trail Shoe", &sku, 12_550, 10)).await;
    let email = unique_email("buyer");
    let user = token(&shop.register(&email).await);
    add_to_cart(&shop, &user, &sku, 2).await;
    let placed = checkout(&shop, &user, &uuid::Uuid::new_v4().to_string(), &checkout_body("me", "pm_card_visa")).await;
    assert_eq!(placed.status, 201, "{}", String::from_utf8_lossy(&placed.body));
    let order = placed.json();
    let (id, number) = (order["id"].as_str().unwrap().to_owned(), order["number"].as_str().unwrap().to_owned());
    let path = format!("/api/v1/orders/{id}");
    let shipped = shop
        .gateway
        .post(&format!("{path}/shipments"))
        .bearer(&admin)
        .json(&json!({"carrier": "DHL", "tracking_number": "JD0146"}))
        .send()
        .await;
    assert_eq!(shipped.status, 200);
    assert_eq!(shop.gateway.post(&format!("{path}/delivery")).bearer(&admin).send().await.status, 200);

    // verification, placed, paid, shipped, delivered
    let mail = mail_to(&server, &email, 5).await;
    let subjects: Vec<&str> = mail.iter().map(|m| m["subject"].as_str().unwrap()).collect();
    assert_eq!(mail.len(), 5, "{subjects:?}");
    let about = |word: &str| {
        mail.iter()
            .find(|m| m["subject"].as_str().unwrap().to_lowercase().contains(word))
            .unwrap_or_else(|| panic!("no email about {word}: {subjects:?}"))
    };
    let received = about("we received");
    for part in ["text", "html"] {
        let body = if part == "html" { html(received) } else { received["text"].as_str().unwrap().to_owned() };
        assert!(body.contains(&number), "{part}: the order's number");
        assert!(body.contains("Mailed Trail Shoe"), "{part}: the lines: {body}");
        assert!(body.contains("€125.50") && body.contains("€251.00"), "{part}: money as people write it: {body}");
        assert!(body.contains(&format!("https://shop.example/orders/{id}")), "{part}");
    }
    assert!(about("payment received")["text"].as_str().unwrap().contains(&number));
    let shipped = about("shipped");
    assert!(shipped["text"].as_str().unwrap().contains("JD0146") && html(shipped).contains("DHL"));
    assert_eq!(about("delivered")["tls"], true);
    // Every message says who sent it, to whom, and names itself.
    for message in &mail {
        assert!(message["message_id"].as_str().unwrap().ends_with("@emporium>"), "{message}");
    }
    let metrics = String::from_utf8(shop.notifications.get("/metrics").send().await.body.to_vec()).unwrap();
    for series in [
        r#"notifications_sent_total{template="order_shipped",outcome="sent"}"#,
        r#"notifications_sent_total{template="order_cancelled",outcome="failed"} 0"#,
        "notifications_queue_depth",
        "notifications_send_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
}

async fn a_mail_server_that_is_down_delays_mail_and_loses_none(db: TestDatabase) {
    let Some(mut server) = smtp(Tls::StartTls).await else { return };
    let shop = shop_with(db, &server).await;
    let admin = shop.admin_token().await;
    server.stop().await;
    let email = unique_email("patient");
    shop.register(&email).await;

    // Attempts fail and are recorded, the message stays queued.
    let retried = testkit::eventually(Duration::from_secs(10), || async {
        let page = shop.gateway.get("/api/v1/admin/notifications?status=queued").bearer(&admin).send().await.json();
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["attempts"].as_i64() >= Some(2) && d["last_error"].is_string())
    })
    .await;
    assert!(retried, "the message is retried while the server is down");

    server.restart().await;
    let mail = mail_to(&server, &email, 1).await;
    let all = shop.gateway.get("/api/v1/admin/notifications").bearer(&admin).send().await.json();
    assert_eq!(mail.len(), 1, "the mail arrives once the server is back: {all}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(mail_now(&server, &email).await.len(), 1, "and only once");
    let sent = shop.gateway.get("/api/v1/admin/notifications?status=sent").bearer(&admin).send().await.json();
    let delivery = sent["items"].as_array().unwrap().iter().find(|d| d["to"] == email.as_str()).cloned().unwrap();
    assert_eq!(delivery["template"], "verify_email");
    assert!(delivery["attempts"].as_i64().unwrap() >= 2);
    assert!(delivery["sent_at"].is_string());

    // The same event delivered twice makes one email; a registration refused makes none.
    let before = server.messages().await.len();
    let taken = shop.register_raw(&email, PASSWORD).await;
    assert_eq!(taken.status, 409);
    let bus = shop.settings.events().await.unwrap().bus;
    let payload = events::payloads::OrderDelivered {
        order_id: uuid::Uuid::now_v7(),
        number: "EM-DUPLICATE".to_owned(),
        user_id: uuid::Uuid::parse_str(delivery["user_id"].as_str().unwrap()).unwrap(),
        at: chrono::Utc::now(),
    };
    let event = events::CloudEvent::new("orders", &payload, None).unwrap();
    bus.publish(std::slice::from_ref(&event)).await.unwrap();
    bus.publish(std::slice::from_ref(&event)).await.unwrap();
    let mail = mail_to(&server, &email, 2).await;
    assert_eq!(mail.len(), 2, "the duplicated event's email arrived");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(server.messages().await.len(), before + 1, "one email for the event delivered twice, none for the 409");
}

async fn refused_mail_is_visible_and_can_be_sent_again(db: TestDatabase) {
    let Some(server) = smtp(Tls::StartTls).await else { return };
    let shop = shop_with(db, &server).await;
    let admin = shop.admin_token().await;
    let email = format!("someone-{}@refused.example", uuid::Uuid::new_v4().simple());
    shop.register(&email).await;

    let failed = testkit::eventually(Duration::from_secs(10), || async {
        let page = shop.gateway.get("/api/v1/admin/notifications?status=failed").bearer(&admin).send().await.json();
        page["items"].as_array().unwrap().iter().any(|d| d["to"] == email.as_str())
    })
    .await;
    assert!(failed, "a 5xx refusal is recorded as failed, not retried");
    let page = shop.gateway.get("/api/v1/admin/notifications?status=failed").bearer(&admin).send().await.json();
    let delivery = page["items"].as_array().unwrap().iter().find(|d| d["to"] == email.as_str()).cloned().unwrap();
    assert_eq!(delivery["attempts"], 1);
    assert!(delivery["last_error"].as_str().unwrap().contains("550"), "{delivery}");

    // Administrators only; an unknown status or id is refused.
    let customer = token(&shop.register(&unique_email("curious")).await);
    shop.gateway.get("/api/v1/admin/notifications").bearer(&customer).send().await.problem(403);
    shop.gateway.get("/api/v1/admin/notifications").send().await.problem(401);
    shop.gateway.get("/api/v1/admin/notifications?status=lost").bearer(&admin).send().await.problem(400);
    let unknown = format!("/api/v1/admin/notifications/{}/resend", uuid::Uuid::now_v7());
    shop.gateway.post(&unknown).bearer(&admin).send().await.problem(404);

    let id = delivery["id"].as_str().unwrap();
    let resend = shop.gateway.post(&format!("/api/v1/admin/notifications/{id}/resend")).bearer(&admin).send().await;
    assert_eq!(resend.status, 202);
    assert_eq!(resend.json()["status"], "queued");
    let again = testkit::eventually(Duration::from_secs(10), || async {
        let page = shop.gateway.get("/api/v1/admin/notifications?status=failed").bearer(&admin).send().await.json();
        page["items"].as_array().unwrap().iter().any(|d| d["id"] == id && d["attempts"] == 1)
    })
    .await;
    assert!(again, "the resend was attempted (and refused again)");
    assert!(server.messages().await.iter().all(|m| m["rcpt_tos"] != json!([email])));
}

/// On RabbitMQ (with PostgreSQL): the notifications queue gets its events like any consumer, a
/// redelivered event makes one email, and an order's email arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_flow_over_rabbitmq() {
    let Some(broker) = testkit::broker::TestBroker::shared("notifications").await else { return };
    let Some(db) = TestDatabase::create(testkit::Backend::Postgres).await else { return };
    let Some(server) = smtp(Tls::StartTls).await else { return };
    let (amqp_url, namespace) = (broker.url.clone(), broker.namespace.clone());
    let (port, ca_file) = (server.port, server.ca_file.clone());
    let shop = TestShop::start_with(db, move |settings| {
        settings.events.url = amqp_url;
        settings.events.namespace = namespace;
        let n = &mut settings.notifications;
        n.smtp.url = Some(format!("smtp://localhost:{port}"));
        n.smtp.username = Some(SMTP_USER.to_owned());
        n.smtp.password = Some(SMTP_PASSWORD.to_owned().into());
        n.smtp.ca_file = ca_file;
        n.public_url = "https://shop.example".to_owned();
        n.send_interval = Duration::from_millis(100);
    })
    .await;
    let email = unique_email("rabbit");
    let registered = shop.register(&email).await;
    let mail = mail_to(&server, &email, 1).await;
    assert_eq!(mail.len(), 1, "the verification email came through RabbitMQ");
    let token = token_in(&mail[0], "/account/verify-email");
    let verified = shop.gateway.post("/api/v1/auth/email/verify").json(&json!({"token": token})).send().await;
    assert_eq!(verified.status, 204);

    let user_id = uuid::Uuid::parse_str(registered["user"]["id"].as_str().unwrap()).unwrap();
    let payload = events::payloads::OrderShipped {
        order_id: uuid::Uuid::now_v7(),
        number: "EM-RABBIT".to_owned(),
        user_id,
        carrier: "UPS".to_owned(),
        tracking_number: "1Z999".to_owned(),
        at: chrono::Utc::now(),
    };
    let event = events::CloudEvent::new("orders", &payload, None).unwrap();
    let bus = shop.settings.events().await.unwrap().bus;
    bus.publish(std::slice::from_ref(&event)).await.unwrap();
    bus.publish(std::slice::from_ref(&event)).await.unwrap();
    let mail = mail_to(&server, &email, 2).await;
    assert_eq!(mail.len(), 2);
    assert!(mail[1]["text"].as_str().unwrap().contains("1Z999"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(mail_now(&server, &email).await.len(), 2, "one email for the event delivered twice");
}

/// With no SMTP server configured, the embedded shop writes each email to its mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_shop_writes_emails_to_its_mailbox() {
    let shop = TestShop::start(TestDatabase::sqlite()).await;
    let email = unique_email("newcomer");
    shop.register(&email).await;
    let mailbox = shop.settings.data_dir.join("mailbox");
    let found = testkit::eventually(Duration::from_secs(10), || async {
        std::fs::read_dir(&mailbox).map(|d| d.count() == 1).unwrap_or(false)
    })
    .await;
    assert!(found, "one .eml file in {}", mailbox.display());
    let file = std::fs::read_dir(&mailbox).unwrap().next().unwrap().unwrap().path();
    assert_eq!(file.extension().and_then(|e| e.to_str()), Some("eml"));
    let raw = std::fs::read_to_string(&file).unwrap();
    assert!(raw.contains(&email) && raw.contains("multipart/alternative"), "{raw}");
}
