//! Browsing: the home page, listings (search and categories) with their facets, the search box's
//! suggestions, and product pages.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use platform::money::{Currency, Money};

use super::{failure_page, layout, page};
use crate::{
    App,
    api::{Category, Facet, FacetValue, PriceBucket, Product, SearchPage, Suggestion},
    session::Visit,
    views::{
        Card, FacetGroup, FacetOption, HomePage, Link, ListingPage, ProductPage, SortOption, SuggestFragment,
        VariantOption,
    },
};

const PAGE_SIZE: u64 = 24;
/// The API pages search results up to this offset.
const MAX_OFFSET: u64 = 10_000;

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
    let categories = categories.unwrap_or_default();
    let names: BTreeMap<&str, &Category> = categories.iter().map(|c| (c.slug.as_str(), c)).collect();
    if let Some(slug) = &filters.category
        && filters.path_category
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
    let suggestions = if results.total == 0 && !filters.q.is_empty() {
        let path = format!("/api/v1/products/suggest?q={}", encode(&filters.q));
        let found = app.api.public::<Vec<Suggestion>>(&visit.forward, path).await.unwrap_or_default();
        suggestion_links(&found)
    } else {
        Vec::new()
    };
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
    let q = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.trim().chars().take(100).collect::<String>())
        .unwrap_or_default();
    let links = if q.is_empty() {
        Vec::new()
    } else {
        let path = format!("/api/v1/products/suggest?q={}", encode(&q));
        let found = app.api.public::<Vec<Suggestion>>(&visit.forward, path).await.unwrap_or_default();
        suggestion_links(&found)
    };
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
        return (visit, Redirect::permanent(&format!("/p/{}", product.slug))).into_response();
    }
    let categories = categories.unwrap_or_default();
    let names: BTreeMap<&str, &Category> = categories.iter().map(|c| (c.slug.as_str(), c)).collect();
    let chosen = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "sku")
        .map(|(_, v)| v.into_owned())
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

/// Each suggestion as a search for it.
fn suggestion_links(found: &[Suggestion]) -> Vec<Link> {
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

fn price_range(min: i64, max: Option<i64>, currency: Currency) -> String {
    let money = |amount| Money::new(amount, currency).for_reading();
    match max {
        Some(max) => format!("{} – {}", money(min), money(max)),
        None => format!("{} and up", money(min)),
    }
}

fn title_case(name: &str) -> String {
    let name = name.replace('_', " ");
    let mut chars = name.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn encode_segment(text: &str) -> String {
    encode(text).replace('+', "%20")
}

fn is_slug(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 100
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// What a listing shows: the search words and every filter, read from the page's query
/// string leniently (what the API would refuse is dropped, not answered with an error).
#[derive(Debug, Clone, Default)]
struct Filters {
    q: String,
    category: Option<String>,
    /// The category is the page's (`/c/{category}`), not a filter in its query.
    path_category: bool,
    brands: Vec<String>,
    attributes: Vec<(String, String)>,
    min_price: Option<i64>,
    max_price: Option<i64>,
    in_stock: bool,
    sort: Option<String>,
    page: u64,
}

const SORTS: [(&str, &str); 5] = [
    ("relevance", "Best match"),
    ("newest", "Newest"),
    ("price_asc", "Price, low to high"),
    ("price_desc", "Price, high to low"),
    ("title", "Name"),
];

impl Filters {
    fn parse(query: &str, category: Option<String>) -> Self {
        let mut filters = Self { path_category: category.is_some(), category, page: 1, ..Self::default() };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = value.trim();
            match key.as_ref() {
                "q" => filters.q = value.chars().take(200).collect(),
                "category" if filters.category.is_none() && is_slug(value) => filters.category = Some(value.to_owned()),
                "brand" if !value.is_empty() && value.len() <= 100 && filters.brands.len() < 50 => {
                    filters.brands.push(value.to_owned())
                }
                "min_price" => filters.min_price = value.parse().ok().filter(|p: &i64| *p >= 0),
                "max_price" => filters.max_price = value.parse().ok().filter(|p: &i64| *p >= 0),
                "in_stock" => filters.in_stock = value == "true",
                "sort" if SORTS.iter().any(|(s, _)| *s == value) => filters.sort = Some(value.to_owned()),
                "page" => filters.page = value.parse().unwrap_or(1).clamp(1, MAX_OFFSET / PAGE_SIZE + 1),
                attribute => {
                    if let Some(name) = attribute.strip_prefix("attr.")
                        && !name.is_empty()
                        && name.len() <= 40
                        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                        && !value.is_empty()
                        && value.len() <= 100
                        && filters.attributes.len() < 20
                    {
                        filters.attributes.push((name.to_owned(), value.to_owned()));
                    }
                }
            }
        }
        if filters.sort.as_deref() == Some("relevance") && filters.q.is_empty() {
            filters.sort = None;
        }
        filters
    }

    /// The filters as query pairs, without the page's own category.
    fn pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        if !self.q.is_empty() {
            pairs.push(("q".into(), self.q.clone()));
        }
        if let Some(category) = &self.category
            && !self.path_category
        {
            pairs.push(("category".into(), category.clone()));
        }
        pairs.extend(self.brands.iter().map(|b| ("brand".to_owned(), b.clone())));
        pairs.extend(self.attributes.iter().map(|(n, v)| (format!("attr.{n}"), v.clone())));
        if let Some(min) = self.min_price {
            pairs.push(("min_price".into(), min.to_string()));
        }
        if let Some(max) = self.max_price {
            pairs.push(("max_price".into(), max.to_string()));
        }
        if self.in_stock {
            pairs.push(("in_stock".into(), "true".into()));
        }
        if let Some(sort) = &self.sort {
            pairs.push(("sort".into(), sort.clone()));
        }
        pairs
    }

    fn base(&self) -> String {
        match &self.category {
            Some(slug) if self.path_category => format!("/c/{slug}"),
            _ => "/search".to_owned(),
        }
    }

    /// This listing's address.
    fn href(&self) -> String {
        let mut pairs = self.pairs();
        if self.page > 1 {
            pairs.push(("page".into(), self.page.to_string()));
        }
        let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        if query.is_empty() { self.base() } else { format!("{}?{query}", self.base()) }
    }

    fn api_path(&self, limit: u64) -> String {
        let mut pairs = self.pairs();
        if let Some(category) = &self.category
            && self.path_category
        {
            pairs.push(("category".into(), category.clone()));
        }
        let offset = ((self.page - 1) * PAGE_SIZE).min(MAX_OFFSET);
        pairs.push(("limit".into(), limit.to_string()));
        pairs.push(("offset".into(), offset.to_string()));
        let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        format!("/api/v1/products?{query}")
    }

    /// Only the page's category: the listing a search engine should know.
    fn is_plain(&self) -> bool {
        self.pairs().is_empty() && self.page == 1
    }

    fn has(&self, key: &str, value: &str) -> bool {
        match key {
            "category" => self.category.as_deref() == Some(value),
            "brand" => self.brands.iter().any(|b| b == value),
            _ => key
                .strip_prefix("attr.")
                .is_some_and(|name| self.attributes.iter().any(|(n, v)| n == name && v == value)),
        }
    }

    /// The same listing with `value` of `key` added, or removed when it was there.
    fn toggled(&self, key: &str, value: &str) -> Filters {
        let mut f = self.clone();
        f.page = 1;
        let on = !self.has(key, value);
        match key {
            "category" => {
                f.category = on.then(|| value.to_owned());
                f.path_category = on && self.path_category;
            }
            "brand" => {
                f.brands.retain(|b| b != value);
                if on {
                    f.brands.push(value.to_owned());
                }
            }
            _ => {
                if let Some(name) = key.strip_prefix("attr.") {
                    f.attributes.retain(|(n, v)| !(n == name && v == value));
                    if on {
                        f.attributes.push((name.to_owned(), value.to_owned()));
                    }
                }
            }
        }
        f
    }

    /// The filters in force, each as a link that removes it.
    fn active(&self, category_name: &dyn Fn(&str) -> String, currency: Option<Currency>) -> Vec<Link> {
        let mut links = Vec::new();
        if let Some(category) = &self.category
            && !self.path_category
        {
            links.push(Link { href: self.toggled("category", category).href(), text: category_name(category) });
        }
        for brand in &self.brands {
            links.push(Link { href: self.toggled("brand", brand).href(), text: brand.clone() });
        }
        for (name, value) in &self.attributes {
            links.push(Link {
                href: self.toggled(&format!("attr.{name}"), value).href(),
                text: format!("{}: {value}", title_case(name)),
            });
        }
        if self.min_price.is_some() || self.max_price.is_some() {
            let mut f = self.clone();
            (f.min_price, f.max_price, f.page) = (None, None, 1);
            let text = match currency {
                Some(currency) => price_range(self.min_price.unwrap_or(0), self.max_price, currency),
                None => "Price".to_owned(),
            };
            links.push(Link { href: f.href(), text });
        }
        if self.in_stock {
            let mut f = self.clone();
            (f.in_stock, f.page) = (false, 1);
            links.push(Link { href: f.href(), text: "In stock".into() });
        }
        links
    }

    fn sorts(&self) -> Vec<SortOption> {
        let current = self.sort.as_deref().unwrap_or(if self.q.is_empty() { "newest" } else { "relevance" });
        SORTS
            .iter()
            .filter(|(value, _)| *value != "relevance" || !self.q.is_empty())
            .map(|(value, label)| SortOption {
                value: (*value).to_owned(),
                label: (*label).to_owned(),
                selected: *value == current,
            })
            .collect()
    }

    /// What the sort form carries along: every filter but the sort and the page.
    fn kept(&self) -> Vec<(String, String)> {
        self.pairs().into_iter().filter(|(k, _)| k != "sort").collect()
    }
}

impl IntoResponse for Filters {
    fn into_response(self) -> Response {
        Redirect::to(&self.href()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_leniently_and_link_back_to_themselves() {
        let f = Filters::parse(
            "q=red+shoe&brand=Acme&brand=Zed&attr.color=red&attr.BAD=x&min_price=1000&max_price=abc&in_stock=true&sort=price_asc&page=3",
            None,
        );
        assert_eq!(f.q, "red shoe");
        assert_eq!(f.brands, ["Acme", "Zed"]);
        assert_eq!(f.attributes, [("color".to_owned(), "red".to_owned())]);
        assert_eq!((f.min_price, f.max_price, f.in_stock, f.page), (Some(1000), None, true, 3));
        assert_eq!(
            f.href(),
            "/search?q=red+shoe&brand=Acme&brand=Zed&attr.color=red&min_price=1000&in_stock=true&sort=price_asc&page=3"
        );
        assert!(f.api_path(24).ends_with("&limit=24&offset=48"));

        let toggled = f.toggled("brand", "Acme");
        assert_eq!(toggled.brands, ["Zed"]);
        assert_eq!(toggled.page, 1);
        assert!(toggled.toggled("brand", "Acme").has("brand", "Acme"));

        let c = Filters::parse("page=999999&sort=relevance", Some("shoes".into()));
        assert_eq!(c.href(), format!("/c/shoes?page={}", MAX_OFFSET / PAGE_SIZE + 1));
        assert!(c.api_path(24).contains("category=shoes"));
        assert!(c.sort.is_none(), "relevance needs words to be relevant to");
        assert!(!c.toggled("category", "shoes").has("category", "shoes"));
    }

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
