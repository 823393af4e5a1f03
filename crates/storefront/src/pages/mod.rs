//! The pages: one module per part of the shop. Every handler reads its session from the cookie
//! (`Visit`), calls the public API, and answers a page, a fragment for HTMX, or a redirect
//! (after a form: post, redirect, get).

mod account;
mod cart;
mod catalog;
mod checkout;
pub mod errors;
mod filters;
pub mod seo;

use std::sync::Arc;

use askama::Template;
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};

use crate::{
    App,
    api::{Call, Failure, Tokens},
    session::{SignedIn, Visit},
    views::{ErrorPage, Layout},
};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(catalog::home))
        .route("/search", get(catalog::search))
        .route("/search/suggest", get(catalog::suggest))
        .route("/c/{category}", get(catalog::category))
        .route("/p/{slug}", get(catalog::product))
        .route("/cart", get(cart::show))
        .route("/cart/items", post(cart::add))
        .route("/cart/items/{sku}", post(cart::set))
        .route("/cart/items/{sku}/remove", post(cart::remove))
        .route("/checkout", get(checkout::show).post(checkout::place))
        .route("/checkout/guest", post(checkout::guest))
        .route("/login", get(account::login_page).post(account::login))
        .route("/login/callback", get(account::social_return))
        .route("/login/with/{provider}", get(account::social_start))
        .route("/register", get(account::register_page).post(account::register))
        .route("/logout", post(account::logout))
        .route("/account", get(account::show))
        .route("/orders/{id}", get(account::order))
        .route("/orders/{id}/cancel", post(account::cancel))
        .route("/robots.txt", get(seo::robots))
        .route("/sitemap.xml", get(seo::sitemap))
        .route("/static/{file}", get(serve_static))
        .route("/openapi.json", get(crate::openapi::document))
        // Below the prefixes the gateway routes here, an address that is no page gets the 404 page.
        .route("/{*rest}", get(errors::not_found))
        .with_state(app)
}

async fn serve_static(State(app): State<Arc<App>>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    app.assets.serve(&file, &headers)
}

/// A form's fields; a body that is no form is answered with a page, not the framework's text.
pub struct PageForm<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for PageForm<T> {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match axum::Form::<T>::from_request(request, state).await {
            Ok(axum::Form(fields)) => Ok(Self(fields)),
            Err(rejection) => Err(errors::plain_page(rejection.status())),
        }
    }
}

/// A form that carries nothing but the session's CSRF token (a button).
#[derive(serde::Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

/// Keeps freshly issued tokens, brings the guest's cart into the account, and greets the
/// shopper on the page `next`.
pub async fn welcome(app: &App, mut visit: Visit, tokens: Tokens, next: &str) -> Response {
    let name = tokens.user.name.clone();
    sign_in(&mut visit, tokens);
    // A new token with the new rights: a form forged against the guest session does not send.
    visit.session.csrf = crate::session::new_token();
    account::merge_guest_cart(app, &mut visit).await;
    if visit.session.flash.is_none() {
        visit.flash(false, format!("Welcome, {name}."));
    }
    see_other(visit, next)
}

/// The frame of a page, taking the message left for it.
pub fn layout(app: &App, visit: &mut Visit, title: impl Into<String>, canonical: Option<String>) -> Layout {
    let title = title.into();
    Layout {
        shop: app.config.shop_name.clone(),
        description: format!("{title} at {}", app.config.shop_name),
        title,
        canonical,
        css: app.assets.style().to_owned(),
        htmx: app.assets.htmx().to_owned(),
        csrf: visit.session.csrf.clone(),
        user: visit.session.user.as_ref().map(|u| u.name.clone()),
        cart_count: visit.session.cart_count,
        flash: visit.take_flash(),
        q: String::new(),
    }
}

/// A rendered page with its session's cookie.
pub fn page(visit: Visit, status: StatusCode, page: impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, visit, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(error = %error, "a page did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, visit, Html(errors::PLAIN_500)).into_response()
        }
    }
}

/// After a form: see `to` (303, so a reload does not send the form again). HTMX follows it
/// in the background and swaps in what it finds.
pub fn see_other(visit: Visit, to: &str) -> Response {
    (visit, Redirect::to(to)).into_response()
}

/// A page for an API failure: 404 for what is not there, else "try again".
pub fn failure_page(app: &App, visit: Visit, failure: &Failure) -> Response {
    if let Failure::Unavailable(reason) = failure {
        tracing::warn!(reason = %reason, "the api gave no answer for a page");
    }
    let (status, heading, message) = match failure.status() {
        Some(StatusCode::NOT_FOUND) => {
            (StatusCode::NOT_FOUND, "Page not found", "There is nothing here. It may have moved or sold out for good.")
        }
        Some(StatusCode::TOO_MANY_REQUESTS) => (
            StatusCode::TOO_MANY_REQUESTS,
            "Slow down a little",
            "Too many requests came from you at once; wait a few seconds.",
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Something went wrong on our side",
            "The shop could not answer just now. Nothing you did was lost; try again in a moment.",
        ),
    };
    error_page(app, visit, status, heading, message)
}

/// A page saying what went wrong, in the shop's frame.
pub fn error_page(app: &App, mut visit: Visit, status: StatusCode, heading: &str, message: &str) -> Response {
    let layout = layout(app, &mut visit, heading, None);
    let error = ErrorPage { layout, status: status.as_u16(), heading: heading.into(), message: message.into() };
    page(visit, status, error)
}

/// A page for someone who must sign in first: the sign-in page, coming back to `next` after.
pub fn sign_in_first(visit: Visit, next: &str) -> Response {
    see_other(visit, &format!("/login?next={}", encode(next)))
}

/// `text` as a query value.
pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `text` as one segment of a path (a SKU, a slug).
pub fn encode_segment(text: &str) -> String {
    encode(text).replace('+', "%20")
}

/// The first value of `key` in a query string.
pub fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// Why an API call on the shopper's behalf gave no answer.
pub enum AsUser {
    /// Nobody is signed in, or the session ended (refresh refused): sign in again.
    SignedOut,
    Api(Failure),
}

impl From<Failure> for AsUser {
    fn from(failure: Failure) -> Self {
        Self::Api(failure)
    }
}

/// Calls the API as the signed-in shopper, refreshing their access token when it is about to
/// expire or is refused as expired, once.
pub async fn as_user<T: serde::de::DeserializeOwned>(
    app: &App,
    visit: &mut Visit,
    call: impl Fn(&str) -> Call,
) -> Result<T, AsUser> {
    let now = chrono::Utc::now().timestamp();
    let Some(user) = &visit.session.user else { return Err(AsUser::SignedOut) };
    if user.expires_at - 30 <= now {
        refresh(app, visit).await?;
    }
    let token = visit.session.user.as_ref().map(|u| u.access_token.clone()).ok_or(AsUser::SignedOut)?;
    match app.api.call(&visit.forward, call(&token)).await {
        Err(Failure::Refused { status: StatusCode::UNAUTHORIZED, .. }) => {
            refresh(app, visit).await?;
            let token = visit.session.user.as_ref().map(|u| u.access_token.clone()).ok_or(AsUser::SignedOut)?;
            app.api.call(&visit.forward, call(&token)).await.map_err(|failure| match failure.status() {
                Some(StatusCode::UNAUTHORIZED) => {
                    visit.session.user = None;
                    AsUser::SignedOut
                }
                _ => AsUser::Api(failure),
            })
        }
        other => other.map_err(AsUser::Api),
    }
}

/// Refreshes in this process, one at a time, and what each spent refresh token was exchanged
/// for in the last minute. A browser sends its cookie with every request it makes at once (a
/// page, a suggestion): the second to find the access token expired must get the first's new
/// tokens, for presenting the spent refresh token again would end the session (reuse detection).
#[derive(Default)]
pub struct Refreshes {
    one_at_a_time: tokio::sync::Mutex<()>,
    done: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Tokens)>>,
}

const REFRESH_REMEMBERED: std::time::Duration = std::time::Duration::from_secs(60);

async fn refresh(app: &App, visit: &mut Visit) -> Result<(), AsUser> {
    let Some(user) = &visit.session.user else { return Err(AsUser::SignedOut) };
    let spent = user.refresh_token.clone();
    let _turn = app.refreshes.one_at_a_time.lock().await;
    let remembered = {
        let mut done = app.refreshes.done.lock().unwrap_or_else(|e| e.into_inner());
        done.retain(|_, (at, _)| at.elapsed() < REFRESH_REMEMBERED);
        done.get(&spent).map(|(_, tokens)| tokens.clone())
    };
    if let Some(tokens) = remembered {
        sign_in(visit, tokens);
        return Ok(());
    }
    let call = Call::post("/api/v1/auth/refresh", serde_json::json!({"refresh_token": spent}));
    match app.api.call::<Tokens>(&visit.forward, call).await {
        Ok(tokens) => {
            let mut done = app.refreshes.done.lock().unwrap_or_else(|e| e.into_inner());
            done.insert(spent, (std::time::Instant::now(), tokens.clone()));
            drop(done);
            sign_in(visit, tokens);
            Ok(())
        }
        // Refused for good (spent, revoked, expired): the session is over. A 429 or 503 is not.
        Err(Failure::Refused { status: StatusCode::UNAUTHORIZED | StatusCode::UNPROCESSABLE_ENTITY, .. }) => {
            visit.session.user = None;
            visit.flash(true, "Your session ended; sign in again.");
            Err(AsUser::SignedOut)
        }
        Err(failure) => Err(AsUser::Api(failure)),
    }
}

/// Keeps freshly issued tokens in the session.
pub fn sign_in(visit: &mut Visit, tokens: Tokens) {
    visit.session.user = Some(SignedIn {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        expires_at: chrono::Utc::now().timestamp() + tokens.expires_in,
        name: tokens.user.name,
        email: tokens.user.email,
    });
}

/// Answers a call on the shopper's behalf that gave nothing usable.
pub fn as_user_failed(app: &App, visit: Visit, failure: AsUser, next: &str) -> Response {
    match failure {
        AsUser::SignedOut => sign_in_first(visit, next),
        AsUser::Api(failure) => failure_page(app, visit, &failure),
    }
}

/// A path on this shop to go to after a form, never another site (`//evil.example`).
pub fn local_path(next: Option<&str>) -> String {
    // Browsers drop tabs and line breaks from a URL and read `\` as `/`: `/\t/evil.example`
    // would be `//evil.example`, another site.
    let safe = |next: &str| {
        next.starts_with('/')
            && !next.starts_with("//")
            && next.len() < 512
            && next.bytes().all(|b| b > 0x20 && b != 0x7f && b != b'\\')
    };
    match next {
        Some(next) if safe(next) => next.to_owned(),
        _ => "/".to_owned(),
    }
}

/// A form carried the session's CSRF token; anything else is refused with 403 and a page.
pub fn check_csrf(app: &App, visit: Visit, token: Option<&str>) -> Result<Visit, Box<Response>> {
    if token.is_some_and(|token| visit.csrf_ok(token)) {
        return Ok(visit);
    }
    tracing::info!("a form came without this session's csrf token");
    let message = "Go back, reload the page and send it again.";
    Err(Box::new(error_page(app, visit, StatusCode::FORBIDDEN, "This form has expired", message)))
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_paths_of_this_shop_are_gone_to() {
        for fine in ["/", "/cart", "/p/a-shoe?sku=A-1", "/search?q=red%20shoe"] {
            assert_eq!(local_path(Some(fine)), fine);
        }
        for elsewhere in [
            "//evil.example",
            "/\t/evil.example",
            "/\\evil.example",
            "https://evil.example",
            "/a\nb",
            "/a b",
            "",
            "cart",
        ] {
            assert_eq!(local_path(Some(elsewhere)), "/", "{elsewhere:?}");
        }
        assert_eq!(local_path(None), "/");
    }
}
