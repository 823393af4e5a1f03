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
    /// A SKU the catalog sells; one it does not sell is answered 404.
    // The examples name a SKU of the demo catalog, which the contract test's shop holds, so that
    // the fuzzer's examples reach a real line.
    #[schema(min_length = 1, max_length = 64, example = "CS8TS-291-M")]
    pub sku: String,
    /// Units to add; the line may hold at most 99 afterwards.
    #[schema(minimum = 1, maximum = 99, example = 1)]
    #[serde(deserialize_with = "platform::http::extract::whole::required")]
    pub quantity: i64,
}

pub struct AddItem {
    sku: String,
    quantity: i64,
}

/// Counted in characters, as the schema's `maxLength` is.
fn sku_field(fields: &mut Fields, sku: &str) {
    if sku.is_empty() || sku.chars().count() > 64 {
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
    #[schema(minimum = 0, maximum = 99, example = 2)]
    #[serde(deserialize_with = "platform::http::extract::whole::required")]
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
    /// The guest cart's id (the `id` that `POST /api/v1/carts` answered).
    // Only emptiness is checked here (422); any other string that is not a UUID names no cart
    // (404), so `uuid` is exactly what can succeed.
    #[schema(format = Uuid, example = "5f0c6a1e-8b7d-4c2a-9e3f-1a2b3c4d5e6f")]
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
#[utoipa::path(post, path = "/api/v1/carts", tag = "cart", responses((status = 201, description = "The new, empty guest cart", body = CartView)))]
async fn create(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<(StatusCode, Json<CartView>), CartError> {
    Ok((StatusCode::CREATED, Json(state.carts.create_guest().await?)))
}

// The operations on one cart take a token only for `me` (`cart_ref`), hence the optional
// bearer. Their 401 (bad token, or `me` without one), 404 (no such cart: also an id that is not
// one) and the body's 400/413/415/422 are declared by rule for the whole document
// (`platform::http::openapi::Rejections`); each declares only what its own handler adds.

/// A cart: a guest cart by id, or `me`.
///
/// `me` is the signed-in user's own cart, created on first use; it needs a token. 404: no such
/// guest cart (or it expired, or was merged).
#[utoipa::path(get, path = "/api/v1/carts/{cart_id}", tag = "cart", security((), ("bearer" = [])),
    params(("cart_id" = String, Path, description = "A guest cart's id, or `me`", example = "me")),
    responses((status = 200, description = "The cart, priced now", body = CartView)))]
async fn read(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Option<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CartView>, Problem> {
    let cart = cart_ref(&id, caller.as_ref())?;
    Ok(Json(state.carts.read(cart).await?))
}

/// Add units of a SKU (atomically: concurrent adds never lose one).
///
/// 404: no such cart, or no such SKU for sale. 422: besides a body outside its schema, a line
/// that would hold more than 99 units. 503: the catalog cannot be asked (retry after
/// `Retry-After`).
#[utoipa::path(post, path = "/api/v1/carts/{cart_id}/items", tag = "cart", security((), ("bearer" = [])),
    params(("cart_id" = String, Path, description = "A guest cart's id, or `me`", example = "me")),
    request_body = AddItemRequest,
    responses(
        (status = 200, description = "The cart with the line added to", body = CartView),
        (status = 409, description = "More than the available stock (`available` and `in_cart` say how many), a SKU priced in another currency than the cart, or a new line for a cart of 100 lines", body = Problem, content_type = "application/problem+json"),
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
///
/// 404: no such cart, or (above 0) no such SKU for sale. 503: the catalog cannot be asked.
#[utoipa::path(put, path = "/api/v1/carts/{cart_id}/items/{sku}", tag = "cart", security((), ("bearer" = [])),
    params(
        ("cart_id" = String, Path, description = "A guest cart's id, or `me`", example = "me"),
        ("sku" = String, Path, description = "The line's SKU", example = "CS8TS-291-M"),
    ),
    request_body = SetItemRequest,
    responses(
        (status = 200, description = "The cart with the line set (or gone)", body = CartView),
        (status = 409, description = "More than the available stock, a SKU priced in another currency than the cart, or a new line for a cart of 100 lines", body = Problem, content_type = "application/problem+json"),
    ))]
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
///
/// Removing a line the cart does not have changes nothing. 404: no such cart.
#[utoipa::path(delete, path = "/api/v1/carts/{cart_id}/items/{sku}", tag = "cart", security((), ("bearer" = [])),
    params(
        ("cart_id" = String, Path, description = "A guest cart's id, or `me`", example = "me"),
        ("sku" = String, Path, description = "The line's SKU", example = "CS8TS-291-M"),
    ),
    responses((status = 200, description = "The cart without the line", body = CartView)))]
async fn remove(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Option<Caller>,
    ApiPath((id, sku)): ApiPath<(String, String)>,
) -> Result<Json<CartView>, Problem> {
    let cart = cart_ref(&id, caller.as_ref())?;
    Ok(Json(state.carts.remove(cart, &sku).await?))
}

/// Empty the cart.
///
/// 404: no such cart.
#[utoipa::path(delete, path = "/api/v1/carts/{cart_id}", tag = "cart", security((), ("bearer" = [])),
    params(("cart_id" = String, Path, description = "A guest cart's id, or `me`", example = "me")),
    responses((status = 204, description = "Emptied")))]
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
///
/// Quantities add, each line capped at 99 and at the stock (never below what the user had).
#[utoipa::path(post, path = "/api/v1/carts/me/merge", tag = "cart", security(("bearer" = [])), request_body = MergeRequest,
    responses(
        (status = 200, description = "The user's cart, merged", body = CartView),
        (status = 404, description = "No such guest cart (or it was merged already)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Both carts have lines, priced in different currencies", body = Problem, content_type = "application/problem+json"),
    ))]
async fn merge(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    ApiJson(merge): ApiJson<Merge>,
) -> Result<Json<CartView>, Problem> {
    let guest = Uuid::try_parse(&merge.cart_id).map_err(|_| Problem::from(CartError::CartNotFound))?;
    Ok(Json(state.carts.merge(caller.user_id, guest).await?))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::carts::MAX_LINE_QUANTITY;

    fn schema(name: &str) -> Value {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
        doc["components"]["schemas"][name].clone()
    }

    fn add_item(sku: &str, quantity: i64) -> bool {
        AddItem::parse(AddItemRequest { sku: sku.to_owned(), quantity }).is_ok()
    }

    // The fuzzer holds the code to its schema: the literals in `#[schema]` must be the rules.
    #[test]
    fn the_documented_quantities_are_the_enforced_ones() {
        let quantity = &schema("AddItemRequest")["properties"]["quantity"];
        let bounds = (quantity["minimum"].as_f64(), quantity["maximum"].as_f64());
        assert_eq!(bounds, (Some(1.0), Some(MAX_LINE_QUANTITY as f64)));
        assert!(add_item("A", 1) && add_item("A", MAX_LINE_QUANTITY));
        assert!(!add_item("A", 0) && !add_item("A", MAX_LINE_QUANTITY + 1));

        let quantity = &schema("SetItemRequest")["properties"]["quantity"];
        let bounds = (quantity["minimum"].as_f64(), quantity["maximum"].as_f64());
        assert_eq!(bounds, (Some(0.0), Some(MAX_LINE_QUANTITY as f64)));
        let set = |quantity| SetItem::parse(SetItemRequest { quantity }).is_ok();
        assert!(set(0) && set(MAX_LINE_QUANTITY) && !set(-1) && !set(MAX_LINE_QUANTITY + 1));
    }

    #[test]
    fn a_sku_is_counted_in_characters_as_max_length_is() {
        let sku = &schema("AddItemRequest")["properties"]["sku"];
        assert_eq!((sku["minLength"].as_u64(), sku["maxLength"].as_u64()), (Some(1), Some(64)));
        assert!(add_item(&"é".repeat(64), 1), "64 characters, 128 bytes");
        assert!(!add_item(&"é".repeat(65), 1));
        assert!(!add_item("", 1));
    }

    #[test]
    fn one_cart_operations_take_an_optional_token_and_merge_a_required_one() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
        let optional = serde_json::json!([{}, {"bearer": []}]);
        assert_eq!(doc["paths"]["/api/v1/carts/{cart_id}"]["get"]["security"], optional);
        assert_eq!(doc["paths"]["/api/v1/carts/{cart_id}/items/{sku}"]["put"]["security"], optional);
        assert_eq!(doc["paths"]["/api/v1/carts/me/merge"]["post"]["security"], serde_json::json!([{"bearer": []}]));
        assert!(doc["paths"]["/api/v1/carts"]["post"]["security"].is_null(), "anyone starts a guest cart");
    }
}
