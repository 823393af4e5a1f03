//! The orders HTTP API (API.md, Orders, payments and fulfilment) and its OpenAPI document.
//! Only here do outcomes and errors become status codes and bodies.

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
    pagination::{Page, PageQuery},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

pub use views::OrderView;

use crate::{
    domain::{Address, Answer, CheckoutOutcome, Order, PaymentStatus, Shortage, Status},
    error::OrderError,
    orders::{CheckoutRequest, Orders, Reply, Shipment, WebhookError},
};

#[derive(Clone)]
pub struct AppState {
    pub orders: Arc<Orders>,
}

pub fn router(state: AppState, verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/api/v1/orders", post(checkout).get(list_own))
        .route("/api/v1/orders/{id}", get(read))
        .route("/api/v1/orders/{id}/cancel", post(cancel))
        .route("/api/v1/orders/{id}/shipments", post(ship))
        .route("/api/v1/orders/{id}/delivery", post(deliver))
        .route("/api/v1/admin/orders", get(list_all))
        .route("/api/v1/payments/webhooks/{provider}", post(webhook))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .layer(Extension(verifier))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    paths(checkout, list_own, read, cancel, ship, deliver, list_all, webhook),
    components(schemas(Problem, FieldError, OrderView, OrderPage, CheckoutBody, ShipmentBody, Address, Status, PaymentStatus)),
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
    /// `me` (the signed-in user's cart) or a guest cart's id.
    pub cart_id: String,
    pub shipping_address: Address,
    /// A payment method: with the sandbox provider `pm_card_visa`, `pm_card_mastercard`,
    /// `pm_card_chargeDeclined` or `pm_card_chargeDeclinedInsufficientFunds`.
    pub payment_method: String,
}

pub struct CheckoutInput(CheckoutRequest);

impl Input for CheckoutInput {
    type Raw = CheckoutBody;
    fn parse(raw: CheckoutBody) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::default();
        let cart_id = raw.cart_id.trim().to_owned();
        if cart_id != "me" && Uuid::try_parse(&cart_id).is_err() {
            fields.push("cart_id", "must be \"me\" or a cart id");
        }
        let payment_method = raw.payment_method.trim().to_owned();
        if payment_method.is_empty() || payment_method.len() > 255 {
            fields.push("payment_method", "must be 1 to 255 characters");
        }
        let address = Address::parse(raw.shipping_address, "shipping_address", &mut fields);
        match address {
            Some(shipping_address) if fields.is_empty() => {
                Ok(Self(CheckoutRequest { cart_id, shipping_address, payment_method }))
            }
            _ => Err(fields.into_errors()),
        }
    }
}

/// `{carrier, tracking_number}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ShipmentBody {
    pub carrier: String,
    pub tracking_number: String,
}

pub struct ShipmentInput(Shipment);

impl Input for ShipmentInput {
    type Raw = ShipmentBody;
    fn parse(raw: ShipmentBody) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::default();
        let carrier = raw.carrier.trim().to_owned();
        let tracking_number = raw.tracking_number.trim().to_owned();
        if carrier.is_empty() || carrier.chars().count() > 100 {
            fields.push("carrier", "must be 1 to 100 characters");
        }
        if tracking_number.is_empty() || tracking_number.chars().count() > 100 {
            fields.push("tracking_number", "must be 1 to 100 characters");
        }
        if fields.is_empty() { Ok(Self(Shipment { carrier, tracking_number })) } else { Err(fields.into_errors()) }
    }
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
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
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", security(("bearer" = [])), request_body = CheckoutBody,
    params(("Idempotency-Key" = String, Header, description = "Required. The same key with the same body replays the first answer.")),
    responses(
        (status = 201, description = "Paid", body = OrderView),
        (status = 400, description = "No Idempotency-Key, or a malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Declined: the order, in payment_failed, its stock released", body = OrderView),
        (status = 404, description = "No such cart", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Out of stock (`shortages` names each SKU); or the key's first request is still running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty cart, invalid body, or the key was used with another body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down; retry with the same key", body = Problem, content_type = "application/problem+json"),
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
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = OrderPage)))]
async fn list_own(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<OrderView>>, Problem> {
    let page = query.parse::<Uuid>()?;
    Ok(Json(views(state.orders.list(Some(caller.user_id), None, &page).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminQuery {
    /// Only orders in this status.
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Every order, newest first (admins).
#[utoipa::path(get, path = "/api/v1/admin/orders", tag = "orders", security(("bearer" = [])), params(AdminQuery),
    responses((status = 200, body = OrderPage), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_all(
    State(state): State<AppState>,
    Admin(_): Admin,
    ApiQuery(query): ApiQuery<AdminQuery>,
) -> Result<Json<Page<OrderView>>, Problem> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            Status::parse(text)
                .ok_or_else(|| Problem::validation(vec![FieldError::new("status", "is not an order status")]))?,
        ),
    };
    let page = PageQuery { limit: query.limit, cursor: query.cursor }.parse::<Uuid>()?;
    Ok(Json(views(state.orders.list(None, status, &page).await?)))
}

/// One order: its owner's, or any for an admin.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderView), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<OrderView>, OrderError> {
    Ok(Json(OrderView::from(&state.orders.get(&caller, id).await?)))
}

/// Cancel a paid order (its owner before shipping, or an admin): refunded, stock returned.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not cancellable in its status", body = Problem, content_type = "application/problem+json")))]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    context: Option<Extension<RequestContext>>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<OrderView>, OrderError> {
    Ok(Json(OrderView::from(&state.orders.cancel(&caller, id, traceparent(context)).await?)))
}

/// Record a shipment (admins): `paid → shipped`.
#[utoipa::path(post, path = "/api/v1/orders/{id}/shipments", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = ShipmentBody,
    responses((status = 200, body = OrderView), (status = 409, body = Problem, content_type = "application/problem+json")))]
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
#[utoipa::path(post, path = "/api/v1/orders/{id}/delivery", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderView), (status = 409, body = Problem, content_type = "application/problem+json")))]
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
#[utoipa::path(post, path = "/api/v1/payments/webhooks/{provider}", tag = "orders", params(("provider" = String, Path)),
    responses((status = 200, description = "Received"), (status = 400, description = "Bad or stale signature", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "Not the configured provider", body = Problem, content_type = "application/problem+json")))]
async fn webhook(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Problem> {
    let received = state.orders.webhook(&provider, &headers, &body).await.map_err(|error| match error {
        WebhookError::UnknownProvider => Problem::with_detail(ErrorCode::NotFound, error.to_string()),
        WebhookError::Signature(error) => Problem::with_detail(ErrorCode::BadRequest, error.to_string()),
        WebhookError::Order(error) => error.into(),
    })?;
    Ok(Json(serde_json::json!({ "received": true, "duplicate": !received })))
}

fn views(page: Page<Order>) -> Page<OrderView> {
    Page { items: page.items.iter().map(OrderView::from).collect(), next_cursor: page.next_cursor }
}
