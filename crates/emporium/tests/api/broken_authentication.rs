//! OWASP API2:2023, broken authentication. Forged, unsigned, expired and foreign tokens (token
//! confusion) are refused both at the gateway and by the service itself; key rotation keeps
//! issued tokens valid; a session that ends (logout, a password change, a stolen refresh token)
//! stops its access tokens within seconds, everywhere; guessing passwords is throttled.

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::auth::{AccessClaims, ed25519_pkcs8};
use rand::RngCore;
use serde_json::json;
use testkit::{TestDatabase, on_both_backends};

use crate::common::*;

on_both_backends!(
    forged_tokens_are_refused,
    rotation_keeps_issued_tokens_valid,
    ended_sessions_stop_their_access_tokens_at_once,
    repeated_login_failures_are_throttled,
);

fn claims(user_id: uuid::Uuid, exp_offset: i64) -> AccessClaims {
    AccessClaims::new(user_id, vec!["customer".into(), "admin".into()], "emporium", "emporium", exp_offset, None)
}

fn sign(kid: &str, der: &[u8], claims: &AccessClaims) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der)).unwrap()
}

async fn forged_tokens_are_refused(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let user = shop.register(&unique_email("forge")).await;
    let user_id: uuid::Uuid = user["user"]["id"].as_str().unwrap().parse().unwrap();

    // The shop's real signing key, read from its database and opened with its master key: only
    // to mint an expired token.
    let (kid, der) = crate::secrets_at_rest::signing_key(&shop).await;
    let valid = sign(&kid, &der, &claims(user_id, 600));

    let mut seed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut seed);
    let foreign = ed25519_pkcs8(&seed);
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#)),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(user_id, 600)).unwrap())
    );
    let hmac = jsonwebtoken::encode(
        &Header { kid: Some(kid.clone()), ..Header::new(Algorithm::HS256) },
        &claims(user_id, 600),
        &EncodingKey::from_secret(kid.as_bytes()),
    )
    .unwrap();
    let mut wrong_audience = claims(user_id, 600);
    wrong_audience.aud = "another-shop".into();
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let tampered_claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(uuid::Uuid::now_v7(), 600)).unwrap());

    let refused = [
        ("expired", sign(&kid, &der, &claims(user_id, -120))),
        ("signed by another key under the real kid", sign(&kid, &foreign, &claims(user_id, 600))),
        ("signed by another key under its own kid", sign("made-up-kid", &foreign, &claims(user_id, 600))),
        ("alg none", unsigned),
        ("HS256", hmac),
        ("wrong audience", sign(&kid, &der, &wrong_audience)),
        ("claims swapped under a valid signature", format!("{head}.{tampered_claims}.{signature}")),
        ("not a JWT", "hello".to_owned()),
    ];
    for (what, token) in &refused {
        for (side, client) in [("gateway", &shop.gateway), ("identity", &shop.identity)] {
            let response = client.get("/api/v1/users/me").bearer(token).send().await;
            assert_eq!(response.status, 401, "{what} via {side}");
            response.problem(401);
            assert!(response.header("www-authenticate").unwrap().starts_with("Bearer"), "{what} via {side}");
        }
    }
    // The same key and claims, properly signed, pass: the refusals above are about the forgery.
    for client in [&shop.gateway, &shop.identity] {
        assert_eq!(client.get("/api/v1/users/me").bearer(&valid).send().await.status, 200);
    }
    let expired = shop.gateway.get("/api/v1/users/me").bearer(&refused[0].1).send().await;
    assert_eq!(expired.json()["detail"], "the access token has expired");
    shop.stop().await;
}

async fn rotation_keeps_issued_tokens_valid(db: TestDatabase) {
    let shop = TestShop::start_with(db, |s| s.identity.key_reload_interval = Duration::from_millis(300)).await;
    let email = unique_email("rotation");
    let before = token(&shop.register(&email).await);
    let old_kid = jsonwebtoken::decode_header(&before).unwrap().kid.unwrap();

    // An operator rotates the key from another process (`emporium admin rotate-signing-key`).
    let accounts = identity::open(&shop.settings.identity, &shop.settings.shared()).await.unwrap();
    let new_kid = accounts.rotate_signing_key().await.unwrap();
    assert_ne!(new_kid, old_kid);

    // The running service picks it up within its reload interval and publishes both keys.
    let mut after = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = token(&shop.login(&email, PASSWORD).await.json());
        if jsonwebtoken::decode_header(&after).unwrap().kid.as_deref() == Some(new_kid.as_str()) {
            break;
        }
    }
    assert_eq!(jsonwebtoken::decode_header(&after).unwrap().kid.unwrap(), new_kid, "new tokens use the new key");
    let jwks = shop.gateway.get("/.well-known/jwks.json").send().await.json();
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()), "{kids:?}");

    // The gateway learns the new key on first sight; the old token keeps working.
    for token in [&after, &before] {
        assert_eq!(shop.gateway.get("/api/v1/users/me").bearer(token).send().await.status, 200);
        assert_eq!(shop.identity.get("/api/v1/users/me").bearer(token).send().await.status, 200);
    }
    let refresh = shop.gateway.post("/api/v1/auth/refresh").json(&json!({"refresh_token": "ert_x"})).send().await;
    refresh.problem(401);
    shop.stop().await;
}

/// Every service that holds the caller's data refuses the token: identity, cart, orders.
async fn statuses(shop: &TestShop, token: &str) -> [u16; 3] {
    let me = shop.gateway.get("/api/v1/users/me").bearer(token).send().await.status.as_u16();
    let cart = shop.gateway.post("/api/v1/carts").bearer(token).send().await.status.as_u16();
    let orders = shop.gateway.get("/api/v1/orders").bearer(token).send().await.status.as_u16();
    [me, if cart == 201 { 200 } else { cart }, orders]
}

/// How long until every service refuses `token` (a panic past five seconds).
async fn refused_within(shop: &TestShop, token: &str, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let answered = statuses(shop, token).await;
        if answered == [401; 3] {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{what}: still {answered:?} after 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ended_sessions_stop_their_access_tokens_at_once(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let email = unique_email("revoked");
    shop.register(&email).await;
    let sessions: Vec<serde_json::Value> = {
        let mut all = Vec::new();
        for _ in 0..4 {
            all.push(shop.login(&email, PASSWORD).await.json());
        }
        all
    };
    for session in &sessions {
        assert_eq!(statuses(&shop, &token(session)).await, [200; 3]);
    }

    // Logout.
    let out = shop.gateway.post("/api/v1/auth/logout").json(&json!({"refresh_token": refresh_token(&sessions[0])}));
    assert_eq!(out.send().await.status, 204);
    let logout = refused_within(&shop, &token(&sessions[0]), "logout").await;
    assert_eq!(statuses(&shop, &token(&sessions[1])).await, [200; 3], "another session lives on");

    // A refresh token presented twice: the session it belongs to ends, the new pair's too.
    let refresh = |t: String| shop.gateway.post("/api/v1/auth/refresh").json(&json!({"refresh_token": t})).send();
    let next = refresh(refresh_token(&sessions[1])).await.json();
    assert_eq!(statuses(&shop, &token(&next)).await, [200; 3]);
    refresh(refresh_token(&sessions[1])).await.problem(401);
    let reuse = refused_within(&shop, &token(&next), "refresh token reuse").await;
    refused_within(&shop, &token(&sessions[1]), "refresh token reuse, the older token").await;

    // A password change ends every other session; the one that made it goes on.
    let changed = shop
        .gateway
        .patch("/api/v1/users/me")
        .bearer(&token(&sessions[2]))
        .json(&json!({"password": "new password 123", "current_password": PASSWORD}))
        .send()
        .await;
    assert_eq!(changed.status, 200);
    let password = refused_within(&shop, &token(&sessions[3]), "password change").await;
    assert_eq!(statuses(&shop, &token(&sessions[2])).await, [200; 3], "the session that changed it");
    let answer = shop.gateway.get("/api/v1/users/me").bearer(&token(&sessions[3])).send().await;
    assert_eq!(answer.problem(401)["detail"], "the session has ended; sign in again");
    println!("access tokens refused after: logout {logout:?}, refresh reuse {reuse:?}, password change {password:?}");
    shop.stop().await;
}

async fn repeated_login_failures_are_throttled(db: TestDatabase) {
    let shop = TestShop::start_with(db, |s| {
        s.identity.login_throttle.max_failures_per_account = 3;
        s.identity.login_throttle.max_failures_per_address = 7;
        s.identity.login_throttle.window = Duration::from_secs(60);
    })
    .await;
    let (a, b, c) = (unique_email("a"), unique_email("b"), unique_email("c"));
    for email in [&a, &b, &c] {
        shop.register(email).await;
    }
    for _ in 0..3 {
        shop.login(&a, "wrong password!").await.problem(401);
    }
    // Even the right password is refused now: the account is throttled.
    let throttled = shop.login(&a, PASSWORD).await;
    throttled.problem(429);
    let retry_after: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Another account from the same address still gets in...
    assert_eq!(shop.login(&b, PASSWORD).await.status, 200);
    // ...until the address itself has failed too often.
    for _ in 0..3 {
        shop.login(&b, "wrong password!").await.problem(401);
    }
    shop.login(&c, "wrong password!").await.problem(401);
    shop.login(&c, PASSWORD).await.problem(429);
    shop.stop().await;
}
