//! The `products` and `variants` tables, read together with each variant's stock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use platform::{
    db::Tx,
    money::{Currency, Money},
    with_db, with_tx,
};
use sqlx::types::Json;
use uuid::Uuid;

use super::{MAX_IN_LIST, Store};
use crate::domain::{Attributes, Product, ProductStatus, Variant};

#[derive(Debug, sqlx::FromRow)]
struct ProductRow {
    id: Uuid,
    slug: String,
    title: String,
    description: String,
    brand: Option<String>,
    category: String,
    attributes: Json<Attributes>,
    images: Json<Vec<String>>,
    status: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
struct VariantRow {
    product_id: Uuid,
    sku: String,
    title: String,
    price_amount: i64,
    currency: String,
    attributes: Json<Attributes>,
    on_hand: i64,
    reserved: i64,
    stock_updated_at: DateTime<Utc>,
}

const PRODUCT_COLUMNS: &str =
    "id, slug, title, description, brand, category, attributes, images, status, version, created_at, updated_at";
const VARIANT_SELECT: &str = "SELECT v.product_id, v.sku, v.title, v.price_amount, v.currency, v.attributes, \
     i.on_hand, i.reserved, i.updated_at AS stock_updated_at FROM variants v JOIN inventory i ON i.sku = v.sku";

/// A product to insert; its variants follow with [`Store::insert_variant`].
pub struct NewProductRow<'a> {
    pub id: Uuid,
    pub slug: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub brand: Option<&'a str>,
    pub category: &'a str,
    pub attributes: &'a Attributes,
    pub images: &'a [String],
    pub status: ProductStatus,
    pub now: DateTime<Utc>,
}

pub struct NewVariantRow<'a> {
    pub product_id: Uuid,
    pub position: i32,
    pub sku: &'a str,
    pub title: &'a str,
    pub price: Money,
    pub attributes: &'a Attributes,
    pub on_hand: i64,
    pub now: DateTime<Utc>,
}

/// The product's own fields after a change (variants change separately).
pub struct ProductChanges<'a> {
    pub slug: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub brand: Option<&'a str>,
    pub category: &'a str,
    pub attributes: &'a Attributes,
    pub images: &'a [String],
    pub status: ProductStatus,
}

/// When a product or any of its variants' stock last changed, in microseconds since the epoch:
/// what the search index compares to find documents that are behind the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    pub product_id: Uuid,
    pub micros: i64,
}

impl Store {
    pub async fn product(&self, id: Uuid) -> Result<Option<Product>, sqlx::Error> {
        let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1");
        let row: Option<ProductRow> = with_db!(&self.db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        self.with_variants(row.into_iter().collect()).await.map(|mut products| products.pop())
    }

    pub async fn product_by_slug(&self, slug: &str) -> Result<Option<Product>, sqlx::Error> {
        let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE slug = $1");
        let row: Option<ProductRow> = with_db!(&self.db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(slug)
            .fetch_optional(pool)
            .await)?;
        self.with_variants(row.into_iter().collect()).await.map(|mut products| products.pop())
    }

    /// The products with these ids that exist, in no particular order.
    pub async fn products(&self, ids: &[Uuid]) -> Result<Vec<Product>, sqlx::Error> {
        let mut products = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IN_LIST) {
            let rows: Vec<ProductRow> = with_db!(&self.db, |pool| {
                let mut query =
                    sqlx::QueryBuilder::new(format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id IN ("));
                let mut list = query.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                query.push(")");
                query.build_query_as().fetch_all(pool).await
            })?;
            products.extend(self.with_variants(rows).await?);
        }
        Ok(products)
    }

    /// Up to `limit` products with ids after `after`, in id order: a full scan in pages.
    pub async fn products_after(&self, after: Option<Uuid>, limit: i64) -> Result<Vec<Product>, sqlx::Error> {
        let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id > $1 ORDER BY id LIMIT $2");
        let rows: Vec<ProductRow> = with_db!(&self.db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(after.unwrap_or(Uuid::nil()))
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        self.with_variants(rows).await
    }

    /// Every product's revision. One pass over the tables: run at start, not per request.
    pub async fn revisions(&self) -> Result<Vec<Revision>, sqlx::Error> {
        let rows: Vec<(Uuid, DateTime<Utc>, Option<DateTime<Utc>>)> = with_db!(&self.db, |pool| sqlx::query_as(
            "SELECT p.id, p.updated_at, s.stocked FROM products p
             LEFT JOIN (SELECT product_id, MAX(updated_at) AS stocked FROM inventory GROUP BY product_id) s
               ON s.product_id = p.id"
        )
        .fetch_all(pool)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(product_id, updated, stocked)| Revision {
                product_id,
                micros: updated.max(stocked.unwrap_or(updated)).timestamp_micros(),
            })
            .collect())
    }

    /// Attaches variants (with stock) to product rows, in one query for all of them.
    async fn with_variants(&self, rows: Vec<ProductRow>) -> Result<Vec<Product>, sqlx::Error> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let variants: Vec<VariantRow> = with_db!(&self.db, |pool| {
            let mut query = sqlx::QueryBuilder::new(format!("{VARIANT_SELECT} WHERE v.product_id IN ("));
            let mut list = query.separated(", ");
            for row in &rows {
                list.push_bind(row.id);
            }
            query.push(") ORDER BY v.product_id, v.position");
            query.build_query_as().fetch_all(pool).await
        })?;
        let mut by_product: HashMap<Uuid, Vec<Variant>> = HashMap::with_capacity(rows.len());
        let mut stocked: HashMap<Uuid, DateTime<Utc>> = HashMap::with_capacity(rows.len());
        for row in variants {
            let latest = stocked.entry(row.product_id).or_insert(row.stock_updated_at);
            *latest = (*latest).max(row.stock_updated_at);
            let currency = Currency::parse(&row.currency).map_err(|e| sqlx::Error::Decode(e.into()))?;
            by_product.entry(row.product_id).or_default().push(Variant {
                sku: row.sku,
                title: row.title,
                price: Money::new(row.price_amount, currency),
                attributes: row.attributes.0,
                available: row.on_hand - row.reserved,
            });
        }
        rows.into_iter()
            .map(|row| {
                let revision = stocked.get(&row.id).map_or(row.updated_at, |s| row.updated_at.max(*s));
                Ok(Product {
                    revision: revision.timestamp_micros(),
                    variants: by_product.remove(&row.id).unwrap_or_default(),
                    status: ProductStatus::parse(&row.status).map_err(|e| sqlx::Error::Decode(e.into()))?,
                    id: row.id,
                    slug: row.slug,
                    title: row.title,
                    description: row.description,
                    brand: row.brand,
                    category: row.category,
                    attributes: row.attributes.0,
                    images: row.images.0,
                    version: row.version,
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                })
            })
            .collect()
    }

    /// Inserts a product at version 1. A taken slug is a unique violation.
    pub async fn insert_product(&self, tx: &mut Tx, product: &NewProductRow<'_>) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query(
            "INSERT INTO products (id, slug, title, description, brand, category, attributes, images, status, version,
                                   created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10)"
        )
        .bind(product.id)
        .bind(product.slug)
        .bind(product.title)
        .bind(product.description)
        .bind(product.brand)
        .bind(product.category)
        .bind(Json(product.attributes))
        .bind(Json(product.images))
        .bind(product.status.as_str())
        .bind(product.now)
        .execute(conn)
        .await
        .map(|_| ()))
    }

    /// Inserts a variant and its stock row. A taken SKU is a unique violation.
    pub async fn insert_variant(&self, tx: &mut Tx, variant: &NewVariantRow<'_>) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO variants (sku, product_id, position, title, price_amount, currency, attributes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(variant.sku)
            .bind(variant.product_id)
            .bind(variant.position)
            .bind(variant.title)
            .bind(variant.price.amount)
            .bind(variant.price.currency.as_str())
            .bind(Json(variant.attributes))
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO inventory (sku, product_id, on_hand, reserved, updated_at) VALUES ($1, $2, $3, 0, $4)",
            )
            .bind(variant.sku)
            .bind(variant.product_id)
            .bind(variant.on_hand)
            .bind(variant.now)
            .execute(conn)
            .await
            .map(|_| ())
        })
    }

    /// Writes the product's fields if it is still at `version`; returns the new version, or
    /// `None` when someone else changed it first (the caller reloads and tries again).
    pub async fn update_product(
        &self,
        tx: &mut Tx,
        id: Uuid,
        version: i64,
        changes: &ProductChanges<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query_scalar(
            "UPDATE products SET slug = $3, title = $4, description = $5, brand = $6, category = $7, attributes = $8,
                                 images = $9, status = $10, version = version + 1, updated_at = $11
             WHERE id = $1 AND version = $2
             RETURNING version"
        )
        .bind(id)
        .bind(version)
        .bind(changes.slug)
        .bind(changes.title)
        .bind(changes.description)
        .bind(changes.brand)
        .bind(changes.category)
        .bind(Json(changes.attributes))
        .bind(Json(changes.images))
        .bind(changes.status.as_str())
        .bind(now)
        .fetch_optional(conn)
        .await)
    }

    pub async fn update_variant(
        &self,
        tx: &mut Tx,
        sku: &str,
        title: &str,
        price: Money,
        attributes: &Attributes,
    ) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query(
            "UPDATE variants SET title = $2, price_amount = $3, currency = $4, attributes = $5 WHERE sku = $1"
        )
        .bind(sku)
        .bind(title)
        .bind(price.amount)
        .bind(price.currency.as_str())
        .bind(Json(attributes))
        .execute(conn)
        .await
        .map(|_| ()))
    }

    /// Whether a SKU exists on any product (SKUs are unique across the catalog).
    pub async fn sku_exists(&self, tx: &mut Tx, sku: &str) -> Result<bool, sqlx::Error> {
        let found: Option<i32> = with_tx!(tx, |conn| sqlx::query_scalar("SELECT 1 FROM variants WHERE sku = $1")
            .bind(sku)
            .fetch_optional(conn)
            .await)?;
        Ok(found.is_some())
    }
}

impl Store {
    /// Products in every status.
    pub async fn count_products(&self) -> Result<i64, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM products").fetch_one(pool).await)
    }

    pub async fn has_products(&self) -> Result<bool, sqlx::Error> {
        let found: Option<i32> =
            with_db!(&self.db, |pool| sqlx::query_scalar("SELECT 1 FROM products LIMIT 1").fetch_optional(pool).await)?;
        Ok(found.is_some())
    }
}
