//! The cart's HTTP API (API.md, Cart) and its OpenAPI document.

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    http::StatusCode,
    routing::{get, post, put},
};
use platform::{
    FieldError, Problem,
    auth::{Caller, Verifier},
    http::{ApiJson, ApiPath, Fields, Input, openapi::BearerAuth},
};
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::{
    carts::{CartView, Carts},
    error::CartError,
    rules::Mode,
    store::CartRef,
};

#[derive(Clone)]
pub struct AppState {
    pub carts: Arc<Carts>,
}

pub fn router(state: AppState, verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/api/v1/carts", post(create))
        .route("/api/v1/carts/me/merge", post(merge))
        .route("/api/v1/carts/{cart_id}", get(read).delete(clear))
        .route("/api/v1/carts/{cart_id}/items", post(add))
        .route("/api/v1/carts/{cart_id}/items/{sku}", put(set).delete(remove))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .layer(Extension(verifier))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    paths(create, read, add, set, remove, clear, merge),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerAuth),
    tags((name = "cart", description = "Guest carts and the signed-in user's cart"))
)]
pub struct ApiDoc;

/// `me` (the signed-in user's cart; a token is required) or a guest cart's id. An id that is not
/// a UUID names no cart: 404.
fn cart_ref(id: &str, caller: Option<&Caller>) -> Result<CartRef, Problem> {
    if id == "me" {
        return caller.map(|c| CartRef::User(c.user_id)).ok_or_else(|| platform::auth::AuthError::Missing.to_problem());
    }
    Uuid::try_parse(id).map(CartRef::Guest).map_err(|_| CartError::CartNotFound.into())
}

/// `{sku, quantity}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddItemRequest {
    pub sku: String,
    pub quantity: i64,
}

pub struct AddItem {
    sku: String,
    quantity: i64,
}

fn sku_field(fields: &mut Fields, sku: &str) {
    if sku.is_empty() || sku.len() > 64 {
        fields.push("sku", "must be 1 to 64 characters");
    }
}

impl Input for AddItem {
    type Raw = AddItemRequest;
    fn parse(raw: AddItemRequest) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::default();
        sku_field(&mut fields, &raw.sku);
        if raw.quantity < 1 {
            fields.push("quantity", "must be at least 1");
        } else if raw.quantity > crate::carts::MAX_LINE_QUANTITY {
            fields.push("quantity", "a line holds at most 99 units");
        }
        if fields.is_empty() { Ok(Self { sku: raw.sku, quantity: raw.quantity }) } else { Err(fields.into_errors()) }
    }
}

/// `{quantity}`; 0 removes the line.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SetItemRequest {
    pub quantity: i64,
}

pub struct SetItem {
    quantity: i64,
}

impl Input for SetItem {
    type Raw = SetItemRequest;
    fn parse(raw: SetItemRequest) -> Result<Self, Vec<FieldError>> {
        if (0..=crate::carts::MAX_LINE_QUANTITY).contains(&raw.quantity) {
            Ok(Self { quantity: raw.quantity })
        } else {
            Err(vec![FieldError::new("quantity", "must be from 0 (removes the line) to 99")])
        }
    }
}

/// `{cart_id}` of the guest cart to merge.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MergeRequest {
    pub cart_id: String,
}

pub struct Merge {
    cart_id: String,
}

impl Input for Merge {
    type Raw = MergeRequest;
    fn parse(raw: MergeRequest) -> Result<Self, Vec<FieldError>> {
        if raw.cart_id.is_empty() {
            return Err(vec![FieldError::new("cart_id", "is required")]);
        }
        Ok(Self { cart_id: raw.cart_id })
    }
}

/// Start a guest cart. Its id is a secret: holding it grants access.
#[utoipa::path(post, path = "/api/v1/carts", tag = "cart", responses((status = 201, body = CartView)))]
async fn create(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<(StatusCode, Json<CartView>), CartError> {
    Ok((StatusCode::CREATED, Json(state.carts.create_guest().await?)))
}

/// A cart: a guest cart by id, or `me`.
#[utoipa::path(get, path = "/api/v1/carts/{cart_id}", tag = "cart", params(("cart_id" = String, Path, description = "A guest cart's id, or `me`")),
    responses((status = 200, body = CartView), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn read(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Option<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CartView>, Problem> {
    let cart = cart_ref(&id, caller.as_ref())?;
    Ok(Json(state.carts.read(cart).await?))
}

/// Add units of a SKU (atomically: concurrent adds never lose one).
#[utoipa::path(post, path = "/api/v1/carts/{cart_id}/items", tag = "cart", params(("cart_id" = String, Path)), request_body = AddItemRequest,
    responses(
        (status = 200, body = CartView),
        (status = 404, description = "No such cart, or no such SKU for sale", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "More than the available stock; `available` says how many", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Quantity below 1, or a line above 99", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The catalog cannot be asked; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    ))]
async fn add(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Option<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(item): ApiJson<AddItem>,
) -> Result<Json<CartView>, Problem> {
    let cart = cart_ref(&id, caller.as_ref())?;
    Ok(Json(state.carts.change(cart, &item.sku, item.quantity, Mode::Add).await?))
}

/// Set a line's quantity; 0 removes it.
#[utoipa::path(put, path = "/api/v1/carts/{cart_id}/items/{sku}", tag = "cart", params(("cart_id" = String, Path), ("sku" = String, Path)),
    request_body = SetItemRequest,
    responses((status = 200, body = CartView), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn set(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Option<Caller>,
    ApiPath((id, sku)): ApiPath<(String, String)>,
    ApiJson(item): ApiJson<SetItem>,
) -> Result<Json<CartView>, Problem> {
    let cart = cart_ref(&id, caller.as_ref())?;
    Ok(Json(state.carts.change(cart, &sku, item.quantity, Mode::Set).await?))
}

/// Remove a line.
#[utoipa::path(delete, path = "/api/v1/carts/{cart_id}/items/{sku}", tag = "cart", params(("cart_id" = String, Path), ("sku" = String, Path)),
    responses((status = 200, body = CartView), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn remove(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Option<Caller>,
    ApiPath((id, sku)): ApiPath<(String, String)>,
) -> Result<Json<CartView>, Problem> {
    let cart = cart_ref(&id, caller.as_ref())?;
    Ok(Json(state.carts.remove(cart, &sku).await?))
}

/// Empty the cart.
#[utoipa::path(delete, path = "/api/v1/carts/{cart_id}", tag = "cart", params(("cart_id" = String, Path)),
    responses((status = 204, description = "Emptied"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn clear(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Option<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    let cart = cart_ref(&id, caller.as_ref())?;
    state.carts.clear(cart).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Merge a guest cart into the signed-in user's cart; the guest cart is retired.
#[utoipa::path(post, path = "/api/v1/carts/me/merge", tag = "cart", security(("bearer" = [])), request_body = MergeRequest,
    responses((status = 200, body = CartView), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such guest cart (or it was merged already)", body = Problem, content_type = "application/problem+json")))]
async fn merge(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    ApiJson(merge): ApiJson<Merge>,
) -> Result<Json<CartView>, Problem> {
    let guest = Uuid::try_parse(&merge.cart_id).map_err(|_| Problem::from(CartError::CartNotFound))?;
    Ok(Json(state.carts.merge(caller.user_id, guest).await?))
}
