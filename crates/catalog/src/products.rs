//! Product and category use cases: creating, changing and archiving products, each change
//! committed together with its `product.*` event.

use std::collections::{HashMap, HashSet};

use events::{
    CloudEvent,
    payloads::{ProductArchived, ProductCreated, ProductSnapshot, ProductUpdated},
};
use platform::{
    db::{Tx, is_unique_violation},
    money::{Currency, Money},
};
use uuid::Uuid;

use crate::{
    SERVICE,
    commands::{NewProduct, ProductPatch, PutCategory},
    domain::{Category, Product, ProductStatus, Slug},
    error::CatalogError,
    store::{NewProductRow, NewVariantRow, ProductChanges, Store},
};

/// How a product is named in a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductKey {
    Id(Uuid),
    Slug(String),
}

impl ProductKey {
    pub fn parse(text: &str) -> Self {
        match Uuid::try_parse(text) {
            Ok(id) => Self::Id(id),
            Err(_) => Self::Slug(text.to_owned()),
        }
    }
}

/// Attempts at an update that lost a race with another update of the same product.
const UPDATE_ATTEMPTS: usize = 5;

pub struct Products {
    store: Store,
    currency: Currency,
}

impl Products {
    pub fn new(store: Store, currency: Currency) -> Self {
        Self { store, currency }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The one currency prices are in.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// How many products the catalog holds, in every status.
    pub async fn count(&self) -> Result<u64, CatalogError> {
        Ok(u64::try_from(self.store.count_products().await?).unwrap_or(0))
    }

    pub async fn get(&self, key: &ProductKey) -> Result<Option<Product>, CatalogError> {
        Ok(match key {
            ProductKey::Id(id) => self.store.product(*id).await?,
            ProductKey::Slug(slug) => self.store.product_by_slug(slug).await?,
        })
    }

    fn check_currency(&self, path: String, price: &Money) -> Result<(), CatalogError> {
        if price.currency == self.currency {
            Ok(())
        } else {
            Err(CatalogError::field(path, format!("must be {}, the shop's currency", self.currency)))
        }
    }

    pub async fn create(&self, command: NewProduct, traceparent: Option<String>) -> Result<Product, CatalogError> {
        for (i, variant) in command.variants.iter().enumerate() {
            self.check_currency(format!("variants[{i}].price.currency"), &variant.price)?;
        }
        once_each(command.variants.iter().map(|v| v.sku.as_str()))?;
        let id = Uuid::now_v7();
        let slug = command.slug.or_else(|| Slug::derive(&command.title)).unwrap_or_else(|| Slug::for_product(id));
        let now = platform::time::now();
        let mut tx = self.store.db().begin().await?;
        self.store.ensure_category(&mut tx, command.category.as_str(), &command.category.humanize(), now).await?;
        let row = NewProductRow {
            id,
            slug: slug.as_str(),
            title: &command.title,
            description: &command.description,
            brand: command.brand.as_deref(),
            category: command.category.as_str(),
            attributes: &command.attributes,
            images: &command.images,
            status: command.status,
            now,
        };
        self.store
            .insert_product(&mut tx, &row)
            .await
            .map_err(|e| taken(e, CatalogError::SlugTaken(slug.to_string())))?;
        for (position, variant) in command.variants.iter().enumerate() {
            let row = NewVariantRow {
                product_id: id,
                position: position as i32,
                sku: variant.sku.as_str(),
                title: &variant.title,
                price: variant.price,
                attributes: &variant.attributes,
                on_hand: variant.on_hand,
                now,
            };
            self.store
                .insert_variant(&mut tx, &row)
                .await
                .map_err(|e| taken(e, CatalogError::SkuTaken(variant.sku.to_string())))?;
        }
        let snapshot = ProductSnapshot {
            product_id: id,
            slug: slug.to_string(),
            status: command.status.as_str().to_owned(),
            skus: command.variants.iter().map(|v| v.sku.to_string()).collect(),
            version: 1,
            at: now,
        };
        enqueue(&mut tx, &ProductCreated(snapshot), traceparent).await?;
        tx.commit().await?;
        metrics::counter!("catalog_product_writes_total", "kind" => "create").increment(1);
        self.store.product(id).await?.ok_or(CatalogError::ProductNotFound)
    }

    /// Applies a partial update; retried when a concurrent update of the same product wins.
    pub async fn update(
        &self,
        id: Uuid,
        patch: ProductPatch,
        traceparent: Option<String>,
    ) -> Result<Product, CatalogError> {
        for (i, variant) in patch.variants.iter().enumerate() {
            if let Some(price) = &variant.price {
                self.check_currency(format!("variants[{i}].price.currency"), price)?;
            }
        }
        once_each(patch.variants.iter().map(|v| v.sku.as_str()))?;
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.store.product(id).await?.ok_or(CatalogError::ProductNotFound)?;
            if let Some(updated) = self.try_update(&current, &patch, traceparent.clone()).await? {
                metrics::counter!("catalog_product_writes_total", "kind" => "update").increment(1);
                return Ok(updated);
            }
        }
        Err(CatalogError::internal(std::io::Error::other("the product kept changing during the update")))
    }

    /// `Ok(None)` when the product changed since `current` was read.
    async fn try_update(
        &self,
        current: &Product,
        patch: &ProductPatch,
        traceparent: Option<String>,
    ) -> Result<Option<Product>, CatalogError> {
        let now = platform::time::now();
        let slug = patch.slug.as_ref().map_or(current.slug.as_str(), Slug::as_str);
        let category = patch.category.as_ref().map_or(current.category.as_str(), Slug::as_str);
        let status = patch.status.unwrap_or(current.status);
        let changes = ProductChanges {
            slug,
            title: patch.title.as_deref().unwrap_or(&current.title),
            description: patch.description.as_deref().unwrap_or(&current.description),
            brand: patch.brand.as_ref().map_or(current.brand.as_deref(), Option::as_deref),
            category,
            attributes: patch.attributes.as_ref().unwrap_or(&current.attributes),
            images: patch.images.as_deref().unwrap_or(&current.images),
            status,
        };
        let mut tx = self.store.db().begin().await?;
        if let Some(category) = &patch.category {
            self.store.ensure_category(&mut tx, category.as_str(), &category.humanize(), now).await?;
        }
        let Some(version) = self
            .store
            .update_product(&mut tx, current.id, current.version, &changes, now)
            .await
            .map_err(|e| taken(e, CatalogError::SlugTaken(slug.to_owned())))?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        let existing: HashMap<&str, &crate::domain::Variant> =
            current.variants.iter().map(|v| (v.sku.as_str(), v)).collect();
        let no_attributes = crate::domain::Attributes::new();
        let mut skus: Vec<String> = current.variants.iter().map(|v| v.sku.clone()).collect();
        for (i, variant) in patch.variants.iter().enumerate() {
            match existing.get(variant.sku.as_str()) {
                Some(old) => {
                    if variant.on_hand.is_some() {
                        return Err(CatalogError::contradicts(
                            format!("variants[{i}].on_hand"),
                            "stock of an existing SKU is set with PUT /api/v1/inventory/{sku}",
                        ));
                    }
                    let title = variant.title.as_deref().unwrap_or(&old.title);
                    let attributes = variant.attributes.as_ref().unwrap_or(&old.attributes);
                    let price = variant.price.unwrap_or(old.price);
                    self.store.update_variant(&mut tx, variant.sku.as_str(), title, price, attributes).await?;
                }
                None => {
                    let Some(price) = variant.price else {
                        return Err(CatalogError::contradicts(
                            format!("variants[{i}].price"),
                            "is required for a new variant",
                        ));
                    };
                    let row = NewVariantRow {
                        product_id: current.id,
                        position: skus.len() as i32,
                        sku: variant.sku.as_str(),
                        title: variant.title.as_deref().unwrap_or(changes.title),
                        price,
                        attributes: variant.attributes.as_ref().unwrap_or(&no_attributes),
                        on_hand: variant.on_hand.unwrap_or(0),
                        now,
                    };
                    self.store
                        .insert_variant(&mut tx, &row)
                        .await
                        .map_err(|e| taken(e, CatalogError::SkuTaken(variant.sku.to_string())))?;
                    skus.push(variant.sku.to_string());
                }
            }
        }
        let snapshot = ProductSnapshot {
            product_id: current.id,
            slug: slug.to_owned(),
            status: status.as_str().to_owned(),
            skus,
            version,
            at: now,
        };
        if status == ProductStatus::Archived && current.status != ProductStatus::Archived {
            enqueue(&mut tx, &ProductArchived(snapshot), traceparent).await?;
        } else {
            enqueue(&mut tx, &ProductUpdated(snapshot), traceparent).await?;
        }
        tx.commit().await?;
        Ok(Some(self.store.product(current.id).await?.ok_or(CatalogError::ProductNotFound)?))
    }

    /// Archives a product: it leaves the storefront but stays for the orders that name it.
    /// Archiving an archived product changes nothing.
    pub async fn archive(&self, id: Uuid, traceparent: Option<String>) -> Result<(), CatalogError> {
        let current = self.store.product(id).await?.ok_or(CatalogError::ProductNotFound)?;
        if current.status == ProductStatus::Archived {
            return Ok(());
        }
        let patch = ProductPatch { status: Some(ProductStatus::Archived), ..Default::default() };
        self.update(id, patch, traceparent).await.map(|_| ())
    }

    pub async fn categories(&self) -> Result<Vec<Category>, CatalogError> {
        Ok(self.store.categories().await?)
    }

    /// Creates or renames a category. A parent must exist and must not lie below the category.
    pub async fn put_category(&self, slug: &Slug, command: PutCategory) -> Result<Category, CatalogError> {
        let now = platform::time::now();
        let mut tx = self.store.db().begin().await?;
        if let Some(parent) = &command.parent {
            let parents = self.store.category_parents_tx(&mut tx).await?;
            if !parents.contains_key(parent.as_str()) {
                return Err(CatalogError::contradicts("parent", "no such category"));
            }
            let mut current = Some(parent.as_str());
            while let Some(ancestor) = current {
                if ancestor == slug.as_str() {
                    return Err(CatalogError::contradicts("parent", "would make the category its own ancestor"));
                }
                current = parents.get(ancestor).and_then(|p| p.as_deref());
            }
        }
        let parent = command.parent.as_ref().map(Slug::as_str);
        self.store.put_category(&mut tx, slug.as_str(), &command.name, parent, now).await?;
        tx.commit().await?;
        self.store
            .categories()
            .await?
            .into_iter()
            .find(|c| c.slug == slug.as_str())
            .ok_or_else(|| CatalogError::internal(std::io::Error::other("category vanished after its write")))
    }
}

/// Each SKU at most once in one request: a second would take a SKU the first just took.
fn once_each<'a>(skus: impl Iterator<Item = &'a str>) -> Result<(), CatalogError> {
    let mut seen = HashSet::new();
    for (i, sku) in skus.enumerate() {
        if !seen.insert(sku) {
            return Err(CatalogError::contradicts(format!("variants[{i}].sku"), "appears twice in this request"));
        }
    }
    Ok(())
}

/// A unique violation is the given conflict; anything else stays a database error.
fn taken(error: sqlx::Error, conflict: CatalogError) -> CatalogError {
    if is_unique_violation(&error) { conflict } else { error.into() }
}

pub(crate) async fn enqueue<P: events::EventPayload>(
    tx: &mut Tx,
    payload: &P,
    traceparent: Option<String>,
) -> Result<(), CatalogError> {
    let event = CloudEvent::new(SERVICE, payload, traceparent).map_err(CatalogError::internal)?;
    events::enqueue(tx, &event).await?;
    Ok(())
}
