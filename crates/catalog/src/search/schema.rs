//! The index's schema and how a product becomes a document.
//!
//! Full text goes into analysed fields (split on non-alphanumerics, lower-cased, folded to
//! ASCII). Filters, facets and sorts read columnar "fast" fields with the raw values.
//! [`SCHEMA_VERSION`] changes whenever this file changes what is indexed; an index built under
//! another version is rebuilt from the database at start.

use tantivy::{
    Index, TantivyDocument,
    schema::{FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions},
    tokenizer::{AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer},
};

use crate::{domain::Product, views::ProductView};

pub const SCHEMA_VERSION: u32 = 1;

/// The analyser of every full-text field, and of the words of a query.
pub const ANALYZER: &str = "emporium";

pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub id: Field,
    pub title: Field,
    pub brand_text: Field,
    pub category_text: Field,
    pub description: Field,
    pub brand: Field,
    pub category: Field,
    /// `name=value` for the product's and every variant's attributes.
    pub attrs: Field,
    pub status: Field,
    /// The lowest variant price, in minor units.
    pub price: Field,
    /// Units available over all variants.
    pub available: Field,
    pub created: Field,
    pub title_sort: Field,
    pub revision: Field,
    /// The product's public JSON, so that results need no database read.
    pub view: Field,
}

impl Fields {
    pub fn schema() -> (Schema, Fields) {
        let mut builder = Schema::builder();
        let text = |positions: bool| {
            let record =
                if positions { IndexRecordOption::WithFreqsAndPositions } else { IndexRecordOption::WithFreqs };
            TextOptions::default()
                .set_indexing_options(TextFieldIndexing::default().set_tokenizer(ANALYZER).set_index_option(record))
        };
        let fields = Fields {
            id: builder.add_text_field("id", STRING | FAST),
            title: builder.add_text_field("title", text(true)),
            brand_text: builder.add_text_field("brand_text", text(false)),
            category_text: builder.add_text_field("category_text", text(false)),
            description: builder.add_text_field("description", text(false)),
            brand: builder.add_text_field("brand", STRING | FAST),
            category: builder.add_text_field("category", STRING | FAST),
            attrs: builder.add_text_field("attrs", STRING | FAST),
            status: builder.add_text_field("status", STRING | FAST),
            price: builder.add_i64_field("price", INDEXED | FAST),
            available: builder.add_i64_field("available", INDEXED | FAST),
            created: builder.add_i64_field("created", FAST),
            title_sort: builder.add_text_field("title_sort", STRING | FAST),
            revision: builder.add_i64_field("revision", FAST),
            view: builder.add_text_field("view", STORED),
        };
        (builder.build(), fields)
    }

    /// Finds the fields in an opened index by name.
    pub fn of(index: &Index) -> tantivy::Result<Fields> {
        let schema = index.schema();
        let field = |name: &str| schema.get_field(name);
        Ok(Fields {
            id: field("id")?,
            title: field("title")?,
            brand_text: field("brand_text")?,
            category_text: field("category_text")?,
            description: field("description")?,
            brand: field("brand")?,
            category: field("category")?,
            attrs: field("attrs")?,
            status: field("status")?,
            price: field("price")?,
            available: field("available")?,
            created: field("created")?,
            title_sort: field("title_sort")?,
            revision: field("revision")?,
            view: field("view")?,
        })
    }

    pub fn document(&self, product: &Product) -> Result<TantivyDocument, serde_json::Error> {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.id, product.id.to_string());
        doc.add_text(self.title, &product.title);
        doc.add_text(self.description, &product.description);
        doc.add_text(self.category_text, product.category.replace('-', " "));
        doc.add_text(self.category, &product.category);
        if let Some(brand) = &product.brand {
            doc.add_text(self.brand_text, brand);
            doc.add_text(self.brand, brand);
        }
        let mut attrs: Vec<String> = product
            .attributes
            .iter()
            .chain(product.variants.iter().flat_map(|v| v.attributes.iter()))
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        attrs.sort();
        attrs.dedup();
        for attr in attrs {
            doc.add_text(self.attrs, attr);
        }
        doc.add_text(self.status, product.status.as_str());
        if let Some(price) = product.price() {
            doc.add_i64(self.price, price.amount);
        }
        doc.add_i64(self.available, product.available());
        doc.add_i64(self.created, product.created_at.timestamp_micros());
        doc.add_text(self.title_sort, product.title.to_lowercase());
        doc.add_i64(self.revision, product.revision);
        doc.add_text(self.view, serde_json::to_string(&ProductView::from(product))?);
        Ok(doc)
    }
}
