//! Social sign-in through the gateway: a certified OpenID Connect provider (`oidc-provider`,
//! run here), and GitHub, Facebook and an OpenID Connect provider that forges tokens, spoken as
//! documented by the test kit's fakes. Each sign-in is walked as a browser walks it: the shop's
//! authorize, the provider's pages, the shop's callback, the client's redirect, the exchange.

use identity::config::{ProviderConfig, ProviderKind};
use serde_json::{Value, json};
use testkit::{
    Browser, TestDatabase,
    browser::query_param,
    free_port,
    oidc::{Consent, OidcProvider},
    on_both_backends,
    providers::{Account, FakeProviders, IdToken},
};

use crate::common::*;

pub const CLIENT_ID: &str = "emporium-test-client";
pub const CLIENT_SECRET: &str = "emporium-test-client-secret-of-some-length";
/// Where the client application wants sign-ins to end (never visited: the test reads it).
const REDIRECT: &str = "http://127.0.0.1:9/signed-in";

struct Social {
    shop: TestShop,
    oidc: OidcProvider,
    fakes: FakeProviders,
    gateway: String,
}

/// A provider of `kind` with the test client's credentials and nothing else set.
pub fn provider(kind: ProviderKind) -> ProviderConfig {
    ProviderConfig {
        trust_verified_email: None,
        kind,
        name: None,
        client_id: CLIENT_ID.to_owned(),
        client_secret: Some(CLIENT_SECRET.to_owned().into()),
        client_secret_file: None,
        issuer: None,
        authorization_endpoint: None,
        token_endpoint: None,
        api_base: None,
        scopes: Vec::new(),
    }
}

async fn start(db: TestDatabase) -> Option<Social> {
    let port = free_port();
    let gateway = format!("http://127.0.0.1:{port}");
    let callback = |id: &str| format!("{gateway}/api/v1/auth/oauth/{id}/callback");
    let verified = |email: &str| json!({"email": email, "email_verified": true});
    let accounts = json!({
        "alice": verified("alice@example.com"),
        "bob": verified("bob@example.com"),
        "carol": verified("carol@example.com"),
        "dave": {"email": "dave@example.com", "email_verified": false},
        "erin": {},
        "zed": verified("zed@example.com"),
    });
    let clients =
        json!([{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": [callback("certified")]}]);
    let oidc = OidcProvider::start(clients, accounts).await?;
    let fakes = FakeProviders::start(CLIENT_ID, CLIENT_SECRET).await;
    let (issuer, fake_base, forged_issuer) = (oidc.issuer().to_owned(), fakes.base().to_owned(), fakes.issuer());
    let public = gateway.clone();
    let shop = TestShop::start_with(db, move |settings| {
        settings.gateway.listen = format!("127.0.0.1:{port}").parse().unwrap();
        let social = &mut settings.identity.social;
        social.public_url = public;
        social.redirect_uris = vec![REDIRECT.to_owned()];
        social.providers.insert(
            "certified".into(),
            ProviderConfig { issuer: Some(issuer), name: Some("Certified".into()), ..provider(ProviderKind::Oidc) },
        );
        social.providers.insert(
            "github".into(),
            ProviderConfig {
                authorization_endpoint: Some(format!("{fake_base}/login/oauth/authorize")),
                token_endpoint: Some(format!("{fake_base}/login/oauth/access_token")),
                api_base: Some(fake_base.clone()),
                ..provider(ProviderKind::Github)
            },
        );
        let facebook = ProviderConfig {
            authorization_endpoint: Some(format!("{fake_base}/dialog/oauth")),
            api_base: Some(fake_base.clone()),
            ..provider(ProviderKind::Facebook)
        };
        // Facebook says nothing of verification: an operator may choose to take its emails.
        social
            .providers
            .insert("facebook-trusted".into(), ProviderConfig { trust_verified_email: Some(true), ..facebook.clone() });
        social.providers.insert("facebook".into(), facebook);
        social
            .providers
            .insert("forged".into(), ProviderConfig { issuer: Some(forged_issuer), ..provider(ProviderKind::Oidc) });
        let closed = format!("http://127.0.0.1:{}", free_port());
        social
            .providers
            .insert("unreachable".into(), ProviderConfig { issuer: Some(closed), ..provider(ProviderKind::Oidc) });
    })
    .await;
    Some(Social { shop, oidc, fakes, gateway })
}

impl Social {
    fn authorize_url(&self, provider: &str) -> String {
        let redirect = form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>();
        format!("{}/api/v1/auth/oauth/{provider}/authorize?redirect_uri={redirect}&state=client-xyz", self.gateway)
    }

    /// Walks a whole sign-in; the URL the shop finally sends the browser to.
    async fn sign_in(&self, browser: &Browser, provider: &str, consent: Consent<'_>) -> String {
        self.sign_in_from(browser, &self.authorize_url(provider), &[], consent).await
    }

    async fn sign_in_from(
        &self,
        browser: &Browser,
        authorize: &str,
        headers: &[(&str, &str)],
        consent: Consent<'_>,
    ) -> String {
        let started = browser.get_with(authorize, headers).await;
        assert_eq!(started.status, 302, "{}", String::from_utf8_lossy(&started.body));
        let at_provider = started.header("location").unwrap().to_owned();
        let callback = if at_provider.starts_with(self.oidc.issuer()) {
            self.oidc.walk(browser, &at_provider, consent).await
        } else {
            let base = self.fakes.base().to_owned();
            browser.follow_within(&at_provider, |url| url.starts_with(&base)).await.left().to_owned()
        };
        assert!(callback.starts_with(&self.gateway), "the provider sends the browser back to the shop: {callback}");
        let finished = browser.get(&callback).await;
        assert_eq!(finished.status, 302, "{}", String::from_utf8_lossy(&finished.body));
        let location = finished.header("location").unwrap().to_owned();
        assert!(location.starts_with(REDIRECT), "{location}");
        assert_eq!(query_param(&location, "state").as_deref(), Some("client-xyz"), "the client's state comes back");
        location
    }

    async fn exchange(&self, code: &str) -> testkit::TestResponse {
        self.shop.gateway.post("/api/v1/auth/oauth/exchange").json(&json!({"code": code})).send().await
    }

    /// Signs in and exchanges the code: the session's tokens.
    async fn session(&self, provider: &str, consent: Consent<'_>) -> Value {
        let location = self.sign_in(&Browser::new(), provider, consent).await;
        let code = query_param(&location, "code").unwrap_or_else(|| panic!("a code, got {location}"));
        let tokens = self.exchange(&code).await;
        assert_eq!(tokens.status, 200, "{}", String::from_utf8_lossy(&tokens.body));
        tokens.json()
    }

    async fn error_of(&self, provider: &str, consent: Consent<'_>) -> String {
        let location = self.sign_in(&Browser::new(), provider, consent).await;
        assert_eq!(query_param(&location, "code"), None, "{location}");
        query_param(&location, "error").unwrap_or_else(|| panic!("an error, got {location}"))
    }

    async fn me(&self, access: &str) -> Value {
        self.shop.gateway.get("/api/v1/users/me").bearer(access).send().await.json()
    }

    async fn identities(&self, access: &str) -> Vec<String> {
        let list = self.shop.gateway.get("/api/v1/users/me/identities").bearer(access).send().await.json();
        list.as_array().unwrap().iter().map(|i| i["provider"].as_str().unwrap().to_owned()).collect()
    }
}

on_both_backends!(
    a_certified_provider_signs_people_in_through_the_gateway,
    accounts_are_linked_only_when_both_sides_proved_the_email,
    unlinking_always_leaves_a_way_to_sign_in,
    forged_misdirected_and_replayed_answers_are_refused,
    github_and_facebook_sign_in_as_they_document,
);

async fn a_certified_provider_signs_people_in_through_the_gateway(db: TestDatabase) {
    let Some(s) = start(db).await else { return };
    let providers = s.shop.gateway.get("/api/v1/auth/providers").send().await.json();
    assert_eq!(
        providers,
        json!([
            {"id": "certified", "name": "Certified"},
            {"id": "facebook", "name": "Facebook"},
            {"id": "facebook-trusted", "name": "Facebook"},
            {"id": "forged", "name": "forged"},
            {"id": "github", "name": "GitHub"},
            {"id": "unreachable", "name": "unreachable"},
        ])
    );

    let browser = Browser::new();
    let location = s.sign_in(&browser, "certified", Consent::SignInAs("alice")).await;
    let code = query_param(&location, "code").expect("a one-time code");
    let tokens = s.exchange(&code).await;
    assert_eq!(tokens.status, 200, "{}", String::from_utf8_lossy(&tokens.body));
    assert_eq!(tokens.header("cache-control"), Some("no-store"));
    let tokens = tokens.json();
    let me = s.me(&token(&tokens)).await;
    assert_eq!((me["email"].as_str(), me["email_verified"].as_bool()), (Some("alice@example.com"), Some(true)));
    let identities = s.shop.gateway.get("/api/v1/users/me/identities").bearer(&token(&tokens)).send().await.json();
    assert_eq!(identities[0]["provider"], "certified");
    assert_eq!(identities[0]["subject"], "alice");
    assert_eq!(identities[0]["email"], "alice@example.com");

    // The code works once.
    s.exchange(&code).await.problem(401);
    // The refresh token is ours, like any other session's.
    let refreshed = s
        .shop
        .gateway
        .post("/api/v1/auth/refresh")
        .json(&json!({"refresh_token": refresh_token(&tokens)}))
        .send()
        .await;
    assert_eq!(refreshed.status, 200);

    // Signing in again finds the same account.
    let again = s.session("certified", Consent::SignInAs("alice")).await;
    assert_eq!(s.me(&token(&again)).await["id"], me["id"]);
    // A password login for it does not exist: the account has no password.
    s.shop.login("alice@example.com", PASSWORD).await.problem(401);
}

async fn accounts_are_linked_only_when_both_sides_proved_the_email(db: TestDatabase) {
    let Some(s) = start(db).await else { return };
    // A password account never proved its email: a provider's word does not hand it over.
    let bob = s.shop.register("bob@example.com").await;
    assert_eq!(s.error_of("certified", Consent::SignInAs("bob")).await, "account_exists");
    // Bob, signed in, links the provider himself.
    let authorize = format!("{}&link=true", s.authorize_url("certified"));
    let bearer = format!("Bearer {}", token(&bob));
    let location =
        s.sign_in_from(&Browser::new(), &authorize, &[("authorization", &bearer)], Consent::SignInAs("bob")).await;
    let linked = s.exchange(&query_param(&location, "code").expect("a code")).await.json();
    assert_eq!(s.me(&token(&linked)).await["id"], bob["user"]["id"]);
    assert_eq!(s.identities(&token(&bob)).await, ["certified"]);
    // A script that cannot follow the redirect asks for JSON.
    let json_mode =
        Browser::new().get_with(&authorize, &[("authorization", &bearer), ("accept", "application/json")]).await;
    assert_eq!(json_mode.status, 200);
    assert!(json_mode.json()["url"].as_str().unwrap().starts_with(s.oidc.issuer()));
    assert!(json_mode.header("set-cookie").is_some_and(|c| c.starts_with("emporium_sign_in=")));
    // Linking needs the user's token.
    let anonymous = Browser::new().get(&authorize).await;
    anonymous.problem(401);

    // An account made by a provider that vouched for its email is proven: a second provider
    // vouching for the same email joins it.
    let carol = s.session("certified", Consent::SignInAs("carol")).await;
    s.fakes.sign_in_as(Some(Account::new("1001", Some(("carol@example.com", true)))));
    let carol_again = s.session("github", Consent::SignInAs("")).await;
    assert_eq!(s.me(&token(&carol_again)).await["id"], s.me(&token(&carol)).await["id"]);
    assert_eq!(s.identities(&token(&carol)).await, ["certified", "github"]);

    // An email the provider does not vouch for claims no address: no account is made.
    assert_eq!(s.error_of("certified", Consent::SignInAs("dave")).await, "email_unverified");
    s.fakes.sign_in_as(Some(Account::new("1002", Some(("dave@example.com", true)))));
    let dave = s.session("github", Consent::SignInAs("")).await;
    assert_eq!(s.me(&token(&dave)).await["email_verified"], true, "the address was free for its owner");

    // Without an email there is no account to make.
    assert_eq!(s.error_of("certified", Consent::SignInAs("erin")).await, "email_required");

    // Each link and each account is announced, with how the account was made.
    let linked = s.shop.count("SELECT COUNT(*) FROM event_outbox WHERE event_type = 'user.identity_linked'").await;
    assert_eq!(linked, 2, "bob's link and carol's second provider");
    let by_provider = s
        .shop
        .count(
            "SELECT COUNT(*) FROM event_outbox WHERE event_type = 'user.registered'
             AND CAST(envelope AS TEXT) LIKE '%signed_up_with%certified%'",
        )
        .await;
    assert_eq!(by_provider, 1, "carol signed up with the provider");
}

async fn unlinking_always_leaves_a_way_to_sign_in(db: TestDatabase) {
    let Some(s) = start(db).await else { return };
    let carol = s.session("certified", Consent::SignInAs("carol")).await;
    s.fakes.sign_in_as(Some(Account::new("2001", Some(("carol@example.com", true)))));
    s.session("github", Consent::SignInAs("")).await;
    let access = token(&carol);
    let unlink = |access: &str, provider: &'static str| {
        let access = access.to_owned();
        let gateway = s.shop.gateway.clone();
        async move { gateway.delete(&format!("/api/v1/users/me/identities/{provider}")).bearer(&access).send().await }
    };
    assert_eq!(unlink(&access, "github").await.status, 204);
    unlink(&access, "github").await.problem(404);
    // The last identity of an account without a password stays.
    let last = unlink(&access, "certified").await.problem(409);
    assert!(last["detail"].as_str().unwrap().contains("last way to sign in"), "{last}");
    // An account made by a provider sets its first password without a current one, but only
    // from a fresh sign-in: an older session's token may have been stolen.
    let db = s.shop.db().await;
    let long_ago = chrono::Utc::now() - chrono::Duration::minutes(11);
    platform::with_db!(&db, |pool| sqlx::query("UPDATE sessions SET created_at = $1")
        .bind(long_ago)
        .execute(pool)
        .await
        .map(drop))
    .unwrap();
    db.close().await;
    let set_password = |access: String| {
        let gateway = s.shop.gateway.clone();
        async move { gateway.patch("/api/v1/users/me").bearer(&access).json(&json!({"password": PASSWORD})).send().await }
    };
    set_password(access.clone()).await.problem(403);
    let fresh = s.session("certified", Consent::SignInAs("carol")).await;
    let set = set_password(token(&fresh)).await;
    assert_eq!(set.status, 200, "{}", String::from_utf8_lossy(&set.body));
    // A new password ends every other session, the old one's tokens included.
    let ended = testkit::eventually(std::time::Duration::from_secs(5), || {
        let (gateway, access) = (s.shop.gateway.clone(), access.clone());
        async move { gateway.get("/api/v1/users/me").bearer(&access).send().await.status == 401 }
    })
    .await;
    assert!(ended, "the older session's token is refused");
    assert_eq!(unlink(&token(&fresh), "certified").await.status, 204);
    assert_eq!(s.shop.login("carol@example.com", PASSWORD).await.status, 200);
    assert!(s.identities(&token(&fresh)).await.is_empty());
}

async fn forged_misdirected_and_replayed_answers_are_refused(db: TestDatabase) {
    let Some(s) = start(db).await else { return };
    let gateway = &s.shop.gateway;
    // Only configured redirects, only configured providers.
    let elsewhere =
        gateway.get("/api/v1/auth/oauth/certified/authorize?redirect_uri=https://evil.example/steal").send().await;
    assert_eq!(elsewhere.problem(422)["errors"][0]["field"], "redirect_uri");
    let prefix = format!("/api/v1/auth/oauth/certified/authorize?redirect_uri={REDIRECT}/more");
    gateway.get(&prefix).send().await.problem(422);
    gateway.get(&format!("/api/v1/auth/oauth/nobody/authorize?redirect_uri={REDIRECT}")).send().await.problem(404);
    // A provider that cannot be reached: a prompt 503, not a hang.
    let started = std::time::Instant::now();
    gateway.get(&format!("/api/v1/auth/oauth/unreachable/authorize?redirect_uri={REDIRECT}")).send().await.problem(503);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());

    // A person who declines comes back with the provider's answer, not a 500.
    assert_eq!(s.error_of("certified", Consent::Decline).await, "access_denied");

    // Forged or misdirected ID tokens: each refused, and no account made.
    s.fakes.sign_in_as(Some(Account::new("mallory", Some(("mallory@example.com", true)))));
    for forged in [
        IdToken::Unsigned,
        IdToken::HmacWithPublicKey,
        IdToken::OtherKey,
        IdToken::Expired,
        IdToken::OtherAudience,
        IdToken::WrongNonce,
        IdToken::OtherIssuer,
        IdToken::SeveralAudiences,
        IdToken::OtherParty,
        IdToken::FromTheFuture,
    ] {
        s.fakes.next_id_token(forged);
        assert_eq!(s.error_of("forged", Consent::SignInAs("")).await, "invalid_grant", "{forged:?}");
    }
    s.fakes.next_id_token(IdToken::Good);
    let mallory = s.session("forged", Consent::SignInAs("")).await;
    assert_eq!(s.me(&token(&mallory)).await["email"], "mallory@example.com", "the good token signs in");
    let made: i64 = s.shop.count("SELECT COUNT(*) FROM users WHERE email_normalized = 'mallory@example.com'").await;
    assert_eq!(made, 1, "the forged ones made nothing");

    // An answer that names another issuer (RFC 9207) is refused.
    let browser = Browser::new();
    let started = browser.get(&s.authorize_url("certified")).await;
    let callback = s.oidc.walk(&browser, started.header("location").unwrap(), Consent::SignInAs("zed")).await;
    let issuer = form_urlencoded::byte_serialize(s.oidc.issuer().as_bytes()).collect::<String>();
    assert!(callback.contains(&format!("iss={issuer}")), "the certified provider names itself: {callback}");
    let elsewhere = callback.replace(&format!("iss={issuer}"), "iss=https%3A%2F%2Fevil.example");
    let answer = browser.get(&elsewhere).await;
    assert_eq!(query_param(answer.header("location").unwrap(), "error").as_deref(), Some("invalid_grant"));

    // A sign-in finishes only in the browser that began it: a victim who is sent someone
    // else's sign-in (to be signed in as them, or to link their provider to their account)
    // arrives without its cookie.
    let attacker = Browser::new();
    let started = attacker.get(&s.authorize_url("certified")).await;
    let callback = s.oidc.walk(&attacker, started.header("location").unwrap(), Consent::SignInAs("zed")).await;
    let elsewhere = Browser::new().get(&callback).await.problem(400);
    assert!(elsewhere["detail"].as_str().unwrap().contains("another browser"), "{elsewhere}");
    let bound = started.header("set-cookie").unwrap();
    assert!(bound.contains("HttpOnly") && bound.contains("SameSite=Lax"), "{bound}");

    // A callback works once: its state is spent.
    let browser = Browser::new();
    let started = browser.get(&s.authorize_url("certified")).await;
    let callback = s.oidc.walk(&browser, started.header("location").unwrap(), Consent::SignInAs("zed")).await;
    assert_eq!(browser.get(&callback).await.status, 302);
    browser.get(&callback).await.problem(400);
    // A state that was never issued, or none.
    let path = callback.trim_start_matches(&s.gateway).to_owned();
    let tampered = path.replace("state=", "state=x");
    gateway.get(&tampered).send().await.problem(400);
    gateway.get("/api/v1/auth/oauth/certified/callback?code=abc").send().await.problem(400);
    // A state issued for another provider does not complete this one.
    let started = browser.get(&s.authorize_url("github")).await;
    let state = query_param(started.header("location").unwrap(), "state").unwrap();
    gateway.get(&format!("/api/v1/auth/oauth/certified/callback?code=abc&state={state}")).send().await.problem(400);

    // Guessing states and codes is throttled per address, as failed logins are.
    let mut throttled = None;
    for attempt in 0..60 {
        let answer =
            gateway.post("/api/v1/auth/oauth/exchange").json(&json!({"code": format!("guess-{attempt}")})).send().await;
        if answer.status == 429 {
            throttled = Some(attempt);
            break;
        }
        answer.problem(401);
    }
    let throttled = throttled.expect("guessing is throttled");
    assert!(throttled >= 40, "after {throttled} guesses (some were spent above)");
}

async fn github_and_facebook_sign_in_as_they_document(db: TestDatabase) {
    let Some(s) = start(db).await else { return };
    // GitHub: the verified primary email is vouched for.
    s.fakes.sign_in_as(Some(Account::new("3001", Some(("gina@example.com", true)))));
    let gina = s.session("github", Consent::SignInAs("")).await;
    let me = s.me(&token(&gina)).await;
    assert_eq!((me["email"].as_str(), me["email_verified"].as_bool()), (Some("gina@example.com"), Some(true)));
    assert_eq!(me["name"], "Test 3001");
    // An unverified primary email is not vouched for: it makes no account.
    s.fakes.sign_in_as(Some(Account::new("3002", Some(("hank@example.com", false)))));
    assert_eq!(s.error_of("github", Consent::SignInAs("")).await, "email_unverified");
    // Nor does the public profile email, when the emails are not to be read.
    let mut ivy = Account::new("3003", Some(("ivy-private@example.com", true)));
    ivy.hide_emails = true;
    ivy.public_email = Some("ivy@example.com".to_owned());
    s.fakes.sign_in_as(Some(ivy));
    assert_eq!(s.error_of("github", Consent::SignInAs("")).await, "email_unverified");
    let made = s
        .shop
        .count("SELECT COUNT(*) FROM users WHERE email_normalized IN ('hank@example.com', 'ivy@example.com')")
        .await;
    assert_eq!(made, 0);
    // No email at all.
    s.fakes.sign_in_as(Some(Account::new("3004", None)));
    assert_eq!(s.error_of("github", Consent::SignInAs("")).await, "email_required");
    // Declined.
    s.fakes.sign_in_as(None);
    assert_eq!(s.error_of("github", Consent::SignInAs("")).await, "access_denied");

    // Facebook says nothing of verification: its email is taken only where the operator chose
    // to trust it.
    s.fakes.sign_in_as(Some(Account::new("fb-1", Some(("jo@example.com", true)))));
    assert_eq!(s.error_of("facebook", Consent::SignInAs("")).await, "email_unverified");
    let jo = s.session("facebook-trusted", Consent::SignInAs("")).await;
    let me = s.me(&token(&jo)).await;
    assert_eq!((me["email"].as_str(), me["email_verified"].as_bool()), (Some("jo@example.com"), Some(true)));
    // Signing in again finds the same account by its Facebook id.
    let again = s.session("facebook-trusted", Consent::SignInAs("")).await;
    assert_eq!(s.me(&token(&again)).await["id"], me["id"]);
    s.fakes.sign_in_as(Some(Account::new("fb-2", None)));
    assert_eq!(s.error_of("facebook-trusted", Consent::SignInAs("")).await, "email_required");

    // A code the provider will not take: refused at the token endpoint.
    let browser = Browser::new();
    let started = browser.get(&s.authorize_url("facebook")).await;
    let state = query_param(started.header("location").unwrap(), "state").unwrap();
    let answer =
        browser.get(&format!("{}/api/v1/auth/oauth/facebook/callback?code=made-up&state={state}", s.gateway)).await;
    assert_eq!(answer.status, 302);
    assert_eq!(query_param(answer.header("location").unwrap(), "error").as_deref(), Some("invalid_grant"));
}
