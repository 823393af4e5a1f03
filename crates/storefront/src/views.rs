//! The pages' templates (files under `templates/`, checked when the crate compiles) and the
//! data each one shows, already in words and numbers as a person reads them: templates only
//! place it.

use std::collections::BTreeMap;

use askama::Template;

use crate::session::Flash;

/// What the frame around every page shows.
pub struct Layout {
    pub shop: String,
    pub title: String,
    pub description: String,
    /// The page's one address, for search engines; none for pages they should not index.
    pub canonical: Option<String>,
    pub css: String,
    pub htmx: String,
    pub csrf: String,
    /// The signed-in shopper's name.
    pub user: Option<String>,
    pub cart_count: i64,
    pub flash: Option<Flash>,
    /// What the search box holds.
    pub q: String,
}

pub struct Link {
    pub href: String,
    pub text: String,
}

/// A product in a grid of products.
pub struct Card {
    pub href: String,
    pub title: String,
    pub brand: String,
    pub price: String,
    pub image: Option<String>,
    pub in_stock: bool,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub layout: Layout,
    pub categories: Vec<Link>,
    pub products: Vec<Card>,
}

/// One value of a facet: a link that adds or removes it from the current filters.
pub struct FacetOption {
    pub href: String,
    pub label: String,
    pub count: u64,
    pub selected: bool,
}

pub struct FacetGroup {
    pub id: String,
    pub title: String,
    pub options: Vec<FacetOption>,
}

pub struct SortOption {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "listing.html")]
pub struct ListingPage {
    pub layout: Layout,
    pub heading: String,
    pub breadcrumbs: Vec<Link>,
    pub total: u64,
    pub cards: Vec<Card>,
    pub facets: Vec<FacetGroup>,
    /// Filters in force, each a link that removes it.
    pub active: Vec<Link>,
    /// Where the sort form sends the shopper (the same listing) and what it keeps.
    pub action: String,
    pub kept: Vec<(String, String)>,
    pub sorts: Vec<SortOption>,
    pub previous: Option<String>,
    pub next: Option<String>,
    pub page: u64,
    pub pages: u64,
    /// For a search that found nothing: titles close to what was typed.
    pub suggestions: Vec<Link>,
    pub problem: Option<String>,
}

pub struct VariantOption {
    pub sku: String,
    pub title: String,
    pub price: String,
    pub stock: String,
    pub available: bool,
    pub chosen: bool,
}

#[derive(Template)]
#[template(path = "product.html")]
pub struct ProductPage {
    pub layout: Layout,
    pub breadcrumbs: Vec<Link>,
    pub title: String,
    pub brand: String,
    pub description: String,
    pub price: String,
    pub images: Vec<String>,
    pub attributes: Vec<(String, String)>,
    pub variants: Vec<VariantOption>,
    pub back: String,
    /// `Product` in schema.org's vocabulary, as JSON safe inside a script element.
    pub json_ld: String,
}

#[derive(Template)]
#[template(path = "added.html")]
pub struct AddedFragment {
    pub message: String,
    pub error: bool,
    pub cart_count: i64,
}

#[derive(Template)]
#[template(path = "suggest.html")]
pub struct SuggestFragment {
    pub links: Vec<Link>,
}

pub struct CartLine {
    pub sku: String,
    pub title: String,
    pub href: Option<String>,
    pub quantity: i64,
    pub unit_price: String,
    pub line_total: String,
    /// What the shopper should know about this line: too few left, price changed, gone.
    pub notices: Vec<String>,
}

#[derive(Template)]
#[template(path = "cart.html")]
pub struct CartPage {
    pub layout: Layout,
    /// The message of the last change, inside the part HTMX swaps.
    pub notice: Option<Flash>,
    pub lines: Vec<CartLine>,
    pub subtotal: String,
    pub item_count: i64,
    pub can_check_out: bool,
}

/// A form's values and what was wrong with them, by field.
#[derive(Default)]
pub struct FormState {
    pub values: BTreeMap<String, String>,
    pub errors: BTreeMap<String, String>,
}

impl FormState {
    pub fn value(&self, field: &str) -> &str {
        self.values.get(field).map(String::as_str).unwrap_or_default()
    }

    pub fn error(&self, field: &str) -> Option<&str> {
        self.errors.get(field).map(String::as_str)
    }
}

pub struct PaymentOption {
    pub value: String,
    pub label: String,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "checkout.html")]
pub struct CheckoutPage {
    pub layout: Layout,
    pub signed_in: bool,
    pub lines: Vec<CartLine>,
    pub subtotal: String,
    pub form: FormState,
    /// The guest form's values and errors (the sign-in form beside it has its own).
    pub guest: FormState,
    pub payments: Vec<PaymentOption>,
    pub countries: Vec<(String, String)>,
    pub idempotency_key: String,
    /// Why the last attempt did not go through, as a person should hear it.
    pub problems: Vec<String>,
    pub providers: Vec<Link>,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub layout: Layout,
    pub register: bool,
    pub next: String,
    pub form: FormState,
    pub problem: Option<String>,
    pub providers: Vec<Link>,
}

pub struct OrderRow {
    pub href: String,
    pub number: String,
    pub date: String,
    pub status: String,
    pub total: String,
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub layout: Layout,
    pub name: String,
    pub email: String,
    pub orders: Vec<OrderRow>,
    pub more: Option<String>,
}

pub struct Step {
    pub status: String,
    pub at: String,
    /// RFC 3339, for machines.
    pub datetime: String,
}

#[derive(Template)]
#[template(path = "order.html")]
pub struct OrderPage {
    pub layout: Layout,
    pub id: String,
    pub number: String,
    pub placed: bool,
    pub status: String,
    pub lines: Vec<CartLine>,
    pub subtotal: String,
    pub shipping: String,
    pub tax: String,
    pub total: String,
    pub address: Vec<String>,
    pub payment: String,
    pub tracking: Option<String>,
    pub history: Vec<Step>,
    pub can_cancel: bool,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub status: u16,
    pub heading: String,
    pub message: String,
}

/// How a status reads to a shopper.
pub fn status_words(status: &str) -> &'static str {
    match status {
        "pending_payment" => "Awaiting payment",
        "paid" => "Paid",
        "payment_failed" => "Payment failed",
        "shipped" => "Shipped",
        "delivered" => "Delivered",
        "cancelled" => "Cancelled",
        _ => "Unknown",
    }
}
