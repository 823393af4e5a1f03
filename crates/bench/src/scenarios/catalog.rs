//! `bench search` and `bench product`: the catalog on a large generated catalog in PostgreSQL.
//!
//! `search` builds a Tantivy index from the database (build rate, size), then answers three
//! kinds of search with it and, on the same data, with PostgreSQL full-text search (`tsvector`,
//! a GIN index, `websearch_to_tsquery`), one query at a time, reporting p50/p99 for both.
//! `product` reads one product through the gateway and directly from the catalog, with the
//! product cache in Redis as in a distributed deployment.

use std::{path::Path, sync::Arc, time::Instant};

use anyhow::Context;
use catalog::search::{SearchIndex, SearchRequest, Sort};
use hdrhistogram::Histogram;
use platform::db::Db;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Report;
use shop::{Service, Settings, Shop};

use crate::load::{Load, Probe, drive_interleaved, ensure_clean, print_table};

pub struct CatalogBench {
    /// Any database on the server; the bench uses a database of its own there.
    pub postgres_url: String,
    pub redis_url: String,
    pub products: usize,
    pub iterations: usize,
}

/// The benchmark's catalog database, named by its size so that later runs reuse it.
fn database_url(bench: &CatalogBench) -> anyhow::Result<String> {
    let (server, _) = bench.postgres_url.rsplit_once('/').context("--postgres must end with /DATABASE")?;
    Ok(format!("{server}/emporium_bench_catalog_{}", bench.products))
}

/// Opens (seeding when needed) the benchmark catalog.
pub(super) async fn seeded(settings: &Settings, bench: &CatalogBench) -> anyhow::Result<(catalog::Opened, String)> {
    let url = database_url(bench)?;
    let mut config = settings.catalog.clone();
    config.database_url = Some(url.clone());
    let opened = catalog::open(&config, &settings.shared()).await.context("opening the bench catalog")?;
    let have = usize::try_from(opened.products.count().await?)?;
    if have < bench.products {
        println!("seeding {} products into {} (kept for later runs) …", bench.products, platform::db::redact_url(&url));
        let started = Instant::now();
        catalog::demo::categories(&opened.products).await?;
        for start in (have..bench.products).step_by(5_000) {
            let chunk = catalog::demo::generate_at(start, 5_000.min(bench.products - start), 1, true);
            catalog::demo::insert(&opened.products, chunk, 8, |_| {}).await?;
        }
        // The relay would publish these; a benchmark database has no consumer for them.
        events::outbox::discard_pending(opened.products.store().db()).await?;
        println!("seeded in {:.0} s", started.elapsed().as_secs_f64());
    }
    Ok((opened, url))
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
        })
        .unwrap_or(0)
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub kind: String,
    pub engine: String,
    pub queries: usize,
    pub hits: usize,
    pub p50_us: u64,
    pub p99_us: u64,
}

fn latency(kind: &str, engine: &str, histogram: &Histogram<u64>, hits: usize) -> Latency {
    Latency {
        kind: kind.to_owned(),
        engine: engine.to_owned(),
        queries: histogram.len() as usize,
        hits,
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
    }
}

/// The three searches, as the API would receive them, and what PostgreSQL is asked for each.
/// PostgreSQL cannot match a misspelt word, so for (b) it gets the words spelt right: the
/// results the shopper wanted, which is what the comparison is about.
fn requests() -> Vec<(&'static str, SearchRequest, SearchRequest)> {
    let one_word = SearchRequest { q: Some("jacket".into()), sort: Sort::Relevance, ..SearchRequest::new() };
    let typo = SearchRequest { q: Some("wireles headphnes".into()), sort: Sort::Relevance, ..SearchRequest::new() };
    let filtered = SearchRequest {
        q: Some("jacket".into()),
        categories: vec!["jackets".into()],
        brands: vec!["Patagonia".into(), "Rab".into()],
        min_price: Some(10_000),
        max_price: Some(40_000),
        in_stock: true,
        sort: Sort::Relevance,
        ..SearchRequest::new()
    };
    let spelt_right = SearchRequest { q: Some("wireless headphones".into()), ..typo.clone() };
    vec![
        ("(a) one word", one_word.clone(), one_word),
        ("(b) two words, a typo", typo, spelt_right),
        ("(c) filtered + facets", filtered.clone(), filtered),
    ]
}

const FTS_SETUP: &str = "
DROP TABLE IF EXISTS bench_fts;
CREATE TABLE bench_fts AS
WITH prices AS (SELECT product_id, MIN(price_amount) AS price FROM variants GROUP BY product_id),
     stock AS (SELECT product_id, SUM(on_hand - reserved) AS available FROM inventory GROUP BY product_id)
SELECT p.id, p.title, p.brand, p.category, p.status, p.created_at, prices.price, COALESCE(stock.available, 0) AS available,
       setweight(to_tsvector('simple', p.title), 'A') ||
       setweight(to_tsvector('simple', COALESCE(p.brand, '')), 'B') ||
       setweight(to_tsvector('simple', replace(p.category, '-', ' ')), 'C') ||
       setweight(to_tsvector('simple', p.description), 'D') AS document
FROM products p LEFT JOIN prices ON prices.product_id = p.id LEFT JOIN stock ON stock.product_id = p.id;
CREATE INDEX bench_fts_document ON bench_fts USING GIN (document);
CREATE INDEX bench_fts_category ON bench_fts (category);
ANALYZE bench_fts;
";

/// The same searches in SQL: a page of hits by `ts_rank`, the total, and (for the filtered
/// search) category, brand and price facets, each counted without its own filter.
async fn postgres_search(pool: &sqlx::PgPool, request: &SearchRequest) -> anyhow::Result<usize> {
    let q = request.q.clone().unwrap_or_default();
    let filters = "status = 'active'
        AND ($2::text[] IS NULL OR category = ANY($2))
        AND ($3::text[] IS NULL OR brand = ANY($3))
        AND ($4::bigint IS NULL OR price >= $4) AND ($5::bigint IS NULL OR price <= $5)
        AND (NOT $6 OR available > 0)";
    let categories = (!request.categories.is_empty()).then(|| request.categories.clone());
    let brands = (!request.brands.is_empty()).then(|| request.brands.clone());
    let bind = |sql: String| sqlx::AssertSqlSafe(sql);
    let hits_sql = format!(
        "SELECT id FROM bench_fts, websearch_to_tsquery('simple', $1) query
         WHERE document @@ query AND {filters} ORDER BY ts_rank(document, query) DESC LIMIT 20"
    );
    // The page of hits is fetched as a search would; only its cost matters here.
    let _page: Vec<(uuid::Uuid,)> = sqlx::query_as(bind(hits_sql))
        .bind(&q)
        .bind(&categories)
        .bind(&brands)
        .bind(request.min_price)
        .bind(request.max_price)
        .bind(request.in_stock)
        .fetch_all(pool)
        .await?;
    let count_sql =
        format!("SELECT COUNT(*) FROM bench_fts WHERE document @@ websearch_to_tsquery('simple', $1) AND {filters}");
    let total: i64 = sqlx::query_scalar(bind(count_sql))
        .bind(&q)
        .bind(&categories)
        .bind(&brands)
        .bind(request.min_price)
        .bind(request.max_price)
        .bind(request.in_stock)
        .fetch_one(pool)
        .await?;
    if categories.is_some() || brands.is_some() {
        // Each facet without its own filter, as the API counts them.
        for (column, no_categories, no_brands, no_price) in [
            ("category", true, false, false),
            ("brand", false, true, false),
            ("(price / 1000)::text", false, false, true),
        ] {
            let sql = format!(
                "SELECT {column}, COUNT(*) FROM bench_fts WHERE document @@ websearch_to_tsquery('simple', $1) AND {filters}
                 GROUP BY 1"
            );
            let _counts: Vec<(Option<String>, i64)> = sqlx::query_as(bind(sql))
                .bind(&q)
                .bind(if no_categories { None } else { categories.clone() })
                .bind(if no_brands { None } else { brands.clone() })
                .bind(if no_price { None } else { request.min_price })
                .bind(if no_price { None } else { request.max_price })
                .bind(request.in_stock)
                .fetch_all(pool)
                .await?;
        }
    }
    Ok(total as usize)
}

#[derive(Debug, Serialize)]
struct SearchFigures {
    products: usize,
    index_build_secs: f64,
    index_docs_per_sec: f64,
    index_bytes: u64,
    fts_build_secs: f64,
    latencies: Vec<Latency>,
}

pub async fn search(settings: Settings, bench: CatalogBench) -> anyhow::Result<Report> {
    let (opened, _) = seeded(&settings, &bench).await?;
    let store_db = opened.products.store().db().clone();
    let Db::Postgres(pool) = store_db.clone() else { anyhow::bail!("the search bench needs PostgreSQL") };

    // Tantivy: a fresh index built from the database.
    let dir = std::env::temp_dir().join(format!("emporium-bench-index-{}", uuid::Uuid::new_v4().simple()));
    let (index, _) = SearchIndex::open(&dir)?;
    let (indexer, _) =
        catalog::Indexer::new(index.clone(), opened.products.store().clone(), settings.catalog.index_memory_mb)?;
    let started = Instant::now();
    let built = indexer.build().await?;
    let build_secs = started.elapsed().as_secs_f64();
    let index_bytes = dir_size(&dir);

    // PostgreSQL full-text search over the same products.
    let started = Instant::now();
    sqlx::raw_sql(FTS_SETUP).execute(&pool).await.context("building the PostgreSQL full-text table")?;
    let fts_secs = started.elapsed().as_secs_f64();

    let index = Arc::new(index);
    let mut latencies = Vec::new();
    for (kind, request, for_postgres) in requests() {
        // Warm both engines' caches, then alternate query by query so drift hits both alike.
        let mut tantivy = Histogram::<u64>::new(3)?;
        let mut postgres = Histogram::<u64>::new(3)?;
        let (mut tantivy_hits, mut postgres_hits) = (0, 0);
        for i in 0..bench.iterations + 20 {
            let started = Instant::now();
            let index = index.clone();
            let asked = request.clone();
            let page = tokio::task::spawn_blocking(move || index.search_now(&asked)).await??;
            let tantivy_us = started.elapsed().as_micros() as u64;
            let started = Instant::now();
            postgres_hits = postgres_search(&pool, &for_postgres).await?;
            let postgres_us = started.elapsed().as_micros() as u64;
            tantivy_hits = page.total;
            if i >= 20 {
                tantivy.record(tantivy_us.max(1))?;
                postgres.record(postgres_us.max(1))?;
            }
        }
        latencies.push(latency(kind, "tantivy", &tantivy, tantivy_hits));
        latencies.push(latency(kind, "postgres fts", &postgres, postgres_hits));
    }
    let _ = std::fs::remove_dir_all(&dir);
    store_db.close().await;

    println!("{:<24} {:<14} {:>8} {:>8} {:>10} {:>10}", "search", "engine", "queries", "total", "p50", "p99");
    for l in &latencies {
        println!(
            "{:<24} {:<14} {:>8} {:>8} {:>8} µs {:>7} µs",
            l.kind, l.engine, l.queries, l.hits, l.p50_us, l.p99_us
        );
    }
    let docs_per_sec = built as f64 / build_secs;
    let mut notes = vec![
        format!(
            "index build: {built} products in {build_secs:.1} s = {docs_per_sec:.0} docs/s (database read included); index size {:.1} MiB",
            index_bytes as f64 / (1024.0 * 1024.0)
        ),
        format!("PostgreSQL full-text table and GIN index built in {fts_secs:.1} s"),
    ];
    for pair in latencies.chunks(2) {
        let (t, p) = (&pair[0], &pair[1]);
        notes.push(format!(
            "{}: tantivy p50 {} µs / p99 {} µs vs PostgreSQL p50 {} µs / p99 {} µs → {:.1}× faster at p50 (p99 target < 10 ms: {})",
            t.kind,
            t.p50_us,
            t.p99_us,
            p.p50_us,
            p.p99_us,
            p.p50_us as f64 / t.p50_us.max(1) as f64,
            if t.p99_us < 10_000 { "met" } else { "missed" }
        ));
    }
    notes.push(
        "PostgreSQL full-text search has no typo tolerance: for (b) it is given the words spelt right \
         ('wireless headphones'; with the typo it finds nothing)"
            .to_owned(),
    );
    for note in &notes {
        println!("{note}");
    }
    let figures = SearchFigures {
        products: built,
        index_build_secs: build_secs,
        index_docs_per_sec: docs_per_sec,
        index_bytes,
        fts_build_secs: fts_secs,
        latencies,
    };
    notes.push(serde_json::to_string(&figures)?);
    Ok(Report { scenario: "search".to_owned(), measurements: Vec::new(), notes })
}

/// `GET /api/v1/products/{id}` through the gateway and directly from the catalog, on the bench
/// catalog in PostgreSQL with the product cache in Redis.
pub async fn product(mut settings: Settings, bench: CatalogBench, load: Load) -> anyhow::Result<Report> {
    let (opened, url) = seeded(&settings, &bench).await?;
    let some = opened.products.store().products_after(None, 1).await?;
    let product = some.first().context("the bench catalog has products")?;
    let id = product.id;
    opened.products.store().db().close().await;

    let data_dir = std::env::temp_dir().join(format!("emporium-bench-{}", uuid::Uuid::new_v4().simple()));
    settings.data_dir = data_dir.clone();
    settings.identity.listen = "127.0.0.1:0".parse()?;
    settings.identity.grpc_listen = "127.0.0.1:0".parse()?;
    settings.catalog.listen = "127.0.0.1:0".parse()?;
    settings.catalog.grpc_listen = "127.0.0.1:0".parse()?;
    settings.cart.listen = "127.0.0.1:0".parse()?;
    settings.cart.grpc_listen = "127.0.0.1:0".parse()?;
    settings.gateway.listen = "127.0.0.1:0".parse()?;
    settings.storefront.listen = "127.0.0.1:0".parse()?;
    settings.catalog.database_url = Some(url);
    settings.catalog.cache_url = bench.redis_url.clone();
    settings.catalog.cache_prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    println!("starting the shop on the bench catalog (the index is built first) …");
    let shop = Shop::start(settings, &Service::ALL, CancellationToken::new()).await?;
    let gateway = format!("http://{}", shop.gateway.context("gateway started")?);
    let catalog = format!("http://{}", shop.catalog.context("catalog started")?);
    println!("target: gateway {gateway}, catalog {catalog}; product {id} (cache: {})", bench.redis_url);
    let via_gateway = Probe::get("product via gateway", &format!("{gateway}/api/v1/products/{id}"))?;
    let direct = Probe::get("product direct (catalog)", &format!("{catalog}/api/v1/products/{id}"))?;
    let measured = drive_interleaved(&[via_gateway, direct], load, load.rounds).await;
    shop.stop();
    let _ = shop.wait().await;
    let _ = std::fs::remove_dir_all(data_dir);
    let measurements = measured?;
    print_table(&measurements);
    ensure_clean(&measurements)?;
    let (g, d) = (&measurements[0], &measurements[1]);
    let notes = vec![format!(
        "GET /api/v1/products/{{id}} through the gateway: {:.0} req/s, p50 {} µs, p99 {} µs at {} clients ({:.0}% of direct: {:.0} req/s)",
        g.requests_per_sec,
        g.p50_us,
        g.p99_us,
        load.concurrency,
        100.0 * g.requests_per_sec / d.requests_per_sec,
        d.requests_per_sec
    )];
    for note in &notes {
        println!("{note}");
    }
    Ok(Report { scenario: "product".to_owned(), measurements, notes })
}
