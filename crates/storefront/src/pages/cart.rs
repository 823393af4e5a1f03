//! The cart: a guest's (its id kept in the session) or the signed-in shopper's (`me`), shown
//! with what the API says about each line, and changed by forms that work with or without HTMX.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{Method, StatusCode},
    response::Response,
};
use serde::Deserialize;

use super::{
    AsUser, CsrfForm, PageForm, as_user, as_user_failed, check_csrf, encode_segment, failure_page, layout, local_path,
    page, see_other,
};
use crate::{
    App,
    api::{Call, Cart, CartItem, Failure},
    session::Visit,
    views::{AddedFragment, CartLine, CartPage},
};

/// Reads the shopper's cart; `None` when a guest has none yet (or it expired).
pub async fn load(app: &App, visit: &mut Visit) -> Result<Option<Cart>, AsUser> {
    let cart = if visit.session.user.is_some() {
        Some(as_user::<Cart>(app, visit, |t| Call::get("/api/v1/carts/me").token(t)).await?)
    } else if let Some(id) = visit.session.cart.clone() {
        match app.api.call::<Cart>(&visit.forward, Call::get(format!("/api/v1/carts/{id}"))).await {
            Ok(cart) => Some(cart),
            Err(failure) if failure.status() == Some(StatusCode::NOT_FOUND) => {
                visit.session.cart = None;
                None
            }
            Err(failure) => return Err(failure.into()),
        }
    } else {
        None
    };
    visit.session.cart_count = cart.as_ref().map_or(0, |c| c.item_count);
    Ok(cart)
}

/// Sends a change to the shopper's cart, making a guest cart first when there is none.
async fn change(
    app: &App,
    visit: &mut Visit,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Cart, AsUser> {
    // Only an add makes a cart: a line set or removed in an expired one is not there any more.
    let may_create = method == Method::POST;
    let call = |path: String| Call::new(method.clone(), path).json(body.clone());
    if visit.session.user.is_some() {
        let path = format!("/api/v1/carts/me{path}");
        return as_user(app, visit, |t| call(path.clone()).token(t)).await;
    }
    for _ in 0..2 {
        let id = match &visit.session.cart {
            Some(id) => id.clone(),
            None if !may_create => return Err(AsUser::Api(Failure::Unavailable("the guest cart expired".into()))),
            None => {
                let created: Cart =
                    app.api.call(&visit.forward, Call::post("/api/v1/carts", serde_json::json!({}))).await?;
                let id = created.id.to_string();
                visit.session.cart = Some(id.clone());
                id
            }
        };
        match app.api.call::<Cart>(&visit.forward, call(format!("/api/v1/carts/{id}{path}"))).await {
            // The guest cart expired: start a new one.
            Err(failure) if failure.status() == Some(StatusCode::NOT_FOUND) && failure.detail() == "no such cart" => {
                visit.session.cart = None;
            }
            other => return other.map_err(AsUser::Api),
        }
    }
    Err(AsUser::Api(Failure::Unavailable("the cart could not be made".into())))
}

pub async fn show(State(app): State<Arc<App>>, mut visit: Visit) -> Response {
    let cart = match load(&app, &mut visit).await {
        Ok(cart) => cart,
        Err(failure) => return as_user_failed(&app, visit, failure, "/cart"),
    };
    let (lines, subtotal, item_count, can_check_out) = match &cart {
        Some(cart) => {
            let lines: Vec<CartLine> = cart.items.iter().map(line).collect();
            let ok = !cart.items.is_empty()
                && cart.items.iter().all(|i| i.unit_price.is_some() && i.available >= i.quantity);
            (lines, cart.subtotal.for_reading(), cart.item_count, ok)
        }
        None => (Vec::new(), String::new(), 0, false),
    };
    let notice = visit.take_flash();
    let layout = layout(&app, &mut visit, "Your cart", None);
    page(visit, StatusCode::OK, CartPage { layout, notice, lines, subtotal, item_count, can_check_out })
}

/// A cart line as a shopper reads it, with what they should know about it.
pub fn line(item: &CartItem) -> CartLine {
    let mut notices = Vec::new();
    match (&item.unit_price, item.available) {
        (None, _) | (_, 0) => notices.push("No longer available: remove it to check out.".to_owned()),
        (Some(_), available) if available < item.quantity => {
            notices.push(format!("Only {available} left: lower the quantity to check out."))
        }
        _ => {}
    }
    if item.stale
        && let Some(price) = item.unit_price
    {
        notices.push(format!("The price changed since you added it: now {} each.", price.for_reading()));
    }
    CartLine {
        sku: item.sku.clone(),
        title: item.title.clone(),
        href: item.product_id.as_ref().map(|id| format!("/p/{id}")),
        quantity: item.quantity,
        unit_price: item.unit_price.map(|p| p.for_reading()).unwrap_or_else(|| "—".into()),
        line_total: item.line_total.map(|p| p.for_reading()).unwrap_or_else(|| "—".into()),
        notices,
    }
}

#[derive(Deserialize)]
pub struct AddForm {
    csrf: Option<String>,
    sku: Option<String>,
    quantity: Option<String>,
    back: Option<String>,
}

pub async fn add(State(app): State<Arc<App>>, visit: Visit, PageForm(form): PageForm<AddForm>) -> Response {
    let mut visit = match check_csrf(&app, visit, form.csrf.as_deref()) {
        Ok(visit) => visit,
        Err(refused) => return *refused,
    };
    let back = local_path(form.back.as_deref());
    let quantity = form.quantity.as_deref().and_then(|q| q.trim().parse::<i64>().ok()).filter(|q| (1..=99).contains(q));
    let outcome = match (form.sku.filter(|s| !s.is_empty()), quantity) {
        (None, _) => Err("Choose a variant first.".to_owned()),
        (_, None) => Err("Choose a quantity from 1 to 99.".to_owned()),
        (Some(sku), Some(quantity)) => {
            let body = serde_json::json!({"sku": sku, "quantity": quantity});
            match change(&app, &mut visit, Method::POST, "/items", Some(body)).await {
                Ok(cart) => {
                    visit.session.cart_count = cart.item_count;
                    let title = cart.items.iter().find(|i| i.sku == sku).map(|i| i.title.clone()).unwrap_or(sku);
                    Ok(format!("Added {quantity} × {title} to your cart."))
                }
                Err(AsUser::SignedOut) => return super::sign_in_first(visit, &back),
                Err(AsUser::Api(failure)) => Err(refusal(&failure)),
            }
        }
    };
    let (message, error) = match outcome {
        Ok(message) => (message, false),
        Err(message) => (message, true),
    };
    if visit.htmx {
        let cart_count = visit.session.cart_count;
        return page(visit, StatusCode::OK, AddedFragment { message, error, cart_count });
    }
    visit.flash(error, message);
    see_other(visit, &back)
}

/// What a refused cart change means to the shopper.
fn refusal(failure: &Failure) -> String {
    match failure {
        Failure::Refused { status: StatusCode::CONFLICT, problem, .. } if problem.available.is_some() => {
            match problem.available.unwrap_or(0) {
                0 => "Sorry, this is sold out.".to_owned(),
                n => format!("Sorry, only {n} left in stock; {}", problem.detail.clone().unwrap_or_default()),
            }
        }
        Failure::Refused { status: StatusCode::NOT_FOUND, .. } => "This product is no longer for sale.".to_owned(),
        Failure::Refused { status, .. } if status.is_client_error() => failure.detail(),
        _ => "The cart could not be changed just now; try again in a moment.".to_owned(),
    }
}

#[derive(Deserialize)]
pub struct SetForm {
    csrf: Option<String>,
    quantity: Option<String>,
}

pub async fn set(
    State(app): State<Arc<App>>,
    visit: Visit,
    Path(sku): Path<String>,
    PageForm(form): PageForm<SetForm>,
) -> Response {
    let quantity = form.quantity.as_deref().and_then(|q| q.trim().parse::<i64>().ok()).filter(|q| (0..=99).contains(q));
    let change = quantity.map(|quantity| (Method::PUT, Some(serde_json::json!({"quantity": quantity}))));
    apply(app, visit, form.csrf, sku, change).await
}

pub async fn remove(
    State(app): State<Arc<App>>,
    visit: Visit,
    Path(sku): Path<String>,
    PageForm(form): PageForm<CsrfForm>,
) -> Response {
    apply(app, visit, form.csrf, sku, Some((Method::DELETE, None))).await
}

/// Sets or removes a line, then shows the cart (HTMX swaps its part of it in).
async fn apply(
    app: Arc<App>,
    visit: Visit,
    csrf: Option<String>,
    sku: String,
    change_to: Option<(Method, Option<serde_json::Value>)>,
) -> Response {
    let mut visit = match check_csrf(&app, visit, csrf.as_deref()) {
        Ok(visit) => visit,
        Err(refused) => return *refused,
    };
    let Some((method, body)) = change_to else {
        visit.flash(true, "Choose a quantity from 0 to 99.");
        return see_other(visit, "/cart");
    };
    if visit.session.user.is_none() && visit.session.cart.is_none() {
        return see_other(visit, "/cart");
    }
    let path = format!("/items/{}", encode_segment(&sku));
    match change(&app, &mut visit, method, &path, body).await {
        Ok(cart) => visit.session.cart_count = cart.item_count,
        Err(AsUser::SignedOut) => return super::sign_in_first(visit, "/cart"),
        Err(AsUser::Api(_)) if visit.session.user.is_none() && visit.session.cart.is_none() => {
            visit.flash(true, "Your cart expired: the shop keeps a guest's cart for 7 days.");
        }
        Err(AsUser::Api(failure)) if failure.status().is_some_and(|s| s.is_client_error()) => {
            let message = refusal(&failure);
            visit.flash(true, message);
        }
        Err(AsUser::Api(failure)) => return failure_page(&app, visit, &failure),
    }
    see_other(visit, "/cart")
}
