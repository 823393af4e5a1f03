//! What a listing shows — search words, category, brands, attributes, price, stock, sort and
//! page — read from its address leniently (what the API would refuse is dropped rather than
//! answered with an error), and written back as addresses: the listing's own, each facet value's
//! (the filter toggled), and the API query behind it.

use platform::money::Currency;

use super::catalog::{MAX_OFFSET, PAGE_SIZE, is_slug, price_range, title_case};
use crate::views::{Link, SortOption};

/// What a listing shows: the search words and every filter, read from the page's query
/// string leniently (what the API would refuse is dropped, not answered with an error).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub q: String,
    pub category: Option<String>,
    /// The category is the page's (`/c/{category}`), not a filter in its query.
    pub path_category: bool,
    pub brands: Vec<String>,
    pub attributes: Vec<(String, String)>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock: bool,
    pub sort: Option<String>,
    pub page: u64,
}

const SORTS: [(&str, &str); 5] = [
    ("relevance", "Best match"),
    ("newest", "Newest"),
    ("price_asc", "Price, low to high"),
    ("price_desc", "Price, high to low"),
    ("title", "Name"),
];

impl Filters {
    pub fn parse(query: &str, category: Option<String>) -> Self {
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
    pub fn pairs(&self) -> Vec<(String, String)> {
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

    pub fn base(&self) -> String {
        match &self.category {
            Some(slug) if self.path_category => format!("/c/{slug}"),
            _ => "/search".to_owned(),
        }
    }

    /// This listing's address.
    pub fn href(&self) -> String {
        let mut pairs = self.pairs();
        if self.page > 1 {
            pairs.push(("page".into(), self.page.to_string()));
        }
        let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        if query.is_empty() { self.base() } else { format!("{}?{query}", self.base()) }
    }

    pub fn api_path(&self, limit: u64) -> String {
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
    pub fn is_plain(&self) -> bool {
        self.pairs().is_empty() && self.page == 1
    }

    pub fn has(&self, key: &str, value: &str) -> bool {
        match key {
            "category" => self.category.as_deref() == Some(value),
            "brand" => self.brands.iter().any(|b| b == value),
            _ => key
                .strip_prefix("attr.")
                .is_some_and(|name| self.attributes.iter().any(|(n, v)| n == name && v == value)),
        }
    }

    /// The same listing with `value` of `key` added, or removed when it was there.
    pub fn toggled(&self, key: &str, value: &str) -> Filters {
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
    pub fn active(&self, category_name: &dyn Fn(&str) -> String, currency: Option<Currency>) -> Vec<Link> {
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

    pub fn sorts(&self) -> Vec<SortOption> {
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
    pub fn kept(&self) -> Vec<(String, String)> {
        self.pairs().into_iter().filter(|(k, _)| k != "sort").collect()
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
}
