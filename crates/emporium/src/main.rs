//! `emporium`: run the shop (all services, or some), migrate, administer, and benchmark.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use emporium::{Service, Settings, Shop};
use secrecy::SecretString;

// Request handling allocates many small, short-lived buffers across threads; glibc's malloc
// spends measurably more time (and lock traffic) on that than mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 3's options, by their place in `mi_option_e` (the Rust bindings name only some).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc 3 keeps freed memory for a second before giving it back, and backs its arenas with
/// transparent huge pages, so each thread's transient buffers stayed resident: the embedded
/// shop peaked at 152–178 MB under `bench shop` with its defaults and at 96 MB with
/// `MIMALLOC_PURGE_DELAY=0 MIMALLOC_ALLOW_THP=0`, at the same throughput. Those variables are
/// read before `main`, so the same is done here: freed memory goes back at once, and the process
/// uses no transparent huge pages (what mimalloc itself does for `ALLOW_THP=0`). A `MIMALLOC_*`
/// variable set by the operator still wins. (Children of this process, such as the tools a bench
/// runs, inherit the huge-page setting.)
fn tune_allocator() {
    let unset = |name: &str| std::env::var_os(name).is_none();
    #[cfg(target_os = "linux")]
    if unset("MIMALLOC_ALLOW_THP") {
        // SAFETY: prctl with integer arguments; it changes a flag of the process, no memory.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
    // The options' numbers are mimalloc 3's; another major version numbers them otherwise.
    // SAFETY: reads a constant.
    if unsafe { libmimalloc_sys::mi_version() } / 10_000 != 3 {
        return;
    }
    if unset("MIMALLOC_PURGE_DELAY") {
        // SAFETY: stores the value of an option that exists in this version.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

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
        /// identity, catalog, cart, orders, notifications, storefront, gateway
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
    Bench(bench::Args),
    /// Run every service as separate processes on this machine, replicated, on PostgreSQL, Redis
    /// and RabbitMQ.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(clap::Args)]
struct ClusterDir {
    /// Where the cluster keeps its state, logs and data.
    #[arg(long, default_value = ".emporium-cluster")]
    dir: PathBuf,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Migrate, then start every replica and the gateways; they keep running after this returns.
    Up {
        #[command(flatten)]
        dir: ClusterDir,
        /// Replicas of each service.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        #[arg(long, default_value_t = 1)]
        gateways: usize,
        #[arg(long, default_value_t = 8080)]
        gateway_port: u16,
        /// The first port of the services (each takes a block of 20 from here).
        #[arg(long, default_value_t = 18000)]
        base_port: u16,
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
        postgres: String,
        #[arg(long, default_value = "emporium_cluster")]
        database_prefix: String,
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
        amqp: String,
        /// Prefix of the cluster's queues and Redis keys.
        #[arg(long, default_value = "emporium-cluster")]
        namespace: String,
    },
    /// Each process: running or not, ready or not.
    Status {
        #[command(flatten)]
        dir: ClusterDir,
    },
    /// Stop every process (SIGTERM, then SIGKILL after 30 s).
    Down {
        #[command(flatten)]
        dir: ClusterDir,
    },
    /// Kill one replica at once (SIGKILL), as a crash would.
    Kill {
        #[command(flatten)]
        dir: ClusterDir,
        /// identity, catalog, cart, orders, notifications, storefront or gateway
        service: String,
        replica: usize,
    },
    /// Start one replica again.
    Start {
        #[command(flatten)]
        dir: ClusterDir,
        service: String,
        replica: usize,
    },
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
    /// Write a new random master key to FILE (readable by its owner only).
    NewMasterKey { file: std::path::PathBuf },
    /// Seal identity's data key with the master key in FILE instead of the configured one. FILE
    /// must exist (`new-master-key`), stored where the replicas will read it; then give every
    /// identity replica that file (`identity.secrets.master_key_file`).
    RotateMasterKey {
        #[arg(long)]
        new_key_file: std::path::PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    tune_allocator();
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
        Command::Bench(args) if matches!(args.scenario, bench::Scenario::Shop) => {
            emporium::bench_shop::run(settings, args).await
        }
        Command::Bench(args) => bench::run(settings, args).await,
        Command::Cluster(command) => cluster(command).await,
    }
}

async fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    use emporium::cluster::{Cluster, Plan};
    match command {
        ClusterCommand::Up {
            dir,
            replicas,
            gateways,
            gateway_port,
            base_port,
            postgres,
            database_prefix,
            redis,
            amqp,
            namespace,
        } => {
            let dir = std::path::absolute(&dir.dir)?;
            if let Ok(running) = Cluster::load(&dir)
                && running.processes.iter().any(|p| p.pid.is_some())
            {
                anyhow::bail!("a cluster already runs from {}: `emporium cluster down` first", dir.display());
            }
            let webhook_secret = format!("whsec_{}", uuid::Uuid::new_v4().simple());
            let plan = Plan {
                dir,
                replicas,
                gateways,
                gateway_port,
                base_port,
                postgres,
                database_prefix,
                redis,
                amqp,
                namespace,
                webhook_secret,
                extra_env: Vec::new(),
            };
            let mut cluster = Cluster::new(plan, std::env::current_exe()?);
            eprintln!(
                "starting {} processes; logs in {}",
                cluster.processes.len(),
                cluster.plan.dir.join("logs").display()
            );
            if let Err(error) = cluster.up().await {
                let _ = cluster.down(std::time::Duration::from_secs(10));
                return Err(error);
            }
            eprintln!("the cluster is up: {}", cluster.plan.gateway_url(0));
            Ok(())
        }
        ClusterCommand::Status { dir } => {
            let cluster = Cluster::load(&dir.dir)?;
            for (name, running, ready) in cluster.status().await {
                let state = match (running, ready) {
                    (true, true) => "ready",
                    (true, false) => "running, not ready",
                    _ => "stopped",
                };
                println!("{name:<16} {state}");
            }
            Ok(())
        }
        ClusterCommand::Down { dir } => Cluster::load(&dir.dir)?.down(std::time::Duration::from_secs(30)),
        ClusterCommand::Kill { dir, service, replica } => Cluster::load(&dir.dir)?.kill(&service, replica),
        ClusterCommand::Start { dir, service, replica } => Cluster::load(&dir.dir)?.start(&service, replica).await,
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
    let services = all_if_empty(services);
    // The name traces are exported under: the service's own, or the shop's when one process
    // runs several (each span still names its service).
    let name = match services.as_slice() {
        [one] => one.to_string(),
        _ => "emporium".to_owned(),
    };
    let telemetry = platform::telemetry::init_service(&settings.log, &name);
    platform::metrics::install();
    let embedded = services.len() == Service::ALL.len();
    let shutdown = platform::shutdown::on_signal();
    let shop = Shop::start(settings.clone(), &services, shutdown).await?;
    if embedded && let Some(gateway) = shop.gateway {
        eprintln!(
            "\nEmporium is running.\n  shop:      http://{gateway}/\n  API:       http://{gateway}/api/v1/\n  API docs:  http://{gateway}/docs\n  data:      {}\n  emails:    {}\n\n\
             Create an administrator with\n  cargo run --release -- admin create --email you@example.com --password '<at least 10 characters>'\n\
             or start with EMPORIUM_BOOTSTRAP_ADMIN_EMAIL and EMPORIUM_BOOTSTRAP_ADMIN_PASSWORD set.\n",
            settings.data_dir.display(),
            match &settings.notifications.smtp.url {
                Some(_) => "sent to the configured SMTP server".to_owned(),
                None => format!(
                    "written to {} (one .eml file each)",
                    settings
                        .notifications
                        .mailbox_dir
                        .clone()
                        .unwrap_or_else(|| settings.data_dir.join("mailbox"))
                        .display()
                ),
            }
        );
    }
    let stopped = shop.wait().await;
    telemetry.shutdown().await;
    stopped
}

async fn migrate(settings: Settings, services: Vec<Service>) -> anyhow::Result<()> {
    platform::telemetry::init(&settings.log);
    let shared = settings.shared();
    for service in all_if_empty(services) {
        let migrated = match service {
            Service::Identity => identity::migrate(&settings.identity, &shared).await,
            Service::Catalog => catalog::migrate(&settings.catalog, &shared).await,
            Service::Cart => cart::migrate(&settings.cart, &shared).await,
            Service::Orders => orders::migrate(&settings.orders, &shared).await,
            Service::Notifications => notifications::migrate(&settings.notifications, &shared).await,
            Service::Storefront | Service::Gateway => continue,
        };
        migrated.with_context(|| format!("migrating {service}"))?;
        eprintln!("{service}: schema up to date");
    }
    Ok(())
}

async fn admin(settings: Settings, command: AdminCommand) -> anyhow::Result<()> {
    use identity::domain::{DisplayName, Email, NewPassword};
    match command {
        AdminCommand::NewMasterKey { file } => {
            platform::secrets::write_new_key(&file)?;
            println!("wrote a new master key to {}", file.display());
            return Ok(());
        }
        AdminCommand::RotateMasterKey { new_key_file } => {
            let next =
                platform::secrets::MasterKeyConfig { master_key_file: Some(new_key_file.clone()), master_key: None };
            let id = identity::rotate_master_key(&settings.identity, &settings.shared(), &next)
                .await
                .context("rotating identity's master key")?;
            println!(
                "identity's secrets are now sealed with master key {id} ({}); running replicas keep working. Before each \
                 restarts, set identity.secrets.master_key_file (EMPORIUM_IDENTITY__SECRETS__MASTER_KEY_FILE) to it and \
                 remove identity.secrets.master_key (EMPORIUM_IDENTITY__SECRETS__MASTER_KEY) if it is set. Keep the old key \
                 for backups made before now.",
                new_key_file.display()
            );
            return Ok(());
        }
        _ => {}
    }
    let accounts = identity::open(&settings.identity, &settings.shared()).await.context("opening identity")?;
    match command {
        AdminCommand::NewMasterKey { .. } | AdminCommand::RotateMasterKey { .. } => unreachable!("handled above"),
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
