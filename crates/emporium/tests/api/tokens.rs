//! Access tokens: forged, unsigned, expired and foreign tokens are refused both at the gateway
//! and by the service itself; key rotation keeps issued tokens valid.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::{
    auth::{AccessClaims, ed25519_pkcs8},
    with_db,
};
use rand::RngCore;
use serde_json::json;
use testkit::{TestDatabase, on_both_backends};

use crate::common::*;

on_both_backends!(forged_tokens_are_refused, rotation_keeps_issued_tokens_valid);

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

    // The shop's real signing key, read from its database: only to mint an expired token.
    let db = shop.db().await;
    let (kid, der): (String, Vec<u8>) =
        with_db!(&db, |pool| sqlx::query_as("SELECT kid, private_key FROM signing_keys").fetch_one(pool).await)
            .unwrap();
    db.close().await;
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
