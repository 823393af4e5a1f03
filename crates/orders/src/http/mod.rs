//! The orders HTTP API (API.md, Orders, payments and fulfilment) and its OpenAPI document.
//! Only here do outcomes and errors become status codes and bodies.
//!
//! The document is the contract a fuzzer holds the service to: each request schema states
//! exactly what the parsing below takes, and each operation declares the statuses its handler
//! answers (the gateway adds those of the shared extractors, the bearer check and its own).

mod document;
mod views;

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use platform::{
    ErrorCode, FieldError, Problem,
    auth::{Admin, Caller, Verifier},
    http::{ApiJson, ApiPath, ApiQuery, Fields, Input, RequestContext, openapi::BearerAuth, problem::PROBLEM_JSON},
    pagination::{Page, PageQuery, PageRequest},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

pub use views::OrderView;

use crate::{
    domain::{Address, Answer, CheckoutOutcome, Order, PaymentStatus, Shortage, Status, text::printable},
    error::OrderError,
    orders::{CheckoutRequest, Orders, Reply, Shipment, WebhookError},
};

#[derive(Clone)]
pub struct AppState {
    pub orders: Arc<Orders>,
}

pub fn router(state: AppState, verifier: Arc<Verifier>) -> Router {
    let openapi = Json(document::served(state.orders.payment_methods()));
    Router::new()
        .route("/api/v1/orders", post(checkout).get(list_own))
        .route("/api/v1/orders/{id}", get(read))
        .route("/api/v1/orders/{id}/cancel", post(cancel))
        .route("/api/v1/orders/{id}/shipments", post(ship))
        .route("/api/v1/orders/{id}/delivery", post(deliver))
        .route("/api/v1/admin/orders", get(list_all))
        .route("/api/v1/payments/webhooks/{provider}", post(webhook))
        .route("/openapi.json", get(move || async move { openapi }))
        .layer(Extension(verifier))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    paths(checkout, list_own, read, cancel, ship, deliver, list_all, webhook),
    components(schemas(
        Problem, FieldError, OrderView, OrderPage, CheckoutBody, ShipmentBody, Address, Status, PaymentStatus, WebhookReceipt
    )),
    modifiers(&BearerAuth),
    tags((name = "orders", description = "Checkout, orders, payments and fulfilment"))
)]
pub struct ApiDoc;

/// A page of orders.
#[derive(ToSchema)]
#[allow(dead_code)]
struct OrderPage {
    items: Vec<OrderView>,
    next_cursor: Option<String>,
}

/// `{cart_id, shipping_address, payment_method}`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct CheckoutBody {
    /// `me` (the signed-in user's cart) or a guest cart's id, a hyphenated UUID.
    #[schema(
        pattern = "^(me|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$",
        example = "0190f3a4-5b6c-7d8e-9f01-23456789abcd"
    )]
    pub cart_id: String,
    pub shipping_address: Address,
    /// A payment method the configured provider takes. The sandbox (the default) takes exactly
    /// `pm_card_visa`, `pm_card_mastercard`, `pm_card_chargeDeclined` and
    /// `pm_card_chargeDeclinedInsufficientFunds`; Stripe takes its own payment method ids.
    // The document served narrows this to the configured provider's methods (`document::served`).
    #[schema(min_length = 1, max_length = 255, example = "pm_card_visa")]
    pub payment_method: String,
}

pub struct CheckoutInput(CheckoutRequest);

impl Input for CheckoutInput {
    type Raw = CheckoutBody;
    fn parse(raw: CheckoutBody) -> Result<Self, Vec<FieldError>> {
        // Taken as sent, untrimmed: the schema's pattern and lengths are the whole rule. Whether
        // the provider takes the payment method is the use case's to say.
        let mut fields = Fields::default();
        if !is_cart_id(&raw.cart_id) {
            fields.push("cart_id", "must be \"me\" or a cart id");
        }
        if !(1..=255).contains(&raw.payment_method.chars().count()) {
            fields.push("payment_method", "must be 1 to 255 characters");
        }
        let address = Address::parse(raw.shipping_address, "shipping_address", &mut fields);
        match address {
            Some(shipping_address) if fields.is_empty() => {
                Ok(Self(CheckoutRequest { cart_id: raw.cart_id, shipping_address, payment_method: raw.payment_method }))
            }
            _ => Err(fields.into_errors()),
        }
    }
}

/// `me`, or a guest cart's id in the one form carts hand out: a hyphenated UUID (either case).
fn is_cart_id(text: &str) -> bool {
    text == "me" || (text.len() == 36 && Uuid::try_parse(text).is_ok())
}

/// `{carrier, tracking_number}`: each 1 to 100 characters, no control characters and not only
/// whitespace, kept trimmed.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ShipmentBody {
    #[schema(
        min_length = 1,
        max_length = 100,
        example = "DHL",
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub carrier: String,
    #[schema(
        min_length = 1,
        max_length = 100,
        example = "JD014600006281234567",
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub tracking_number: String,
}

pub struct ShipmentInput(Shipment);

impl Input for ShipmentInput {
    type Raw = ShipmentBody;
    fn parse(raw: ShipmentBody) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::default();
        let carrier = printable(&raw.carrier, 100);
        if carrier.is_none() {
            fields.push("carrier", "must be 1 to 100 printable characters");
        }
        let tracking_number = printable(&raw.tracking_number, 100);
        if tracking_number.is_none() {
            fields.push("tracking_number", "must be 1 to 100 printable characters");
        }
        match (carrier, tracking_number) {
            (Some(carrier), Some(tracking_number)) => Ok(Self(Shipment { carrier, tracking_number })),
            _ => Err(fields.into_errors()),
        }
    }
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters (the document's pattern).
fn idempotency_key(headers: &HeaderMap) -> Result<String, Problem> {
    let value = headers.get("idempotency-key").ok_or_else(|| {
        Problem::with_detail(
            ErrorCode::BadRequest,
            "an Idempotency-Key header is required for requests that move money",
        )
    })?;
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(key.to_owned())
        }
        _ => Err(Problem::validation(vec![FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )])),
    }
}

impl From<OrderError> for Problem {
    fn from(error: OrderError) -> Self {
        let code = error.code();
        match error {
            OrderError::NotFound => Problem::with_detail(code, "no such order"),
            OrderError::Transition(transition) => {
                Problem::with_detail(code, transition.to_string()).extension("order_status", transition.from.as_str())
            }
            OrderError::Concurrent => {
                Problem::with_detail(code, "the order was changed by another request; read it again")
            }
            OrderError::Validation(errors) => Problem::validation(errors),
            OrderError::KeyReused => {
                Problem::with_detail(code, "this Idempotency-Key was already used with a different request body")
            }
            OrderError::CartBusy => Problem::with_detail(
                code,
                "this cart is being checked out by another request; try again once that one is answered",
            )
            .retry_after(1),
            OrderError::KeyInProgress => {
                Problem::with_detail(code, "a request with this Idempotency-Key is still being processed")
                    .retry_after(1)
            }
            OrderError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "dependency unavailable");
                Problem::unavailable("orders cannot be processed right now", 2)
            }
            OrderError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                Problem::internal()
            }
        }
    }
}

impl IntoResponse for OrderError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

/// How each outcome of a checkout is answered: the order (201 paid, 402 declined), or a
/// problem document.
fn outcome_response(outcome: CheckoutOutcome) -> Response {
    let order = |status: StatusCode, order: &Order| (status, Json(OrderView::from(order))).into_response();
    match outcome {
        CheckoutOutcome::Paid { order: paid } => order(StatusCode::CREATED, &paid),
        CheckoutOutcome::Declined { order: declined } => order(StatusCode::PAYMENT_REQUIRED, &declined),
        CheckoutOutcome::OutOfStock { shortages } => out_of_stock(&shortages).into_response(),
        CheckoutOutcome::EmptyCart => {
            Problem::with_detail(ErrorCode::Validation, "the cart is empty: there is nothing to order").into_response()
        }
        CheckoutOutcome::CartNotFound => Problem::with_detail(ErrorCode::NotFound, "no such cart").into_response(),
    }
}

fn out_of_stock(shortages: &[Shortage]) -> Problem {
    let skus: Vec<&str> = shortages.iter().map(|s| s.sku.as_str()).collect();
    Problem::with_detail(ErrorCode::Conflict, format!("not enough stock for {}", skus.join(", ")))
        .extension("shortages", serde_json::to_value(shortages).unwrap_or_default())
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = match self.answer {
            Answer::Outcome(outcome) => outcome_response(outcome),
            Answer::Given { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let content_type = if status.is_success() || status == StatusCode::PAYMENT_REQUIRED {
                    "application/json"
                } else {
                    PROBLEM_JSON
                };
                (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
            }
        };
        if self.replayed {
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

/// Check out a cart: reserve its stock, charge the payment method, place the order.
///
/// Without an `Idempotency-Key` the answer is 400; with one that is not 1 to 255 visible ASCII
/// characters, 422. The same key with the same body replays the first answer (with
/// `Idempotent-Replayed: true`); with another body it is refused with 422, as are an empty cart
/// and a payment method the configured provider does not take. A 503 is safe to retry with the
/// same key.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", security(("bearer" = [])), request_body = CheckoutBody,
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]+$",
        example = "checkout-2f1c9b7e",
        description = "Required: 1 to 255 visible ASCII characters, chosen by the client for this checkout")),
    responses(
        (status = 201, description = "Paid: the order", body = OrderView,
            headers(("Idempotent-Replayed" = String, description = "`true` when this repeats the answer given first under the key"))),
        (status = 402, description = "Declined: the order, in payment_failed, its stock released; the cart is kept", body = OrderView,
            headers(("Idempotent-Replayed" = String, description = "`true` when this repeats the answer given first under the key"))),
        (status = 404, description = "No such cart", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Out of stock (`shortages` names each SKU); or a request with this key, or another checkout of this cart, is still running (retry after `Retry-After`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn checkout(
    State(state): State<AppState>,
    caller: Caller,
    context: Option<Extension<RequestContext>>,
    headers: HeaderMap,
    ApiJson(CheckoutInput(request)): ApiJson<CheckoutInput>,
) -> Result<Reply, Problem> {
    let key = idempotency_key(&headers)?;
    Ok(state.orders.checkout(caller.user_id, &key, request, traceparent(context)).await?)
}

/// The trace context the events of this request's changes carry.
fn traceparent(context: Option<Extension<RequestContext>>) -> Option<String> {
    context.map(|Extension(c)| c.trace.traceparent())
}

/// The caller's own orders, newest first.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = OrderPage),
              (status = 422, description = "`limit` out of range, or a `cursor` this API did not make", body = Problem, content_type = "application/problem+json")))]
async fn list_own(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<OrderView>>, Problem> {
    let page = query.page()?;
    Ok(Json(views(state.orders.list(Some(caller.user_id), None, &page).await?)))
}

/// `?limit=&cursor=` of a list of orders.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    fn page(self) -> Result<PageRequest<Uuid>, Problem> {
        PageQuery { limit: self.limit, cursor: self.cursor }.parse()
    }
}

/// `?status=&limit=&cursor=` of the admins' list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminQuery {
    /// Only orders in this status.
    // Read as text so that a status that is none answers 422 naming the field, as the page
    // parameters do, rather than a bare 400.
    #[param(value_type = Option<Status>)]
    pub status: Option<String>,
    /// Page size (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Every order, newest first (admins).
#[utoipa::path(get, path = "/api/v1/admin/orders", tag = "orders", security(("bearer" = [])), params(AdminQuery),
    responses((status = 200, body = OrderPage),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "An unknown `status`, `limit` out of range, or a `cursor` this API did not make", body = Problem, content_type = "application/problem+json")))]
async fn list_all(
    State(state): State<AppState>,
    Admin(_): Admin,
    ApiQuery(query): ApiQuery<AdminQuery>,
) -> Result<Json<Page<OrderView>>, Problem> {
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(
            Status::parse(text)
                .ok_or_else(|| Problem::validation(vec![FieldError::new("status", "is not an order status")]))?,
        ),
    };
    let page = ListQuery { limit: query.limit, cursor: query.cursor }.page()?;
    Ok(Json(views(state.orders.list(None, status, &page).await?)))
}

/// One order: its owner's, or any for an admin.
///
/// Anyone else's order answers 404, as one that does not exist.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order's id")),
    responses((status = 200, body = OrderView)))]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<OrderView>, OrderError> {
    Ok(Json(OrderView::from(&state.orders.get(&caller, id).await?)))
}

/// Cancel a paid order (its owner before shipping, or an admin): refunded, stock returned.
///
/// Anyone else's order answers 404, as one that does not exist.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order's id")),
    responses((status = 200, body = OrderView),
              (status = 409, description = "Not cancellable in its status (`order_status` says which), or changed meanwhile", body = Problem, content_type = "application/problem+json")))]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    context: Option<Extension<RequestContext>>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<OrderView>, OrderError> {
    Ok(Json(OrderView::from(&state.orders.cancel(&caller, id, traceparent(context)).await?)))
}

/// Record a shipment (admins): `paid → shipped`.
#[utoipa::path(post, path = "/api/v1/orders/{id}/shipments", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order's id")), request_body = ShipmentBody,
    responses((status = 200, body = OrderView),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not paid (`order_status` says what it is), or changed meanwhile", body = Problem, content_type = "application/problem+json")))]
async fn ship(
    State(state): State<AppState>,
    Admin(_): Admin,
    context: Option<Extension<RequestContext>>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(ShipmentInput(shipment)): ApiJson<ShipmentInput>,
) -> Result<Json<OrderView>, OrderError> {
    Ok(Json(OrderView::from(&state.orders.ship(id, shipment, traceparent(context)).await?)))
}

/// Record the delivery (admins): `shipped → delivered`.
#[utoipa::path(post, path = "/api/v1/orders/{id}/delivery", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order's id")),
    responses((status = 200, body = OrderView),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not shipped (`order_status` says what it is), or changed meanwhile", body = Problem, content_type = "application/problem+json")))]
async fn deliver(
    State(state): State<AppState>,
    Admin(_): Admin,
    context: Option<Extension<RequestContext>>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<OrderView>, OrderError> {
    Ok(Json(OrderView::from(&state.orders.deliver(id, traceparent(context)).await?)))
}

/// A payment provider's signed notification (signature checked, 5-minute replay window,
/// idempotent by event id).
///
/// Signed as Stripe signs: a `Stripe-Signature` (Stripe) or `Sandbox-Signature` (the sandbox)
/// header `t=TIMESTAMP,v1=HMAC`, the HMAC-SHA256 of `TIMESTAMP.BODY` under the endpoint's secret;
/// the body is the provider's JSON event.
#[utoipa::path(post, path = "/api/v1/payments/webhooks/{provider}", tag = "orders",
    params(("provider" = String, Path, description = "The configured provider: `sandbox` (the default) or `stripe`; any other name answers 404")),
    responses((status = 200, description = "Received", body = WebhookReceipt),
              (status = 400, description = "No signature, or one that does not verify or is more than 5 minutes old, or not an event", body = Problem, content_type = "application/problem+json")))]
async fn webhook(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookReceipt>, Problem> {
    let received = state.orders.webhook(&provider, &headers, &body).await.map_err(|error| match error {
        WebhookError::UnknownProvider => Problem::with_detail(ErrorCode::NotFound, error.to_string()),
        WebhookError::Signature(error) => Problem::with_detail(ErrorCode::BadRequest, error.to_string()),
        WebhookError::Order(error) => error.into(),
    })?;
    Ok(Json(WebhookReceipt { received: true, duplicate: !received }))
}

/// What a provider's notification is answered with.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    /// Always `true`: the notification was taken.
    received: bool,
    /// It had been taken before (the same event id), and nothing was done again.
    duplicate: bool,
}

fn views(page: Page<Order>) -> Page<OrderView> {
    Page { items: page.items.iter().map(OrderView::from).collect(), next_cursor: page.next_cursor }
}
