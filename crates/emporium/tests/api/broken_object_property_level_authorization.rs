//! OWASP API3:2023, broken object property level authorization. Mass assignment: a client that
//! sends properties it may not set (roles, `email_verified`, ids, timestamps, prices, an order's
//! status or total, someone else's `user_id`) has them ignored, never taken. Excessive exposure:
//! no answer carries a password hash, a secret or a token that is not the caller's own.

use serde_json::{Value, json};
use testkit::{TestDatabase, on_both_backends};

use crate::{
    catalog::{create, product_body},
    common::*,
    orders::{address, checkout, unique_sku},
};

on_both_backends!(properties_a_client_may_not_set_are_never_taken);

/// Every key of `value`, at any depth.
fn keys(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                into.push(key.to_lowercase());
                keys(member, into);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| keys(item, into)),
        _ => {}
    }
}

fn assert_nothing_secret(what: &str, answer: &Value) {
    let mut all = Vec::new();
    keys(answer, &mut all);
    let leaked: Vec<&String> = all
        .iter()
        .filter(|k| ["password", "hash", "secret", "private", "token_digest", "salt"].iter().any(|s| k.contains(s)))
        .collect();
    assert!(leaked.is_empty(), "{what} exposes {leaked:?}: {answer}");
}

async fn properties_a_client_may_not_set_are_never_taken(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("BOPLA");
    create(&shop, &admin, &product_body("Priced Boot", &sku, 8_000, 20)).await;
    let bob_session = shop.register(&unique_email("bob")).await;
    let bob_id = bob_session["user"]["id"].as_str().unwrap().to_owned();

    // Registration: no roles, no proven email, no chosen id or date.
    let chosen_id = uuid::Uuid::now_v7().to_string();
    let email = unique_email("mallory");
    let registered = shop
        .gateway
        .post("/api/v1/auth/register")
        .json(&json!({
            "email": email, "password": PASSWORD, "name": "Mallory",
            "roles": ["admin"], "email_verified": true, "id": chosen_id, "created_at": "2000-01-01T00:00:00Z",
        }))
        .send()
        .await;
    assert_eq!(registered.status, 201, "{}", String::from_utf8_lossy(&registered.body));
    let registered = registered.json();
    let user = &registered["user"];
    assert_eq!((user["roles"].clone(), user["email_verified"].clone()), (json!(["customer"]), json!(false)));
    assert_ne!(user["id"], chosen_id.as_str());
    assert!(!user["created_at"].as_str().unwrap().starts_with("2000"), "{user}");
    let mallory = token(&registered);

    // The profile: only the name (and, with the current one, the password) can change.
    let patched = shop
        .gateway
        .patch("/api/v1/users/me")
        .bearer(&mallory)
        .json(&json!({
            "name": "Mallory M", "roles": ["admin"], "email_verified": true, "email": unique_email("other"),
            "id": bob_id, "created_at": "2000-01-01T00:00:00Z",
        }))
        .send()
        .await;
    assert_eq!(patched.status, 200, "{}", String::from_utf8_lossy(&patched.body));
    let me = shop.gateway.get("/api/v1/users/me").bearer(&mallory).send().await.json();
    assert_eq!(me["name"], "Mallory M");
    assert_eq!((me["roles"].clone(), me["email_verified"].clone()), (json!(["customer"]), json!(false)));
    assert_eq!((me["email"].as_str(), me["id"].clone()), (Some(email.as_str()), user["id"].clone()));
    shop.gateway.get("/api/v1/admin/orders").bearer(&mallory).send().await.problem(403);

    // The cart: the catalog's price, whatever the client says.
    let added = shop
        .gateway
        .post("/api/v1/carts/me/items")
        .bearer(&mallory)
        .json(&json!({"sku": sku, "quantity": 2, "price": {"amount": 1, "currency": "EUR"}, "unit_price": 1}))
        .send()
        .await;
    assert_eq!(added.status, 200, "{}", String::from_utf8_lossy(&added.body));
    let cart = added.json();
    assert_eq!(cart["subtotal"]["amount"], 16_000, "{cart}");

    // Checkout: the order is the caller's, priced by the shop, and starts where the saga says.
    let body = json!({
        "cart_id": "me", "shipping_address": address(), "payment_method": "pm_card_visa",
        "user_id": bob_id, "status": "delivered", "total": {"amount": 1, "currency": "EUR"},
        "items": [{"sku": sku, "quantity": 2, "unit_price": {"amount": 1, "currency": "EUR"}}],
        "id": uuid::Uuid::now_v7(),
    });
    let placed = checkout(&shop, &mallory, &uuid::Uuid::new_v4().to_string(), &body).await;
    assert_eq!(placed.status, 201, "{}", String::from_utf8_lossy(&placed.body));
    let order = placed.json();
    assert_eq!((order["status"].as_str(), order["user_id"].clone()), (Some("paid"), user["id"].clone()));
    assert_ne!(order["id"], body["id"]);
    assert!(order["total"]["amount"].as_i64().unwrap() >= 16_000, "{order}");
    assert_eq!(order["lines"][0]["unit_price"]["amount"], 8_000, "{order}");
    let bobs = shop.gateway.get("/api/v1/orders").bearer(&token(&bob_session)).send().await.json();
    assert_eq!(bobs["items"], json!([]), "the order is not Bob's");
    let mine = shop.gateway.get("/api/v1/orders").bearer(&mallory).send().await.json();
    assert_eq!(mine["items"][0]["id"], order["id"]);

    // No answer gives away what is not the caller's to see.
    assert_nothing_secret("GET /users/me", &me);
    assert_nothing_secret("the order", &order);
    assert_nothing_secret("GET /orders", &mine);
    assert_nothing_secret("GET /users", &shop.gateway.get("/api/v1/users").bearer(&admin).send().await.json());
    let mut registered_user = registered.clone();
    for own in ["access_token", "refresh_token"] {
        registered_user.as_object_mut().unwrap().remove(own);
    }
    assert_nothing_secret("the registration", &registered_user);
    shop.stop().await;
}
