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
    money::Currency,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::{
    OpenApi, ToSchema,
    openapi::{ObjectBuilder, RefOr, Schema, Type},
};
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
        .route("/openapi.json", get(openapi))
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

/// The document as this catalog serves it: [`ApiDoc`] with the one currency its prices may be
/// in, which is configuration, not code.
pub fn document(currency: Currency) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let money = doc.components.as_mut().and_then(|c| c.schemas.get_mut("MoneyRequest"));
    if let Some(RefOr::T(Schema::Object(money))) = money {
        let mut only = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some([currency.as_str()]))
            .description(Some("The shop's currency: a price in any other is refused"))
            .build();
        only.example = Some(currency.as_str().into());
        money.properties.insert("currency".to_owned(), RefOr::T(Schema::Object(only)));
    }
    doc
}

async fn openapi(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(document(state.products.currency()))
}

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
    #[schema(schema_with = crate::schemas::facets)]
    facets: crate::search::facets::RenderedFacets,
}

// Statuses every operation answers by rule are declared for the whole document
// (`platform::http::openapi::Rejections`): 400 for a query parameter or body of the wrong type,
// 413/415/422 for a body, 404 for a path parameter that names nothing (here also no such product
// or SKU), 401 for a bad token. Each operation declares what its own handler adds.

/// Search and browse products.
///
/// Attribute filters are a family of parameters, `attr.NAME=VALUE`: `NAME` is an attribute name
/// (1 to 40 of a-z, 0-9 and `_`; any other is refused with 400; at most 20 names, each given at
/// most 50 times), and a product matches when it
/// or one of its variants has any of the values given for that name. OpenAPI cannot declare a
/// parameter whose name is a pattern, so `attr.color` and `attr.size` stand for the family here;
/// every other `attr.NAME` works the same way. Query keys the search does not know are ignored.
///
/// Facets count, for `category`, `brand`, `price` and every `attr.NAME` asked about, the
/// products that each value would match with every other filter applied.
#[utoipa::path(get, path = "/api/v1/products", tag = "catalog", security((), ("bearer" = [])),
    params(
        ("q" = Option<String>, Query, max_length = 200, example = "trail shoe",
            description = "Full text over title, description, brand and category: every word must match, one typo allowed in words of 5 letters or more, the last word also as a prefix"),
        ("category" = Option<String>, Query, example = "shoes",
            description = "A category's slug: products in it and in the categories below it"),
        ("brand" = Option<Vec<String>>, Query, max_items = 50, example = json!(["Hoka", "Asics"]),
            description = "Repeatable, up to 50 times: products of any of these brands"),
        ("min_price" = Option<i64>, Query, example = 5000,
            description = "Inclusive, in minor units, on a product's lowest variant price"),
        ("max_price" = Option<i64>, Query, example = 20000,
            description = "Inclusive, in minor units; below `min_price`, nothing matches"),
        ("in_stock" = Option<bool>, Query, example = true, description = "Only products with a variant in stock"),
        ("attr.color" = Option<Vec<String>>, Query, max_items = 50, example = json!(["Blue"]),
            description = "One of the `attr.NAME` filters (see above), repeatable: products whose own or a variant's `color` is any of these"),
        ("attr.size" = Option<Vec<String>>, Query, max_items = 50, example = json!(["42"]),
            description = "One of the `attr.NAME` filters (see above), repeatable: products whose own or a variant's `size` is any of these"),
        ("sort" = inline(Option<crate::search::Sort>), Query,
            description = "`relevance` (the default with `q`), `newest` (the default without), by price or by title"),
        ("status" = inline(Option<search::StatusFilter>), Query,
            description = "Administrators only (others are shown active products, whatever they ask): one status, or `all`, the default for them"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, example = 20, description = "Page size, 1 to 100; 20 by default"),
        ("offset" = Option<i64>, Query, minimum = 0, maximum = 10000, example = 0,
            description = "Products to skip, 0 to 10,000: no page starts deeper"),
    ),
    responses((status = 200, description = "A page of products, the total and the facets", body = SearchResults)))]
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
    /// A product's title.
    text: String,
    product_id: Uuid,
}

/// Characters of a search box's text that suggestions look at.
const MAX_SUGGEST_Q: usize = 100;

/// Completions for a search box: up to 10 active products' titles, prefix and typo tolerant.
#[utoipa::path(get, path = "/api/v1/products/suggest", tag = "catalog",
    params(("q" = String, Query, max_length = 100, example = "speedg",
        description = "What was typed so far; empty suggests nothing")),
    responses((status = 200, description = "Titles, best first", body = Vec<Suggestion>)))]
async fn suggest(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Json<Vec<Suggestion>>, Response> {
    let Some(q) = form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.into_owned())
    else {
        return Err(Problem::with_detail(ErrorCode::BadRequest, "q is required").into_response());
    };
    if q.chars().count() > MAX_SUGGEST_Q {
        let detail = format!("q must be at most {MAX_SUGGEST_Q} characters");
        return Err(Problem::with_detail(ErrorCode::BadRequest, detail).into_response());
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
///
/// Drafts and archived products are found by administrators only; to anyone else they do not
/// exist (404).
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "catalog", security((), ("bearer" = [])),
    params(
        ("id" = String, Path, description = "The product's id or slug", example = "adidas-kinvara-8-running-shoe"),
        ("If-None-Match" = Option<String>, Header, nullable = false, example = "\"9c1185a5c5e9fc54612808977ee8f548\"",
            description = "ETags of copies the client holds, or `*`"),
    ),
    responses(
        (status = 200, description = "The product", body = ProductView,
            headers(("ETag" = String, description = "Strong: a digest of the body"), ("Cache-Control" = String))),
        (status = 304, description = "The client's copy is current",
            headers(("ETag" = String, description = "Strong: a digest of the body"), ("Cache-Control" = String))),
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
///
/// 422: besides a body outside its schema, a price in another currency than the shop's.
#[utoipa::path(post, path = "/api/v1/products", tag = "catalog", security(("bearer" = [])),
    request_body = crate::commands::NewProductRequest,
    responses(
        (status = 201, description = "Created", body = ProductView,
            headers(("Location" = String, description = "The new product's URL"))),
        (status = 403, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The slug or a SKU is taken, or a SKU is sent twice", body = Problem, content_type = "application/problem+json"),
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
///
/// 404: no product has that id. 422: besides a body outside its schema, a price in another
/// currency than the shop's.
#[utoipa::path(patch, path = "/api/v1/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The product's id", example = "01a24ebc-c63e-701f-b2ca-5512753eacc1")),
    request_body = crate::commands::ProductPatchRequest,
    responses(
        (status = 200, description = "The product as changed", body = ProductView),
        (status = 403, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The slug or a new SKU is taken, a SKU is sent twice, a new SKU has no price, or stock is sent for an existing SKU", body = Problem, content_type = "application/problem+json"),
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
///
/// Archiving an archived product changes nothing. 404: no product has that id.
#[utoipa::path(delete, path = "/api/v1/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The product's id", example = "01a24ebc-c63e-701f-b2ca-5512753eacc1")),
    responses(
        (status = 204, description = "Archived"),
        (status = 403, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
    ))]
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
///
/// 404: no such SKU.
#[utoipa::path(get, path = "/api/v1/inventory/{sku}", tag = "catalog", security(("bearer" = [])),
    params(("sku" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length = 64, example = "AK8RS-1-44",
        description = "The SKU; one that is not well formed names nothing (404)")),
    responses(
        (status = 200, description = "On hand, reserved and available", body = StockView),
        (status = 403, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_stock(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(text): ApiPath<String>,
) -> Result<Json<StockView>, CatalogError> {
    Ok(Json(state.inventory.stock(&sku(&text)?).await?.into()))
}

/// Set a SKU's stock on hand (admin).
///
/// 404: no such SKU.
#[utoipa::path(put, path = "/api/v1/inventory/{sku}", tag = "catalog", security(("bearer" = [])),
    params(("sku" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length = 64, example = "AK8RS-1-44",
        description = "The SKU; one that is not well formed names nothing (404)")),
    request_body = crate::commands::SetStockRequest,
    responses(
        (status = 200, description = "On hand, reserved and available", body = StockView),
        (status = 403, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Below what is reserved for orders (`reserved` says how much)", body = Problem, content_type = "application/problem+json"),
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
#[utoipa::path(get, path = "/api/v1/categories", tag = "catalog",
    responses((status = 200, description = "Every category", body = Vec<CategoryView>)))]
async fn list_categories(State(state): State<AppState>) -> Result<Json<Vec<CategoryView>>, CatalogError> {
    Ok(Json(state.products.categories().await?.into_iter().map(Into::into).collect()))
}

/// Create or rename a category (admin), or move it below another.
///
/// 422: besides a body outside its schema, a slug that is not well formed.
#[utoipa::path(put, path = "/api/v1/categories/{slug}", tag = "catalog", security(("bearer" = [])),
    params(("slug" = String, Path, pattern = "^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length = 100, example = "trail-running",
        description = "The category's slug")),
    request_body = crate::commands::CategoryRequest,
    responses(
        (status = 200, description = "The category as stored", body = CategoryView),
        (status = 403, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The parent does not exist, or lies below this category", body = Problem, content_type = "application/problem+json"),
    ))]
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

    fn doc() -> serde_json::Value {
        serde_json::to_value(ApiDoc::openapi()).expect("the document serialises")
    }

    /// The values an enum schema allows, inline or behind a `oneOf`, `anyOf` or `allOf`.
    fn enum_of(schema: &serde_json::Value) -> Vec<String> {
        if let Some(values) = schema["enum"].as_array() {
            return values.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        }
        ["oneOf", "anyOf", "allOf"]
            .iter()
            .flat_map(|k| schema[*k].as_array().into_iter().flatten())
            .flat_map(enum_of)
            .collect()
    }

    fn parameter(doc: &serde_json::Value, path: &str, method: &str, name: &str) -> serde_json::Value {
        let parameters = doc["paths"][path][method]["parameters"].as_array().cloned().unwrap_or_default();
        parameters.into_iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{method} {path} has no {name}"))
    }

    #[test]
    fn operations_declare_the_tokens_they_take() {
        let doc = doc();
        let optional = serde_json::json!([{}, {"bearer": []}]);
        assert_eq!(doc["paths"]["/api/v1/products"]["get"]["security"], optional);
        assert_eq!(doc["paths"]["/api/v1/products/{id}"]["get"]["security"], optional);
        for (path, method) in [
            ("/api/v1/products", "post"),
            ("/api/v1/products/{id}", "patch"),
            ("/api/v1/products/{id}", "delete"),
            ("/api/v1/inventory/{sku}", "get"),
            ("/api/v1/inventory/{sku}", "put"),
            ("/api/v1/categories/{slug}", "put"),
        ] {
            let operation = &doc["paths"][path][method];
            assert_eq!(operation["security"], serde_json::json!([{"bearer": []}]), "{method} {path}");
            assert!(operation["responses"]["403"].is_object(), "{method} {path} is for administrators");
        }
        assert!(doc["paths"]["/api/v1/products/suggest"]["get"]["security"].is_null());
        assert!(doc["paths"]["/api/v1/categories"]["get"]["security"].is_null());
    }

    // The fuzzer holds the parser to the parameters: their literals must be its rules.
    #[test]
    fn the_search_parameters_are_the_parsed_ones() {
        let doc = doc();
        let param = |name: &str| parameter(&doc, "/api/v1/products", "get", name)["schema"].clone();
        let sorts = enum_of(&param("sort"));
        assert_eq!(sorts.len(), 5, "{sorts:?}");
        assert!(sorts.iter().all(|s| crate::search::Sort::parse(s).is_some()), "{sorts:?}");
        let statuses = enum_of(&param("status"));
        assert_eq!(statuses.len(), 4, "{statuses:?}");
        assert!(statuses.iter().all(|s| search::StatusFilter::parse(s).is_some()), "{statuses:?}");
        let range = |name: &str| (param(name)["minimum"].as_u64(), param(name)["maximum"].as_u64());
        assert_eq!(range("limit"), (Some(1), Some(search::MAX_LIMIT as u64)));
        assert_eq!(range("offset"), (Some(0), Some(search::MAX_OFFSET as u64)));
        assert_eq!(param("q")["maxLength"].as_u64(), Some(search::MAX_Q as u64));
        for name in ["attr.color", "attr.size"] {
            let attribute = name.trim_start_matches("attr.");
            assert!(crate::domain::attribute_name(attribute).is_ok(), "{name} is one of the family");
        }
        let q = parameter(&doc, "/api/v1/products/suggest", "get", "q");
        assert_eq!(
            (q["required"].as_bool(), q["schema"]["maxLength"].as_u64()),
            (Some(true), Some(MAX_SUGGEST_Q as u64))
        );
    }

    #[test]
    fn path_parameters_state_the_domain_rules() {
        let doc = doc();
        for method in ["get", "put"] {
            let sku = parameter(&doc, "/api/v1/inventory/{sku}", method, "sku");
            assert_eq!(sku["schema"]["pattern"], crate::domain::SKU_PATTERN);
            assert_eq!(sku["schema"]["maxLength"].as_u64(), Some(Sku::MAX_LEN as u64));
        }
        let slug = parameter(&doc, "/api/v1/categories/{slug}", "put", "slug");
        assert_eq!(slug["schema"]["pattern"], crate::domain::SLUG_PATTERN);
        assert_eq!(slug["schema"]["maxLength"].as_u64(), Some(Slug::MAX_LEN as u64));
    }

    #[test]
    fn the_served_document_names_the_shop_currency() {
        let currency = Currency::parse("SEK").expect("a currency");
        let doc = serde_json::to_value(document(currency)).expect("the document serialises");
        let schema = &doc["components"]["schemas"]["MoneyRequest"]["properties"]["currency"];
        assert_eq!(schema["enum"], serde_json::json!(["SEK"]));
    }
}
