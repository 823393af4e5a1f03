//! The catalog's HTTP API (API.md, Catalog and search) and its OpenAPI document.

mod search;

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use platform::{
    ErrorCode, Problem,
    auth::{Admin, Caller, Verifier},
    http::{ApiJson, ApiPath, RequestContext, openapi::BearerAuth},
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::{
    cache::{CachedProduct, ProductCache},
    commands::{NewProduct, ProductPatch, PutCategory, SetStock},
    domain::{Product, ProductStatus, Sku, Slug},
    error::CatalogError,
    inventory::Inventory,
    products::{ProductKey, Products},
    search::SearchIndex,
    views::{CategoryView, ProductView, StockView},
};

#[derive(Clone)]
pub struct AppState {
    pub products: Arc<Products>,
    pub inventory: Arc<Inventory>,
    pub index: SearchIndex,
    pub cache: ProductCache,
}

pub fn router(state: AppState, verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/api/v1/products", get(search_products).post(create_product))
        .route("/api/v1/products/suggest", get(suggest))
        .route("/api/v1/products/{id}", get(get_product).patch(update_product).delete(archive_product))
        .route("/api/v1/inventory/{sku}", get(get_stock).put(set_stock))
        .route("/api/v1/categories", get(list_categories))
        .route("/api/v1/categories/{slug}", axum::routing::put(put_category))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .layer(Extension(verifier))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    paths(search_products, suggest, get_product, create_product, update_product, archive_product, get_stock, set_stock,
          list_categories, put_category),
    components(schemas(Problem, platform::FieldError, crate::search::facets::FacetValue, crate::search::facets::PriceBucket)),
    modifiers(&BearerAuth),
    tags((name = "catalog", description = "Products, search, categories and stock"))
)]
pub struct ApiDoc;

fn traceparent(context: Option<Extension<RequestContext>>) -> Option<String> {
    context.map(|Extension(c)| c.trace.traceparent())
}

#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    /// Products of this page.
    #[schema(value_type = Vec<ProductView>)]
    items: Vec<Box<serde_json::value::RawValue>>,
    /// Products matching the search, over all pages.
    total: usize,
    limit: usize,
    offset: usize,
    /// `category`, `brand`, `attr.NAME` → `[{value, count}]`; `price` → `[{min, max, count}]`. Each
    /// facet is counted with every filter applied except its own.
    #[schema(value_type = Object)]
    facets: crate::search::facets::RenderedFacets,
}

/// Search and browse products.
#[utoipa::path(get, path = "/api/v1/products", tag = "catalog",
    params(
        ("q" = Option<String>, Query, description = "Full text; typo tolerant, the last word also as a prefix"),
        ("category" = Option<String>, Query, description = "A category slug; includes the categories below it"),
        ("brand" = Option<Vec<String>>, Query, description = "Repeatable; any of them"),
        ("min_price" = Option<i64>, Query, description = "Inclusive, minor units, on the lowest variant price"),
        ("max_price" = Option<i64>, Query, description = "Inclusive, minor units"),
        ("in_stock" = Option<bool>, Query),
        ("attr.NAME" = Option<String>, Query, description = "attr.color=red; repeatable; a product or any of its variants"),
        ("sort" = Option<String>, Query, description = "relevance | price_asc | price_desc | newest | title; newest without q"),
        ("status" = Option<String>, Query, description = "Admins only: draft | active | archived | all (the default for admins)"),
        ("limit" = Option<usize>, Query, description = "1 to 100, default 20"),
        ("offset" = Option<usize>, Query),
    ),
    responses(
        (status = 200, body = SearchResults),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
async fn search_products(
    State(state): State<AppState>,
    caller: Option<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, Response> {
    let admin = caller.as_ref().is_some_and(Caller::is_admin);
    let (mut request, category) = search::parse(query.as_deref(), admin).map_err(IntoResponse::into_response)?;
    if let Some(category) = category {
        let parents =
            state.products.store().category_parents().await.map_err(|e| CatalogError::from(e).into_response())?;
        request.categories = search::descendants(&category, &parents);
    }
    let page = state.index.search(request).await.map_err(IntoResponse::into_response)?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], page.body).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct Suggestion {
    text: String,
    product_id: Uuid,
}

/// Completions for a search box.
#[utoipa::path(get, path = "/api/v1/products/suggest", tag = "catalog",
    params(("q" = String, Query, description = "What was typed so far")),
    responses((status = 200, body = Vec<Suggestion>), (status = 400, body = Problem, content_type = "application/problem+json")))]
async fn suggest(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Json<Vec<Suggestion>>, Response> {
    let q = form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if q.chars().count() > 100 {
        return Err(Problem::with_detail(ErrorCode::BadRequest, "q must be at most 100 characters").into_response());
    }
    let found = state.index.suggest(q, 10).await.map_err(IntoResponse::into_response)?;
    Ok(Json(found.into_iter().map(|(text, product_id)| Suggestion { text, product_id }).collect()))
}

/// Renders a product and its strong ETag (a digest of the exact bytes served).
fn render(product: &Product) -> Result<CachedProduct, CatalogError> {
    let body = Bytes::from(serde_json::to_vec(&ProductView::from(product)).map_err(CatalogError::internal)?);
    let digest = Sha256::digest(&body);
    let etag = format!("\"{}\"", digest[..16].iter().map(|b| format!("{b:02x}")).collect::<String>());
    Ok(CachedProduct {
        id: product.id,
        slug: product.slug.clone(),
        active: product.status == ProductStatus::Active,
        etag,
        body,
    })
}

/// Whether `If-None-Match` names this ETag (weak comparison, as RFC 9110 asks for this header).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |candidate| {
            let candidate = candidate.trim();
            candidate == "*" || candidate.trim_start_matches("W/") == etag
        },
    )
}

/// One product by id or slug.
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "catalog",
    params(("id" = String, Path, description = "The product's id or slug"), ("If-None-Match" = Option<String>, Header)),
    responses(
        (status = 200, body = ProductView, headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "The client's copy is current"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_product(
    State(state): State<AppState>,
    caller: Option<Caller>,
    ApiPath(key): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, CatalogError> {
    let key = ProductKey::parse(&key);
    let cached = match &key {
        ProductKey::Id(id) => state.cache.get(*id).await,
        ProductKey::Slug(slug) => match state.cache.id_for_slug(slug).await {
            Some(id) => state.cache.get(id).await.filter(|entry| entry.slug == *slug),
            None => None,
        },
    };
    let entry = match cached {
        Some(entry) => entry,
        None => {
            let product = state.products.get(&key).await?.ok_or(CatalogError::ProductNotFound)?;
            let entry = render(&product)?;
            state.cache.put(&entry).await;
            entry
        }
    };
    if !entry.active && !caller.as_ref().is_some_and(Caller::is_admin) {
        return Err(CatalogError::ProductNotFound);
    }
    let cache_control = if entry.active { "public, max-age=5, must-revalidate" } else { "private, no-cache" };
    let mut response = if not_modified(&headers, &entry.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], entry.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    if let Ok(etag) = HeaderValue::from_str(&entry.etag) {
        headers.insert(header::ETAG, etag);
    }
    Ok(response)
}

/// Create a product (admin).
#[utoipa::path(post, path = "/api/v1/products", tag = "catalog", security(("bearer" = [])),
    request_body = crate::commands::NewProductRequest,
    responses(
        (status = 201, body = ProductView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The slug or a SKU is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_product(
    State(state): State<AppState>,
    _admin: Admin,
    context: Option<Extension<RequestContext>>,
    ApiJson(command): ApiJson<NewProduct>,
) -> Result<Response, CatalogError> {
    let product = state.products.create(command, traceparent(context)).await?;
    let location = format!("/api/v1/products/{}", product.id);
    let mut response = (StatusCode::CREATED, Json(ProductView::from(&product))).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Change a product (admin): any of its fields, its status, and its variants by SKU.
#[utoipa::path(patch, path = "/api/v1/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = crate::commands::ProductPatchRequest,
    responses(
        (status = 200, body = ProductView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_product(
    State(state): State<AppState>,
    _admin: Admin,
    context: Option<Extension<RequestContext>>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<ProductPatch>,
) -> Result<Json<ProductView>, CatalogError> {
    let product = state.products.update(id, patch, traceparent(context)).await?;
    state.cache.invalidate(&[id]).await;
    Ok(Json(ProductView::from(&product)))
}

/// Archive a product (admin). It leaves the storefront and stays for existing orders.
#[utoipa::path(delete, path = "/api/v1/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "Archived"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn archive_product(
    State(state): State<AppState>,
    _admin: Admin,
    context: Option<Extension<RequestContext>>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, CatalogError> {
    state.products.archive(id, traceparent(context)).await?;
    state.cache.invalidate(&[id]).await;
    Ok(StatusCode::NO_CONTENT)
}

fn sku(text: &str) -> Result<Sku, CatalogError> {
    Sku::parse(text).map_err(|_| CatalogError::SkuNotFound)
}

/// A SKU's stock (admin).
#[utoipa::path(get, path = "/api/v1/inventory/{sku}", tag = "catalog", security(("bearer" = [])),
    params(("sku" = String, Path)),
    responses((status = 200, body = StockView), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_stock(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(text): ApiPath<String>,
) -> Result<Json<StockView>, CatalogError> {
    Ok(Json(state.inventory.stock(&sku(&text)?).await?.into()))
}

/// Set a SKU's stock on hand (admin).
#[utoipa::path(put, path = "/api/v1/inventory/{sku}", tag = "catalog", security(("bearer" = [])),
    params(("sku" = String, Path)), request_body = crate::commands::SetStockRequest,
    responses(
        (status = 200, body = StockView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Below what is reserved", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_stock(
    State(state): State<AppState>,
    _admin: Admin,
    context: Option<Extension<RequestContext>>,
    ApiPath(text): ApiPath<String>,
    ApiJson(command): ApiJson<SetStock>,
) -> Result<Json<StockView>, CatalogError> {
    let change = state.inventory.set_on_hand(&sku(&text)?, command.on_hand, traceparent(context)).await?;
    state.cache.invalidate(&[change.product_id]).await;
    Ok(Json(change.into()))
}

/// Every category, with the number of active products in and below it.
#[utoipa::path(get, path = "/api/v1/categories", tag = "catalog", responses((status = 200, body = Vec<CategoryView>)))]
async fn list_categories(State(state): State<AppState>) -> Result<Json<Vec<CategoryView>>, CatalogError> {
    Ok(Json(state.products.categories().await?.into_iter().map(Into::into).collect()))
}

/// Create or rename a category (admin).
#[utoipa::path(put, path = "/api/v1/categories/{slug}", tag = "catalog", security(("bearer" = [])),
    params(("slug" = String, Path)), request_body = crate::commands::CategoryRequest,
    responses((status = 200, body = CategoryView), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn put_category(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(slug): ApiPath<String>,
    ApiJson(command): ApiJson<PutCategory>,
) -> Result<Json<CategoryView>, CatalogError> {
    let slug = Slug::parse(&slug).map_err(|e| CatalogError::field("slug", e))?;
    Ok(Json(state.products.put_category(&slug, command).await?.into()))
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::search::{facets::FacetCounts, render_page};

    #[test]
    fn if_none_match() {
        let mut headers = HeaderMap::new();
        assert!(!not_modified(&headers, "\"abc\""));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\", W/\"abc\""));
        assert!(not_modified(&headers, "\"abc\""));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\""));
        assert!(!not_modified(&headers, "\"abc\""));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&headers, "\"abc\""));
    }

    /// The body written by hand is the documented one, byte for byte.
    #[test]
    fn a_rendered_page_is_the_documented_body() {
        let views = vec![r#"{"id":"a","title":"Say \"hi\" ✓"}"#.to_owned(), r#"{"id":"b","variants":[]}"#.to_owned()];
        let mut counts = FacetCounts::default();
        counts.brand.insert("Hoka".to_owned(), 2);
        counts.attrs.entry("color".to_owned()).or_default().insert("red".to_owned(), 1);
        counts.price[1] = 2;
        let facets = counts.render();
        let body = render_page(&views, 7, 2, 4, facets.get());
        let items = views.iter().map(|v| RawValue::from_string(v.clone()).unwrap()).collect();
        let typed = SearchResults { items, total: 7, limit: 2, offset: 4, facets };
        assert_eq!(String::from_utf8_lossy(&body), serde_json::to_string(&typed).unwrap());
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["facets"]["brand"], serde_json::json!([{"value": "Hoka", "count": 2}]));
        assert_eq!(parsed["facets"]["price"], serde_json::json!([{"min": 1000, "max": 2499, "count": 2}]));
        assert_eq!(parsed["facets"]["category"], serde_json::json!([]));
    }
}
