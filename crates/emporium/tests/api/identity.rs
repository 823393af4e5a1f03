//! API.md's Identity section through the gateway, on both SQL backends.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{TestDatabase, on_both_backends};

use crate::common::*;

on_both_backends!(
    registration_login_me_and_logout,
    registration_publishes_user_registered_through_the_outbox,
    concurrent_registrations_of_one_email,
    bad_registrations_change_nothing,
    refresh_rotates_and_reuse_revokes_the_session,
    unknown_email_and_wrong_password_look_alike,
    profile_updates,
    admin_lists_users_and_manages_roles,
    metrics_label_routes_by_template,
);

async fn registration_login_me_and_logout(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let email = unique_email("Ada.Lovelace");
    let registered = shop.register(&email).await;
    assert_eq!(registered["token_type"], "Bearer");
    assert_eq!(registered["expires_in"], 900);
    assert_eq!(registered["user"]["email"], email.as_str());
    assert_eq!(registered["user"]["name"], "Test User");
    assert_eq!(registered["user"]["roles"], json!(["customer"]));
    let id = registered["user"]["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    chrono::DateTime::parse_from_rfc3339(registered["user"]["created_at"].as_str().unwrap()).unwrap();

    let me = shop.gateway.get("/api/v1/users/me").bearer(&token(&registered)).send().await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json(), registered["user"]);

    // Emails are matched case-insensitively.
    let login = shop.login(&email.to_uppercase(), PASSWORD).await;
    assert_eq!(login.status, 200);
    assert_eq!(login.header("cache-control"), Some("no-store"));
    let session = login.json();
    assert_eq!(session["user"]["id"], id);
    assert_ne!(refresh_token(&session), refresh_token(&registered));

    let logout =
        shop.gateway.post("/api/v1/auth/logout").json(&json!({"refresh_token": refresh_token(&session)})).send().await;
    assert_eq!(logout.status, 204);
    let refresh =
        shop.gateway.post("/api/v1/auth/refresh").json(&json!({"refresh_token": refresh_token(&session)})).send().await;
    refresh.problem(401);
    // Logging out is idempotent, and unknown tokens are not revealed.
    for token in [refresh_token(&session), "ert_unknown".to_owned()] {
        let again = shop.gateway.post("/api/v1/auth/logout").json(&json!({"refresh_token": token})).send().await;
        assert_eq!(again.status, 204);
    }
    // The registration's own session was not touched by logging out the other one.
    let refresh = shop
        .gateway
        .post("/api/v1/auth/refresh")
        .json(&json!({"refresh_token": refresh_token(&registered)}))
        .send()
        .await;
    assert_eq!(refresh.status, 200);

    // The merged API document carries identity's operations, generated from its code.
    let document = shop.gateway.get("/api/v1/openapi.json").send().await.json();
    assert_eq!(document["openapi"], "3.1.0");
    for path in ["/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/users/me", "/api/v1/users/{id}/roles"] {
        assert!(document["paths"][path].is_object(), "{path} is documented");
    }
    assert_eq!(shop.gateway.get("/docs/").send().await.status, 200);

    let jwks = shop.gateway.get("/.well-known/jwks.json").send().await;
    assert_eq!(jwks.status, 200);
    let key = &jwks.json()["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert!(key.get("d").is_none(), "the private key is never published");
    shop.stop().await;
}

async fn registration_publishes_user_registered_through_the_outbox(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let before = shop.count("SELECT COUNT(*) FROM event_outbox WHERE event_type = 'user.registered'").await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let email = unique_email("events");
    let response = shop
        .gateway
        .post("/api/v1/auth/register")
        .header("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"email": email, "password": PASSWORD, "name": "Grace"}))
        .send()
        .await;
    assert_eq!(response.status, 201);
    let user_id = response.json()["user"]["id"].as_str().unwrap().to_owned();

    let db = shop.db().await;
    let envelopes: Vec<sqlx::types::Json<Value>> = platform::with_db!(&db, |pool| sqlx::query_scalar(
        "SELECT envelope FROM event_outbox WHERE event_type = 'user.registered' ORDER BY seq"
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    assert_eq!(envelopes.len() as i64, before + 1);
    let event = &envelopes.last().unwrap().0;
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "user.registered");
    assert_eq!(event["source"], "/emporium/identity");
    assert_eq!(event["subject"], user_id.as_str());
    assert_eq!(event["data"]["user_id"], user_id.as_str());
    assert_eq!(event["data"]["email"], email.as_str());
    assert_eq!(event["data"]["name"], "Grace");
    assert!(event["traceparent"].as_str().unwrap().contains(trace), "the event carries the request's trace");

    // A refused registration writes no event.
    assert_eq!(shop.register_raw(&email, PASSWORD).await.status, 409);
    assert_eq!(shop.count("SELECT COUNT(*) FROM event_outbox WHERE event_type = 'user.registered'").await, before + 1);
    db.close().await;
    shop.stop().await;
}

async fn concurrent_registrations_of_one_email(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let email = unique_email("race");
    let attempts = (0..8).map(|i| {
        let gateway = shop.gateway.clone();
        // Differently cased: uniqueness is case-insensitive.
        let email = if i % 2 == 0 { email.clone() } else { email.to_uppercase() };
        tokio::spawn(async move {
            gateway
                .post("/api/v1/auth/register")
                .json(&json!({"email": email, "password": PASSWORD, "name": "Racer"}))
                .send()
                .await
        })
    });
    let mut statuses = Vec::new();
    for attempt in attempts {
        let response = attempt.await.unwrap();
        if response.status == 409 {
            response.problem(409);
        }
        statuses.push(response.status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, vec![201, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(shop.count("SELECT COUNT(*) FROM users WHERE email_normalized LIKE 'race-%'").await, 1);
    assert_eq!(
        shop.count("SELECT COUNT(*) FROM event_outbox WHERE event_type = 'user.registered'").await,
        2,
        "admin + one racer"
    );
    shop.stop().await;
}

async fn bad_registrations_change_nothing(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let users = shop.count("SELECT COUNT(*) FROM users").await;
    let events = shop.count("SELECT COUNT(*) FROM event_outbox").await;
    let path = "/api/v1/auth/register";

    let malformed = shop.gateway.post(path).raw("application/json", "{\"email\": \"a@example.com\",").send().await;
    assert!(malformed.problem(400)["detail"].as_str().unwrap().starts_with("malformed JSON"));

    let wrong_type =
        shop.gateway.post(path).json(&json!({"email": 42, "password": PASSWORD, "name": "X"})).send().await;
    assert!(wrong_type.problem(400)["detail"].as_str().unwrap().contains("email"));

    let missing = shop.gateway.post(path).json(&json!({"email": "m@example.com", "name": "X"})).send().await;
    assert_eq!(missing.problem(422)["errors"], json!([{"field": "password", "message": "is required"}]));

    let invalid =
        shop.gateway.post(path).json(&json!({"email": "not-an-email", "password": "short", "name": "  "})).send().await;
    let body = invalid.problem(422);
    let fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, vec!["email", "password", "name"]);

    let not_json = shop.gateway.post(path).raw("text/plain", "email=a@example.com").send().await;
    not_json.problem(415);

    let huge =
        format!("{{\"email\":\"big@example.com\",\"password\":\"{}\",\"name\":\"X\"}}", "p".repeat(2 * 1024 * 1024));
    shop.gateway.post(path).raw("application/json", huge.clone()).send().await.problem(413);
    // Straight at identity too: its own limit holds without the gateway.
    shop.identity.post(path).raw("application/json", huge).send().await.problem(413);

    let array = shop.gateway.post(path).json(&json!([1, 2])).send().await;
    array.problem(400);

    assert_eq!(shop.count("SELECT COUNT(*) FROM users").await, users, "nothing stored");
    assert_eq!(shop.count("SELECT COUNT(*) FROM event_outbox").await, events, "nothing published");

    // A client cannot choose its roles.
    let sneaky = shop
        .gateway
        .post(path)
        .json(&json!({"email": unique_email("sneaky"), "password": PASSWORD, "name": "S", "roles": ["admin"]}))
        .send()
        .await;
    assert_eq!(sneaky.status, 201);
    assert_eq!(sneaky.json()["user"]["roles"], json!(["customer"]));
    shop.stop().await;
}

async fn refresh_rotates_and_reuse_revokes_the_session(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let email = unique_email("rotate");
    shop.register(&email).await;
    let first = shop.login(&email, PASSWORD).await.json();
    let other_session = shop.login(&email, PASSWORD).await.json();

    let refresh = |token: String| {
        let gateway = shop.gateway.clone();
        async move { gateway.post("/api/v1/auth/refresh").json(&json!({"refresh_token": token})).send().await }
    };
    let second = refresh(refresh_token(&first)).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("cache-control"), Some("no-store"));
    let second = second.json();
    assert_ne!(refresh_token(&second), refresh_token(&first));
    assert_eq!(second["user"]["email"], email.as_str());
    let me = shop.gateway.get("/api/v1/users/me").bearer(&token(&second)).send().await;
    assert_eq!(me.status, 200);

    // The spent token comes back: someone copied it. The whole session dies.
    refresh(refresh_token(&first)).await.problem(401);
    refresh(refresh_token(&second)).await.problem(401);
    // Other sessions of the same user live on.
    assert_eq!(refresh(refresh_token(&other_session)).await.status, 200);

    // Two concurrent refreshes with one token: exactly one wins, and the reuse kills the session.
    let session = shop.login(&email, PASSWORD).await.json();
    let (a, b) = tokio::join!(refresh(refresh_token(&session)), refresh(refresh_token(&session)));
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 401]);
    let winner = if a.status == 200 { a.json() } else { b.json() };
    refresh(refresh_token(&winner)).await.problem(401);

    refresh("ert_made_up".to_owned()).await.problem(401);
    shop.gateway.post("/api/v1/auth/refresh").json(&json!({"refresh_token": ""})).send().await.problem(422);
    shop.stop().await;
}

async fn unknown_email_and_wrong_password_look_alike(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let email = unique_email("alike");
    shop.register(&email).await;
    let wrong_password = shop.login(&email, "wrong password!").await;
    let unknown_email = shop.login(&unique_email("nobody"), PASSWORD).await;
    assert_eq!(wrong_password.problem(401), unknown_email.problem(401));
    shop.stop().await;
}

async fn profile_updates(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let email = unique_email("profile");
    let session = shop.register(&email).await;
    let other = shop.login(&email, PASSWORD).await.json();
    let access = token(&session);
    let patch = |body: Value| {
        let gateway = shop.gateway.clone();
        let access = access.clone();
        async move { gateway.patch("/api/v1/users/me").bearer(&access).json(&body).send().await }
    };

    let renamed = patch(json!({"name": "Ada King"})).await;
    assert_eq!(renamed.status, 200);
    assert_eq!(renamed.json()["name"], "Ada King");
    assert_eq!(patch(json!({})).await.json()["name"], "Ada King");
    patch(json!({"name": ""})).await.problem(422);
    patch(json!({"password": "short", "current_password": PASSWORD})).await.problem(422);

    // A new password needs the right current one; otherwise nothing changes, name included.
    patch(json!({"name": "Mallory", "password": "new password 123"})).await.problem(403);
    patch(json!({"name": "Mallory", "password": "new password 123", "current_password": "wrong password!"}))
        .await
        .problem(403);
    assert_eq!(shop.gateway.get("/api/v1/users/me").bearer(&access).send().await.json()["name"], "Ada King");
    assert_eq!(shop.login(&email, PASSWORD).await.status, 200);

    let changed = patch(json!({"password": "new password 123", "current_password": PASSWORD})).await;
    assert_eq!(changed.status, 200);
    shop.login(&email, PASSWORD).await.problem(401);
    assert_eq!(shop.login(&email, "new password 123").await.status, 200);
    // Other sessions are signed out; the one that made the change is not.
    let refresh = |t: String| shop.gateway.post("/api/v1/auth/refresh").json(&json!({"refresh_token": t})).send();
    refresh(refresh_token(&other)).await.problem(401);
    assert_eq!(refresh(refresh_token(&session)).await.status, 200);

    shop.gateway.patch("/api/v1/users/me").json(&json!({"name": "X"})).send().await.problem(401);
    shop.stop().await;
}

async fn admin_lists_users_and_manages_roles(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let mut registered = Vec::new();
    for i in 0..5 {
        registered.push(shop.register(&unique_email(&format!("list{i}"))).await);
    }
    let customer = token(&registered[0]);

    // Cursor pagination, newest first, every user exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/users?limit=2&cursor={c}"),
            None => "/api/v1/users?limit=2".to_owned(),
        };
        let page = shop.gateway.get(&path).bearer(&admin).send().await;
        assert_eq!(page.status, 200);
        let page = page.json();
        assert!(page["items"].as_array().unwrap().len() <= 2);
        seen.extend(page["items"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<String> =
        registered.iter().rev().map(|r| r["user"]["email"].as_str().unwrap().to_owned()).collect();
    expected.push(ADMIN_EMAIL.to_owned());
    assert_eq!(seen, expected);
    let first_page = shop.gateway.get("/api/v1/users").bearer(&admin).send().await.json();
    assert_eq!(first_page["items"].as_array().unwrap().len(), 6, "default limit is 20");
    assert!(first_page["next_cursor"].is_null());

    shop.gateway.get("/api/v1/users").bearer(&customer).send().await.problem(403);
    shop.gateway.get("/api/v1/users").send().await.problem(401);
    shop.gateway.get("/api/v1/users?limit=0").bearer(&admin).send().await.problem(422);
    shop.gateway.get("/api/v1/users?limit=101").bearer(&admin).send().await.problem(422);
    shop.gateway.get("/api/v1/users?cursor=garbage").bearer(&admin).send().await.problem(422);
    shop.gateway.get("/api/v1/users?limit=abc").bearer(&admin).send().await.problem(400);

    // Granting and revoking roles.
    let user = &registered[1];
    let user_id = user["user"]["id"].as_str().unwrap();
    let roles_path = format!("/api/v1/users/{user_id}/roles");
    let granted =
        shop.gateway.put(&roles_path).bearer(&admin).json(&json!({"roles": ["customer", "admin"]})).send().await;
    assert_eq!(granted.status, 200);
    assert_eq!(granted.json()["roles"], json!(["customer", "admin"]));
    let promoted = shop.login(user["user"]["email"].as_str().unwrap(), PASSWORD).await.json();
    assert_eq!(promoted["user"]["roles"], json!(["customer", "admin"]));
    assert_eq!(shop.gateway.get("/api/v1/users").bearer(&token(&promoted)).send().await.status, 200);

    shop.gateway.put(&roles_path).bearer(&customer).json(&json!({"roles": ["admin"]})).send().await.problem(403);
    shop.gateway.put(&roles_path).bearer(&admin).json(&json!({"roles": ["root"]})).send().await.problem(422);
    shop.gateway.put(&roles_path).bearer(&admin).json(&json!({"roles": "admin"})).send().await.problem(400);
    let unknown = format!("/api/v1/users/{}/roles", uuid::Uuid::now_v7());
    shop.gateway.put(&unknown).bearer(&admin).json(&json!({"roles": []})).send().await.problem(404);
    shop.gateway
        .put("/api/v1/users/not-a-uuid/roles")
        .bearer(&admin)
        .json(&json!({"roles": []}))
        .send()
        .await
        .problem(404);

    // Demote the bootstrap admin (another admin exists), then the last admin cannot be demoted.
    let admin_id =
        shop.gateway.get("/api/v1/users/me").bearer(&admin).send().await.json()["id"].as_str().unwrap().to_owned();
    let demoted = shop
        .gateway
        .put(&format!("/api/v1/users/{admin_id}/roles"))
        .bearer(&admin)
        .json(&json!({"roles": []}))
        .send()
        .await;
    assert_eq!(demoted.status, 200);
    assert_eq!(demoted.json()["roles"], json!(["customer"]));
    // Tokens carry their roles: the demoted administrator's sessions end, rather than their
    // tokens staying administrators' until they expire.
    let ended = testkit::eventually(Duration::from_secs(5), || async {
        shop.gateway.get("/api/v1/users").bearer(&admin).send().await.status == 401
    })
    .await;
    assert!(ended, "the demoted administrator's token is refused");
    let again = token(&shop.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.json());
    shop.gateway.get("/api/v1/users").bearer(&again).send().await.problem(403);
    let last =
        shop.gateway.put(&roles_path).bearer(&token(&promoted)).json(&json!({"roles": ["customer"]})).send().await;
    last.problem(409);
    shop.stop().await;
}

async fn metrics_label_routes_by_template(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let user = shop.register(&unique_email("metrics")).await;
    let id = user["user"]["id"].as_str().unwrap();
    for _ in 0..2 {
        let response = shop
            .gateway
            .put(&format!("/api/v1/users/{id}/roles"))
            .bearer(&admin)
            .json(&json!({"roles": []}))
            .send()
            .await;
        assert_eq!(response.status, 200);
    }
    let metrics = shop.identity.get("/metrics").send().await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("http_server_requests_total{")
            && l.contains(r#"service="identity""#)
            && l.contains(r#"route="/api/v1/users/{id}/roles""#)
            && l.contains(r#"method="PUT""#)
            && l.contains(r#"status="200""#)),
        "{text}"
    );
    assert!(text.contains("http_server_request_duration_seconds_bucket{"), "latency is a histogram");
    assert!(!text.contains(id), "raw ids never become labels");
    let gateway_metrics = String::from_utf8(shop.gateway.get("/metrics").send().await.body.to_vec()).unwrap();
    assert!(gateway_metrics.contains(r#"route="/api/v1/users/{*rest}""#), "{gateway_metrics}");
    shop.stop().await;
}

/// A client uploading more than the limit keeps writing after the server has decided; it must
/// still get the 413 (the server reads the rest before closing), not a reset connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_get_their_413_not_a_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let shop = TestShop::start(TestDatabase::sqlite()).await;
    for base in [shop.identity.base().to_owned(), shop.gateway.base().to_owned()] {
        let addr = base.trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let size = 3 * 1024 * 1024;
        let head = format!(
            "POST /api/v1/auth/register HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b' '; 64 * 1024];
        for i in 0..size / chunk.len() {
            stream.write_all(&chunk).await.unwrap_or_else(|e| panic!("{base}: write {i} failed: {e}"));
            if i % 8 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap_or_else(|e| panic!("{base}: {e}"));
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 413"), "{base}: {response}");
        assert!(response.contains("application/problem+json"), "{base}: {response}");
    }
    assert_eq!(shop.count("SELECT COUNT(*) FROM users").await, 1, "only the bootstrap admin");
    shop.stop().await;
}
