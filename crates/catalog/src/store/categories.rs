//! The `categories` table.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use platform::{db::Tx, with_db, with_tx};

use super::Store;
use crate::domain::Category;

impl Store {
    /// Every category with the number of active products in it and below it.
    pub async fn categories(&self) -> Result<Vec<Category>, sqlx::Error> {
        let rows: Vec<(String, String, Option<String>)> =
            with_db!(&self.db, |pool| sqlx::query_as("SELECT slug, name, parent FROM categories ORDER BY slug")
                .fetch_all(pool)
                .await)?;
        let direct: Vec<(String, i64)> = with_db!(&self.db, |pool| sqlx::query_as(
            "SELECT category, COUNT(*) FROM products WHERE status = 'active' GROUP BY category"
        )
        .fetch_all(pool)
        .await)?;
        let parents: HashMap<&str, Option<&str>> =
            rows.iter().map(|(slug, _, parent)| (slug.as_str(), parent.as_deref())).collect();
        let mut counts: HashMap<String, i64> = HashMap::new();
        for (category, count) in direct {
            // Each product counts for its category and every ancestor; the walk is bounded
            // because parents never form a cycle (checked when a parent is set).
            let mut current = Some(category.as_str());
            let mut depth = 0;
            while let Some(slug) = current.filter(|_| depth <= parents.len()) {
                *counts.entry(slug.to_owned()).or_default() += count;
                current = parents.get(slug).copied().flatten();
                depth += 1;
            }
        }
        Ok(rows
            .into_iter()
            .map(|(slug, name, parent)| Category {
                product_count: counts.get(&slug).copied().unwrap_or(0),
                slug,
                name,
                parent,
            })
            .collect())
    }

    /// The parent of each category, for walking the tree.
    pub async fn category_parents(&self) -> Result<HashMap<String, Option<String>>, sqlx::Error> {
        let rows: Vec<(String, Option<String>)> =
            with_db!(&self.db, |pool| sqlx::query_as("SELECT slug, parent FROM categories").fetch_all(pool).await)?;
        Ok(rows.into_iter().collect())
    }

    pub async fn category_parents_tx(&self, tx: &mut Tx) -> Result<HashMap<String, Option<String>>, sqlx::Error> {
        let rows: Vec<(String, Option<String>)> =
            with_tx!(tx, |conn| sqlx::query_as("SELECT slug, parent FROM categories").fetch_all(conn).await)?;
        Ok(rows.into_iter().collect())
    }

    /// Creates the category unless it exists; an existing one keeps its name and parent.
    pub async fn ensure_category(
        &self,
        tx: &mut Tx,
        slug: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query(
            "INSERT INTO categories (slug, name, parent, created_at, updated_at) VALUES ($1, $2, NULL, $3, $3)
             ON CONFLICT (slug) DO NOTHING"
        )
        .bind(slug)
        .bind(name)
        .bind(now)
        .execute(conn)
        .await
        .map(|_| ()))
    }

    /// Creates or renames (and re-parents) a category.
    pub async fn put_category(
        &self,
        tx: &mut Tx,
        slug: &str,
        name: &str,
        parent: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| {
            sqlx::query(
            "INSERT INTO categories (slug, name, parent, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (slug) DO UPDATE SET name = excluded.name, parent = excluded.parent, updated_at = excluded.updated_at"
        )
        .bind(slug)
        .bind(name)
        .bind(parent)
        .bind(now)
        .execute(conn)
        .await
        .map(|_| ())
        })
    }
}
