//! `emporium`: run the shop (all services, or some), migrate, administer, and benchmark.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use emporium::{Service, Settings, Shop, bench::Load, scenarios};
use secrecy::SecretString;

// Request handling allocates many small, short-lived buffers across threads; glibc's malloc
// spends measurably more time (and lock traffic) on that than mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "emporium", version, about = "An e-commerce backend: run the shop, or operate it")]
struct Cli {
    /// A TOML configuration file; EMPORIUM_* environment variables override it.
    #[arg(long, global = true, env = "EMPORIUM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run services (all of them when none is named).
    Serve {
        /// identity, catalog, cart, orders, gateway
        services: Vec<Service>,
    },
    /// Create or upgrade the services' database schemas, then exit.
    Migrate {
        /// Services whose databases to migrate (all when none is named).
        services: Vec<Service>,
    },
    /// Administer users and keys.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Fill the catalog with generated products (for load tests and demos).
    Seed {
        /// How many products to add.
        #[arg(long, default_value_t = 10_000)]
        products: usize,
        /// The generator's seed; the same seed makes the same products.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Products written at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Watch and repair the event flow.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Measure throughput and latency.
    Bench(BenchArgs),
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print events as they flow, one JSON object per line (Ctrl-C stops).
    Tail {
        /// Start from the oldest event kept instead of from now.
        #[arg(long, conflicts_with_all = ["offset", "since"])]
        from_start: bool,
        /// Start at this position of the log (0 is the first event ever kept).
        #[arg(long, conflicts_with = "since")]
        offset: Option<u64>,
        /// Start with the events appended at or after this time (RFC 3339, e.g. 2026-11-24T10:00:00Z).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events whose type matches this pattern (`order.*`, `user.registered`, `#`).
        #[arg(long = "type", default_value = "#")]
        pattern: String,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// List the events parked for a consumer after their last failed attempt.
    DeadLetters {
        #[arg(long)]
        consumer: String,
    },
    /// Give a consumer's parked events a fresh set of attempts.
    ReplayDeadLetters {
        #[arg(long)]
        consumer: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an administrator account.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "Administrator")]
        name: String,
        /// The password; read from EMPORIUM_ADMIN_PASSWORD when not given.
        #[arg(long, env = "EMPORIUM_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Grant the admin role to an existing account.
    Grant {
        #[arg(long)]
        email: String,
    },
    /// Start signing access tokens with a new key; tokens signed by the old one stay valid.
    RotateSigningKey,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scenario {
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
}

#[derive(Args)]
struct BenchArgs {
    scenario: Scenario,
    /// Concurrent clients, each with its own connection.
    #[arg(long, short = 'c', default_value_t = 32)]
    concurrency: usize,
    /// How long each measured round runs.
    #[arg(long, short = 'd', default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before each round.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Rounds; scenarios that compare two paths alternate between them round by round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Drive a running gateway (http://host:port) instead of starting a shop.
    #[arg(long, requires = "identity")]
    gateway: Option<String>,
    /// The identity service of that running shop.
    #[arg(long, requires = "gateway")]
    identity: Option<String>,
    /// `events`: the RabbitMQ to measure.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// `events`: a PostgreSQL server (any database on it) where a throw-away database is made.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// `events`: the steady rate at which latency is measured, in events/s.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// `events`: the consumer's prefetch.
    #[arg(long, default_value_t = 1024)]
    prefetch: u16,
    /// `events`: the consumer's lanes.
    #[arg(long, default_value_t = 2)]
    lanes: usize,
    /// `search`, `product`: products in the generated catalog (kept in PostgreSQL for later runs).
    #[arg(long, default_value_t = 100_000)]
    products: usize,
    /// `search`: queries of each kind per engine.
    #[arg(long, default_value_t = 500)]
    iterations: usize,
    /// `product`, `cart`, `checkout`: the Redis that caches products / holds carts.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis: String,
    /// `checkout`: buyers, each checking out one cart of 3 lines.
    #[arg(long, default_value_t = 4000)]
    buyers: usize,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The cause chain on one line; an operator needs the reason, not a backtrace.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve { services: Vec::new() }) {
        Command::Serve { services } => serve(settings, services).await,
        Command::Migrate { services } => migrate(settings, services).await,
        Command::Admin(command) => admin(settings, command).await,
        Command::Seed { products, seed, concurrency } => {
            emporium::seed::run(settings, products, seed, concurrency).await
        }
        Command::Events(command) => events_command(settings, command).await,
        Command::Bench(args) => bench(settings, args).await,
    }
}

fn all_if_empty(mut services: Vec<Service>) -> Vec<Service> {
    if services.is_empty() {
        services = Service::ALL.to_vec();
    }
    services.sort();
    services.dedup();
    services
}

async fn serve(settings: Settings, services: Vec<Service>) -> anyhow::Result<()> {
    platform::telemetry::init(&settings.log);
    platform::metrics::install();
    let services = all_if_empty(services);
    let embedded = services.len() == Service::ALL.len();
    let shutdown = platform::shutdown::on_signal();
    let shop = Shop::start(settings.clone(), &services, shutdown).await?;
    if embedded && let Some(gateway) = shop.gateway {
        eprintln!(
            "\nEmporium is running.\n  API:       http://{gateway}/api/v1/\n  API docs:  http://{gateway}/docs\n  data:      {}\n\n\
             Create an administrator with\n  cargo run --release -- admin create --email you@example.com --password '<at least 10 characters>'\n\
             or start with EMPORIUM_BOOTSTRAP_ADMIN_EMAIL and EMPORIUM_BOOTSTRAP_ADMIN_PASSWORD set.\n",
            settings.data_dir.display()
        );
    }
    shop.wait().await
}

async fn migrate(settings: Settings, services: Vec<Service>) -> anyhow::Result<()> {
    platform::telemetry::init(&settings.log);
    for service in all_if_empty(services) {
        match service {
            Service::Identity => {
                identity::open(&settings.identity, &settings.shared()).await.context("migrating identity")?;
            }
            Service::Catalog => {
                catalog::open(&settings.catalog, &settings.shared()).await.context("migrating catalog")?;
            }
            Service::Cart => {
                let url =
                    settings.cart.store_url.clone().unwrap_or_else(|| settings.shared().sqlite_url(cart::SERVICE));
                if url.starts_with("redis") {
                    eprintln!("cart: Redis needs no schema");
                    continue;
                }
                cart::store::SqlCarts::open(&url, &settings.cart.pool).await.context("migrating cart")?;
            }
            Service::Orders => {
                let url = settings
                    .orders
                    .database_url
                    .clone()
                    .unwrap_or_else(|| settings.shared().sqlite_url(orders::SERVICE));
                orders::store::Store::open(&url, &settings.orders.pool).await.context("migrating orders")?;
            }
            Service::Gateway => continue,
        }
        eprintln!("{service}: schema up to date");
    }
    Ok(())
}

async fn admin(settings: Settings, command: AdminCommand) -> anyhow::Result<()> {
    use identity::domain::{DisplayName, Email, NewPassword};
    let accounts = identity::open(&settings.identity, &settings.shared()).await.context("opening identity")?;
    match command {
        AdminCommand::Create { email, name, password } => {
            let password = SecretString::from(password);
            let email = Email::parse(&email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
            let password = NewPassword::parse(secrecy::ExposeSecret::expose_secret(&password).to_owned())
                .map_err(|e| anyhow::anyhow!("--password {e}"))?;
            let name = DisplayName::parse(&name).map_err(|e| anyhow::anyhow!("--name {e}"))?;
            match accounts.create_admin(&email, &password, &name).await {
                Ok(user) => println!("created administrator {} ({})", user.email, user.id),
                Err(identity::IdentityError::EmailTaken) => {
                    anyhow::bail!(
                        "an account with that email exists; grant it the role with `emporium admin grant --email …`"
                    )
                }
                Err(error) => return Err(error.into()),
            }
        }
        AdminCommand::Grant { email } => {
            let email = Email::parse(&email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
            let user = accounts.grant_admin(&email).await?;
            println!("{} ({}) is now an administrator", user.email, user.id);
        }
        AdminCommand::RotateSigningKey => {
            let kid = accounts.rotate_signing_key().await?;
            println!("new signing key {kid}; running replicas switch to it within their key reload interval");
        }
    }
    Ok(())
}

async fn events_command(settings: Settings, command: EventsCommand) -> anyhow::Result<()> {
    use std::io::Write;
    let events = settings.events().await?;
    match command {
        EventsCommand::Tail { from_start, offset, since, pattern, limit } => {
            let from = match (from_start, offset, since) {
                (true, _, _) => events::TailFrom::Start,
                (_, Some(offset), _) => events::TailFrom::Offset(offset),
                (_, _, Some(since)) => events::TailFrom::Since(since),
                _ => events::TailFrom::Now,
            };
            let stop = platform::shutdown::on_signal();
            let mut printed = 0;
            let mut stdout = std::io::stdout();
            events
                .bus
                .tail(from, &pattern, stop, |event| {
                    let line = serde_json::to_string(&event).unwrap_or_default();
                    printed += 1;
                    // A closed pipe (`| head`) ends the tail.
                    writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_ok()
                        && limit.is_none_or(|n| printed < n)
                })
                .await?;
        }
        EventsCommand::DeadLetters { consumer } => {
            let parked = events.bus.dead_letters(&consumer).await?;
            for letter in &parked {
                println!("{}", serde_json::to_string(letter)?);
            }
            eprintln!("{} parked event(s) for {consumer}", parked.len());
        }
        EventsCommand::ReplayDeadLetters { consumer } => {
            let replayed = events.bus.replay_dead_letters(&consumer).await?;
            eprintln!("requeued {replayed} parked event(s) for {consumer}");
        }
    }
    Ok(())
}

async fn bench(mut settings: Settings, args: BenchArgs) -> anyhow::Result<()> {
    // sqlx warns of slow statements; building a benchmark's data set is made of them.
    settings.log.filter = "warn,sqlx=error".to_owned();
    platform::telemetry::init(&settings.log);
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
            products: args.products,
            iterations: args.iterations,
        };
        let report = match args.scenario {
            Scenario::Search => scenarios::catalog::search(settings, bench).await?,
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
