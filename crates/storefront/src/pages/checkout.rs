//! Checkout: sign in, register or continue as a guest; then the shipping address and a payment
//! method, and one `POST /api/v1/orders` whose idempotency key the form carries, so a form sent
//! twice (a double click, a reload) places one order.

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, response::Response};
use serde::Deserialize;

use super::{
    AsUser, PageForm, account, as_user, as_user_failed, cart, check_csrf, failure_page, layout, page, see_other,
    sign_in, sign_in_first,
};
use crate::{
    App,
    api::{Address, Call, Failure, Order, Tokens},
    session::Visit,
    views::{CheckoutPage, FormState, PaymentOption},
};

/// The card processors' test vocabulary (API.md): what the sandbox and Stripe's test mode take.
const PAYMENTS: [(&str, &str); 4] = [
    ("pm_card_visa", "Visa test card (approved)"),
    ("pm_card_mastercard", "Mastercard test card (approved)"),
    ("pm_card_chargeDeclined", "Test card that is declined"),
    ("pm_card_chargeDeclinedInsufficientFunds", "Test card without funds"),
];

/// Where the shop ships: ISO 3166-1 codes the API takes.
const COUNTRIES: [(&str, &str); 12] = [
    ("AT", "Austria"),
    ("BE", "Belgium"),
    ("CH", "Switzerland"),
    ("DE", "Germany"),
    ("DK", "Denmark"),
    ("ES", "Spain"),
    ("FR", "France"),
    ("GB", "United Kingdom"),
    ("IT", "Italy"),
    ("NL", "Netherlands"),
    ("SE", "Sweden"),
    ("US", "United States"),
];

pub async fn show(State(app): State<Arc<App>>, mut visit: Visit) -> Response {
    let mut form = FormState::default();
    if let Some(user) = &visit.session.user {
        form.values.insert("name".into(), user.name.clone());
    }
    render(app, visit_with_cart(&mut visit), visit, Forms::Address(form), Vec::new()).await
}

/// Whether the session has anything that could be a cart (saves a call for empty sessions).
fn visit_with_cart(visit: &mut Visit) -> bool {
    visit.session.user.is_some() || visit.session.cart.is_some()
}

/// The checkout page for the cart as it is now, with `form` as sent and `problems` to show.
/// Which of the page's forms was sent, with what it held.
enum Forms {
    Address(FormState),
    Guest(FormState),
}

async fn render(app: Arc<App>, has_cart: bool, mut visit: Visit, sent: Forms, problems: Vec<String>) -> Response {
    let (form, guest) = match sent {
        Forms::Address(form) => (form, FormState::default()),
        Forms::Guest(guest) => (FormState::default(), guest),
    };
    let cart = if has_cart {
        match cart::load(&app, &mut visit).await {
            Ok(cart) => cart,
            Err(failure) => return as_user_failed(&app, visit, failure, "/checkout"),
        }
    } else {
        None
    };
    let Some(cart) = cart.filter(|c| !c.items.is_empty()) else {
        if problems.is_empty() {
            visit.flash(true, "Your cart is empty: add something first.");
        } else {
            visit.flash(true, problems.join(" "));
        }
        return see_other(visit, "/cart");
    };
    // A refusal names SKUs; the shopper knows the products by their titles.
    let problems: Vec<String> = problems
        .into_iter()
        .map(|problem| match cart.items.iter().find(|i| problem.starts_with(&format!("{}:", i.sku))) {
            Some(item) => format!("{} ({}){}", item.title, item.sku, &problem[item.sku.len()..]),
            None => problem,
        })
        .collect();
    let chosen = form.value("payment_method").to_owned();
    let payments = PAYMENTS
        .iter()
        .enumerate()
        .map(|(i, (value, label))| PaymentOption {
            value: (*value).to_owned(),
            label: (*label).to_owned(),
            checked: if chosen.is_empty() { i == 0 } else { chosen == *value },
        })
        .collect();
    let mut countries = vec![(String::new(), "Choose a country".to_owned())];
    countries.extend(COUNTRIES.iter().map(|(code, name)| ((*code).to_owned(), (*name).to_owned())));
    let providers = account::provider_links(&app, &visit, "/checkout").await;
    let page_data = CheckoutPage {
        signed_in: visit.session.user.is_some(),
        lines: cart.items.iter().map(cart::line).collect(),
        subtotal: cart.subtotal.for_reading(),
        form,
        guest,
        payments,
        countries,
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        problems,
        providers,
        layout: layout(&app, &mut visit, "Checkout", None),
    };
    page(visit, StatusCode::OK, page_data)
}

#[derive(Deserialize)]
pub struct CheckoutForm {
    csrf: Option<String>,
    idempotency_key: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    line1: String,
    #[serde(default)]
    line2: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    postal_code: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    payment_method: String,
}

pub async fn place(State(app): State<Arc<App>>, visit: Visit, PageForm(sent): PageForm<CheckoutForm>) -> Response {
    let mut visit = match check_csrf(&app, visit, sent.csrf.as_deref()) {
        Ok(visit) => visit,
        Err(refused) => return *refused,
    };
    if visit.session.user.is_none() {
        return sign_in_first(visit, "/checkout");
    }
    let mut form = FormState::default();
    for (field, value) in [
        ("name", &sent.name),
        ("line1", &sent.line1),
        ("line2", &sent.line2),
        ("city", &sent.city),
        ("postal_code", &sent.postal_code),
        ("country", &sent.country),
        ("payment_method", &sent.payment_method),
    ] {
        form.values.insert(field.to_owned(), value.clone());
    }
    // The key the form was rendered with: sending it again replays the first answer.
    let key = sent
        .idempotency_key
        .filter(|k| uuid::Uuid::parse_str(k).is_ok())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let address = Address {
        name: sent.name,
        line1: sent.line1,
        line2: Some(sent.line2).filter(|l| !l.trim().is_empty()),
        city: sent.city,
        postal_code: sent.postal_code,
        country: sent.country,
    };
    let body = serde_json::json!({
        "cart_id": "me",
        "shipping_address": address,
        "payment_method": sent.payment_method,
    });
    let mut placed = Err(AsUser::SignedOut);
    for attempt in 0..3 {
        if attempt > 0 {
            // The same key still being placed (a second click while the first goes through):
            // its answer comes within seconds, and the replay shows it.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        placed = as_user::<Order>(&app, &mut visit, |t| {
            Call::post("/api/v1/orders", body.clone()).token(t).idempotency_key(&key)
        })
        .await;
        let in_progress = matches!(&placed, Err(AsUser::Api(Failure::Refused { status: StatusCode::CONFLICT, problem, .. }))
            if problem.shortages.is_empty());
        if !in_progress {
            break;
        }
    }
    let problems = match placed {
        Ok(order) => {
            visit.session.cart_count = 0;
            return see_other(visit, &format!("/orders/{}?placed=1", order.id));
        }
        Err(AsUser::SignedOut) => return sign_in_first(visit, "/checkout"),
        Err(AsUser::Api(failure)) => match refusal(failure, &mut form) {
            Ok(problems) => problems,
            Err(failure) => return failure_page(&app, visit, &failure),
        },
    };
    render(app, true, visit, Forms::Address(form), problems).await
}

/// What a refused checkout means to the shopper (the cart stays as it was), or the failure
/// when it is not theirs to mend.
fn refusal(failure: Failure, form: &mut FormState) -> Result<Vec<String>, Failure> {
    let Failure::Refused { status, problem, body } = &failure else { return Err(failure) };
    let problems = match *status {
        StatusCode::PAYMENT_REQUIRED => {
            let order: Option<Order> = serde_json::from_slice(body).ok();
            let reason = order.map(|o| o.payment.decline_reason()).unwrap_or_else(|| "the card was declined".into());
            vec![format!(
                "Your payment did not go through: {reason}. Nothing was charged and your cart is kept; try another card."
            )]
        }
        StatusCode::CONFLICT if !problem.shortages.is_empty() => {
            let mut problems = vec!["Some items sold out while you were shopping; nothing was charged.".to_owned()];
            for shortage in &problem.shortages {
                problems.push(match shortage.available {
                    0 => format!("{}: sold out (you asked for {}).", shortage.sku, shortage.requested),
                    n => format!("{}: only {n} left (you asked for {}).", shortage.sku, shortage.requested),
                });
            }
            problems.push("Change the quantities in your cart, then check out again.".to_owned());
            problems
        }
        StatusCode::CONFLICT => {
            vec![
                "Your order is still being placed. Wait a moment, then look in your account before trying again."
                    .into(),
            ]
        }
        StatusCode::UNPROCESSABLE_ENTITY if !problem.errors.is_empty() => {
            for error in &problem.errors {
                let field = error.field.strip_prefix("shipping_address.").unwrap_or(&error.field);
                form.errors.insert(field.to_owned(), sentence(&error.message));
            }
            vec!["Some details need a second look.".to_owned()]
        }
        status if status.is_client_error() && status != StatusCode::UNAUTHORIZED => vec![sentence(&failure.detail())],
        _ => return Err(failure),
    };
    Ok(problems)
}

/// `must be 1 to 100 characters` → `Must be 1 to 100 characters.`
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let first: String = chars.next().map(|c| c.to_uppercase().collect()).unwrap_or_default();
    let rest: String = chars.collect();
    let end = if rest.ends_with('.') { "" } else { "." };
    format!("{first}{rest}{end}")
}

#[derive(Deserialize)]
pub struct GuestForm {
    csrf: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
}

/// A guest's checkout: orders belong to an account (API.md), so the guest gets one under the
/// email given, with a random password nobody knows, and a password-reset email to claim it.
pub async fn guest(State(app): State<Arc<App>>, visit: Visit, PageForm(sent): PageForm<GuestForm>) -> Response {
    let mut visit = match check_csrf(&app, visit, sent.csrf.as_deref()) {
        Ok(visit) => visit,
        Err(refused) => return *refused,
    };
    let mut form = FormState::default();
    form.values.insert("name".into(), sent.name.clone());
    form.values.insert("email".into(), sent.email.clone());
    let password = {
        use base64::Engine;
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let body = serde_json::json!({"email": sent.email, "password": password, "name": sent.name});
    match app.api.call::<Tokens>(&visit.forward, Call::post("/api/v1/auth/register", body)).await {
        Ok(tokens) => {
            let email = tokens.user.email.clone();
            sign_in(&mut visit, tokens);
            account::merge_guest_cart(&app, &mut visit).await;
            let forgot = Call::post("/api/v1/auth/password/forgot", serde_json::json!({"email": email}));
            if let Err(failure) = app.api.act(&visit.forward, forgot).await {
                tracing::warn!(error = %failure.detail(), "the guest's set-a-password email was not requested");
            }
            visit.flash(
                false,
                format!("Your order will be kept under {email}; we emailed you a link to set a password."),
            );
            see_other(visit, "/checkout")
        }
        Err(Failure::Refused { status: StatusCode::CONFLICT, .. }) => {
            let problems = vec!["An account with this email exists: sign in to check out.".to_owned()];
            render(app, true, visit, Forms::Guest(form), problems).await
        }
        Err(Failure::Refused { status: StatusCode::UNPROCESSABLE_ENTITY, problem, .. }) => {
            for error in &problem.errors {
                form.errors.insert(error.field.clone(), sentence(&error.message));
            }
            render(app, true, visit, Forms::Guest(form), vec!["Some details need a second look.".to_owned()]).await
        }
        Err(failure) => {
            let problems = vec![sentence(&failure.detail())];
            if failure.status().is_some_and(|s| s.is_client_error()) {
                render(app, true, visit, Forms::Guest(form), problems).await
            } else {
                failure_page(&app, visit, &failure)
            }
        }
    }
}
