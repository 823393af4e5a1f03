//! The local cluster: every service as its own processes on this machine — N replicas each,
//! behind gateways that list them all — on PostgreSQL, Redis and RabbitMQ, as an operator runs
//! the shop, only on loopback. `emporium cluster up|status|down|kill|start` drives it, and the
//! chaos tests use it to kill and restart replicas under load.
//!
//! Its state (the plan of ports and the processes' ids) is a JSON file in the cluster's
//! directory, beside each process's log and data directory, so that a later command finds the
//! processes an earlier one started.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The services a cluster runs, in the order they start (each finds the earlier ones serving).
pub const SERVICES: [&str; 6] = ["identity", "catalog", "cart", "orders", "notifications", "storefront"];

/// What a cluster is made of and where it keeps its state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub dir: PathBuf,
    /// Replicas of each service.
    pub replicas: usize,
    pub gateways: usize,
    /// The first gateway's port; the others follow.
    pub gateway_port: u16,
    /// Services' ports start here: each service has a block of 20 (HTTP, then gRPC from +10).
    pub base_port: u16,
    /// The PostgreSQL server (`postgres://user@host:port`): one database per service is made in it.
    pub postgres: String,
    pub database_prefix: String,
    pub redis: String,
    pub amqp: String,
    /// Prefix of the cluster's queues and Redis keys.
    pub namespace: String,
    /// Shared by the replicas of orders, so any of them can check the sandbox's webhooks.
    pub webhook_secret: String,
    /// Settings every process gets on top (`EMPORIUM_*=…`).
    #[serde(default)]
    pub extra_env: Vec<(String, String)>,
}

impl Plan {
    pub fn http_port(&self, service: &str, replica: usize) -> u16 {
        if service == "gateway" {
            return self.gateway_port + replica as u16;
        }
        self.base_port + 20 * index(service) as u16 + replica as u16
    }

    pub fn grpc_port(&self, service: &str, replica: usize) -> u16 {
        self.http_port(service, replica) + 10
    }

    pub fn gateway_url(&self, gateway: usize) -> String {
        format!("http://127.0.0.1:{}", self.http_port("gateway", gateway))
    }

    fn urls(&self, service: &str, grpc: bool) -> Vec<String> {
        (0..self.replicas)
            .map(|r| {
                let port = if grpc { self.grpc_port(service, r) } else { self.http_port(service, r) };
                format!("http://127.0.0.1:{port}")
            })
            .collect()
    }

    /// The URL of `service`'s database.
    pub fn database(&self, service: &str) -> String {
        format!("{}/{}_{service}", self.postgres.trim_end_matches('/'), self.database_prefix)
    }

    /// Every process: each replica of each service, then the gateways.
    pub fn processes(&self) -> Vec<(&'static str, usize)> {
        let services = SERVICES.iter().flat_map(|s| (0..self.replicas).map(move |r| (*s, r)));
        services.chain((0..self.gateways).map(|g| ("gateway", g))).collect()
    }

    /// The settings of one process, as environment variables.
    pub fn env(&self, service: &str, replica: usize) -> Vec<(String, String)> {
        let upper = service.to_uppercase();
        let listen = |port: u16| format!("127.0.0.1:{port}");
        let list = |service: &str| serde_json::to_string(&self.urls(service, false)).unwrap_or_default();
        let grpc_list = |service: &str| self.urls(service, true).join(",");
        let mut env: Vec<(String, String)> = vec![
            (
                "EMPORIUM_DATA_DIR".into(),
                self.dir.join("data").join(format!("{service}-{replica}")).display().to_string(),
            ),
            ("EMPORIUM_EVENTS__URL".into(), self.amqp.clone()),
            ("EMPORIUM_EVENTS__NAMESPACE".into(), self.namespace.clone()),
            ("EMPORIUM_LOG__FORMAT".into(), "json".into()),
            ("EMPORIUM_GATEWAY__UPSTREAMS__IDENTITY__URLS".into(), list("identity")),
        ];
        let own: Vec<(String, String)> = match service {
            "gateway" => {
                let mut gateway = vec![
                    ("EMPORIUM_GATEWAY__LISTEN".into(), listen(self.http_port(service, replica))),
                    ("EMPORIUM_GATEWAY__RATE_LIMITS__REDIS_URL".into(), self.redis.clone()),
                    ("EMPORIUM_GATEWAY__RATE_LIMITS__KEY_PREFIX".into(), self.namespace.clone()),
                    // The storefronts call from loopback, forwarding each shopper's address.
                    ("EMPORIUM_GATEWAY__RATE_LIMITS__TRUSTED_PROXIES".into(), r#"["127.0.0.1"]"#.into()),
                ];
                for upstream in SERVICES {
                    gateway.push((
                        format!("EMPORIUM_GATEWAY__UPSTREAMS__{}__URLS", upstream.to_uppercase()),
                        list(upstream),
                    ));
                }
                gateway
            }
            _ => {
                let mut own = vec![(format!("EMPORIUM_{upper}__LISTEN"), listen(self.http_port(service, replica)))];
                if matches!(service, "identity" | "catalog" | "cart") {
                    own.push((format!("EMPORIUM_{upper}__GRPC_LISTEN"), listen(self.grpc_port(service, replica))));
                }
                if let Some(budget) = pool_budget(service) {
                    own.push((format!("EMPORIUM_{upper}__DATABASE_URL"), self.database(service)));
                    // Every replica shares one PostgreSQL server and its `max_connections`.
                    let per_replica = (budget / self.replicas.max(1) as u32).max(2);
                    own.push((format!("EMPORIUM_{upper}__POOL__MAX_CONNECTIONS"), per_replica.to_string()));
                }
                if matches!(service, "catalog" | "cart") {
                    own.push((format!("EMPORIUM_{upper}__REPLICA_ID"), format!("{service}-{replica}")));
                }
                match service {
                    "catalog" => own.extend([
                        ("EMPORIUM_CATALOG__CACHE_URL".into(), self.redis.clone()),
                        ("EMPORIUM_CATALOG__CACHE_PREFIX".into(), self.namespace.clone()),
                        ("EMPORIUM_CATALOG__DEMO_CATALOG".into(), "false".into()),
                    ]),
                    "cart" => own.extend([
                        ("EMPORIUM_CART__STORE_URL".into(), self.redis.clone()),
                        ("EMPORIUM_CART__KEY_PREFIX".into(), self.namespace.clone()),
                        ("EMPORIUM_CART__CATALOG_URL".into(), grpc_list("catalog")),
                    ]),
                    "orders" => own.extend([
                        ("EMPORIUM_ORDERS__CATALOG_URL".into(), grpc_list("catalog")),
                        ("EMPORIUM_ORDERS__CART_URL".into(), grpc_list("cart")),
                        ("EMPORIUM_ORDERS__PAYMENTS__SANDBOX__WEBHOOK_SECRET".into(), self.webhook_secret.clone()),
                        (
                            "EMPORIUM_ORDERS__PAYMENTS__SANDBOX__WEBHOOK_URL".into(),
                            format!("{}/api/v1/payments/webhooks/sandbox", self.gateway_url(0)),
                        ),
                    ]),
                    "notifications" => own.push(("EMPORIUM_NOTIFICATIONS__IDENTITY_URL".into(), grpc_list("identity"))),
                    "identity" => own.push(self.master_key_env()),
                    "storefront" => own.extend([
                        // Each replica calls one gateway; every replica opens the others' cookies.
                        ("EMPORIUM_STOREFRONT__API_URL".into(), self.gateway_url(replica % self.gateways.max(1))),
                        (
                            "EMPORIUM_STOREFRONT__COOKIES__MASTER_KEY_FILE".into(),
                            self.cookie_key_file().display().to_string(),
                        ),
                    ]),
                    _ => {}
                }
                own
            }
        };
        env.extend(own);
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// Every database URL, for `emporium migrate` (with the master key identity's secrets are
    /// sealed with).
    fn databases_env(&self) -> Vec<(String, String)> {
        ["identity", "catalog", "orders", "notifications"]
            .iter()
            .map(|s| (format!("EMPORIUM_{}__DATABASE_URL", s.to_uppercase()), self.database(s)))
            .chain([self.master_key_env()])
            .collect()
    }

    /// The one master key every identity replica is given, as a Kubernetes Secret would be.
    fn master_key_file(&self) -> PathBuf {
        self.dir.join("secrets").join("identity.master-key")
    }

    /// The one key every storefront replica seals session cookies with.
    fn cookie_key_file(&self) -> PathBuf {
        self.dir.join("secrets").join("storefront.cookie-key")
    }

    fn master_key_env(&self) -> (String, String) {
        ("EMPORIUM_IDENTITY__SECRETS__MASTER_KEY_FILE".into(), self.master_key_file().display().to_string())
    }
}

/// Connections to PostgreSQL that all replicas of a service with a database share: 48 in all,
/// half of PostgreSQL's default `max_connections`, leaving the rest to tools and other shops.
fn pool_budget(service: &str) -> Option<u32> {
    match service {
        "catalog" | "orders" => Some(16),
        "identity" | "notifications" => Some(8),
        _ => None,
    }
}

fn index(service: &str) -> usize {
    SERVICES.iter().position(|s| *s == service).unwrap_or(SERVICES.len())
}

/// A running (or stopped) process of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Process {
    pub service: String,
    pub replica: usize,
    pub pid: Option<u32>,
}

/// A cluster: its plan and its processes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Cluster {
    pub plan: Plan,
    pub processes: Vec<Process>,
    /// The `emporium` binary the processes run.
    pub binary: PathBuf,
}

const STATE: &str = "cluster.json";

impl Cluster {
    pub fn new(plan: Plan, binary: PathBuf) -> Self {
        let processes = plan
            .processes()
            .into_iter()
            .map(|(service, replica)| Process { service: service.to_owned(), replica, pid: None })
            .collect();
        Self { plan, processes, binary }
    }

    /// The cluster whose state is in `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(STATE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("no cluster in {}", dir.display()))?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }

    fn save(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.plan.dir)?;
        std::fs::write(self.plan.dir.join(STATE), serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    /// Migrates every database, then starts every process, each service's replicas ready before
    /// the next service starts.
    pub async fn up(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.plan.dir.join("logs"))?;
        for key in [self.plan.master_key_file(), self.plan.cookie_key_file()] {
            if !key.exists() {
                platform::secrets::write_new_key(&key)?;
            }
        }
        let migrated = tokio::process::Command::new(&self.binary)
            .arg("migrate")
            .envs(self.plan.databases_env())
            .env("EMPORIUM_DATA_DIR", self.plan.dir.join("data").join("migrate"))
            .stdout(Stdio::null())
            .status()
            .await
            .context("running emporium migrate")?;
        if !migrated.success() {
            bail!("emporium migrate failed ({migrated})");
        }
        self.save()?;
        for (service, replica) in self.plan.processes() {
            self.start(service, replica).await?;
        }
        Ok(())
    }

    /// Starts one process (again) and waits until it is ready.
    pub async fn start(&mut self, service: &str, replica: usize) -> anyhow::Result<()> {
        let position = self.position(service, replica)?;
        if self.processes[position].pid.is_some_and(alive) {
            bail!("{service}-{replica} is already running");
        }
        let log_path = self.plan.dir.join("logs").join(format!("{service}-{replica}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut command = std::process::Command::new(&self.binary);
        command
            .args(["serve", service])
            .envs(self.plan.env(service, replica))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // A process group of its own: the cluster outlives the command that started it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().with_context(|| format!("starting {service}-{replica}"))?;
        self.processes[position].pid = Some(child.id());
        self.save()?;
        let url = format!("http://127.0.0.1:{}/health/ready", self.plan.http_port(service, replica));
        if !ready(&url, Duration::from_secs(60)).await {
            bail!("{service}-{replica} did not become ready; see {}", log_path.display());
        }
        Ok(())
    }

    /// Kills one process at once (SIGKILL): no draining, as a crash would.
    pub fn kill(&mut self, service: &str, replica: usize) -> anyhow::Result<()> {
        let position = self.position(service, replica)?;
        if let Some(pid) = self.processes[position].pid.take() {
            signal(pid, "KILL");
            wait_gone(pid, Duration::from_secs(5));
        }
        self.save()
    }

    /// Stops every process: SIGTERM (they drain), then SIGKILL after `grace`.
    pub fn down(&mut self, grace: Duration) -> anyhow::Result<()> {
        let pids: Vec<u32> = self.processes.iter_mut().filter_map(|p| p.pid.take()).collect();
        for pid in &pids {
            signal(*pid, "TERM");
        }
        for pid in &pids {
            if !wait_gone(*pid, grace) {
                signal(*pid, "KILL");
                wait_gone(*pid, Duration::from_secs(5));
            }
        }
        self.save()
    }

    /// Each process: whether it runs, and whether it answers ready.
    pub async fn status(&self) -> Vec<(String, bool, bool)> {
        let mut rows = Vec::new();
        for process in &self.processes {
            let running = process.pid.is_some_and(alive);
            let url =
                format!("http://127.0.0.1:{}/health/ready", self.plan.http_port(&process.service, process.replica));
            let answers = running && ready(&url, Duration::from_millis(500)).await;
            rows.push((format!("{}-{}", process.service, process.replica), running, answers));
        }
        rows
    }

    fn position(&self, service: &str, replica: usize) -> anyhow::Result<usize> {
        self.processes
            .iter()
            .position(|p| p.service == service && p.replica == replica)
            .with_context(|| format!("the cluster has no {service}-{replica}"))
    }
}

fn alive(pid: u32) -> bool {
    // A zombie (killed, not yet reaped by the parent that is gone) is not running.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill").args([format!("-{name}"), pid.to_string()]).status();
}

fn wait_gone(pid: u32, limit: Duration) -> bool {
    let until = std::time::Instant::now() + limit;
    while alive(pid) {
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Polls a readiness URL until it answers 200.
async fn ready(url: &str, limit: Duration) -> bool {
    let client = platform::http::client::client(Duration::from_millis(500));
    let until = tokio::time::Instant::now() + limit;
    loop {
        let request = http_get(url);
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), client.request(request)).await
            && response.status().is_success()
        {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn http_get(url: &str) -> http::Request<axum::body::Body> {
    let mut request = http::Request::new(axum::body::Body::empty());
    *request.uri_mut() = url.parse().unwrap_or_default();
    request
}
