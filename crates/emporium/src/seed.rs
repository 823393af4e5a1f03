//! `emporium seed --products N`: a large synthetic catalog for load tests, written through the
//! catalog's own use case (validation, events and all) with a progress bar.

use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::Settings;

/// Products generated and written per chunk; generation stays ahead of the writers without
/// holding the whole catalog in memory.
const CHUNK: usize = 5_000;

pub async fn run(settings: Settings, count: usize, seed: u64, concurrency: usize) -> anyhow::Result<()> {
    platform::telemetry::init(&settings.log);
    let bar = ProgressBar::new(count as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} products, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let created = fill(&settings, count, seed, concurrency, |n| bar.inc(n as u64)).await?;
    bar.finish_and_clear();
    let took = started.elapsed();
    eprintln!(
        "added {created} products ({} already existed) in {:.1}s: {:.0} products/s",
        count - created,
        took.as_secs_f64(),
        created as f64 / took.as_secs_f64().max(0.001)
    );
    Ok(())
}

/// Writes the demo categories and `count` generated products into the catalog's database;
/// returns how many were new.
pub async fn fill(
    settings: &Settings,
    count: usize,
    seed: u64,
    concurrency: usize,
    progress: impl Fn(usize),
) -> anyhow::Result<usize> {
    let opened = catalog::open(&settings.catalog, &settings.shared()).await.context("opening the catalog")?;
    catalog::demo::categories(&opened.products).await?;
    // The same seed makes the same products; running again skips those that exist.
    let mut created = 0;
    for start in (0..count).step_by(CHUNK) {
        let chunk = catalog::demo::generate_at(start, CHUNK.min(count - start), seed, true);
        created += catalog::demo::insert(&opened.products, chunk, concurrency, &progress).await?;
    }
    opened.products.store().db().close().await;
    Ok(created)
}
