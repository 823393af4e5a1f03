//! OWASP API7:2023, server-side request forgery. The shop fetches URLs it did not choose in one
//! place: the endpoints an OpenID provider's discovery document names (it never fetches product
//! image URLs, and payment and mail endpoints come from the configuration). A document that
//! points the shop at loopback, a private network or a cloud metadata address — by address or
//! by a name that resolves to one — gets a refused sign-in, and nothing there is ever connected
//! to. The provider's own configured host is reached as configured.

use identity::config::{ProviderConfig, ProviderKind};
use serde_json::json;
use testkit::{
    Browser, TestDatabase,
    browser::query_param,
    free_port, on_both_backends,
    providers::{Account, FakeProviders},
};

use crate::{
    common::*,
    social::{CLIENT_ID, CLIENT_SECRET, provider},
};

on_both_backends!(endpoints_a_discovery_document_names_must_be_public);

const REDIRECT: &str = "http://127.0.0.1:9/signed-in";

/// A server on this machine that must never hear from the shop: how many connections it took.
async fn bystander() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, accepted)
}

/// A shop whose providers `p0`, `p1`, … are all the fake OpenID provider, each reading its
/// discovery document once (so each can meet another one); and the gateway's URL.
pub async fn shop_with_providers(db: TestDatabase, fakes: &FakeProviders, providers: usize) -> (TestShop, String) {
    let gateway_port = free_port();
    let gateway = format!("http://127.0.0.1:{gateway_port}");
    let (issuer, public) = (fakes.issuer(), gateway.clone());
    let shop = TestShop::start_with(db, move |settings| {
        settings.gateway.listen = format!("127.0.0.1:{gateway_port}").parse().unwrap();
        let social = &mut settings.identity.social;
        social.public_url = public;
        social.redirect_uris = vec![REDIRECT.to_owned()];
        for n in 0..providers {
            social.providers.insert(
                format!("p{n}"),
                ProviderConfig { issuer: Some(issuer.clone()), ..provider(ProviderKind::Oidc) },
            );
        }
    })
    .await;
    (shop, gateway)
}

/// Walks a sign-in at provider `id` to the end; the URL the client application is sent to.
pub async fn sign_in(gateway: &str, fakes: &FakeProviders, id: &str) -> String {
    let redirect = form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>();
    let browser = Browser::new();
    let started = browser.get(&format!("{gateway}/api/v1/auth/oauth/{id}/authorize?redirect_uri={redirect}")).await;
    assert_eq!(started.status, 302, "{}", String::from_utf8_lossy(&started.body));
    let base = fakes.base().to_owned();
    let callback = browser
        .follow_within(started.header("location").unwrap(), |url| url.starts_with(&base))
        .await
        .left()
        .to_owned();
    let finished = browser.get(&callback).await;
    assert_eq!(finished.status, 302, "{}", String::from_utf8_lossy(&finished.body));
    finished.header("location").unwrap().to_owned()
}

async fn endpoints_a_discovery_document_names_must_be_public(db: TestDatabase) {
    let (port, accepted) = bystander().await;
    let hostile = [
        ("token_endpoint", format!("https://localhost:{port}/token")),
        ("token_endpoint", format!("https://127.0.0.2:{port}/token")),
        ("token_endpoint", format!("https://[::1]:{port}/token")),
        ("token_endpoint", "https://169.254.169.254/latest/meta-data/iam/security-credentials/".to_owned()),
        ("token_endpoint", "https://10.255.255.1/token".to_owned()),
        ("jwks_uri", format!("https://localhost:{port}/jwks")),
    ];
    let fakes = FakeProviders::start(CLIENT_ID, CLIENT_SECRET).await;
    let (shop, gateway) = shop_with_providers(db, &fakes, hostile.len() + 1).await;
    fakes.sign_in_as(Some(Account::new("ssrf", Some(("ssrf@example.com", true)))));

    // Each provider reads the document once (and keeps it): each meets another hostile one.
    for (n, (member, url)) in hostile.iter().enumerate() {
        fakes.discovery_names(serde_json::Value::Object([((*member).to_owned(), json!(url))].into_iter().collect()));
        let started = std::time::Instant::now();
        let ended = sign_in(&gateway, &fakes, &format!("p{n}")).await;
        assert_eq!(query_param(&ended, "code"), None, "{member} {url}: {ended}");
        assert!(query_param(&ended, "error").is_some(), "{member} {url}: {ended}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{url}: refused at once, not timed out");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing on this machine was reached");
    assert_eq!(shop.count("SELECT COUNT(*) FROM users WHERE email_normalized = 'ssrf@example.com'").await, 0);

    // The same provider with its own document signs in: the refusals were about the endpoints.
    fakes.discovery_names(json!({}));
    let ended = sign_in(&gateway, &fakes, &format!("p{}", hostile.len())).await;
    assert!(query_param(&ended, "code").is_some(), "{ended}");
    shop.stop().await;
}
