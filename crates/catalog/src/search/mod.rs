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
    sync::Arc,
};

use bytes::Bytes;
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
    /// Facets by the searcher's generation and the search's filters. Every page of a listing,
    /// in any order, has the same facets, and they cost more than the page: counted over every
    /// match, not 20. A commit makes a new generation, so an entry is never stale; old ones age
    /// out.
    facets: Arc<quick_cache::sync::Cache<String, facets::RenderedFacets>>,
    /// Whole answers by generation and request: listings and popular searches are asked again
    /// and again between two commits.
    pages: Arc<quick_cache::sync::Cache<String, SearchPage, PageWeight>>,
    /// Searches running at once: one a core. They are CPU-bound, so more only queue in the
    /// kernel instead of here, and each takes a thread of the blocking pool, whose allocator
    /// arenas stay behind it: 32 clients searching at once grew the process by 400 MB.
    running: Arc<tokio::sync::Semaphore>,
}

/// Distinct searches whose facets are kept (a few KB each).
const FACET_CACHE_ENTRIES: usize = 512;
/// Bytes of answers kept: about 150 pages of 20 products.
const PAGE_CACHE_BYTES: u64 = 4 << 20;

/// Where a search's answer and facets are cached. Keyed by the generation of the searcher that
/// answers: a commit makes a new one, so an entry is never stale, and a page and its facets come
/// from one state of the index.
struct CacheKeys {
    page: String,
    facets: String,
}

impl CacheKeys {
    fn of(searcher: &tantivy::Searcher, request: &SearchRequest) -> Self {
        let facets = format!("{}|{}", searcher.generation().generation_id(), request.facet_key());
        let page = format!("{facets}|{:?}|{}|{}|{}", request.sort, request.limit, request.offset, request.facets);
        Self { page, facets }
    }
}

/// A cached answer weighs its size.
#[derive(Clone)]
struct PageWeight;

impl quick_cache::Weighter<String, SearchPage> for PageWeight {
    fn weight(&self, key: &String, page: &SearchPage) -> u64 {
        (key.len() + page.body.len()) as u64
    }
}

/// One page of results as answered (`{"items", "total", "limit", "offset", "facets"}`).
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub body: Bytes,
    pub total: usize,
}

/// The body of `GET /products`, written around product views that the catalog serialised
/// itself when indexing them: parsing each again to embed it would cost more than the search.
/// `http::SearchResults` is the same body as a type, for the API document; a test holds the two
/// together.
pub fn render_page(views: &[String], total: usize, limit: usize, offset: usize, facets: &str) -> Bytes {
    use std::io::Write;
    let size = views.iter().map(|v| v.len() + 1).sum::<usize>() + facets.len() + 80;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(b"{\"items\":[");
    for (i, view) in views.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(view.as_bytes());
    }
    let _ = write!(body, "],\"total\":{total},\"limit\":{limit},\"offset\":{offset},\"facets\":");
    body.extend_from_slice(facets.as_bytes());
    body.push(b'}');
    Bytes::from(body)
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
        let facets = Arc::new(quick_cache::sync::Cache::new(FACET_CACHE_ENTRIES));
        let pages = Arc::new(quick_cache::sync::Cache::with_weighter(256, PAGE_CACHE_BYTES, PageWeight));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let running = Arc::new(tokio::sync::Semaphore::new(cores));
        Ok((Self { index, reader, fields, facets, pages, running }, created))
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

    /// Answers a search from the caches where this generation of the index answered it (or
    /// counted its facets) before. A search that is not cached is CPU-bound, so it runs on the
    /// blocking pool.
    pub async fn search(&self, request: SearchRequest) -> Result<SearchPage, CatalogError> {
        let started = std::time::Instant::now();
        let kind = if request.q.as_deref().is_some_and(|q| !q.trim().is_empty()) { "search" } else { "list" };
        let searcher = self.reader.searcher();
        let keys = CacheKeys::of(&searcher, &request);
        let page = match self.pages.get(&keys.page) {
            Some(page) => {
                metrics::counter!("catalog_search_cache_total", "kind" => "page", "result" => "hit").increment(1);
                page
            }
            None => {
                metrics::counter!("catalog_search_cache_total", "kind" => "page", "result" => "miss").increment(1);
                // Held by the search itself, so that a request given up on still counts until
                // its search ends.
                let turn = self.running.clone().acquire_owned().await.map_err(CatalogError::internal)?;
                let this = self.clone();
                tokio::task::spawn_blocking(move || {
                    let _turn = turn;
                    this.search_uncached(&searcher, &request, keys)
                })
                .await
                .map_err(CatalogError::internal)?
                .map_err(CatalogError::internal)?
            }
        };
        metrics::histogram!("catalog_search_duration_seconds").record(started.elapsed().as_secs_f64());
        record_search(kind, page.total > 0);
        Ok(page)
    }

    /// Answers a search with no cache, counting its facets (when asked) every time: what the
    /// search engine costs, which `bench search` measures.
    pub fn search_now(&self, request: &SearchRequest) -> tantivy::Result<SearchPage> {
        let searcher = self.reader.searcher();
        let hits = query::run(&searcher, &self.fields, request, request.facets)?;
        let facets = hits.facets.render();
        self.page(&searcher, request, hits.docs, hits.total, &facets)
    }

    /// Runs a search the page cache did not have, its facets from their cache when there, and
    /// keeps the answer.
    fn search_uncached(
        &self,
        searcher: &tantivy::Searcher,
        request: &SearchRequest,
        keys: CacheKeys,
    ) -> tantivy::Result<SearchPage> {
        // Facets from their cache when this generation counted them for the same filters.
        let known = if request.facets {
            let known = self.facets.get(&keys.facets);
            let result = if known.is_some() { "hit" } else { "miss" };
            metrics::counter!("catalog_search_cache_total", "kind" => "facets", "result" => result).increment(1);
            known
        } else {
            Some(facets::FacetCounts::default().render())
        };
        let hits = query::run(searcher, &self.fields, request, known.is_none())?;
        let facets = known.unwrap_or_else(|| {
            let counted = hits.facets.render();
            self.facets.insert(keys.facets, counted.clone());
            counted
        });
        let page = self.page(searcher, request, hits.docs, hits.total, &facets)?;
        self.pages.insert(keys.page, page.clone());
        Ok(page)
    }

    /// The answer's body: each hit's stored product JSON, the total, the page and the facets.
    fn page(
        &self,
        searcher: &tantivy::Searcher,
        request: &SearchRequest,
        docs: Vec<tantivy::DocAddress>,
        total: usize,
        facets: &facets::RenderedFacets,
    ) -> tantivy::Result<SearchPage> {
        let mut views = Vec::with_capacity(docs.len());
        for address in docs {
            let doc: TantivyDocument = searcher.doc(address)?;
            if let Some(view) = doc.get_first(self.fields.view).and_then(|v| v.as_str()) {
                views.push(view.to_owned());
            }
        }
        let body = render_page(&views, total, request.limit, request.offset, facets.get());
        Ok(SearchPage { body, total })
    }

    /// Up to `limit` titles for a search box: the products whose titles match `prefix` (the last
    /// word as a prefix, longer words with a typo), best first.
    pub async fn suggest(&self, prefix: String, limit: usize) -> Result<Vec<(String, Uuid)>, CatalogError> {
        let this = self.clone();
        let turn = self.running.clone().acquire_owned().await.map_err(CatalogError::internal)?;
        let suggestions = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            this.suggest_now(&prefix, limit)
        })
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
    for kind in ["page", "facets"] {
        for result in ["hit", "miss"] {
            metrics::counter!("catalog_search_cache_total", "kind" => kind, "result" => result).absolute(0);
        }
    }
}
