//! The storefront, through the gateway: its pages and forms over HTTP on both backends, and a
//! shopper's paths in a real browser (Debian's chromium, driven by Playwright for Python; every
//! page checked with axe-core and photographed). `.ci/run` installs Playwright into a virtual
//! environment and axe-core from npm, and names them in `EMPORIUM_TEST_PLAYWRIGHT_PYTHON` and
//! `EMPORIUM_TEST_AXE`.

use std::{path::PathBuf, time::Duration};

use identity::config::{ProviderConfig, ProviderKind};
use serde_json::json;
use testkit::{
    Browser, TestDatabase, TestResponse, free_port,
    oidc::{Consent, OidcProvider},
    on_both_backends,
};

use crate::{
    common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestShop},
    social::{CLIENT_ID, CLIENT_SECRET, provider},
};

async fn demo_shop(db: TestDatabase) -> TestShop {
    TestShop::start_with(db, |settings| settings.catalog.demo_catalog = Some(true)).await
}

/// A demo shop whose sign-in page offers a certified OpenID provider (`oidc-provider`, run
/// here), with the storefront's return address on identity's allow-list; `None` when the
/// provider is not installed (the test has said so).
async fn shop_with_social_sign_in(db: TestDatabase) -> Option<(TestShop, OidcProvider)> {
    let port = free_port();
    let gateway = format!("http://127.0.0.1:{port}");
    let accounts = json!({"grace": {"email": "grace@example.com", "email_verified": true, "name": "Grace Hopper"}});
    let clients = json!([{
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [format!("{gateway}/api/v1/auth/oauth/certified/callback")],
    }]);
    let oidc = OidcProvider::start(clients, accounts).await?;
    let issuer = oidc.issuer().to_owned();
    let shop = TestShop::start_with(db, move |settings| {
        settings.catalog.demo_catalog = Some(true);
        settings.gateway.listen = format!("127.0.0.1:{port}").parse().unwrap();
        let social = &mut settings.identity.social;
        social.public_url = gateway.clone();
        social.redirect_uris = vec![format!("{gateway}/login/callback")];
        social.providers.insert(
            "certified".into(),
            ProviderConfig { issuer: Some(issuer), name: Some("Certified ID".into()), ..provider(ProviderKind::Oidc) },
        );
    })
    .await;
    Some((shop, oidc))
}

fn html(response: &TestResponse) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

/// The value of `name="csrf"` in a page's first form.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("the page has a form") + "name=\"csrf\" value=\"".len();
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

/// The first `href` starting with `prefix` (written as the page escapes it: `&#38;`).
fn link(page: &str, prefix: &str) -> String {
    let needle = format!("href=\"{}", prefix.replace('&', "&#38;"));
    let at = page.find(&needle).unwrap_or_else(|| panic!("a link to {prefix}…")) + "href=\"".len();
    page[at..at + page[at..].find('"').unwrap()].replace("&#38;", "&")
}

on_both_backends!(pages_render_from_the_public_api, forms_need_the_session_and_carts_follow_the_shopper);

async fn pages_render_from_the_public_api(db: TestDatabase) {
    let shop = demo_shop(db).await;
    let base = shop.gateway.base().to_owned();
    let browser = Browser::new();

    let home = browser.get(&format!("{base}/")).await;
    assert_eq!(home.status, 200);
    assert!(home.header("content-type").unwrap().starts_with("text/html"));
    let cookie = home.header("set-cookie").expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && !cookie.contains("Secure"), "{cookie}");
    assert_eq!(home.header("cache-control"), Some("private, no-store"));
    let policy = home.header("content-security-policy").expect("a content security policy");
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    let page = html(&home);
    assert!(page.contains("<main id=\"main\"") && page.contains("href=\"/c/"), "categories are listed");

    // A typo still finds running shoes; the listing has facets and stays small.
    let listing = browser.get(&format!("{base}/search?q=runing")).await;
    assert_eq!(listing.status, 200);
    let page = html(&listing);
    assert!(page.contains("facet-brand") && page.contains("facet-price") && page.contains("Availability"));
    assert!(!page.contains(">0 products<"), "the typo is forgiven");
    let css = link(&page, "/static/style.");
    let at = page.find("src=\"/static/htmx.").expect("the script") + "src=\"".len();
    let js = page[at..at + page[at..].find('"').unwrap()].to_owned();
    let mut weight = listing.body.len();
    for asset in [&css, &js] {
        let answer = browser.get_with(&format!("{base}{asset}"), &[("accept-encoding", "gzip")]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("cache-control"), Some("public, max-age=31536000, immutable"));
        weight += answer.body.len();
    }
    assert!(weight < 60 * 1024, "a listing page with its style and scripts weighs {weight} bytes");

    // A facet narrows: its link carries the filter, and the filter shows as removable.
    let brand = link(&page, "/search?q=runing&brand=");
    let narrowed = html(&browser.get(&format!("{base}{brand}")).await);
    assert!(narrowed.contains("aria-label=\"Filters in force\""));

    // A product page: variants with price and stock, JSON-LD, a canonical address.
    let product = link(&page, "/p/");
    let answer = browser.get(&format!("{base}{product}")).await;
    assert_eq!(answer.status, 200);
    let page = html(&answer);
    assert!(page.contains("application/ld+json") && page.contains("\"@type\":\"Product\""));
    assert!(page.contains(&format!("rel=\"canonical\" href=\"{base}{product}\"")), "canonical: {product}");
    assert!(page.contains("name=\"sku\""));

    let missing = browser.get(&format!("{base}/p/no-such-product")).await;
    assert_eq!(missing.status, 404);
    assert!(html(&missing).contains("Page not found"));

    let robots = html(&browser.get(&format!("{base}/robots.txt")).await);
    assert!(robots.contains(&format!("Sitemap: {base}/sitemap.xml")));
    let sitemap = browser.get(&format!("{base}/sitemap.xml")).await;
    assert!(sitemap.header("content-type").unwrap().starts_with("application/xml"));
    assert!(html(&sitemap).contains(&format!("<loc>{base}{product}</loc>")));
}

async fn forms_need_the_session_and_carts_follow_the_shopper(db: TestDatabase) {
    let shop = demo_shop(db).await;
    let base = shop.gateway.base().to_owned();
    let browser = Browser::new();
    let listing = html(&browser.get(&format!("{base}/search?q=runing&in_stock=true")).await);
    let product = link(&listing, "/p/");
    let page = html(&browser.get(&format!("{base}{product}")).await);
    let token = csrf(&page);
    // The variant the page offers first: one in stock.
    let chosen = page.find("\" checked").expect("a variant is chosen");
    let at = page[..chosen].rfind("value=\"").unwrap() + "value=\"".len();
    let sku = page[at..chosen].to_owned();

    // Without the session's token, a form changes nothing.
    let forged = Browser::new().post_form(&format!("{base}/cart/items"), &[("sku", &sku), ("quantity", "1")]).await;
    assert_eq!(forged.status, 403);
    let forged =
        browser.post_form(&format!("{base}/cart/items"), &[("sku", &sku), ("quantity", "1"), ("csrf", "x")]).await;
    assert_eq!(forged.status, 403);

    let added = browser
        .post_form(
            &format!("{base}/cart/items"),
            &[("sku", &sku), ("quantity", "2"), ("csrf", &token), ("back", &product)],
        )
        .await;
    assert_eq!(added.status, 303);
    assert_eq!(added.header("location"), Some(product.as_str()));
    let cart = html(&browser.get(&format!("{base}/cart")).await);
    assert!(cart.contains("value=\"2\"") && cart.contains("id=\"cart-count\">2<"), "{cart}");

    // Register: the guest cart becomes the user's.
    let email = format!("shopper-{}@example.com", uuid::Uuid::new_v4().simple());
    let registered = browser
        .post_form(
            &format!("{base}/register"),
            &[
                ("csrf", &token),
                ("name", "Ada"),
                ("email", &email),
                ("password", "a long enough password"),
                ("next", "/cart"),
            ],
        )
        .await;
    assert_eq!(registered.status, 303, "{}", html(&registered));
    let cart = html(&browser.get(&format!("{base}/cart")).await);
    assert!(cart.contains("value=\"2\"") && cart.contains(">Ada</a>"), "the user's cart holds the guest's lines");

    // Checkout: a form sent twice places one order.
    let checkout = html(&browser.get(&format!("{base}/checkout")).await);
    // Signing in gave the session a new token: the guest's no longer sends a form.
    let guest_token = token;
    let token = csrf(&checkout);
    assert_ne!(token, guest_token);
    let stale = browser.post_form(&format!("{base}/logout"), &[("csrf", &guest_token)]).await;
    assert_eq!(stale.status, 403);
    let key_at =
        checkout.find("name=\"idempotency_key\" value=\"").unwrap() + "name=\"idempotency_key\" value=\"".len();
    let key = checkout[key_at..key_at + 36].to_owned();
    let form = [
        ("csrf", token.as_str()),
        ("idempotency_key", key.as_str()),
        ("name", "Ada Lovelace"),
        ("line1", "1 Market Street"),
        ("line2", ""),
        ("city", "Berlin"),
        ("postal_code", "10115"),
        ("country", "DE"),
        ("payment_method", "pm_card_visa"),
    ];
    let placed = browser.post_form(&format!("{base}/checkout"), &form).await;
    assert_eq!(placed.status, 303, "{}", html(&placed));
    let order = placed.header("location").unwrap().to_owned();
    assert!(order.starts_with("/orders/") && order.ends_with("?placed=1"));
    let again = browser.post_form(&format!("{base}/checkout"), &form).await;
    assert_eq!(again.header("location"), Some(order.as_str()), "the same order, replayed");
    let page = html(&browser.get(&format!("{base}{order}")).await);
    assert!(page.contains("Thank you!") && page.contains("Paid"));
    let account = html(&browser.get(&format!("{base}/account")).await);
    assert_eq!(account.matches("href=\"/orders/").count(), 1, "one order");

    // Cancelled before it ships: refunded, and the history says so.
    let order_page = order.trim_end_matches("?placed=1").to_owned();
    let cancelled = browser.post_form(&format!("{base}{order_page}/cancel"), &[("csrf", &token)]).await;
    assert_eq!(cancelled.status, 303);
    let page = html(&browser.get(&format!("{base}{order_page}")).await);
    assert!(
        page.contains("Your order is cancelled") && page.contains("<strong id=\"order-status\">Cancelled</strong>"),
        "{page}"
    );
    assert!(!page.contains("/cancel\""), "a cancelled order offers no cancel button");

    // Someone else's order is not found; signing out ends the session at identity.
    let stranger = Browser::new();
    let seen = stranger.get(&format!("{base}{order_page}")).await;
    assert_eq!(seen.status, 303, "a stranger is asked to sign in");
    let out = browser.post_form(&format!("{base}/logout"), &[("csrf", &token)]).await;
    assert_eq!(out.status, 303);
    let account = browser.get(&format!("{base}/account")).await;
    assert_eq!(account.status, 303);
    assert!(account.header("location").unwrap().starts_with("/login?next="));
}

/// A browser sends its cookie with every request it makes at once; when the access token in it
/// has expired, each would refresh it with the same refresh token, and the second use of a spent
/// refresh token ends the session (reuse detection). One refresh serves them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_loaded_at_once_refresh_the_session_once() {
    let shop = TestShop::start_with(TestDatabase::sqlite(), |settings| {
        settings.catalog.demo_catalog = Some(true);
        // Shorter than the storefront's margin: every page refreshes the session.
        settings.identity.access_token_ttl = Duration::from_secs(10);
    })
    .await;
    let base = shop.gateway.base().to_owned();
    let browser = Browser::new();
    let token = csrf(&html(&browser.get(&format!("{base}/register")).await));
    let email = format!("shopper-{}@example.com", uuid::Uuid::new_v4().simple());
    let form = [("csrf", token.as_str()), ("name", "Ada"), ("email", &email), ("password", "a long enough password")];
    assert_eq!(browser.post_form(&format!("{base}/register"), &form).await.status, 303);
    for round in 0..3 {
        let account = format!("{base}/account");
        let pages = futures_util::future::join_all((0..4).map(|_| browser.get(&account))).await;
        let statuses: Vec<u16> = pages.iter().map(|p| p.status.as_u16()).collect();
        assert_eq!(statuses, [200; 4], "round {round}: every page loaded at once is the signed-in account");
    }
    assert!(html(&browser.get(&format!("{base}/account")).await).contains(&email), "still signed in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_social_sign_in_returns_to_the_shop_signed_in() {
    let Some((shop, oidc)) = shop_with_social_sign_in(TestDatabase::sqlite()).await else { return };
    let base = shop.gateway.base().to_owned();
    let browser = Browser::new();
    let login = html(&browser.get(&format!("{base}/login?next=%2Fcart")).await);
    let button = link(&login, "/login/with/certified");
    assert!(login.contains(">Certified ID</a>"), "the provider's button");
    let to_identity = browser.get(&format!("{base}{button}")).await;
    assert_eq!(to_identity.status, 303);
    let authorize = to_identity.header("location").unwrap().to_owned();
    assert!(authorize.starts_with("/api/v1/auth/oauth/certified/authorize?redirect_uri="));
    let to_provider = browser.get(&format!("{base}{authorize}")).await;
    assert_eq!(to_provider.status, 302);
    let callback = oidc.walk(&browser, to_provider.header("location").unwrap(), Consent::SignInAs("grace")).await;
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 302, "identity's callback sends the browser back to the storefront");
    let back_to_shop = back.header("location").unwrap().to_owned();
    assert!(back_to_shop.starts_with(&format!("{base}/login/callback?code=")), "{back_to_shop}");
    let signed_in = browser.get(&back_to_shop).await;
    assert_eq!(signed_in.status, 303);
    assert_eq!(signed_in.header("location"), Some("/cart"), "back where the shopper was going");
    let account = html(&browser.get(&format!("{base}/account")).await);
    assert!(account.contains("grace@example.com"), "{account}");

    // A return that did not start in this browser is refused.
    let stranger = Browser::new().get(&back_to_shop).await;
    assert_eq!(stranger.status, 403);
}

fn playwright_python() -> PathBuf {
    std::env::var_os("EMPORIUM_TEST_PLAYWRIGHT_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/emporium/browser-venv/bin/python")
    })
}

fn axe() -> PathBuf {
    std::env::var_os("EMPORIUM_TEST_AXE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/emporium/axe/node_modules/axe-core/axe.min.js")
    })
}

/// Where screenshots are kept after the test (`EMPORIUM_TEST_SCREENSHOTS`, else the cargo
/// target directory).
fn screenshots() -> PathBuf {
    std::env::var_os("EMPORIUM_TEST_SCREENSHOTS").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| "target".into());
        target.join("storefront-screenshots")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shopper_shops_in_a_real_browser() {
    let python = playwright_python();
    let chromium = std::env::var("EMPORIUM_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let ready = testkit::runs(&python, &["-c", "import playwright"]).await
        && std::path::Path::new(&chromium).exists()
        && axe().exists();
    if !ready {
        testkit::skip_or_fail(&format!(
            "Playwright ({}), chromium ({chromium}) or axe-core ({}) is not installed",
            python.display(),
            axe().display()
        ));
        return;
    }
    let (shop, _oidc, social) = match shop_with_social_sign_in(TestDatabase::sqlite()).await {
        Some((shop, oidc)) => (shop, Some(oidc), "certified"),
        None => (demo_shop(TestDatabase::sqlite()).await, None, ""),
    };
    let dir = screenshots();
    std::fs::create_dir_all(&dir).expect("the screenshots directory");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/shop.py");
    let run = tokio::process::Command::new(&python)
        .arg(script)
        .arg(shop.gateway.base())
        .args(["--chromium", &chromium])
        .arg("--axe")
        .arg(axe())
        .arg("--screenshots")
        .arg(&dir)
        .args(["--admin", ADMIN_EMAIL, ADMIN_PASSWORD])
        .args(["--social", social])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the browser tests end within ten minutes")
        .expect("the browser tests run");
    println!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("screenshots are in {}", dir.display());
    assert!(output.status.success(), "a browser scenario failed (the report is above)");
}
