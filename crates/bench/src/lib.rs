//! `emporium bench`: the load generator shipped in the binary the way pgbench ships with
//! PostgreSQL, and its scenarios. Each scenario starts what it measures through the shop's own
//! start-up (or drives a running gateway), prepares its data through the services' public APIs
//! or their own libraries, and prints its figures beside what they are compared with, measured
//! in the same run.
#![forbid(unsafe_code)]

pub mod load;
pub mod scenarios;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use shop::Settings;

use crate::load::Load;

#[derive(Clone, Copy, ValueEnum)]
pub enum Scenario {
    /// GET /api/v1/users/me through the gateway and directly against identity.
    Me,
    /// POST /api/v1/auth/login (argon2id-bound).
    Login,
    /// The event backbone on RabbitMQ and PostgreSQL: outbox → relay → broker → consumer.
    Events,
    /// Search latency with Tantivy beside PostgreSQL full-text search, on a large catalog.
    Search,
    /// GET /api/v1/products/{id} through the gateway and directly, cached in Redis.
    Product,
    /// Add-to-cart and get-cart through the gateway (carts in Redis) beside redis-benchmark.
    Cart,
    /// Checkouts end to end through the gateway on PostgreSQL beside pgbench TPC-B.
    Checkout,
    /// A shopper's five requests (list, product page, search, add to cart, get cart) and two
    /// storefront pages made from them (a product's, a search's) through the gateway of an
    /// embedded and a distributed shop, with each process's peak memory.
    Shop,
}

/// Which shops `bench shop` starts.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShopKind {
    /// `emporium serve`: one process, SQLite, the in-process bus.
    Embedded,
    /// `emporium cluster`: every service as its own processes on PostgreSQL, Redis and RabbitMQ.
    Distributed,
    Both,
}

#[derive(ClapArgs)]
pub struct Args {
    pub scenario: Scenario,
    /// Concurrent clients, each with its own connection.
    #[arg(long, short = 'c', default_value_t = 32)]
    pub concurrency: usize,
    /// How long each measured round runs.
    #[arg(long, short = 'd', default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before each round.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Rounds; scenarios that compare two paths alternate between them round by round.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Drive a running gateway (http://host:port) instead of starting a shop.
    #[arg(long, requires = "identity")]
    pub gateway: Option<String>,
    /// The identity service of that running shop.
    #[arg(long, requires = "gateway")]
    pub identity: Option<String>,
    /// `events`: the RabbitMQ to measure.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp: String,
    /// `events`: a PostgreSQL server (any database on it) where a throw-away database is made.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres: String,
    /// `events`: the steady rate at which latency is measured, in events/s.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// `events`: the consumer's prefetch.
    #[arg(long, default_value_t = 1024)]
    pub prefetch: u16,
    /// `events`: the consumer's lanes.
    #[arg(long, default_value_t = 2)]
    pub lanes: usize,
    /// `search`, `product`: products in the generated catalog (kept in PostgreSQL for later runs;
    /// 100,000 unless given). `shop`: products of each shop's catalog (1,000 unless given).
    #[arg(long)]
    pub products: Option<usize>,
    /// `search`: queries of each kind per engine.
    #[arg(long, default_value_t = 500)]
    pub iterations: usize,
    /// `product`, `cart`, `checkout`: the Redis that caches products / holds carts.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pub redis: String,
    /// `product`: what trace export costs instead: three shops side by side (traces off, exported
    /// at the default sampling ratio, exported at 100%), each driven in turn.
    #[arg(long)]
    pub tracing: bool,
    /// `checkout`: buyers, each checking out one cart of 3 lines.
    #[arg(long, default_value_t = 4000)]
    pub buyers: usize,
    /// `shop`: which shops to start (unless `--gateway` names a running one).
    #[arg(long, value_enum, default_value_t = ShopKind::Both)]
    pub shop: ShopKind,
    /// `shop`: replicas of each service in the distributed shop.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
}

/// Runs a scenario and prints its report (and writes it as JSON when asked).
pub async fn run(mut settings: Settings, args: Args) -> anyhow::Result<()> {
    // sqlx warns of slow statements; building a benchmark's data set is made of them.
    settings.log.filter = "warn,sqlx=error".to_owned();
    // The load comes from one address at rates no shopper reaches: what is timed is serving it.
    settings.gateway.rate_limits.enabled = false;
    platform::telemetry::init(&settings.log);
    if let Scenario::Shop = args.scenario {
        // It starts a local cluster, which the `emporium` binary's own module does.
        anyhow::bail!("`bench shop` is run by the emporium binary");
    }
    let load =
        Load { concurrency: args.concurrency, duration: args.duration, warmup: args.warmup, rounds: args.rounds };
    if let Scenario::Events = args.scenario {
        let bench = scenarios::events::EventsBench {
            amqp_url: args.amqp,
            postgres_url: args.postgres,
            duration: args.duration,
            rate: args.rate,
            prefetch: args.prefetch,
            lanes: args.lanes,
            relay: settings.relay.clone(),
        };
        println!("target: RabbitMQ and PostgreSQL ({} per phase)", humantime::format_duration(args.duration));
        let report = scenarios::events::events(bench).await?;
        if let Some(path) = args.json {
            std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    if let Scenario::Checkout = args.scenario {
        let bench = scenarios::checkout::CheckoutBench {
            postgres_url: args.postgres,
            redis_url: args.redis,
            buyers: args.buyers,
        };
        let report = scenarios::checkout::checkout(settings, bench, load).await?;
        if let Some(path) = args.json {
            std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    if let Scenario::Cart = args.scenario {
        let report = scenarios::cart::cart(settings, &args.redis, load).await?;
        if let Some(path) = args.json {
            std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    if let Scenario::Search | Scenario::Product = args.scenario {
        let bench = scenarios::catalog::CatalogBench {
            postgres_url: args.postgres,
            redis_url: args.redis,
            products: args.products.unwrap_or(100_000),
            iterations: args.iterations,
        };
        let report = match args.scenario {
            Scenario::Search => scenarios::catalog::search(settings, bench).await?,
            _ if args.tracing => scenarios::tracing::tracing(settings, bench, load).await?,
            _ => scenarios::catalog::product(settings, bench, load).await?,
        };
        if let Some(path) = args.json {
            std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    let hashing = settings.identity.password_hashing.clone();
    let (targets, shop) = match (args.gateway, args.identity) {
        (Some(gateway), Some(identity)) => (scenarios::Targets { gateway, identity }, None),
        _ => {
            let shop = scenarios::BenchShop::start(settings).await?;
            (shop.targets.clone(), Some(shop))
        }
    };
    println!("target: gateway {}, identity {}", targets.gateway, targets.identity);
    let report = match args.scenario {
        Scenario::Me => scenarios::me(&targets, load).await,
        Scenario::Login => scenarios::login(&targets, load, &hashing).await,
        Scenario::Events | Scenario::Search | Scenario::Product | Scenario::Cart | Scenario::Checkout => {
            unreachable!("handled above")
        }
        Scenario::Shop => unreachable!("refused above"),
    };
    if let Some(shop) = shop {
        shop.stop().await;
    }
    let report = report?;
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
