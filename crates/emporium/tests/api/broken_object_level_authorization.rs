//! OWASP API1:2023, broken object level authorization. Every resource with an id that belongs to
//! someone — a user's cart, an order, a user's roles and linked identities — is reached only by
//! its owner (or an administrator, where API.md says so). Anyone else gets the 404 of a resource
//! that does not exist, by every route, and nothing changes. A guest cart is the exception API.md
//! makes: its unguessable id is the credential, until a user merges it into their own.

use serde_json::{Value, json};
use testkit::{TestDatabase, on_both_backends};

use crate::{
    catalog::{create, product_body},
    common::*,
    orders::{add_to_cart, checkout, checkout_body, unique_sku},
};

on_both_backends!(someone_elses_cart_order_and_account_are_not_found);

fn as_caller<'a>(request: testkit::client::TestRequest<'a>, caller: Option<&str>) -> testkit::client::TestRequest<'a> {
    match caller {
        Some(token) => request.bearer(token),
        None => request,
    }
}

async fn cart_of(shop: &TestShop, token: &str) -> Value {
    let cart = shop.gateway.get("/api/v1/carts/me").bearer(token).send().await;
    assert_eq!(cart.status, 200, "{}", String::from_utf8_lossy(&cart.body));
    cart.json()
}

async fn someone_elses_cart_order_and_account_are_not_found(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let sku = unique_sku("BOLA");
    create(&shop, &admin, &product_body("Owned Boot", &sku, 5_000, 50)).await;
    let alice_session = shop.register(&unique_email("alice")).await;
    let (alice, alice_id) = (token(&alice_session), alice_session["user"]["id"].as_str().unwrap().to_owned());
    let bob = token(&shop.register(&unique_email("bob")).await);

    // Alice's own cart: reached as `me` with her token, and by its id by no one, not even her.
    add_to_cart(&shop, &alice, &sku, 2).await;
    let cart_id = cart_of(&shop, &alice).await["id"].as_str().unwrap().to_owned();
    let cart = format!("/api/v1/carts/{cart_id}");
    let line = format!("{cart}/items/{sku}");
    for caller in [Some(bob.as_str()), None, Some(alice.as_str())] {
        let with = |request| as_caller(request, caller);
        with(shop.gateway.get(&cart)).send().await.problem(404);
        with(shop.gateway.post(&format!("{cart}/items")))
            .json(&json!({"sku": sku, "quantity": 1}))
            .send()
            .await
            .problem(404);
        with(shop.gateway.put(&line)).json(&json!({"quantity": 9})).send().await.problem(404);
        with(shop.gateway.delete(&line)).send().await.problem(404);
        with(shop.gateway.delete(&cart)).send().await.problem(404);
    }
    // Nor by taking it over: merging it into Bob's cart, or checking it out as Bob.
    shop.gateway
        .post("/api/v1/carts/me/merge")
        .bearer(&bob)
        .json(&json!({"cart_id": cart_id}))
        .send()
        .await
        .problem(404);
    let key = uuid::Uuid::new_v4().to_string();
    checkout(&shop, &bob, &key, &checkout_body(&cart_id, "pm_card_visa")).await.problem(404);
    let kept = cart_of(&shop, &alice).await;
    assert_eq!(kept["items"][0]["quantity"], 2, "Alice's cart is as she left it: {kept}");
    assert!(cart_of(&shop, &bob).await["items"].as_array().unwrap().is_empty());

    // A guest cart merged into Alice's is hers alone: its old id no longer opens anything.
    let guest = shop.gateway.post("/api/v1/carts").send().await.json()["id"].as_str().unwrap().to_owned();
    let add = json!({"sku": sku, "quantity": 1});
    assert_eq!(shop.gateway.post(&format!("/api/v1/carts/{guest}/items")).json(&add).send().await.status, 200);
    let merged =
        shop.gateway.post("/api/v1/carts/me/merge").bearer(&alice).json(&json!({"cart_id": guest})).send().await;
    assert_eq!(merged.status, 200, "{}", String::from_utf8_lossy(&merged.body));
    shop.gateway.get(&format!("/api/v1/carts/{guest}")).send().await.problem(404);
    shop.gateway.get(&format!("/api/v1/carts/{guest}")).bearer(&bob).send().await.problem(404);

    // Alice's order: only she and an administrator see it, cancel it, find it in a list.
    let placed = checkout(&shop, &alice, &uuid::Uuid::new_v4().to_string(), &checkout_body("me", "pm_card_visa")).await;
    assert_eq!(placed.status, 201, "{}", String::from_utf8_lossy(&placed.body));
    let order = format!("/api/v1/orders/{}", placed.json()["id"].as_str().unwrap());
    shop.gateway.get(&order).bearer(&bob).send().await.problem(404);
    shop.gateway.post(&format!("{order}/cancel")).bearer(&bob).send().await.problem(404);
    shop.gateway.get(&order).send().await.problem(401);
    let bobs = shop.gateway.get("/api/v1/orders").bearer(&bob).send().await.json();
    assert_eq!(bobs["items"], json!([]));
    assert_eq!(shop.gateway.get(&order).bearer(&admin).send().await.json()["status"], "paid");
    assert_eq!(shop.gateway.get(&order).bearer(&alice).send().await.json()["status"], "paid");

    // Alice's account: Bob can neither change her roles nor reach her identities.
    let roles = format!("/api/v1/users/{alice_id}/roles");
    shop.gateway.put(&roles).bearer(&bob).json(&json!({"roles": ["customer", "admin"]})).send().await.problem(403);
    let me = shop.gateway.get("/api/v1/users/me").bearer(&alice).send().await.json();
    assert_eq!(me["roles"], json!(["customer"]));
    for path in [format!("/api/v1/users/{alice_id}"), format!("/api/v1/users/{alice_id}/identities")] {
        let answer = shop.gateway.get(&path).bearer(&bob).send().await;
        assert!(matches!(answer.status.as_u16(), 404 | 405), "{path}: {}", answer.status);
    }
    shop.gateway.delete("/api/v1/users/me/identities/google").bearer(&bob).send().await.problem(404);
    shop.stop().await;
}
