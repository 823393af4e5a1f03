//! The storefront's pages in the shop's OpenAPI document: every address the gateway answers
//! is named there (OWASP API9, improper inventory). Pages answer HTML. Their forms are for the
//! pages' own use: each carries the session's CSRF token (from the session cookie's page), and
//! without it is refused with 403; a form done answers 303 to the next page.

use axum::Json;
use utoipa::{OpenApi, PartialSchema, ToSchema};

#[derive(OpenApi)]
#[openapi(
    paths(home, search, suggest, category, product, cart, checkout, login, register, social, social_return,
          account, order, robots, sitemap, asset,
          add_to_cart, set_quantity, remove_line, place_order, guest, sign_in, create_account, sign_out, cancel),
    components(schemas(CsrfForm, AddForm, QuantityForm, CheckoutForm, GuestForm, AccountForm)),
    modifiers(&PagesMayFail),
    tags((name = "storefront", description = "The shop's pages, for people with a browser (HTML)"))
)]
pub struct ApiDoc;

/// Any page says so in a page when it is refused for a while (429) or the shop is down or slow
/// (502, 503, 504), whether the storefront or the gateway in front of it answers; and any form
/// when it is not a form (400, 415) or comes without the session's CSRF token (403).
struct PagesMayFail;

impl utoipa::Modify for PagesMayFail {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
        for item in openapi.paths.paths.values_mut() {
            let Some(form) = item.post.as_mut() else { continue };
            for (status, description) in
                [("400", "Not a form"), ("403", "Without this session's CSRF token"), ("415", "Not a form")]
            {
                let page = ResponseBuilder::new()
                    .description(description)
                    .content("text/html", ContentBuilder::new().schema(Some(String::schema())).build())
                    .build();
                form.responses.responses.entry(status.to_owned()).or_insert(RefOr::T(page));
            }
        }
        for operation in platform::http::openapi::operations_mut(openapi) {
            for (status, description) in [
                ("429", "Too many requests: wait, then try again"),
                ("502", "The shop failed to answer"),
                ("503", "The shop cannot answer now"),
                ("504", "The shop did not answer in time"),
            ] {
                let page = ResponseBuilder::new()
                    .description(description)
                    .content("text/html", ContentBuilder::new().schema(Some(String::schema())).build())
                    .build();
                operation.responses.responses.entry(status.to_owned()).or_insert(RefOr::T(page));
            }
        }
    }
}

/// A form with nothing but the session's CSRF token.
#[derive(ToSchema)]
#[allow(dead_code)]
struct CsrfForm {
    csrf: String,
}

/// Add a variant to the cart.
#[derive(ToSchema)]
#[allow(dead_code)]
struct AddForm {
    csrf: String,
    sku: Option<String>,
    /// 1 to 99.
    quantity: Option<String>,
    /// The page to go back to.
    back: Option<String>,
}

/// A cart line's new quantity (0 removes it).
#[derive(ToSchema)]
#[allow(dead_code)]
struct QuantityForm {
    csrf: String,
    quantity: Option<String>,
}

/// The shipping address and the payment method; the idempotency key the page was made with.
#[derive(ToSchema)]
#[allow(dead_code)]
struct CheckoutForm {
    csrf: String,
    idempotency_key: Option<String>,
    name: Option<String>,
    line1: Option<String>,
    line2: Option<String>,
    city: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
    payment_method: Option<String>,
}

/// A guest's name and email.
#[derive(ToSchema)]
#[allow(dead_code)]
struct GuestForm {
    csrf: String,
    name: Option<String>,
    email: Option<String>,
}

/// Signing in (email, password) or making an account (and a name).
#[derive(ToSchema)]
#[allow(dead_code)]
struct AccountForm {
    csrf: String,
    next: Option<String>,
    name: Option<String>,
    email: Option<String>,
    password: Option<String>,
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The home page: categories and new products.
#[utoipa::path(get, path = "/", tag = "storefront",
    responses((status = 200, description = "The page", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn home() {}

/// Search results and every listing's facets, sort and pages.
#[utoipa::path(get, path = "/search", tag = "storefront",
    params(("q" = Option<String>, Query, description = "What to look for (typos are forgiven)")),
    responses((status = 200, description = "The page", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn search() {}

/// Suggestions for the search box, as a fragment of HTML.
#[utoipa::path(get, path = "/search/suggest", tag = "storefront",
    params(("q" = Option<String>, Query, description = "What is typed so far")),
    responses((status = 200, description = "A list of links, or nothing", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn suggest() {}

/// A category's listing.
#[utoipa::path(get, path = "/c/{category}", tag = "storefront",
    params(("category" = String, Path, description = "The category's slug")),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 404, description = "No such category", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn category() {}

/// A product's page; reached by its id, it redirects to its slug.
#[utoipa::path(get, path = "/p/{slug}", tag = "storefront",
    params(("slug" = String, Path, description = "The product's slug")),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 303, description = "Reached by its id: to the product's address"),
        (status = 404, description = "No product for sale here", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn product() {}

/// The shopper's cart.
#[utoipa::path(get, path = "/cart", tag = "storefront",
    responses((status = 200, description = "The page", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn cart() {}

/// Checkout: sign in or continue as a guest, then address and payment.
#[utoipa::path(get, path = "/checkout", tag = "storefront",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 303, description = "The cart is empty: to the cart")))]
#[allow(dead_code)]
fn checkout() {}

/// Signing in.
#[utoipa::path(get, path = "/login", tag = "storefront",
    params(("next" = Option<String>, Query, description = "A page of this shop to go to after")),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 303, description = "Already signed in: on to `next`")))]
#[allow(dead_code)]
fn login() {}

/// Creating an account.
#[utoipa::path(get, path = "/register", tag = "storefront",
    params(("next" = Option<String>, Query, description = "A page of this shop to go to after")),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 303, description = "Already signed in: on to `next`")))]
#[allow(dead_code)]
fn register() {}

/// Signing in with a social provider: off to identity's authorization endpoint.
#[utoipa::path(get, path = "/login/with/{provider}", tag = "storefront",
    params(("provider" = String, Path, description = "A configured provider's id")),
    responses(
        (status = 303, description = "To the provider, through identity"),
        (status = 404, description = "Not a provider's id", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn social() {}

/// Where a social provider's sign-in comes back, through identity, with a one-time code.
#[utoipa::path(get, path = "/login/callback", tag = "storefront",
    responses(
        (status = 303, description = "Signed in: on to the page the shopper came from"),
        (status = 200, description = "The sign-in page, saying what went wrong", body = String, content_type = "text/html"),
        (status = 403, description = "The sign-in did not start in this browser", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn social_return() {}

/// The shopper's account and orders.
#[utoipa::path(get, path = "/account", tag = "storefront",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 303, description = "Not signed in: to the sign-in page")))]
#[allow(dead_code)]
fn account() {}

/// One of the shopper's orders, its history and tracking.
#[utoipa::path(get, path = "/orders/{id}", tag = "storefront",
    params(("id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 303, description = "Not signed in: to the sign-in page"),
        (status = 404, description = "No such order of this shopper's", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn order() {}

/// What crawlers may read.
#[utoipa::path(get, path = "/robots.txt", tag = "storefront",
    responses((status = 200, description = "robots.txt", body = String, content_type = "text/plain")))]
#[allow(dead_code)]
fn robots() {}

/// Every category and product page, for search engines.
#[utoipa::path(get, path = "/sitemap.xml", tag = "storefront",
    responses((status = 200, description = "A sitemap (sitemaps.org 0.9)", body = String, content_type = "application/xml")))]
#[allow(dead_code)]
fn sitemap() {}

/// The stylesheet and scripts, under names that change with their content (cached for good).
#[utoipa::path(get, path = "/static/{file}", tag = "storefront",
    params(("file" = String, Path, description = "A file's hashed name")),
    responses(
        (status = 200, description = "The file", body = String, content_type = "*/*"),
        (status = 404, description = "No such file", body = String, content_type = "text/plain")))]
#[allow(dead_code)]
fn asset() {}

/// Adds the chosen variant to the cart (for HTMX, answers a fragment saying so).
#[utoipa::path(post, path = "/cart/items", tag = "storefront",
    request_body(content = AddForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Done: back to the page"),
        (status = 200, description = "For HTMX: what happened", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn add_to_cart() {}

/// Sets a cart line's quantity.
#[utoipa::path(post, path = "/cart/items/{sku}", tag = "storefront",
    params(("sku" = String, Path, description = "The line's SKU")),
    request_body(content = QuantityForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Done: to the cart")))]
#[allow(dead_code)]
fn set_quantity() {}

/// Removes a cart line.
#[utoipa::path(post, path = "/cart/items/{sku}/remove", tag = "storefront",
    params(("sku" = String, Path, description = "The line's SKU")),
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Done: to the cart")))]
#[allow(dead_code)]
fn remove_line() {}

/// Places the order and pays (`POST /api/v1/orders` with the form's idempotency key).
#[utoipa::path(post, path = "/checkout", tag = "storefront",
    request_body(content = CheckoutForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Placed: to the order's page; or, not signed in, to the sign-in page"),
        (status = 200, description = "Not placed: the checkout page, saying why", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn place_order() {}

/// Continues as a guest: an account under the email given, with a link to set a password.
#[utoipa::path(post, path = "/checkout/guest", tag = "storefront",
    request_body(content = GuestForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in: back to checkout"),
        (status = 200, description = "The checkout page, saying what was wrong", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn guest() {}

/// Signs in; a guest's cart joins the account's.
#[utoipa::path(post, path = "/login", tag = "storefront",
    request_body(content = AccountForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in: on to `next`"),
        (status = 401, description = "Wrong email or password: the page again", body = String, content_type = "text/html"),
        (status = 422, description = "Details to mend: the page again", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn sign_in() {}

/// Makes an account and signs in; a guest's cart joins it.
#[utoipa::path(post, path = "/register", tag = "storefront",
    request_body(content = AccountForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in: on to `next`"),
        (status = 409, description = "The email has an account: the page again", body = String, content_type = "text/html"),
        (status = 422, description = "Details to mend: the page again", body = String, content_type = "text/html")))]
#[allow(dead_code)]
fn create_account() {}

/// Signs out, ending the session at identity too.
#[utoipa::path(post, path = "/logout", tag = "storefront",
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed out: to the home page")))]
#[allow(dead_code)]
fn sign_out() {}

/// Cancels a paid order before it ships; the payment is refunded.
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "storefront",
    params(("id" = String, Path, description = "The order's id")),
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Done, or refused with a message: to the order's page")))]
#[allow(dead_code)]
fn cancel() {}
