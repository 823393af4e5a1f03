//! The JSON shapes the catalog answers with (API.md, Catalog and search). The search index
//! stores each product's view, so a search answers without touching the database.

use chrono::{DateTime, Utc};
use platform::money::Money;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    domain::{Attributes, Category, Product, ProductStatus, Variant},
    store::StockChange,
};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProductView {
    pub id: Uuid,
    pub slug: String,
    pub title: String,
    pub description: String,
    pub brand: Option<String>,
    /// The category's slug.
    pub category: String,
    #[schema(schema_with = crate::schemas::attribute_map)]
    pub attributes: Attributes,
    pub images: Vec<String>,
    pub status: ProductStatus,
    pub variants: Vec<VariantView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VariantView {
    pub sku: String,
    pub title: String,
    pub price: Money,
    #[schema(schema_with = crate::schemas::attribute_map)]
    pub attributes: Attributes,
    /// On hand minus reserved.
    pub stock_available: i64,
}

impl From<&Variant> for VariantView {
    fn from(v: &Variant) -> Self {
        Self {
            sku: v.sku.clone(),
            title: v.title.clone(),
            price: v.price,
            attributes: v.attributes.clone(),
            stock_available: v.available.max(0),
        }
    }
}

impl From<&Product> for ProductView {
    fn from(p: &Product) -> Self {
        Self {
            id: p.id,
            slug: p.slug.clone(),
            title: p.title.clone(),
            description: p.description.clone(),
            brand: p.brand.clone(),
            category: p.category.clone(),
            attributes: p.attributes.clone(),
            images: p.images.clone(),
            status: p.status,
            variants: p.variants.iter().map(VariantView::from).collect(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StockView {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

impl From<StockChange> for StockView {
    fn from(s: StockChange) -> Self {
        Self { available: s.on_hand - s.reserved, sku: s.sku, on_hand: s.on_hand, reserved: s.reserved }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CategoryView {
    pub slug: String,
    pub name: String,
    pub parent: Option<String>,
    /// Active products in this category and the categories below it.
    pub product_count: i64,
}

impl From<Category> for CategoryView {
    fn from(c: Category) -> Self {
        Self { slug: c.slug, name: c.name, parent: c.parent, product_count: c.product_count }
    }
}
