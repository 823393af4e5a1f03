//! What admins send to change the catalog, parsed from JSON into validated values. Every invalid
//! field is reported at once, with its path (`variants[1].price.amount`).
//!
//! The `Raw` types' schemas state exactly what `parse` enforces: a request they allow is
//! taken, one they refuse is answered 422. What depends on the catalog's state (a SKU that
//! exists, a second variant with the same SKU) is checked by the use cases and answered 409.

use platform::{
    FieldError,
    http::extract::{Fields, Input},
    money::{Currency, Money},
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::{
    self, Attributes, MAX_BRAND, MAX_CATEGORY_NAME, MAX_DESCRIPTION, MAX_TITLE, ProductStatus, Sku, Slug,
};

pub const MAX_VARIANTS: usize = 100;
pub const MAX_IMAGES: usize = 20;
pub const MAX_PRICE: i64 = 1_000_000_000_000;
pub const MAX_STOCK: i64 = 1_000_000_000;

/// Money as sent: checked here so that a bad currency is a 422 naming the field.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"amount": 8999, "currency": "EUR"}))]
pub struct MoneyRequest {
    /// In the currency's minor unit (cents), 0 to 10^12.
    #[schema(minimum = 0, maximum = 1000000000000_i64, example = 8999)]
    #[serde(deserialize_with = "platform::http::extract::whole::required")]
    pub amount: i64,
    /// The shop's currency (ISO 4217); the served document names it, and any other is refused.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: String,
}

fn money(fields: &mut Fields, path: &str, raw: &MoneyRequest) -> Option<Money> {
    let currency = fields.check(&format!("{path}.currency"), Currency::parse(&raw.currency));
    if !(0..=MAX_PRICE).contains(&raw.amount) {
        fields.push(&format!("{path}.amount"), "must be between 0 and 10^12 minor units");
        return None;
    }
    Some(Money::new(raw.amount, currency?))
}

fn stock(fields: &mut Fields, path: &str, on_hand: i64) -> Option<i64> {
    if (0..=MAX_STOCK).contains(&on_hand) {
        Some(on_hand)
    } else {
        fields.push(path, "must be between 0 and 10^9");
        None
    }
}

fn parse_attributes(fields: &mut Fields, path: &str, raw: Option<Attributes>) -> Attributes {
    let attributes = raw.unwrap_or_default();
    fields.check(path, domain::attributes(&attributes));
    attributes
}

fn images(fields: &mut Fields, raw: Vec<String>) -> Vec<String> {
    if raw.len() > MAX_IMAGES {
        fields.push("images", format!("at most {MAX_IMAGES} images"));
    }
    for (i, url) in raw.iter().enumerate() {
        fields.check(&format!("images[{i}]"), domain::image_url(url));
    }
    raw
}

fn optional_text(fields: &mut Fields, path: &str, raw: Option<&str>, max: usize) -> Option<String> {
    let value = fields.check(path, domain::text(raw?, max, false))?;
    (!value.is_empty()).then_some(value)
}

/// A new product.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({
    "title": "Trail Runner 2",
    "category": "running-shoes",
    "brand": "Hoka",
    "description": "Light and grippy, for muddy trails.",
    "attributes": {"color": "Blue"},
    "images": ["https://cdn.example.com/trail-runner-2.jpg"],
    "status": "active",
    "variants": [
        {"sku": "TR2-42", "price": {"amount": 8999, "currency": "EUR"}, "attributes": {"size": "42"}, "on_hand": 12},
        {"sku": "TR2-43", "price": {"amount": 8999, "currency": "EUR"}, "attributes": {"size": "43"}, "on_hand": 8}
    ]
}))]
pub struct NewProductRequest {
    #[schema(schema_with = crate::schemas::title)]
    pub title: String,
    /// Derived from the title when absent (`product-` and the id when the title has no letters
    /// or digits to derive it from).
    #[schema(pattern = "^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length = 100, example = "trail-runner-2")]
    pub slug: Option<String>,
    #[schema(schema_with = crate::schemas::description)]
    pub description: Option<String>,
    #[schema(schema_with = crate::schemas::brand)]
    pub brand: Option<String>,
    /// A category slug; an unknown one creates the category.
    #[schema(pattern = "^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length = 100, example = "running-shoes")]
    pub category: String,
    #[schema(schema_with = crate::schemas::attributes)]
    pub attributes: Option<Attributes>,
    #[schema(schema_with = crate::schemas::images)]
    pub images: Option<Vec<String>>,
    /// `draft` when absent.
    pub status: Option<ProductStatus>,
    /// 1 to 100, each SKU once (a SKU sent twice, or one that exists already, is a 409).
    #[schema(min_items = 1, max_items = 100)]
    pub variants: Vec<NewVariantRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewVariantRequest {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length = 64, example = "TR2-42")]
    pub sku: String,
    /// The product's title when absent.
    #[schema(schema_with = crate::schemas::optional_title)]
    pub title: Option<String>,
    pub price: MoneyRequest,
    #[schema(schema_with = crate::schemas::attributes)]
    pub attributes: Option<Attributes>,
    /// Initial stock on hand, 0 to 10^9; 0 when absent.
    #[schema(minimum = 0, maximum = 1000000000, example = 12)]
    #[serde(default, deserialize_with = "platform::http::extract::whole::optional")]
    pub on_hand: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewProduct {
    pub title: String,
    pub slug: Option<Slug>,
    pub description: String,
    pub brand: Option<String>,
    pub category: Slug,
    pub attributes: Attributes,
    pub images: Vec<String>,
    pub status: ProductStatus,
    pub variants: Vec<NewVariant>,
}

#[derive(Debug, Clone)]
pub struct NewVariant {
    pub sku: Sku,
    pub title: String,
    pub price: Money,
    pub attributes: Attributes,
    pub on_hand: i64,
}

impl Input for NewProduct {
    type Raw = NewProductRequest;

    fn parse(raw: NewProductRequest) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::default();
        let title = fields.check("title", domain::required_text(&raw.title, MAX_TITLE));
        let slug = match raw.slug.as_deref() {
            Some(slug) => fields.check("slug", Slug::parse(slug)).map(Some),
            None => Some(None),
        };
        let description =
            fields.check("description", domain::text(raw.description.as_deref().unwrap_or(""), MAX_DESCRIPTION, true));
        let brand = optional_text(&mut fields, "brand", raw.brand.as_deref(), MAX_BRAND);
        let category = fields.check("category", Slug::parse(&raw.category));
        let attributes = parse_attributes(&mut fields, "attributes", raw.attributes);
        let images = images(&mut fields, raw.images.unwrap_or_default());
        if raw.variants.is_empty() {
            fields.push("variants", "at least one variant is required");
        } else if raw.variants.len() > MAX_VARIANTS {
            fields.push("variants", format!("at most {MAX_VARIANTS} variants"));
        }
        let mut variants = Vec::with_capacity(raw.variants.len());
        for (i, variant) in raw.variants.into_iter().enumerate() {
            let path = format!("variants[{i}]");
            let sku = fields.check(&format!("{path}.sku"), Sku::parse(&variant.sku));
            let variant_title = match variant.title.as_deref() {
                Some(text) => fields.check(&format!("{path}.title"), domain::required_text(text, MAX_TITLE)),
                None => title.clone(),
            };
            let price = money(&mut fields, &format!("{path}.price"), &variant.price);
            let attributes = parse_attributes(&mut fields, &format!("{path}.attributes"), variant.attributes);
            let on_hand = stock(&mut fields, &format!("{path}.on_hand"), variant.on_hand.unwrap_or(0));
            if let (Some(sku), Some(title), Some(price), Some(on_hand)) = (sku, variant_title, price, on_hand) {
                variants.push(NewVariant { sku, title, price, attributes, on_hand });
            }
        }
        match (title, slug, description, category) {
            (Some(title), Some(slug), Some(description), Some(category)) if fields.is_empty() => Ok(Self {
                title,
                slug,
                description,
                brand,
                category,
                attributes,
                images,
                status: raw.status.unwrap_or(ProductStatus::Draft),
                variants,
            }),
            _ => Err(fields.into_errors()),
        }
    }
}

/// A partial update: absent (or null) fields stay as they are. `brand: ""` removes the brand.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({
    "title": "Trail Runner 2 GTX",
    "status": "active",
    "variants": [{"sku": "TR2-42", "price": {"amount": 9499, "currency": "EUR"}}]
}))]
pub struct ProductPatchRequest {
    #[schema(schema_with = crate::schemas::optional_title)]
    pub title: Option<String>,
    #[schema(pattern = "^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length = 100, example = "trail-runner-2-gtx")]
    pub slug: Option<String>,
    #[schema(schema_with = crate::schemas::description)]
    pub description: Option<String>,
    #[schema(schema_with = crate::schemas::brand)]
    pub brand: Option<String>,
    /// A category slug; an unknown one creates the category.
    #[schema(pattern = "^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length = 100, example = "running-shoes")]
    pub category: Option<String>,
    /// Replaces all product-level attributes.
    #[schema(schema_with = crate::schemas::attributes)]
    pub attributes: Option<Attributes>,
    /// Replaces the image list.
    #[schema(schema_with = crate::schemas::images)]
    pub images: Option<Vec<String>>,
    pub status: Option<ProductStatus>,
    /// Up to 100 changes to variants by SKU, each SKU once; an unknown SKU adds a variant, which
    /// then needs a price (409 without one).
    #[schema(max_items = 100)]
    pub variants: Option<Vec<VariantPatchRequest>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VariantPatchRequest {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length = 64, example = "TR2-42")]
    pub sku: String,
    #[schema(schema_with = crate::schemas::optional_title)]
    pub title: Option<String>,
    /// Required for a variant this patch adds.
    pub price: Option<MoneyRequest>,
    /// Replaces the variant's attributes.
    #[schema(schema_with = crate::schemas::attributes)]
    pub attributes: Option<Attributes>,
    /// Only for a variant this patch adds (0 to 10^9); stock of existing SKUs is set through
    /// inventory (409 here).
    #[schema(minimum = 0, maximum = 1000000000, example = 5)]
    #[serde(default, deserialize_with = "platform::http::extract::whole::optional")]
    pub on_hand: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    pub title: Option<String>,
    pub slug: Option<Slug>,
    pub description: Option<String>,
    /// `Some(None)` removes the brand.
    pub brand: Option<Option<String>>,
    pub category: Option<Slug>,
    pub attributes: Option<Attributes>,
    pub images: Option<Vec<String>>,
    pub status: Option<ProductStatus>,
    pub variants: Vec<VariantPatch>,
}

#[derive(Debug, Clone)]
pub struct VariantPatch {
    pub sku: Sku,
    pub title: Option<String>,
    pub price: Option<Money>,
    pub attributes: Option<Attributes>,
    pub on_hand: Option<i64>,
}

impl Input for ProductPatch {
    type Raw = ProductPatchRequest;

    fn parse(raw: ProductPatchRequest) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::default();
        let mut patch = ProductPatch {
            title: raw.title.and_then(|t| fields.check("title", domain::required_text(&t, MAX_TITLE))),
            slug: raw.slug.and_then(|s| fields.check("slug", Slug::parse(&s))),
            description: raw
                .description
                .and_then(|d| fields.check("description", domain::text(&d, MAX_DESCRIPTION, true))),
            brand: raw.brand.map(|b| optional_text(&mut fields, "brand", Some(&b), MAX_BRAND)),
            category: raw.category.and_then(|c| fields.check("category", Slug::parse(&c))),
            attributes: raw.attributes.map(|a| parse_attributes(&mut fields, "attributes", Some(a))),
            images: raw.images.map(|i| images(&mut fields, i)),
            status: raw.status,
            variants: Vec::new(),
        };
        let raw_variants = raw.variants.unwrap_or_default();
        if raw_variants.len() > MAX_VARIANTS {
            fields.push("variants", format!("at most {MAX_VARIANTS} variants"));
        }
        for (i, variant) in raw_variants.into_iter().enumerate() {
            let path = format!("variants[{i}]");
            let sku = fields.check(&format!("{path}.sku"), Sku::parse(&variant.sku));
            let title = variant
                .title
                .and_then(|t| fields.check(&format!("{path}.title"), domain::required_text(&t, MAX_TITLE)));
            let price = variant.price.as_ref().and_then(|p| money(&mut fields, &format!("{path}.price"), p));
            let attributes =
                variant.attributes.map(|a| parse_attributes(&mut fields, &format!("{path}.attributes"), Some(a)));
            let on_hand = variant.on_hand.and_then(|n| stock(&mut fields, &format!("{path}.on_hand"), n));
            if let Some(sku) = sku {
                patch.variants.push(VariantPatch { sku, title, price, attributes, on_hand });
            }
        }
        if fields.is_empty() { Ok(patch) } else { Err(fields.into_errors()) }
    }
}

/// `{on_hand}` for `PUT /inventory/{sku}`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"on_hand": 25}))]
pub struct SetStockRequest {
    /// Units on hand, 0 to 10^9; not below what is reserved (409).
    #[schema(minimum = 0, maximum = 1000000000, example = 25)]
    #[serde(deserialize_with = "platform::http::extract::whole::required")]
    pub on_hand: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct SetStock {
    pub on_hand: i64,
}

impl Input for SetStock {
    type Raw = SetStockRequest;

    fn parse(raw: SetStockRequest) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::default();
        match stock(&mut fields, "on_hand", raw.on_hand) {
            Some(on_hand) => Ok(Self { on_hand }),
            None => Err(fields.into_errors()),
        }
    }
}

/// `{name, parent?}` for `PUT /categories/{slug}`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Trail running", "parent": "shoes"}))]
pub struct CategoryRequest {
    #[schema(schema_with = crate::schemas::category_name)]
    pub name: String,
    /// The slug of an existing category, not this one nor one below it (409 otherwise); none
    /// for a top-level category.
    #[schema(pattern = "^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length = 100, example = "shoes")]
    pub parent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PutCategory {
    pub name: String,
    pub parent: Option<Slug>,
}

impl Input for PutCategory {
    type Raw = CategoryRequest;

    fn parse(raw: CategoryRequest) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::default();
        let name = fields.check("name", domain::required_text(&raw.name, MAX_CATEGORY_NAME));
        let parent = match raw.parent.as_deref() {
            Some(parent) => fields.check("parent", Slug::parse(parent)).map(Some),
            None => Some(None),
        };
        match (name, parent) {
            (Some(name), Some(parent)) => Ok(Self { name, parent }),
            _ => Err(fields.into_errors()),
        }
    }
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::*;

    fn product(json: serde_json::Value) -> Result<NewProduct, Vec<FieldError>> {
        NewProduct::parse(serde_json::from_value(json).unwrap())
    }

    #[test]
    fn a_valid_product_parses_with_defaults() {
        let parsed = product(serde_json::json!({
            "title": "Trail Runner", "category": "shoes",
            "variants": [{"sku": "TR-42", "price": {"amount": 8999, "currency": "EUR"}}]
        }))
        .unwrap();
        assert_eq!(parsed.status, ProductStatus::Draft);
        assert_eq!(parsed.variants[0].title, "Trail Runner");
        assert_eq!(parsed.variants[0].on_hand, 0);
        assert!(parsed.slug.is_none());
    }

    #[test]
    fn every_bad_field_is_reported_with_its_path() {
        let errors = product(serde_json::json!({
            "title": " ", "category": "Shoes", "slug": "a b", "images": ["ftp://x"],
            "variants": [
                {"sku": "A", "price": {"amount": -1, "currency": "EUR"}},
                {"sku": "-A", "price": {"amount": 1, "currency": "eur"}, "on_hand": -5}
            ]
        }))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for expected in [
            "title",
            "slug",
            "category",
            "images[0]",
            "variants[0].price.amount",
            "variants[1].sku",
            "variants[1].price.currency",
            "variants[1].on_hand",
        ] {
            assert!(fields.contains(&expected), "{expected} missing from {fields:?}");
        }
    }

    #[test]
    fn a_product_needs_variants() {
        let errors = product(serde_json::json!({"title": "X", "category": "c", "variants": []})).unwrap_err();
        assert_eq!(errors[0].field, "variants");
    }

    #[test]
    fn whole_numbers_are_integers_however_they_are_written() {
        let on_hand = |json| serde_json::from_value::<SetStockRequest>(json).map(|r| r.on_hand).ok();
        for (json, expected) in [
            (serde_json::json!({"on_hand": 25}), Some(25)),
            (serde_json::json!({"on_hand": 25.0}), Some(25)),
            (serde_json::json!({"on_hand": -0.0}), Some(0)),
            (serde_json::json!({"on_hand": 1e9}), Some(MAX_STOCK)),
            (serde_json::json!({"on_hand": 25.5}), None),
            (serde_json::json!({"on_hand": 1e19}), None),
            (serde_json::json!({"on_hand": "25"}), None),
            (serde_json::json!({"on_hand": null}), None),
        ] {
            assert_eq!(on_hand(json.clone()), expected, "{json}");
        }
        let variant = |json| serde_json::from_value::<NewVariantRequest>(json).map(|v| v.on_hand).ok();
        let price = serde_json::json!({"amount": 100.0, "currency": "EUR"});
        assert_eq!(variant(serde_json::json!({"sku": "A", "price": price})), Some(None), "absent");
        assert_eq!(variant(serde_json::json!({"sku": "A", "price": price, "on_hand": null})), Some(None));
        assert_eq!(variant(serde_json::json!({"sku": "A", "price": price, "on_hand": 3.0})), Some(Some(3)));
        let missing = platform::http::extract::parse_json::<SetStockRequest>(b"{}").unwrap_err();
        assert_eq!(missing.status, 422, "a missing number is still a missing field");
    }

    /// A SKU sent twice is well formed: whether it may be is the use case's question (409).
    #[test]
    fn a_repeated_sku_parses() {
        let parsed = product(serde_json::json!({
            "title": "X", "category": "c",
            "variants": [
                {"sku": "A", "price": {"amount": 1, "currency": "EUR"}},
                {"sku": "A", "price": {"amount": 2, "currency": "EUR"}}
            ]
        }));
        assert_eq!(parsed.unwrap().variants.len(), 2);
    }

    fn schema(name: &str) -> serde_json::Value {
        let doc = serde_json::to_value(crate::ApiDoc::openapi()).expect("the document serialises");
        doc["components"]["schemas"][name].clone()
    }

    fn bounds(property: &serde_json::Value) -> (Option<i64>, Option<i64>) {
        (property["minimum"].as_i64(), property["maximum"].as_i64())
    }

    // The fuzzer holds the code to its schema: the literals in `#[schema]` must be the rules.
    #[test]
    fn the_documented_numbers_are_the_enforced_ones() {
        assert_eq!(bounds(&schema("MoneyRequest")["properties"]["amount"]), (Some(0), Some(MAX_PRICE)));
        for name in ["NewVariantRequest", "VariantPatchRequest", "SetStockRequest"] {
            assert_eq!(bounds(&schema(name)["properties"]["on_hand"]), (Some(0), Some(MAX_STOCK)), "{name}");
        }
        let set = |on_hand| SetStock::parse(SetStockRequest { on_hand }).is_ok();
        assert!(set(0) && set(MAX_STOCK) && !set(-1) && !set(MAX_STOCK + 1));
        let price = |amount| {
            let mut fields = Fields::default();
            money(&mut fields, "price", &MoneyRequest { amount, currency: "EUR".to_owned() }).is_some()
        };
        assert!(price(0) && price(MAX_PRICE) && !price(-1) && !price(MAX_PRICE + 1));
        let (product, patch) = (schema("NewProductRequest"), schema("ProductPatchRequest"));
        let variants = &product["properties"]["variants"];
        assert_eq!(
            (variants["minItems"].as_u64(), variants["maxItems"].as_u64()),
            (Some(1), Some(MAX_VARIANTS as u64))
        );
        assert_eq!(patch["properties"]["variants"]["maxItems"].as_u64(), Some(MAX_VARIANTS as u64));
    }

    #[test]
    fn the_documented_patterns_are_the_domain_rules() {
        let (product, patch, category) =
            (schema("NewProductRequest"), schema("ProductPatchRequest"), schema("CategoryRequest"));
        let slugs = [
            &product["properties"]["slug"],
            &product["properties"]["category"],
            &patch["properties"]["slug"],
            &patch["properties"]["category"],
            &category["properties"]["parent"],
        ];
        for slug in slugs {
            assert_eq!(slug["pattern"], domain::SLUG_PATTERN);
            assert_eq!(slug["maxLength"].as_u64(), Some(Slug::MAX_LEN as u64));
        }
        for name in ["NewVariantRequest", "VariantPatchRequest"] {
            let variant = schema(name);
            let sku = &variant["properties"]["sku"];
            assert_eq!(sku["pattern"], domain::SKU_PATTERN);
            assert_eq!(sku["maxLength"].as_u64(), Some(Sku::MAX_LEN as u64));
        }
        assert_eq!(schema("MoneyRequest")["properties"]["currency"]["pattern"], "^[A-Z]{3}$");
        assert!(Currency::parse("EUR").is_ok() && Currency::parse("eur").is_err() && Currency::parse("EURO").is_err());
        let title = &product["properties"]["title"];
        assert_eq!(title["pattern"], crate::schemas::required_line_pattern());
        assert_eq!(title["maxLength"].as_u64(), Some(MAX_TITLE as u64));
        assert_eq!(product["properties"]["images"]["maxItems"].as_u64(), Some(MAX_IMAGES as u64));
    }

    /// The documented examples are accepted.
    #[test]
    fn the_examples_parse() {
        let example = |name: &str| schema(name)["example"].clone();
        assert!(NewProduct::parse(serde_json::from_value(example("NewProductRequest")).unwrap()).is_ok());
        assert!(ProductPatch::parse(serde_json::from_value(example("ProductPatchRequest")).unwrap()).is_ok());
        assert!(SetStock::parse(serde_json::from_value(example("SetStockRequest")).unwrap()).is_ok());
        assert!(PutCategory::parse(serde_json::from_value(example("CategoryRequest")).unwrap()).is_ok());
    }
}
