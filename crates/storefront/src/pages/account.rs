//! Signing in and out (with a password or a social provider), registering, and the account:
//! orders with their history, and cancelling one before it ships.

use std::sync::Arc;

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::Response,
};
use serde::Deserialize;

use super::{
    AsUser, CsrfForm, PageForm, as_user, as_user_failed, check_csrf, encode, error_page, failure_page, layout,
    local_path, page, query_value, see_other, sign_in_first, welcome,
};
use crate::{
    App,
    api::{Call, Cart, Failure, Order, OrdersPage, Provider, Tokens, User},
    session::Visit,
    views::{AccountPage, CartLine, FormState, Link, LoginPage, OrderPage, OrderRow, Step, status_words},
};

/// Where a social provider sends the shopper back (it must be on identity's allow-list:
/// `identity.social.redirect_uris`).
const SOCIAL_RETURN: &str = "/login/callback";

/// A button per configured social provider, each coming back to `next`.
pub async fn provider_links(app: &App, visit: &Visit, next: &str) -> Vec<Link> {
    // Configuration, not catalog: asked for once a minute (it counts against the auth budget).
    let path = "/api/v1/auth/providers".to_owned();
    let providers = app
        .api
        .public_for::<Vec<Provider>>(&visit.forward, path, std::time::Duration::from_secs(60))
        .await
        .unwrap_or_default();
    providers
        .iter()
        .map(|p| Link { href: format!("/login/with/{}?next={}", encode(&p.id), encode(next)), text: p.name.clone() })
        .collect()
}

pub async fn login_page(State(app): State<Arc<App>>, visit: Visit, RawQuery(query): RawQuery) -> Response {
    let next = local_path(query_value(query.as_deref(), "next").as_deref());
    if visit.session.user.is_some() {
        return see_other(visit, &next);
    }
    form_page(app, visit, false, next, FormState::default(), None, StatusCode::OK).await
}

pub async fn register_page(State(app): State<Arc<App>>, visit: Visit, RawQuery(query): RawQuery) -> Response {
    let next = local_path(query_value(query.as_deref(), "next").as_deref());
    if visit.session.user.is_some() {
        return see_other(visit, &next);
    }
    form_page(app, visit, true, next, FormState::default(), None, StatusCode::OK).await
}

async fn form_page(
    app: Arc<App>,
    mut visit: Visit,
    register: bool,
    next: String,
    form: FormState,
    problem: Option<String>,
    status: StatusCode,
) -> Response {
    let providers = provider_links(&app, &visit, &next).await;
    let title = if register { "Create an account" } else { "Sign in" };
    let layout = layout(&app, &mut visit, title, None);
    page(visit, status, LoginPage { layout, register, next, form, problem, providers })
}

#[derive(Deserialize)]
pub struct AccountForm {
    csrf: Option<String>,
    next: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

pub async fn login(State(app): State<Arc<App>>, visit: Visit, PageForm(sent): PageForm<AccountForm>) -> Response {
    let body = serde_json::json!({"email": sent.email, "password": sent.password});
    enter(app, visit, sent, false, Call::post("/api/v1/auth/login", body)).await
}

pub async fn register(State(app): State<Arc<App>>, visit: Visit, PageForm(sent): PageForm<AccountForm>) -> Response {
    let body = serde_json::json!({"email": sent.email, "password": sent.password, "name": sent.name});
    enter(app, visit, sent, true, Call::post("/api/v1/auth/register", body)).await
}

/// Signs in with what `call` answers, bringing the guest's cart along, then goes on to `next`.
async fn enter(app: Arc<App>, visit: Visit, sent: AccountForm, register: bool, call: Call) -> Response {
    let visit = match check_csrf(&app, visit, sent.csrf.as_deref()) {
        Ok(visit) => visit,
        Err(refused) => return *refused,
    };
    let next = local_path(sent.next.as_deref());
    let mut form = FormState::default();
    form.values.insert("email".into(), sent.email.clone());
    form.values.insert("name".into(), sent.name.clone());
    match app.api.call::<Tokens>(&visit.forward, call).await {
        Ok(tokens) => welcome(&app, visit, tokens, &next).await,
        Err(Failure::Refused { status, problem, .. }) if status.is_client_error() => {
            for error in &problem.errors {
                form.errors.insert(error.field.clone(), error.message.clone());
            }
            let message = match status {
                StatusCode::UNAUTHORIZED => "The email or password is incorrect.".to_owned(),
                StatusCode::CONFLICT => "An account with this email already exists: sign in instead.".to_owned(),
                StatusCode::TOO_MANY_REQUESTS => "Too many attempts: wait a few minutes, then try again.".to_owned(),
                StatusCode::UNPROCESSABLE_ENTITY => "Some details need a second look.".to_owned(),
                _ => problem.detail.clone().unwrap_or_else(|| "That did not work.".into()),
            };
            form_page(app, visit, register, next, form, Some(message), status).await
        }
        Err(failure) => failure_page(&app, visit, &failure),
    }
}

/// Moves the guest's cart into the user's (quantities add, API.md); the guest cart is then
/// retired. A cart that cannot be merged stays the guest's, and the shopper is told.
pub async fn merge_guest_cart(app: &App, visit: &mut Visit) {
    let Some(guest) = visit.session.cart.clone() else {
        if let Ok(Some(cart)) = super::cart::load(app, visit).await {
            visit.session.cart_count = cart.item_count;
        }
        return;
    };
    let body = serde_json::json!({"cart_id": guest});
    match as_user::<Cart>(app, visit, |t| Call::post("/api/v1/carts/me/merge", body.clone()).token(t)).await {
        Ok(cart) => {
            visit.session.cart = None;
            visit.session.cart_count = cart.item_count;
        }
        // Already merged, or expired: nothing to bring.
        Err(AsUser::Api(failure)) if failure.status() == Some(StatusCode::NOT_FOUND) => visit.session.cart = None,
        Err(AsUser::Api(failure)) => {
            // Kept, to be merged at the next sign-in; the account's cart is the one shown.
            tracing::warn!(error = %failure.detail(), "a guest cart was not merged at sign-in");
            visit.flash(true, "The cart you filled before signing in could not be added to your account's cart.");
        }
        Err(AsUser::SignedOut) => {}
    }
}

/// Ends the session at identity too, so its refresh token is spent everywhere.
pub async fn logout(State(app): State<Arc<App>>, visit: Visit, PageForm(sent): PageForm<CsrfForm>) -> Response {
    let mut visit = match check_csrf(&app, visit, sent.csrf.as_deref()) {
        Ok(visit) => visit,
        Err(refused) => return *refused,
    };
    if let Some(user) = &visit.session.user {
        let call = Call::post("/api/v1/auth/logout", serde_json::json!({"refresh_token": user.refresh_token}));
        if let Err(failure) = app.api.act(&visit.forward, call).await {
            tracing::warn!(error = %failure.detail(), "logout was not recorded at identity");
        }
    }
    visit.sign_out();
    visit.flash(false, "You are signed out.");
    see_other(visit, "/")
}

/// Off to the provider, through identity (which keeps the flow's state and PKCE secret).
pub async fn social_start(
    State(app): State<Arc<App>>,
    mut visit: Visit,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if provider.is_empty()
        || provider.len() > 64
        || !provider.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return super::errors::not_found_page(&app, visit);
    }
    visit.session.next = Some(local_path(query_value(query.as_deref(), "next").as_deref()));
    let redirect_uri = format!("{}{SOCIAL_RETURN}", visit.origin);
    // A one-time value comes back as `state`: a return that did not start in this browser is
    // refused. Not the CSRF token, which would then travel in URLs.
    let state = crate::session::new_token();
    visit.session.oauth_state = Some(state.clone());
    let to = format!(
        "/api/v1/auth/oauth/{provider}/authorize?redirect_uri={}&state={}",
        encode(&redirect_uri),
        encode(&state)
    );
    see_other(visit, &to)
}

/// Back from the provider with a one-time code, exchanged for tokens.
pub async fn social_return(State(app): State<Arc<App>>, mut visit: Visit, RawQuery(query): RawQuery) -> Response {
    let sent = query_value(query.as_deref(), "state").unwrap_or_default();
    let expected = visit.session.oauth_state.take().unwrap_or_default();
    if expected.is_empty() || !crate::session::same_secret(&expected, &sent) {
        tracing::info!("a social sign-in came back that did not start in this browser");
        let message = "Start again from the sign-in page.";
        return error_page(&app, visit, StatusCode::FORBIDDEN, "This sign-in did not start here", message);
    }
    let next = local_path(visit.session.next.take().as_deref());
    let code = query_value(query.as_deref(), "code").filter(|c| !c.is_empty() && c.len() <= 128);
    let Some(code) = code else {
        let message = match query_value(query.as_deref(), "error").as_deref() {
            Some("access_denied") => "Sign-in was cancelled.",
            Some("account_exists") => "An account with this email exists: sign in with your password, then link it.",
            Some("email_unverified") | Some("email_required") => "The provider did not confirm your email address.",
            _ => "Sign-in with that provider did not work; try again or use your password.",
        };
        return form_page(app, visit, false, next, FormState::default(), Some(message.into()), StatusCode::OK).await;
    };
    let call = Call::post("/api/v1/auth/oauth/exchange", serde_json::json!({"code": code}));
    match app.api.call::<Tokens>(&visit.forward, call).await {
        Ok(tokens) => welcome(&app, visit, tokens, &next).await,
        Err(failure) if failure.status().is_some_and(|s| s.is_client_error()) => {
            let message = "That sign-in link has expired; try again.".to_owned();
            form_page(app, visit, false, next, FormState::default(), Some(message), StatusCode::OK).await
        }
        Err(failure) => failure_page(&app, visit, &failure),
    }
}

pub async fn show(State(app): State<Arc<App>>, mut visit: Visit, RawQuery(query): RawQuery) -> Response {
    if visit.session.user.is_none() {
        return sign_in_first(visit, "/account");
    }
    let cursor = query_value(query.as_deref(), "cursor").filter(|c| c.len() <= 200);
    let path = match &cursor {
        Some(cursor) => format!("/api/v1/orders?limit=20&cursor={}", encode(cursor)),
        None => "/api/v1/orders?limit=20".to_owned(),
    };
    let me = as_user::<User>(&app, &mut visit, |t| Call::get("/api/v1/users/me").token(t)).await;
    let orders = match me {
        Ok(me) => as_user::<OrdersPage>(&app, &mut visit, |t| Call::get(path.clone()).token(t)).await.map(|o| (me, o)),
        Err(failure) => Err(failure),
    };
    let (me, orders) = match orders {
        Ok(found) => found,
        Err(AsUser::Api(failure)) if failure.status() == Some(StatusCode::UNPROCESSABLE_ENTITY) => {
            return see_other(visit, "/account");
        }
        Err(failure) => return as_user_failed(&app, visit, failure, "/account"),
    };
    let rows = orders
        .items
        .iter()
        .map(|o| OrderRow {
            href: format!("/orders/{}", o.id),
            number: o.number.clone(),
            date: o.created_at.format("%e %b %Y").to_string(),
            status: status_words(&o.status).to_owned(),
            total: o.total.for_reading(),
        })
        .collect();
    let more = orders.next_cursor.map(|c| format!("/account?cursor={}", encode(&c)));
    let layout = layout(&app, &mut visit, "Your account", None);
    page(visit, StatusCode::OK, AccountPage { layout, name: me.name, email: me.email, orders: rows, more })
}

pub async fn order(
    State(app): State<Arc<App>>,
    mut visit: Visit,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let here = format!("/orders/{id}");
    if uuid::Uuid::parse_str(&id).is_err() {
        return super::errors::not_found_page(&app, visit);
    }
    if visit.session.user.is_none() {
        return sign_in_first(visit, &here);
    }
    let order = match as_user::<Order>(&app, &mut visit, |t| Call::get(format!("/api/v1/orders/{id}")).token(t)).await {
        Ok(order) => order,
        Err(failure) => return as_user_failed(&app, visit, failure, &here),
    };
    let placed = query_value(query.as_deref(), "placed").is_some() && order.status == "paid";
    let layout = layout(&app, &mut visit, format!("Order {}", order.number), None);
    page(visit, StatusCode::OK, order_page(layout, order, placed))
}

fn order_page(layout: crate::views::Layout, order: Order, placed: bool) -> OrderPage {
    let a = &order.shipping_address;
    let mut address = vec![a.name.clone(), a.line1.clone()];
    address.extend(a.line2.clone());
    address.push(format!("{} {}", a.postal_code, a.city));
    address.push(a.country.clone());
    let payment = match (order.payment.status.as_str(), &order.payment.reference) {
        ("succeeded", Some(reference)) => format!("Paid (reference {reference})"),
        ("refunded", _) => "Refunded".to_owned(),
        ("failed", _) => format!("Declined: {}", order.payment.decline_reason()),
        ("pending", _) => "Waiting for the payment".to_owned(),
        (other, _) => other.to_owned(),
    };
    let tracking = match (&order.fulfilment.carrier, &order.fulfilment.tracking_number) {
        (Some(carrier), Some(number)) => Some(format!("{carrier} {number}")),
        (None, Some(number)) => Some(number.clone()),
        _ => None,
    };
    OrderPage {
        layout,
        id: order.id.to_string(),
        number: order.number.clone(),
        placed,
        status: status_words(&order.status).to_owned(),
        lines: order
            .lines
            .iter()
            .map(|l| CartLine {
                sku: l.sku.clone(),
                title: l.title.clone(),
                href: l.product_id.as_ref().map(|id| format!("/p/{id}")),
                quantity: l.quantity,
                unit_price: l.unit_price.for_reading(),
                line_total: l.line_total.for_reading(),
                notices: Vec::new(),
            })
            .collect(),
        subtotal: order.subtotal.for_reading(),
        shipping: order.shipping.for_reading(),
        tax: order.tax.for_reading(),
        total: order.total.for_reading(),
        address,
        payment,
        tracking,
        history: order
            .history
            .iter()
            .map(|h| Step {
                status: status_words(&h.status).to_owned(),
                at: h.at.format("%e %b %Y, %H:%M UTC").to_string(),
                datetime: h.at.to_rfc3339(),
            })
            .collect(),
        // Only a paid order that has not shipped can be cancelled (API.md).
        can_cancel: order.status == "paid",
    }
}

pub async fn cancel(
    State(app): State<Arc<App>>,
    visit: Visit,
    Path(id): Path<String>,
    PageForm(sent): PageForm<CsrfForm>,
) -> Response {
    let mut visit = match check_csrf(&app, visit, sent.csrf.as_deref()) {
        Ok(visit) => visit,
        Err(refused) => return *refused,
    };
    let here = format!("/orders/{id}");
    if uuid::Uuid::parse_str(&id).is_err() {
        return super::errors::not_found_page(&app, visit);
    }
    let path = format!("/api/v1/orders/{id}/cancel");
    let cancelled =
        as_user::<Order>(&app, &mut visit, |t| Call::post(path.clone(), serde_json::json!({})).token(t)).await;
    match cancelled {
        Ok(_) => visit.flash(false, "Your order is cancelled; the payment is being refunded."),
        Err(AsUser::Api(failure)) if failure.status() == Some(StatusCode::CONFLICT) => {
            visit.flash(true, "This order can no longer be cancelled: it has shipped or changed meanwhile.")
        }
        Err(failure) => return as_user_failed(&app, visit, failure, &here),
    }
    see_other(visit, &here)
}
