//! Browsing: the home page, listings (search and categories) with their facets, the search box's
//! suggestions, and product pages.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use platform::money::{Currency, Money};

use super::{encode, encode_segment, failure_page, filters::Filters, layout, page, query_value};
use crate::{
    App,
    api::{Category, Facet, FacetValue, PriceBucket, Product, SearchPage, Suggestion},
    session::Visit,
    views::{Card, FacetGroup, FacetOption, HomePage, Link, ListingPage, ProductPage, SuggestFragment, VariantOption},
};

pub const PAGE_SIZE: u64 = 24;
/// The API pages search results up to this offset.
pub const MAX_OFFSET: u64 = 10_000;

pub async fn home(State(app): State<Arc<App>>, mut visit: Visit) -> Response {
    let newest = "/api/v1/products?sort=newest&limit=10".to_owned();
    let (categories, products) = tokio::join!(
        app.api.public::<Vec<Category>>(&visit.forward, "/api/v1/categories".into()),
        app.api.public::<SearchPage>(&visit.forward, newest),
    );
    let (categories, products) = match (categories, products) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(failure), _) | (_, Err(failure)) => return failure_page(&app, visit, &failure),
    };
    let categories = categories
        .iter()
        .filter(|c| c.parent.is_none() && c.product_count > 0)
        .map(|c| Link { href: format!("/c/{}", c.slug), text: format!("{} ({})", c.name, c.product_count) })
        .collect();
    let canonical = Some(format!("{}/", visit.origin));
    let layout = layout(&app, &mut visit, "Home", canonical);
    let products = products.items.iter().map(card).collect();
    page(visit, StatusCode::OK, HomePage { layout, categories, products })
}

pub async fn search(State(app): State<Arc<App>>, visit: Visit, RawQuery(query): RawQuery) -> Response {
    let filters = Filters::parse(query.as_deref().unwrap_or_default(), None);
    listing(app, visit, filters).await
}

pub async fn category(
    State(app): State<Arc<App>>,
    visit: Visit,
    Path(category): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if !is_slug(&category) {
        return super::errors::not_found_page(&app, visit);
    }
    let filters = Filters::parse(query.as_deref().unwrap_or_default(), Some(category));
    listing(app, visit, filters).await
}

/// A listing: the results of the filters, with a facet of each kind narrowing them further.
async fn listing(app: Arc<App>, mut visit: Visit, filters: Filters) -> Response {
    let mut in_stock_filters = filters.clone();
    in_stock_filters.in_stock = !filters.in_stock;
    in_stock_filters.page = 1;
    let (results, categories, other_stock) = tokio::join!(
        app.api.public::<SearchPage>(&visit.forward, filters.api_path(PAGE_SIZE)),
        app.api.public::<Vec<Category>>(&visit.forward, "/api/v1/categories".into()),
        app.api.public::<SearchPage>(&visit.forward, in_stock_filters.api_path(1)),
    );
    // A category page for a slug the catalog does not know is a 404, when the catalog said so.
    let known = categories.is_ok();
    let categories = categories.unwrap_or_default();
    let names: BTreeMap<&str, &Category> = categories.iter().map(|c| (c.slug.as_str(), c)).collect();
    if let Some(slug) = &filters.category
        && filters.path_category
        && known
        && !names.contains_key(slug.as_str())
    {
        return super::errors::not_found_page(&app, visit);
    }
    let (results, problem) = match results {
        Ok(results) => (results, None),
        Err(failure) if failure.status() == Some(StatusCode::BAD_REQUEST) => {
            (Arc::new(SearchPage { items: vec![], total: 0, facets: BTreeMap::new() }), Some(failure.detail()))
        }
        Err(failure) => return failure_page(&app, visit, &failure),
    };
    let category_name = |slug: &str| names.get(slug).map(|c| c.name.clone()).unwrap_or_else(|| slug.to_owned());
    let heading = match (&filters.category, filters.q.is_empty()) {
        (Some(slug), true) if filters.path_category => category_name(slug),
        (_, false) => format!("Results for “{}”", filters.q),
        _ => "All products".to_owned(),
    };
    let breadcrumbs = match &filters.category {
        Some(slug) if filters.path_category => crumbs(&names, slug),
        _ => Vec::new(),
    };
    let currency = results.items.first().and_then(Product::price).map(|p| p.currency);
    let mut facets = Vec::new();
    for (key, facet) in &results.facets {
        let group = match (key.as_str(), facet) {
            ("category", Facet::Values(values)) => {
                value_facet(&filters, "category", "Category", values, &|v| category_name(v))
            }
            ("brand", Facet::Values(values)) => value_facet(&filters, "brand", "Brand", values, &|v| v.to_owned()),
            ("price", Facet::Buckets(buckets)) => currency.and_then(|c| price_facet(&filters, buckets, c)),
            (attribute, Facet::Values(values)) if attribute.starts_with("attr.") => {
                let name = &attribute["attr.".len()..];
                value_facet(&filters, attribute, &title_case(name), values, &|v| v.to_owned())
            }
            _ => None,
        };
        facets.extend(group);
    }
    // Facets in the order a shopper narrows: category, brand, price, then attributes.
    facets.sort_by_key(|g| match g.id.as_str() {
        "category" => 0,
        "brand" => 1,
        "price" => 2,
        _ => 3,
    });
    if let Ok(other) = other_stock {
        let (count, selected) = if filters.in_stock { (results.total, true) } else { (other.total, false) };
        let mut toggled = filters.clone();
        toggled.in_stock = !filters.in_stock;
        toggled.page = 1;
        facets.push(FacetGroup {
            id: "availability".into(),
            title: "Availability".into(),
            options: vec![FacetOption { href: toggled.href(), label: "In stock".into(), count, selected }],
        });
    }
    let suggestions = if results.total == 0 { suggestions(&app, &visit, &filters.q).await } else { Vec::new() };
    let pages = results.total.div_ceil(PAGE_SIZE).clamp(1, MAX_OFFSET / PAGE_SIZE + 1);
    let at = |page: u64| {
        let mut f = filters.clone();
        f.page = page;
        f.href()
    };
    let previous = (filters.page > 1).then(|| at(filters.page - 1));
    let next = (filters.page < pages).then(|| at(filters.page + 1));
    let canonical = match &filters.category {
        Some(slug) if filters.path_category && filters.is_plain() => Some(format!("{}/c/{slug}", visit.origin)),
        _ => None,
    };
    let active = filters.active(&category_name, currency);
    let sorts = filters.sorts();
    let kept = filters.kept();
    let action = filters.base();
    let mut layout = layout(&app, &mut visit, heading.clone(), canonical);
    layout.q = filters.q.clone();
    let cards = results.items.iter().map(card).collect();
    let listing = ListingPage {
        layout,
        heading,
        breadcrumbs,
        total: results.total,
        cards,
        facets,
        active,
        action,
        kept,
        sorts,
        previous,
        next,
        page: filters.page,
        pages,
        suggestions,
        problem,
    };
    page(visit, StatusCode::OK, listing)
}

pub async fn suggest(State(app): State<Arc<App>>, visit: Visit, RawQuery(query): RawQuery) -> Response {
    let q: String = query_value(query.as_deref(), "q").unwrap_or_default().trim().chars().take(100).collect();
    let links = suggestions(&app, &visit, &q).await;
    page(visit, StatusCode::OK, SuggestFragment { links })
}

pub async fn product(
    State(app): State<Arc<App>>,
    mut visit: Visit,
    Path(slug): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if slug.is_empty() || slug.len() > 200 || slug.contains('/') {
        return super::errors::not_found_page(&app, visit);
    }
    let (product, categories) = tokio::join!(
        app.api.public::<Product>(&visit.forward, format!("/api/v1/products/{}", encode_segment(&slug))),
        app.api.public::<Vec<Category>>(&visit.forward, "/api/v1/categories".into()),
    );
    let product = match product {
        Ok(product) => product,
        Err(failure) => return failure_page(&app, visit, &failure),
    };
    if product.slug != slug {
        // Reached by id: the page has one address.
        // Not permanent: a slug may be renamed, and order and cart lines link by id.
        return (visit, Redirect::to(&format!("/p/{}", product.slug))).into_response();
    }
    let categories = categories.unwrap_or_default();
    let names: BTreeMap<&str, &Category> = categories.iter().map(|c| (c.slug.as_str(), c)).collect();
    let chosen = query_value(query.as_deref(), "sku")
        .filter(|sku| product.variants.iter().any(|v| &v.sku == sku && v.stock_available > 0))
        .or_else(|| product.variants.iter().find(|v| v.stock_available > 0).map(|v| v.sku.clone()));
    let variants = product
        .variants
        .iter()
        .map(|v| VariantOption {
            sku: v.sku.clone(),
            title: v.title.clone(),
            price: v.price.for_reading(),
            stock: match v.stock_available {
                0 => "Out of stock".to_owned(),
                n if n <= 5 => format!("Only {n} left"),
                n => format!("In stock ({n})"),
            },
            available: v.stock_available > 0,
            chosen: chosen.as_deref() == Some(v.sku.as_str()),
        })
        .collect();
    let canonical = format!("{}/p/{}", visit.origin, product.slug);
    let json_ld = json_ld(&product, &canonical);
    let mut breadcrumbs = crumbs(&names, &product.category);
    breadcrumbs.push(Link { href: format!("/p/{}", product.slug), text: product.title.clone() });
    let mut layout = layout(&app, &mut visit, product.title.clone(), Some(canonical));
    layout.description = product.description.chars().take(160).collect();
    let product_page = ProductPage {
        layout,
        breadcrumbs,
        title: product.title.clone(),
        brand: product.brand.clone().unwrap_or_default(),
        description: product.description.clone(),
        price: product.price().map(Money::for_reading).unwrap_or_default(),
        images: product.images.clone(),
        attributes: product.attributes.iter().map(|(k, v)| (title_case(k), v.clone())).collect(),
        variants,
        back: format!("/p/{}", product.slug),
        json_ld,
    };
    page(visit, StatusCode::OK, product_page)
}

/// Titles close to `q` (prefix and typo tolerant), each as a search for it.
async fn suggestions(app: &App, visit: &Visit, q: &str) -> Vec<Link> {
    if q.is_empty() {
        return Vec::new();
    }
    let path = format!("/api/v1/products/suggest?q={}", encode(q));
    let found = app.api.public::<Vec<Suggestion>>(&visit.forward, path).await.unwrap_or_default();
    found.iter().map(|s| Link { href: format!("/search?q={}", encode(&s.text)), text: s.text.clone() }).collect()
}

/// Home › parent › … › category.
fn crumbs(names: &BTreeMap<&str, &Category>, slug: &str) -> Vec<Link> {
    let mut chain = Vec::new();
    let mut at = Some(slug.to_owned());
    while let Some(slug) = at {
        if chain.len() > 10 {
            break;
        }
        let category = names.get(slug.as_str());
        chain.push(Link { href: format!("/c/{slug}"), text: category.map(|c| c.name.clone()).unwrap_or(slug) });
        at = category.and_then(|c| c.parent.clone());
    }
    chain.push(Link { href: "/".into(), text: "Home".into() });
    chain.reverse();
    chain
}

pub fn card(product: &Product) -> Card {
    Card {
        href: format!("/p/{}", product.slug),
        title: product.title.clone(),
        brand: product.brand.clone().unwrap_or_default(),
        price: product.price().map(Money::for_reading).unwrap_or_default(),
        image: product.images.first().cloned(),
        in_stock: product.in_stock(),
    }
}

/// schema.org `Product` with an offer per variant, safe to place inside `<script>`.
fn json_ld(product: &Product, url: &str) -> String {
    let offers: Vec<serde_json::Value> = product
        .variants
        .iter()
        .map(|v| {
            let per = Money::minor_per_major(v.price.currency);
            let decimals = per.to_string().len() - 1;
            let price = format!("{:.*}", decimals, v.price.amount as f64 / per as f64);
            serde_json::json!({
                "@type": "Offer",
                "sku": v.sku,
                "name": v.title,
                "price": price,
                "priceCurrency": v.price.currency.as_str(),
                "availability": if v.stock_available > 0 { "https://schema.org/InStock" } else { "https://schema.org/OutOfStock" },
                "url": format!("{url}?sku={}", encode(&v.sku)),
            })
        })
        .collect();
    let mut value = serde_json::json!({
        "@context": "https://schema.org",
        "@type": "Product",
        "name": product.title,
        "description": product.description,
        "url": url,
        "image": product.images,
        "category": product.category,
        "offers": offers,
    });
    if let Some(brand) = &product.brand {
        value["brand"] = serde_json::json!({"@type": "Brand", "name": brand});
    }
    if let Some(first) = product.variants.first() {
        value["sku"] = serde_json::json!(first.sku);
    }
    // `</script>` inside a string would end the element: JSON allows these escaped.
    value.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

fn value_facet(
    filters: &Filters,
    key: &str,
    title: &str,
    values: &[FacetValue],
    label: &dyn Fn(&str) -> String,
) -> Option<FacetGroup> {
    if values.is_empty() {
        return None;
    }
    let options = values
        .iter()
        .take(15)
        .map(|v| {
            let selected = filters.has(key, &v.value);
            FacetOption {
                href: filters.toggled(key, &v.value).href(),
                label: label(&v.value),
                count: v.count,
                selected,
            }
        })
        .collect();
    Some(FacetGroup { id: key.replace('.', "-"), title: title.to_owned(), options })
}

fn price_facet(filters: &Filters, buckets: &[PriceBucket], currency: Currency) -> Option<FacetGroup> {
    if buckets.is_empty() {
        return None;
    }
    let options = buckets
        .iter()
        .map(|b| {
            let selected = filters.min_price == Some(b.min) && filters.max_price == b.max;
            let mut f = filters.clone();
            f.page = 1;
            (f.min_price, f.max_price) = if selected { (None, None) } else { (Some(b.min), b.max) };
            FacetOption { href: f.href(), label: price_range(b.min, b.max, currency), count: b.count, selected }
        })
        .collect();
    Some(FacetGroup { id: "price".into(), title: "Price".into(), options })
}

pub fn price_range(min: i64, max: Option<i64>, currency: Currency) -> String {
    let money = |amount| Money::new(amount, currency).for_reading();
    match max {
        Some(max) => format!("{} – {}", money(min), money(max)),
        None => format!("{} and up", money(min)),
    }
}

pub fn title_case(name: &str) -> String {
    let name = name.replace('_', " ");
    let mut chars = name.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

pub fn is_slug(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 100
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_ld_cannot_close_its_script() {
        let product: Product = serde_json::from_value(serde_json::json!({
            "id": "0190a0a0-0000-7000-8000-000000000000", "slug": "s", "title": "</script><b>", "category": "c",
            "brand": null, "variants": [{"sku": "A", "title": "A", "price": {"amount": 1999, "currency": "EUR"}, "stock_available": 2}]
        }))
        .unwrap();
        let ld = json_ld(&product, "http://shop/p/s");
        assert!(!ld.contains('<') && ld.contains("\"price\":\"19.99\""), "{ld}");
        let value: serde_json::Value = serde_json::from_str(&ld).unwrap();
        assert_eq!(value["name"], "</script><b>");
    }
}
