//! What admins send to change the catalog, parsed from JSON into validated values. Every invalid
//! field is reported at once, with its path (`variants[1].price.amount`).

use std::collections::HashSet;

use platform::{
    FieldError,
    http::extract::{Fields, Input},
    money::{Currency, Money},
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::{self, Attributes, ProductStatus, Sku, Slug};

pub const MAX_VARIANTS: usize = 100;
pub const MAX_IMAGES: usize = 20;
const MAX_PRICE: i64 = 1_000_000_000_000;
const MAX_STOCK: i64 = 1_000_000_000;

/// Money as sent: checked here so that a bad currency is a 422 naming the field.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MoneyRequest {
    /// In the currency's minor unit (cents).
    pub amount: i64,
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
pub struct NewProductRequest {
    pub title: String,
    /// Derived from the title when absent.
    pub slug: Option<String>,
    pub description: Option<String>,
    pub brand: Option<String>,
    /// A category slug; an unknown one creates the category.
    pub category: String,
    pub attributes: Option<Attributes>,
    pub images: Option<Vec<String>>,
    /// `draft` when absent.
    pub status: Option<ProductStatus>,
    /// At least one.
    pub variants: Vec<NewVariantRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewVariantRequest {
    pub sku: String,
    /// The product's title when absent.
    pub title: Option<String>,
    pub price: MoneyRequest,
    pub attributes: Option<Attributes>,
    /// Initial stock on hand; 0 when absent.
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
        let title = fields.check("title", domain::required_text(&raw.title, 200));
        let slug = match raw.slug.as_deref() {
            Some(slug) => fields.check("slug", Slug::parse(slug)).map(Some),
            None => Some(None),
        };
        let description =
            fields.check("description", domain::text(raw.description.as_deref().unwrap_or(""), 10_000, true));
        let brand = optional_text(&mut fields, "brand", raw.brand.as_deref(), 100);
        let category = fields.check("category", Slug::parse(&raw.category));
        let attributes = parse_attributes(&mut fields, "attributes", raw.attributes);
        let images = images(&mut fields, raw.images.unwrap_or_default());
        if raw.variants.is_empty() {
            fields.push("variants", "at least one variant is required");
        } else if raw.variants.len() > MAX_VARIANTS {
            fields.push("variants", format!("at most {MAX_VARIANTS} variants"));
        }
        let mut seen = HashSet::new();
        let mut variants = Vec::with_capacity(raw.variants.len());
        for (i, variant) in raw.variants.into_iter().enumerate() {
            let path = format!("variants[{i}]");
            let sku = fields.check(&format!("{path}.sku"), Sku::parse(&variant.sku));
            if let Some(sku) = &sku
                && !seen.insert(sku.clone())
            {
                fields.push(&format!("{path}.sku"), "appears twice in this product");
            }
            let variant_title = match variant.title.as_deref() {
                Some(text) => fields.check(&format!("{path}.title"), domain::required_text(text, 200)),
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

/// A partial update: absent fields stay as they are. `brand: ""` removes the brand.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProductPatchRequest {
    pub title: Option<String>,
    pub slug: Option<String>,
    pub description: Option<String>,
    pub brand: Option<String>,
    pub category: Option<String>,
    /// Replaces all product-level attributes.
    pub attributes: Option<Attributes>,
    /// Replaces the image list.
    pub images: Option<Vec<String>>,
    pub status: Option<ProductStatus>,
    /// Changes to variants by SKU; an unknown SKU adds a variant (which then needs a price).
    pub variants: Option<Vec<VariantPatchRequest>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VariantPatchRequest {
    pub sku: String,
    pub title: Option<String>,
    pub price: Option<MoneyRequest>,
    /// Replaces the variant's attributes.
    pub attributes: Option<Attributes>,
    /// Only for a variant this patch adds; stock of existing SKUs is set through inventory.
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
            title: raw.title.and_then(|t| fields.check("title", domain::required_text(&t, 200))),
            slug: raw.slug.and_then(|s| fields.check("slug", Slug::parse(&s))),
            description: raw.description.and_then(|d| fields.check("description", domain::text(&d, 10_000, true))),
            brand: raw.brand.map(|b| optional_text(&mut fields, "brand", Some(&b), 100)),
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
        let mut seen = HashSet::new();
        for (i, variant) in raw_variants.into_iter().enumerate() {
            let path = format!("variants[{i}]");
            let sku = fields.check(&format!("{path}.sku"), Sku::parse(&variant.sku));
            if let Some(sku) = &sku
                && !seen.insert(sku.clone())
            {
                fields.push(&format!("{path}.sku"), "appears twice in this patch");
            }
            let title =
                variant.title.and_then(|t| fields.check(&format!("{path}.title"), domain::required_text(&t, 200)));
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
pub struct SetStockRequest {
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
pub struct CategoryRequest {
    pub name: String,
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
        let name = fields.check("name", domain::required_text(&raw.name, 100));
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
                {"sku": "A", "price": {"amount": 1, "currency": "eur"}, "on_hand": -5}
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
}
