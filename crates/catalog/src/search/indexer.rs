//! The one task that writes the index (Tantivy allows a single writer per index).
//!
//! Others ask it to refresh products by id; it gathers requests for a moment, reads those
//! products from the database, replaces their documents, commits, reloads the searcher, and
//! then answers every request of the batch. An answer means the change is visible to searches.
//!
//! Stock changes come several per checkout, and each commit costs the same set-up whether it
//! holds one document or hundreds: their products are refreshed together at most
//! [`STOCK_DELAY`] later (or sooner, with the next edit), and nobody waits for them. Should
//! the process stop first, the reconciliation at start catches up with them.

use std::{
    collections::{BTreeSet, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tantivy::{IndexWriter, TantivyDocument, Term};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::SearchIndex;
use crate::{domain::Product, error::CatalogError, store::Store};

/// Products read from the database per round trip while building.
const BUILD_PAGE: i64 = 1000;
/// How long the indexer waits for more requests before committing a batch.
const GATHER: Duration = Duration::from_millis(20);
/// How stale the stock figures of search results may be.
pub const STOCK_DELAY: Duration = Duration::from_secs(1);

struct Job {
    ids: Vec<Uuid>,
    /// Whom to tell once the products are searchable; `None` for a stock change.
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Asks the indexer to refresh products.
#[derive(Clone)]
pub struct IndexerHandle {
    jobs: mpsc::Sender<Job>,
}

impl IndexerHandle {
    /// Returns once the products' current state is searchable (or the attempt failed).
    pub async fn refresh(&self, ids: Vec<Uuid>) -> Result<(), String> {
        if ids.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        self.jobs.send(Job { ids, done: Some(done) }).await.map_err(|_| "the indexer has stopped".to_owned())?;
        answer.await.map_err(|_| "the indexer has stopped".to_owned())?
    }

    /// Notes that these products' stock changed: they are refreshed within [`STOCK_DELAY`].
    pub async fn stock_changed(&self, ids: Vec<Uuid>) -> Result<(), String> {
        if ids.is_empty() {
            return Ok(());
        }
        self.jobs.send(Job { ids, done: None }).await.map_err(|_| "the indexer has stopped".to_owned())
    }
}

pub struct Indexer {
    index: SearchIndex,
    writer: Arc<Mutex<IndexWriter<TantivyDocument>>>,
    store: Store,
    jobs: mpsc::Receiver<Job>,
}

impl Indexer {
    pub fn new(index: SearchIndex, store: Store, memory_mb: usize) -> Result<(Self, IndexerHandle), CatalogError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        let budget = (memory_mb * 1024 * 1024).max(threads * 15_000_000);
        let writer = index.index().writer_with_num_threads(threads, budget).map_err(CatalogError::internal)?;
        let (sender, jobs) = mpsc::channel(1024);
        let indexer = Self { index, writer: Arc::new(Mutex::new(writer)), store, jobs };
        Ok((indexer, IndexerHandle { jobs: sender }))
    }

    /// Indexes every product from scratch; returns how many.
    pub async fn build(&self) -> Result<usize, CatalogError> {
        let started = Instant::now();
        let mut after = None;
        let mut count = 0;
        loop {
            let page = self.store.products_after(after, BUILD_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            count += page.len();
            let full = page.len() as i64 == BUILD_PAGE;
            self.write(page, Vec::new(), false).await?;
            if !full {
                break;
            }
        }
        self.commit().await?;
        tracing::info!(products = count, took_ms = started.elapsed().as_millis() as u64, "search index built");
        Ok(count)
    }

    /// Reindexes what changed while this replica was not listening: products whose revision
    /// in the database differs from the index, and products the index lacks.
    pub async fn reconcile(&self) -> Result<usize, CatalogError> {
        let indexed = self.index.revisions().map_err(CatalogError::internal)?;
        let current = self.store.revisions().await?;
        let present: HashSet<Uuid> = current.iter().map(|r| r.product_id).collect();
        let stale: Vec<Uuid> =
            current.iter().filter(|r| indexed.get(&r.product_id) != Some(&r.micros)).map(|r| r.product_id).collect();
        let gone: Vec<Uuid> = indexed.keys().filter(|id| !present.contains(id)).copied().collect();
        let changed = stale.len() + gone.len();
        for chunk in stale.chunks(BUILD_PAGE as usize) {
            let products = self.store.products(chunk).await?;
            self.write(products, chunk.to_vec(), false).await?;
        }
        self.write(Vec::new(), gone, false).await?;
        self.commit().await?;
        if changed > 0 {
            tracing::info!(reindexed = changed, "search index reconciled with the database");
        }
        Ok(changed)
    }

    /// Serves refresh requests until `shutdown`.
    pub async fn run_until_stopped(mut self, shutdown: CancellationToken) {
        // Products whose stock changed, and when they are due.
        let mut stock: BTreeSet<Uuid> = BTreeSet::new();
        let mut stock_due = None;
        loop {
            let due = stock_due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let first = tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(due), if stock_due.is_some() => None,
                job = self.jobs.recv() => match job { Some(job) => Some(job), None => return },
            };
            let mut waiting = Vec::new();
            match first {
                Some(Job { ids, done: None }) => {
                    stock.extend(ids);
                    stock_due.get_or_insert_with(|| tokio::time::Instant::now() + STOCK_DELAY);
                    continue;
                }
                Some(Job { ids, done: Some(done) }) => {
                    waiting.push((ids, done));
                    let deadline = tokio::time::Instant::now() + GATHER;
                    while waiting.len() < 256 {
                        match tokio::time::timeout_at(deadline, self.jobs.recv()).await {
                            Ok(Some(Job { ids, done: Some(done) })) => waiting.push((ids, done)),
                            Ok(Some(Job { ids, done: None })) => stock.extend(ids),
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
                // The stock changes are due.
                None => {}
            }
            // Pending stock changes ride along with any refresh.
            let deferred: Vec<Uuid> = std::mem::take(&mut stock).into_iter().collect();
            stock_due = None;
            let mut ids: Vec<Uuid> = waiting.iter().flat_map(|(ids, _)| ids.iter().copied()).collect();
            ids.extend(&deferred);
            ids.sort_unstable();
            ids.dedup();
            let outcome = self.refresh(&ids).await.map_err(|e| e.to_string());
            if let Err(error) = &outcome {
                tracing::warn!(error = %error, products = ids.len(), "could not refresh the search index");
                // Nobody waits for the stock changes: they are tried again later.
                stock.extend(deferred);
                stock_due = Some(tokio::time::Instant::now() + STOCK_DELAY);
            }
            for (_, done) in waiting {
                let _ = done.send(outcome.clone());
            }
        }
    }

    async fn refresh(&self, ids: &[Uuid]) -> Result<(), CatalogError> {
        let started = Instant::now();
        let products = self.store.products(ids).await?;
        self.write(products, ids.to_vec(), true).await?;
        metrics::histogram!("catalog_index_refresh_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("catalog_index_documents_total").increment(ids.len() as u64);
        Ok(())
    }

    /// Deletes the documents of `delete`, then adds `products`, committing and reloading when
    /// `commit`. Callers list every product they re-add in `delete` (the full build writes into
    /// an empty index, so it deletes nothing).
    async fn write(&self, products: Vec<Product>, delete: Vec<Uuid>, commit: bool) -> Result<(), CatalogError> {
        let writer = self.writer.clone();
        let fields = *self.index.fields();
        let reader = self.index.reader().clone();
        tokio::task::spawn_blocking(move || -> Result<(), CatalogError> {
            let mut writer = writer.lock().map_err(|_| CatalogError::internal(std::io::Error::other("poisoned")))?;
            for id in delete {
                writer.delete_term(Term::from_field_text(fields.id, &id.to_string()));
            }
            for product in &products {
                let doc = fields.document(product).map_err(CatalogError::internal)?;
                writer.add_document(doc).map_err(CatalogError::internal)?;
            }
            if commit {
                writer.commit().map_err(CatalogError::internal)?;
                reader.reload().map_err(CatalogError::internal)?;
            }
            Ok(())
        })
        .await
        .map_err(CatalogError::internal)?
    }

    async fn commit(&self) -> Result<(), CatalogError> {
        self.write(Vec::new(), Vec::new(), true).await
    }
}
