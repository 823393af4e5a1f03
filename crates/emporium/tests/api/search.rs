//! Product search through the gateway: relevance, typos, prefixes, every filter and sort, facet
//! counts against a brute-force count over the same products, and pagination.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use serde_json::{Value, json};
use testkit::{TestDatabase, on_both_backends};

use crate::{catalog::create, common::*};

on_both_backends!(search_finds_filters_sorts_and_counts);

/// A product of the fixture: title, brand, category, colour, price, stock.
struct Item {
    title: &'static str,
    brand: &'static str,
    category: &'static str,
    color: &'static str,
    price: i64,
    stock: i64,
}

const ITEMS: &[Item] = &[
    Item { title: "Speedgoat 5", brand: "Hoka", category: "trail-shoes", color: "red", price: 14_999, stock: 5 },
    Item { title: "Speedgoat 5 GTX", brand: "Hoka", category: "trail-shoes", color: "black", price: 16_999, stock: 0 },
    Item { title: "Clifton 9", brand: "Hoka", category: "road-shoes", color: "blue", price: 13_999, stock: 3 },
    Item { title: "Gel Kayano 30", brand: "Asics", category: "road-shoes", color: "blue", price: 15_999, stock: 2 },
    Item { title: "Gel Trabuco 11", brand: "Asics", category: "trail-shoes", color: "red", price: 12_999, stock: 0 },
    Item { title: "Novablast 4", brand: "Asics", category: "road-shoes", color: "black", price: 11_999, stock: 7 },
    Item { title: "Speedcross 6", brand: "Salomon", category: "trail-shoes", color: "red", price: 12_999, stock: 4 },
    Item { title: "Sense Ride 5", brand: "Salomon", category: "trail-shoes", color: "blue", price: 11_999, stock: 1 },
    Item {
        title: "Bonatti Trail Jacket",
        brand: "Salomon",
        category: "jackets",
        color: "black",
        price: 9_999,
        stock: 6,
    },
    Item {
        title: "Torrentshell Jacket",
        brand: "Patagonia",
        category: "jackets",
        color: "red",
        price: 4_999,
        stock: 2,
    },
    Item {
        title: "Nano Puff Jacket",
        brand: "Patagonia",
        category: "jackets",
        color: "green",
        price: 22_999,
        stock: 0,
    },
    Item { title: "Capilene Trail Tee", brand: "Patagonia", category: "tees", color: "blue", price: 999, stock: 9 },
];

fn body(item: &Item, i: usize, run: &str) -> Value {
    json!({
        "title": item.title,
        "slug": format!("{}-{run}", item.title.to_lowercase().replace(' ', "-")),
        "brand": item.brand,
        "category": item.category,
        "description": format!("The {} by {}, in {}.", item.title, item.brand, item.color),
        "attributes": {"color": item.color},
        "status": "active",
        "variants": [
            {"sku": format!("S{i}-{run}-A"), "price": {"amount": item.price, "currency": "EUR"}, "attributes": {"size": "M"}, "on_hand": item.stock},
            {"sku": format!("S{i}-{run}-B"), "price": {"amount": item.price + 1_000, "currency": "EUR"}, "attributes": {"size": "L"}, "on_hand": 0}
        ]
    })
}

fn titles(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|p| p["title"].as_str().unwrap().to_owned()).collect()
}

/// The filters a query string applies, for the brute-force count.
#[derive(Default, Clone)]
struct Filters {
    categories: Vec<&'static str>,
    brands: Vec<&'static str>,
    colors: Vec<&'static str>,
    min_price: Option<i64>,
    max_price: Option<i64>,
    in_stock: bool,
}

impl Filters {
    fn query(&self) -> String {
        let mut parts = Vec::new();
        parts.extend(self.categories.iter().map(|c| format!("category={c}")));
        parts.extend(self.brands.iter().map(|b| format!("brand={b}")));
        parts.extend(self.colors.iter().map(|c| format!("attr.color={c}")));
        parts.extend(self.min_price.map(|p| format!("min_price={p}")));
        parts.extend(self.max_price.map(|p| format!("max_price={p}")));
        if self.in_stock {
            parts.push("in_stock=true".to_owned());
        }
        parts.join("&")
    }

    /// Whether `item` passes every filter except the one named by `skip`.
    fn passes(&self, item: &Item, skip: &str) -> bool {
        (skip == "category" || self.categories.is_empty() || self.categories.contains(&item.category))
            && (skip == "brand" || self.brands.is_empty() || self.brands.contains(&item.brand))
            && (skip == "attr.color" || self.colors.is_empty() || self.colors.contains(&item.color))
            && (skip == "price" || self.min_price.is_none_or(|m| item.price >= m))
            && (skip == "price" || self.max_price.is_none_or(|m| item.price <= m))
            && (!self.in_stock || item.stock > 0)
    }

    /// Facet counts computed the slow way: every product, every facet.
    fn expected_facets(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut facets: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for item in ITEMS {
            for (facet, value) in [("category", item.category), ("brand", item.brand), ("attr.color", item.color)] {
                if self.passes(item, facet) {
                    *facets.entry(facet.to_owned()).or_default().entry(value.to_owned()).or_default() += 1;
                }
            }
            // Variants carry `size`; a product counts once per value it has.
            if self.passes(item, "attr.size") {
                for size in ["L", "M"] {
                    *facets.entry("attr.size".to_owned()).or_default().entry(size.to_owned()).or_default() += 1;
                }
            }
            if self.passes(item, "price") {
                let edges = [0, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000];
                let bucket = edges.iter().rposition(|e| item.price >= *e).unwrap();
                *facets.entry("price".to_owned()).or_default().entry(edges[bucket].to_string()).or_default() += 1;
            }
        }
        facets
    }
}

fn actual_facets(page: &Value) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut facets = BTreeMap::new();
    for (name, values) in page["facets"].as_object().unwrap() {
        let counts: BTreeMap<String, u64> = values
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let key = if name == "price" { v["min"].to_string() } else { v["value"].as_str().unwrap().to_owned() };
                (key, v["count"].as_u64().unwrap())
            })
            .collect();
        if !counts.is_empty() {
            facets.insert(name.clone(), counts);
        }
    }
    facets
}

async fn search_finds_filters_sorts_and_counts(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let admin = shop.admin_token().await;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..6];
    for (i, item) in ITEMS.iter().enumerate() {
        create(&shop, &admin, &body(item, i, run)).await;
    }
    // A draft never shows up.
    let mut draft = body(&ITEMS[0], 99, run);
    draft["status"] = json!("draft");
    draft["slug"] = json!(format!("draft-{run}"));
    create(&shop, &admin, &draft).await;
    let get = |query: String| {
        let shop = &shop;
        async move {
            let response = shop.gateway.get(&format!("/api/v1/products?{query}")).send().await;
            assert_eq!(response.status, 200, "{query}: {}", String::from_utf8_lossy(&response.body));
            response.json()
        }
    };
    assert!(
        testkit::eventually(Duration::from_secs(2), || async { get(String::new()).await["total"] == ITEMS.len() })
            .await
    );

    // Relevance: the exact title first; typos of one edit in longer words; the last word as a prefix.
    assert_eq!(titles(&get("q=speedgoat+5".into()).await)[..2], ["Speedgoat 5", "Speedgoat 5 GTX"]);
    assert_eq!(titles(&get("q=spedgoat+gtx".into()).await), ["Speedgoat 5 GTX"]);
    assert_eq!(titles(&get("q=clifon".into()).await), ["Clifton 9"]);
    assert_eq!(titles(&get("q=nova".into()).await), ["Novablast 4"]);
    assert_eq!(titles(&get("q=torrentshel+jack".into()).await), ["Torrentshell Jacket"]);
    assert_eq!(get("q=gell+kayano".into()).await["total"], 0, "no typo tolerance below 5 letters");
    assert_eq!(titles(&get("q=gel+kayano".into()).await), ["Gel Kayano 30"]);
    // Brand and category words are searched too.
    assert_eq!(get("q=patagonia".into()).await["total"], 3);
    assert_eq!(get("q=jackets".into()).await["total"], 3);
    let trail = titles(&get("q=trail".into()).await);
    assert!(trail.len() >= 7 && trail.iter().take(2).all(|t| t.contains("Trail")), "title matches first: {trail:?}");

    // Sorts.
    let prices = |page: &Value| -> Vec<i64> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["variants"][0]["price"]["amount"].as_i64().unwrap())
            .collect()
    };
    let ascending = prices(&get("sort=price_asc&limit=100".into()).await);
    assert!(ascending.windows(2).all(|w| w[0] <= w[1]) && ascending.len() == ITEMS.len(), "{ascending:?}");
    let descending = prices(&get("sort=price_desc&limit=100".into()).await);
    assert!(descending.windows(2).all(|w| w[0] >= w[1]), "{descending:?}");
    let by_title = titles(&get("sort=title&limit=100".into()).await);
    let mut sorted = by_title.clone();
    sorted.sort_by_key(|t| t.to_lowercase());
    assert_eq!(by_title, sorted);
    let newest = titles(&get("limit=3".into()).await);
    assert_eq!(newest, ["Capilene Trail Tee", "Nano Puff Jacket", "Torrentshell Jacket"], "newest first without q");

    // Every filter, alone and together, with facets checked against a brute-force count.
    let cases = [
        Filters::default(),
        Filters { categories: vec!["trail-shoes"], ..Default::default() },
        Filters { brands: vec!["Hoka", "Salomon"], ..Default::default() },
        Filters { colors: vec!["red"], ..Default::default() },
        Filters { colors: vec!["red", "blue"], brands: vec!["Asics"], ..Default::default() },
        Filters { min_price: Some(12_999), max_price: Some(15_999), ..Default::default() },
        Filters { in_stock: true, ..Default::default() },
        Filters {
            categories: vec!["trail-shoes"],
            brands: vec!["Hoka", "Asics"],
            colors: vec!["red"],
            min_price: Some(10_000),
            in_stock: true,
            ..Default::default()
        },
    ];
    for filters in cases {
        let page = get(format!("{}&limit=100", filters.query())).await;
        let expected: HashSet<&str> = ITEMS.iter().filter(|i| filters.passes(i, "")).map(|i| i.title).collect();
        let found: HashSet<String> = titles(&page).into_iter().collect();
        assert_eq!(found, expected.iter().map(|t| (*t).to_owned()).collect(), "hits for {}", filters.query());
        assert_eq!(page["total"], expected.len(), "total for {}", filters.query());
        assert_eq!(actual_facets(&page), filters.expected_facets(), "facets for {}", filters.query());
    }
    // Price buckets are inclusive ranges that a client can feed back as filters.
    let buckets = get(String::new()).await["facets"]["price"].clone();
    for bucket in buckets.as_array().unwrap() {
        let mut query = format!("min_price={}", bucket["min"]);
        if let Some(max) = bucket["max"].as_i64() {
            query.push_str(&format!("&max_price={max}"));
        }
        assert_eq!(get(query).await["total"], bucket["count"], "bucket {bucket}");
    }

    // Pagination: every product exactly once, the same total on each page.
    let mut seen = Vec::new();
    for offset in (0..ITEMS.len()).step_by(5) {
        let page = get(format!("sort=title&limit=5&offset={offset}")).await;
        assert_eq!(page["total"], ITEMS.len());
        assert_eq!(page["limit"], 5);
        assert_eq!(page["offset"], offset);
        seen.extend(titles(&page));
    }
    assert_eq!(seen.len(), ITEMS.len());
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), ITEMS.len());

    // Suggestions: prefix and typo tolerant, active products only.
    let suggestions = shop.gateway.get("/api/v1/products/suggest?q=speedg").send().await.json();
    let texts: Vec<&str> = suggestions.as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 2, "{suggestions}");
    assert!(texts.contains(&"Speedgoat 5") && texts.contains(&"Speedgoat 5 GTX"));
    let typo = shop.gateway.get("/api/v1/products/suggest?q=torentshell").send().await.json();
    assert_eq!(typo[0]["text"], "Torrentshell Jacket");
    assert_eq!(shop.gateway.get("/api/v1/products/suggest?q=").send().await.json(), json!([]));

    // Admins see drafts when they ask for them.
    let drafts = shop.gateway.get("/api/v1/products?status=draft").bearer(&admin).send().await.json();
    assert_eq!(drafts["total"], 1);

    // Facets are kept per state of the index: every page of a search answers the same ones,
    // and a product indexed since is counted at once, never the facets from before it.
    let first = get("brand=Hoka&limit=2".into()).await;
    let second = get("brand=Hoka&limit=2&offset=2&sort=price_asc".into()).await;
    assert_eq!(first["facets"], second["facets"]);
    let mut newcomer = body(&ITEMS[0], 98, run);
    newcomer["brand"] = json!("Norda");
    newcomer["slug"] = json!(format!("norda-{run}"));
    create(&shop, &admin, &newcomer).await;
    assert!(
        testkit::eventually(Duration::from_secs(2), || async { get(String::new()).await["total"] == ITEMS.len() + 1 })
            .await
    );
    let brands = get("brand=Hoka".into()).await["facets"]["brand"].clone();
    let norda = brands.as_array().unwrap().iter().find(|b| b["value"] == "Norda");
    assert_eq!(norda.map(|b| b["count"].clone()), Some(json!(1)), "{brands}");
}
