//! Product search: a Tantivy index that is a read model of the catalog's database.
//!
//! Each replica keeps its own index on local disk. At start it is rebuilt when it is missing or
//! was built under another [`schema::SCHEMA_VERSION`], and otherwise reconciled: documents whose
//! revision differs from the database are reindexed. While running, the catalog's own
//! `product.*` and `inventory.changed` events tell the [`Indexer`] which products to reindex.
//!
//! Searches read a searcher that is swapped after each commit; they never wait for the writer.

pub mod facets;
mod indexer;
pub mod query;
pub mod schema;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument, schema::Value};
use uuid::Uuid;

pub use indexer::{Indexer, IndexerHandle, STOCK_DELAY};
pub use query::{SearchRequest, Sort};

use crate::{error::CatalogError, search::schema::Fields};

const VERSION_FILE: &str = "emporium-schema-version";

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The index, readable by any number of searches at once.
#[derive(Clone)]
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

/// One page of results: each hit's stored product JSON.
#[derive(Debug, Default)]
pub struct SearchPage {
    pub items: Vec<Box<serde_json::value::RawValue>>,
    pub total: usize,
    pub facets: facets::FacetCounts,
}

impl SearchIndex {
    /// Opens the index in `dir`, or creates an empty one when it is missing or of another
    /// schema version. Returns whether it was created (and so needs a full build).
    pub fn open(dir: &Path) -> Result<(Self, bool), SearchError> {
        let io = |source| SearchError::Io { path: dir.to_owned(), source };
        let version_file = dir.join(VERSION_FILE);
        let current = std::fs::read_to_string(&version_file).ok().and_then(|v| v.trim().parse::<u32>().ok());
        let reusable = current == Some(schema::SCHEMA_VERSION) && dir.join("meta.json").exists();
        let (index, created) = if reusable {
            (Index::open_in_dir(dir)?, false)
        } else {
            if dir.exists() {
                tracing::info!(dir = %dir.display(), found = ?current, "search index is of another version; rebuilding");
                std::fs::remove_dir_all(dir).map_err(io)?;
            }
            std::fs::create_dir_all(dir).map_err(io)?;
            let (schema, _) = Fields::schema();
            let index = Index::create_in_dir(dir, schema)?;
            std::fs::write(&version_file, schema::SCHEMA_VERSION.to_string()).map_err(io)?;
            (index, true)
        };
        index.tokenizers().register(schema::ANALYZER, schema::analyzer());
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        let fields = Fields::of(&index)?;
        Ok((Self { index, reader, fields }, created))
    }

    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    pub(crate) fn reader(&self) -> &IndexReader {
        &self.reader
    }

    /// Answers a search. CPU-bound, so it runs on the blocking pool.
    pub async fn search(&self, request: SearchRequest) -> Result<SearchPage, CatalogError> {
        let this = self.clone();
        let started = std::time::Instant::now();
        let kind = if request.q.as_deref().is_some_and(|q| !q.trim().is_empty()) { "search" } else { "list" };
        let page = tokio::task::spawn_blocking(move || this.search_now(&request))
            .await
            .map_err(CatalogError::internal)?
            .map_err(CatalogError::internal)?;
        metrics::histogram!("catalog_search_duration_seconds").record(started.elapsed().as_secs_f64());
        record_search(kind, page.total > 0);
        Ok(page)
    }

    pub fn search_now(&self, request: &SearchRequest) -> tantivy::Result<SearchPage> {
        let searcher = self.reader.searcher();
        let hits = query::run(&searcher, &self.fields, request)?;
        let mut items = Vec::with_capacity(hits.docs.len());
        for address in hits.docs {
            let doc: TantivyDocument = searcher.doc(address)?;
            if let Some(view) = doc.get_first(self.fields.view).and_then(|v| v.as_str())
                && let Ok(raw) = serde_json::value::RawValue::from_string(view.to_owned())
            {
                items.push(raw);
            }
        }
        Ok(SearchPage { items, total: hits.total, facets: hits.facets })
    }

    /// Up to `limit` titles for a search box: the products whose titles match `prefix` (the last
    /// word as a prefix, longer words with a typo), best first.
    pub async fn suggest(&self, prefix: String, limit: usize) -> Result<Vec<(String, Uuid)>, CatalogError> {
        let this = self.clone();
        let suggestions = tokio::task::spawn_blocking(move || this.suggest_now(&prefix, limit))
            .await
            .map_err(CatalogError::internal)?
            .map_err(CatalogError::internal)?;
        record_search("suggest", !suggestions.is_empty());
        Ok(suggestions)
    }

    fn suggest_now(&self, prefix: &str, limit: usize) -> tantivy::Result<Vec<(String, Uuid)>> {
        use tantivy::{
            collector::TopDocs,
            query::{BooleanQuery, ConstScoreQuery, Occur, TermQuery},
        };
        let Some(text) = query::text_query(&self.fields, prefix, true) else {
            return Ok(Vec::new());
        };
        let active = TermQuery::new(
            tantivy::Term::from_field_text(self.fields.status, "active"),
            tantivy::schema::IndexRecordOption::Basic,
        );
        let query = BooleanQuery::new(vec![
            (Occur::Must, text),
            (Occur::Must, Box::new(ConstScoreQuery::new(Box::new(active), 0.0))),
        ]);
        let searcher = self.reader.searcher();
        let hits = searcher.search(&query, &TopDocs::with_limit(limit * 2).order_by_score())?;
        let mut seen = std::collections::HashSet::new();
        let mut suggestions = Vec::with_capacity(limit);
        for (_, address) in hits {
            let doc: TantivyDocument = searcher.doc(address)?;
            let Some(view) = doc.get_first(self.fields.view).and_then(|v| v.as_str()) else { continue };
            #[derive(serde::Deserialize)]
            struct Titled {
                id: Uuid,
                title: String,
            }
            if let Ok(product) = serde_json::from_str::<Titled>(view)
                && seen.insert(product.title.to_lowercase())
            {
                suggestions.push((product.title, product.id));
            }
            if suggestions.len() == limit {
                break;
            }
        }
        Ok(suggestions)
    }

    /// Every indexed product's revision, for reconciling with the database.
    pub fn revisions(&self) -> tantivy::Result<HashMap<Uuid, i64>> {
        let searcher = self.reader.searcher();
        let mut revisions = HashMap::new();
        for segment in searcher.segment_readers() {
            let Some(ids) = segment.fast_fields().str("id")? else { continue };
            let revision = segment.fast_fields().i64("revision")?;
            let alive = segment.alive_bitset();
            let mut text = String::new();
            for doc in 0..segment.max_doc() {
                if alive.is_some_and(|a| !a.is_alive(doc)) {
                    continue;
                }
                let Some(ord) = ids.term_ords(doc).next() else { continue };
                text.clear();
                if ids.ord_to_str(ord, &mut text)?
                    && let Ok(id) = Uuid::try_parse(&text)
                {
                    revisions.insert(id, revision.first(doc).unwrap_or(0));
                }
            }
        }
        Ok(revisions)
    }
}

/// The directory a replica's index lives in.
pub fn index_dir(configured: Option<&Path>, data_dir: &Path) -> PathBuf {
    configured.map_or_else(|| data_dir.join("catalog-index"), Path::to_path_buf)
}

/// `catalog_searches_total{kind, results}`: how often shoppers find nothing is a number an owner
/// watches.
fn record_search(kind: &'static str, found: bool) {
    metrics::counter!("catalog_searches_total", "kind" => kind, "results" => if found { "some" } else { "none" })
        .increment(1);
}

/// Registers the search counters at zero, so that a zero-result share has a series from the start.
pub fn register_metrics() {
    for kind in ["search", "list", "suggest"] {
        for results in ["some", "none"] {
            metrics::counter!("catalog_searches_total", "kind" => kind, "results" => results).absolute(0);
        }
    }
}
