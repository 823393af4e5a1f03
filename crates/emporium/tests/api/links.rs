//! Email verification and password reset through the gateway, on both SQL backends: the
//! requests identity records and announces, the links it hands the mailer over gRPC, and what
//! the links do when the user brings them back.

use platform::with_db;
use rpc::identity::v1::{GetOneTimeLinkRequest, identity_client::IdentityClient};
use serde_json::{Value, json};
use testkit::{TestDatabase, on_both_backends};
use tonic::Code;

use crate::common::*;

on_both_backends!(
    registration_asks_to_verify_and_the_link_verifies_once,
    a_resent_link_replaces_the_old_one_and_resending_is_throttled,
    forgot_password_answers_alike_and_the_reset_link_works_once,
    reset_links_expire_and_are_replaced,
);

/// The request ids of `event_type` events about `user_id`, oldest first.
async fn requests(shop: &TestShop, event_type: &str, user_id: &str) -> Vec<String> {
    let db = shop.db().await;
    let envelopes: Vec<String> = with_db!(&db, |pool| sqlx::query_scalar(
        "SELECT CAST(envelope AS TEXT) FROM event_outbox WHERE event_type = $1 AND subject = $2 ORDER BY seq"
    )
    .bind(event_type)
    .bind(user_id)
    .fetch_all(pool)
    .await)
    .unwrap();
    db.close().await;
    envelopes
        .iter()
        .map(|e| {
            let envelope: Value = serde_json::from_str(e).unwrap();
            assert!(!e.contains("token"), "no token in the event: {e}");
            envelope["data"]["request_id"].as_str().expect("the event names its request").to_owned()
        })
        .collect()
}

async fn link(shop: &TestShop, request_id: &str) -> Result<rpc::identity::v1::OneTimeLink, tonic::Status> {
    let mut client = IdentityClient::connect(shop.identity_grpc.clone()).await.expect("identity's gRPC answers");
    client.get_one_time_link(GetOneTimeLinkRequest { request_id: request_id.to_owned() }).await.map(|r| r.into_inner())
}

fn claims(access_token: &str) -> Value {
    use base64::Engine;
    let payload = access_token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn registration_asks_to_verify_and_the_link_verifies_once(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let email = unique_email("Verify.Me");
    let registered = shop.register(&email).await;
    let user_id = registered["user"]["id"].as_str().unwrap();
    assert_eq!(registered["user"]["email_verified"], false);
    assert_eq!(claims(&token(&registered))["email_verified"], false);

    let ids = requests(&shop, "user.email_verification_requested", user_id).await;
    assert_eq!(ids.len(), 1, "one verification request per registration");
    let link = link(&shop, &ids[0]).await.expect("the mailer gets the link");
    assert_eq!(link.purpose, "verify_email");
    let contact = link.contact.unwrap();
    assert_eq!((contact.email.as_str(), contact.user_id.as_str()), (email.as_str(), user_id));
    // Only a digest of the token is stored.
    let stored = shop.count("SELECT COUNT(*) FROM link_requests").await;
    assert!(stored >= 1);

    let bad = shop.gateway.post("/api/v1/auth/email/verify").json(&json!({"token": "not-a-token"})).send().await;
    assert_eq!(bad.status, 400, "{}", String::from_utf8_lossy(&bad.body));
    let missing = shop.gateway.post("/api/v1/auth/email/verify").json(&json!({})).send().await;
    assert_eq!(missing.status, 422);
    let verified = shop.gateway.post("/api/v1/auth/email/verify").json(&json!({"token": link.token})).send().await;
    assert_eq!(verified.status, 204, "{}", String::from_utf8_lossy(&verified.body));
    let again = shop.gateway.post("/api/v1/auth/email/verify").json(&json!({"token": link.token})).send().await;
    assert_eq!(again.status, 401, "a link works once");
    assert_eq!(again.json()["status"], 401);

    let signed_in = shop.login(&email, PASSWORD).await.json();
    assert_eq!(claims(&token(&signed_in))["email_verified"], true, "new tokens carry the claim");
    let me = shop.gateway.get("/api/v1/users/me").bearer(&token(&signed_in)).send().await.json();
    assert_eq!(me["email_verified"], true);
    assert_eq!(link_status(&shop, &ids[0]).await, Code::FailedPrecondition, "a spent link is not sent again");

    // A verified user asking again gets 202 and nothing to click.
    let resend = shop.gateway.post("/api/v1/auth/email/resend").bearer(&token(&signed_in)).send().await;
    assert_eq!(resend.status, 202);
    assert_eq!(requests(&shop, "user.email_verification_requested", user_id).await.len(), 1);
    // The bootstrap administrator's address comes from configuration: no request.
    let admin = shop.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.json();
    let admin_id = admin["user"]["id"].as_str().unwrap();
    assert!(requests(&shop, "user.email_verification_requested", admin_id).await.is_empty());
}

async fn link_status(shop: &TestShop, request_id: &str) -> Code {
    link(shop, request_id).await.map_or_else(|s| s.code(), |_| Code::Ok)
}

async fn a_resent_link_replaces_the_old_one_and_resending_is_throttled(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let email = unique_email("resend");
    let registered = shop.register(&email).await;
    let user_id = registered["user"]["id"].as_str().unwrap();
    let access = token(&registered);

    let unsigned = shop.gateway.post("/api/v1/auth/email/resend").send().await;
    assert_eq!(unsigned.status, 401);
    let resend = shop.gateway.post("/api/v1/auth/email/resend").bearer(&access).send().await;
    assert_eq!(resend.status, 202, "{}", String::from_utf8_lossy(&resend.body));
    let ids = requests(&shop, "user.email_verification_requested", user_id).await;
    assert_eq!(ids.len(), 2);
    assert_eq!(link_status(&shop, &ids[0]).await, Code::FailedPrecondition, "the older link was replaced");
    let old_token = {
        // The replaced link's token, as the first email carried it, no longer verifies.
        let db = shop.db().await;
        let first = uuid::Uuid::parse_str(&ids[0]).unwrap();
        with_db!(&db, |pool| sqlx::query("UPDATE link_requests SET superseded_at = NULL WHERE id = $1")
            .bind(first)
            .execute(pool)
            .await
            .map(|_| ()))
        .unwrap();
        let token = link(&shop, &ids[0]).await.unwrap().token;
        with_db!(&db, |pool| sqlx::query("UPDATE link_requests SET superseded_at = created_at WHERE id = $1")
            .bind(first)
            .execute(pool)
            .await
            .map(|_| ()))
        .unwrap();
        db.close().await;
        token
    };
    let stale = shop.gateway.post("/api/v1/auth/email/verify").json(&json!({"token": old_token})).send().await;
    assert_eq!(stale.status, 401);
    let newest = link(&shop, &ids[1]).await.unwrap();

    // Three resends per account per window (the registration's own link is not counted).
    assert_eq!(shop.gateway.post("/api/v1/auth/email/resend").bearer(&access).send().await.status, 202);
    assert_eq!(shop.gateway.post("/api/v1/auth/email/resend").bearer(&access).send().await.status, 202);
    let throttled = shop.gateway.post("/api/v1/auth/email/resend").bearer(&access).send().await;
    assert_eq!(throttled.status, 429);
    assert!(throttled.headers.get("retry-after").is_some());
    assert_eq!(requests(&shop, "user.email_verification_requested", user_id).await.len(), 4);
    assert_eq!(link_status(&shop, &ids[1]).await, Code::FailedPrecondition);
    let replaced = shop.gateway.post("/api/v1/auth/email/verify").json(&json!({"token": newest.token})).send().await;
    assert_eq!(replaced.status, 401, "only the newest link works");
}

async fn forgot_password_answers_alike_and_the_reset_link_works_once(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let email = unique_email("forgetful");
    let registered = shop.register(&email).await;
    let user_id = registered["user"]["id"].as_str().unwrap();
    let refresh = refresh_token(&registered);

    let known =
        shop.gateway.post("/api/v1/auth/password/forgot").json(&json!({"email": email.to_uppercase()})).send().await;
    let unknown =
        shop.gateway.post("/api/v1/auth/password/forgot").json(&json!({"email": unique_email("nobody")})).send().await;
    assert_eq!(known.status, 202);
    assert_eq!(unknown.status, 202);
    assert_eq!(known.body, unknown.body, "the answer does not tell whether the account exists");
    let invalid = shop.gateway.post("/api/v1/auth/password/forgot").json(&json!({"email": "nope"})).send().await;
    assert_eq!(invalid.status, 422);
    let events =
        shop.count("SELECT COUNT(*) FROM event_outbox WHERE event_type = 'user.password_reset_requested'").await;
    assert_eq!(events, 1, "only the account's request is announced");

    let ids = requests(&shop, "user.password_reset_requested", user_id).await;
    let link = link(&shop, &ids[0]).await.unwrap();
    assert_eq!(link.purpose, "reset_password");
    let now = chrono::Utc::now().timestamp();
    assert!((now + 29 * 60..=now + 30 * 60 + 5).contains(&link.expires_at), "valid 30 minutes");

    let weak = shop
        .gateway
        .post("/api/v1/auth/password/reset")
        .json(&json!({"token": link.token, "password": "short"}))
        .send()
        .await;
    assert_eq!(weak.status, 422);
    let new_password = "a brand new passphrase";
    let reset = shop
        .gateway
        .post("/api/v1/auth/password/reset")
        .json(&json!({"token": link.token, "password": new_password}))
        .send()
        .await;
    assert_eq!(reset.status, 204, "{}", String::from_utf8_lossy(&reset.body));
    let again = shop
        .gateway
        .post("/api/v1/auth/password/reset")
        .json(&json!({"token": link.token, "password": "yet another passphrase"}))
        .send()
        .await;
    assert_eq!(again.status, 401, "a reset link works once");

    let refreshed = shop.gateway.post("/api/v1/auth/refresh").json(&json!({"refresh_token": refresh})).send().await;
    assert_eq!(refreshed.status, 401, "every session was revoked");
    assert_eq!(shop.login(&email, PASSWORD).await.status, 401);
    let signed_in = shop.login(&email, new_password).await;
    assert_eq!(signed_in.status, 200);
    assert_eq!(signed_in.json()["user"]["email_verified"], true, "the link reached the address");
    let revoked = shop.count("SELECT COUNT(*) FROM event_outbox WHERE event_type = 'user.sessions_revoked'").await;
    assert_eq!(revoked, 1);
    // A verification link of before is no use to anyone now, and a reset link never verifies.
    let verify = shop.gateway.post("/api/v1/auth/email/verify").json(&json!({"token": link.token})).send().await;
    assert_eq!(verify.status, 401);
}

async fn reset_links_expire_and_are_replaced(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let email = unique_email("expiring");
    let registered = shop.register(&email).await;
    let user_id = registered["user"]["id"].as_str().unwrap();
    let forgot = || async {
        let response = shop.gateway.post("/api/v1/auth/password/forgot").json(&json!({"email": email})).send().await;
        assert_eq!(response.status, 202);
    };
    forgot().await;
    forgot().await;
    let ids = requests(&shop, "user.password_reset_requested", user_id).await;
    assert_eq!(ids.len(), 2);
    assert_eq!(link_status(&shop, &ids[0]).await, Code::FailedPrecondition, "replaced by the newer request");
    let newest = link(&shop, &ids[1]).await.unwrap();

    // Thirty minutes pass.
    let db = shop.db().await;
    let id = uuid::Uuid::parse_str(&ids[1]).unwrap();
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    with_db!(&db, |pool| sqlx::query("UPDATE link_requests SET expires_at = $2 WHERE id = $1")
        .bind(id)
        .bind(past)
        .execute(pool)
        .await
        .map(|_| ()))
    .unwrap();
    db.close().await;
    assert_eq!(link_status(&shop, &ids[1]).await, Code::FailedPrecondition);
    let expired = shop
        .gateway
        .post("/api/v1/auth/password/reset")
        .json(&json!({"token": newest.token, "password": "a brand new passphrase"}))
        .send()
        .await;
    assert_eq!(expired.status, 401);
    assert_eq!(shop.login(&email, PASSWORD).await.status, 200, "nothing changed");

    // Per address: three per window, then 429 with Retry-After (for any address alike).
    forgot().await;
    let throttled = shop.gateway.post("/api/v1/auth/password/forgot").json(&json!({"email": email})).send().await;
    assert_eq!(throttled.status, 429);
    assert!(throttled.headers.get("retry-after").is_some());
    assert_eq!(link_status(&shop, "00000000-0000-7000-8000-000000000000").await, Code::NotFound);
}
