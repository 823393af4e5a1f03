//! `emporium bench`: our own load generator, shipped in the binary the way pgbench ships with
//! PostgreSQL. It drives HTTP endpoints with N concurrent clients (one keep-alive connection
//! each) for a fixed time and reports throughput and latency percentiles from an HDR histogram.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

/// One kind of request, sent over and over.
#[derive(Debug, Clone)]
pub struct Probe {
    pub kind: String,
    pub method: Method,
    pub url: Uri,
    pub headers: Vec<(header::HeaderName, header::HeaderValue)>,
    pub body: Bytes,
    /// The status a successful request answers with.
    pub expect: StatusCode,
    /// Paths and bodies used in turn instead of `url`'s path and `body` (each client starts at
    /// its own place), for requests that must not all hit one resource.
    pub rotation: Option<Rotation>,
}

/// The `n`-th request's path and body, for `len` different requests made in turn: computed
/// when sent, so that a rotation over millions of (cart, SKU) pairs costs no memory.
#[derive(Clone)]
pub struct Rotation {
    pub len: usize,
    pub at: std::sync::Arc<dyn Fn(usize) -> (String, Bytes) + Send + Sync>,
}

impl std::fmt::Debug for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotation").field("len", &self.len).finish_non_exhaustive()
    }
}

impl Probe {
    pub fn get(kind: &str, url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            kind: kind.to_owned(),
            method: Method::GET,
            url: url.parse().with_context(|| format!("invalid url {url}"))?,
            headers: Vec::new(),
            body: Bytes::new(),
            expect: StatusCode::OK,
            rotation: None,
        })
    }

    pub fn post_json(kind: &str, url: &str, body: &serde_json::Value) -> anyhow::Result<Self> {
        let mut probe = Self::get(kind, url)?;
        probe.method = Method::POST;
        probe.body = Bytes::from(serde_json::to_vec(body)?);
        probe.headers.push((header::CONTENT_TYPE, header::HeaderValue::from_static("application/json")));
        Ok(probe)
    }

    pub fn bearer(mut self, token: &str) -> anyhow::Result<Self> {
        self.headers.push((header::AUTHORIZATION, format!("Bearer {token}").parse()?));
        Ok(self)
    }

    /// Sends the probe's requests to these paths and bodies in turn.
    pub fn rotating(self, rotation: Vec<(String, Bytes)>) -> Self {
        let rotation = std::sync::Arc::new(rotation);
        self.generated(rotation.len(), move |n| rotation[n].clone())
    }

    /// Sends the `n`-th request (modulo `len`) to the path and with the body `at(n)` gives.
    pub fn generated(mut self, len: usize, at: impl Fn(usize) -> (String, Bytes) + Send + Sync + 'static) -> Self {
        self.rotation = Some(Rotation { len, at: std::sync::Arc::new(at) });
        self
    }

    fn request(&self, n: usize) -> Request<Full<Bytes>> {
        let (path, body) = match &self.rotation {
            Some(rotation) if rotation.len > 0 => (rotation.at)(n % rotation.len),
            _ => (self.url.path_and_query().map_or("/", |pq| pq.as_str()).to_owned(), self.body.clone()),
        };
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(path)
            .header(header::HOST, self.url.authority().map_or("localhost", |a| a.as_str()))
            .body(Full::new(body))
            .expect("a probe builds a valid request");
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        request
    }

    fn addr(&self) -> anyhow::Result<SocketAddr> {
        let authority = self.url.authority().context("probe url has no host")?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host();
        let host = if host == "localhost" { "127.0.0.1" } else { host };
        Ok(SocketAddr::new(host.parse().context("bench targets are given as IP addresses")?, port))
    }
}

/// The outcome of driving one probe.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub kind: String,
    pub concurrency: usize,
    pub duration_secs: f64,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// How hard and how long to drive.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub concurrency: usize,
    /// Measured time of one round.
    pub duration: Duration,
    /// Unmeasured time before each round.
    pub warmup: Duration,
    /// Rounds of interleaved comparisons.
    pub rounds: usize,
}

/// Drives several probes in interleaved rounds (A, B, A, B, …) and reports each over all its
/// rounds. Comparing probes measured side by side this way cancels slow drift of the machine
/// (another tenant, frequency changes) that would bias one phase run after the other.
pub async fn drive_interleaved(probes: &[Probe], load: Load, rounds: usize) -> anyhow::Result<Vec<Measurement>> {
    let mut measured: Vec<Accumulated> = probes.iter().map(|p| Accumulated::new(p, load.concurrency)).collect();
    for _ in 0..rounds.max(1) {
        for (probe, accumulated) in probes.iter().zip(&mut measured) {
            accumulated.round(probe, load).await?;
        }
    }
    Ok(measured.into_iter().map(Accumulated::finish).collect())
}

/// One probe's figures summed over its rounds.
struct Accumulated {
    kind: String,
    concurrency: usize,
    histogram: Histogram<u64>,
    requests: u64,
    errors: u64,
    seconds: f64,
}

impl Accumulated {
    fn new(probe: &Probe, concurrency: usize) -> Self {
        Self { kind: probe.kind.clone(), concurrency, histogram: new_histogram(), requests: 0, errors: 0, seconds: 0.0 }
    }

    async fn round(&mut self, probe: &Probe, load: Load) -> anyhow::Result<()> {
        if !load.warmup.is_zero() {
            run(probe, load.concurrency, load.warmup).await?;
        }
        let started = Instant::now();
        let (histogram, requests, errors) = run(probe, load.concurrency, load.duration).await?;
        self.seconds += started.elapsed().as_secs_f64();
        self.histogram.add(&histogram).context("merging histograms")?;
        self.requests += requests;
        self.errors += errors;
        Ok(())
    }

    fn finish(self) -> Measurement {
        Measurement {
            kind: self.kind,
            concurrency: self.concurrency,
            duration_secs: self.seconds,
            requests: self.requests,
            errors: self.errors,
            requests_per_sec: self.requests as f64 / self.seconds,
            p50_us: self.histogram.value_at_quantile(0.50),
            p90_us: self.histogram.value_at_quantile(0.90),
            p99_us: self.histogram.value_at_quantile(0.99),
            max_us: self.histogram.max(),
        }
    }
}

async fn run(probe: &Probe, concurrency: usize, duration: Duration) -> anyhow::Result<(Histogram<u64>, u64, u64)> {
    let deadline = Instant::now() + duration;
    let addr = probe.addr()?;
    let mut workers = tokio::task::JoinSet::new();
    let clients = concurrency.max(1);
    let spread = probe.rotation.as_ref().map_or(0, |r| r.len / clients);
    for index in 0..clients {
        let probe = probe.clone();
        workers.spawn(async move { client(probe, addr, deadline, index * spread).await });
    }
    let mut histogram = new_histogram();
    let (mut requests, mut errors) = (0, 0);
    while let Some(joined) = workers.join_next().await {
        let (h, r, e) = joined.context("bench client panicked")??;
        histogram.add(&h).context("merging histograms")?;
        requests += r;
        errors += e;
    }
    Ok((histogram, requests, errors))
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s at three significant figures.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

/// One client: one keep-alive connection, requests back to back until the deadline.
async fn client(
    probe: Probe,
    addr: SocketAddr,
    deadline: Instant,
    mut next: usize,
) -> anyhow::Result<(Histogram<u64>, u64, u64)> {
    let mut histogram = new_histogram();
    let (mut requests, mut errors) = (0u64, 0u64);
    let mut sender = None;
    while Instant::now() < deadline {
        if sender.is_none() {
            let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
            stream.set_nodelay(true)?;
            let (s, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            sender = Some(s);
        }
        let Some(s) = sender.as_mut() else { continue };
        let started = Instant::now();
        let outcome = async {
            let response = s.send_request(probe.request(next)).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        }
        .await;
        let micros = started.elapsed().as_micros().max(1) as u64;
        next = next.wrapping_add(1);
        match outcome {
            Ok(status) => {
                histogram.saturating_record(micros);
                requests += 1;
                if status != probe.expect {
                    errors += 1;
                }
            }
            Err(_) => {
                errors += 1;
                sender = None;
            }
        }
    }
    Ok((histogram, requests, errors))
}

/// Prints measurements as a table.
pub fn print_table(measurements: &[Measurement]) {
    println!(
        "{:<28} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "kind", "clients", "requests", "req/s", "p50", "p90", "p99", "errors"
    );
    for m in measurements {
        println!(
            "{:<28} {:>8} {:>10} {:>10.0} {:>10} {:>10} {:>10} {:>7}",
            m.kind,
            m.concurrency,
            m.requests,
            m.requests_per_sec,
            micros(m.p50_us),
            micros(m.p90_us),
            micros(m.p99_us),
            m.errors
        );
    }
}

fn micros(us: u64) -> String {
    if us >= 10_000 { format!("{:.1} ms", us as f64 / 1000.0) } else { format!("{us} µs") }
}

/// Fails when a measurement saw errors: figures from a failing run mean nothing.
pub fn ensure_clean(measurements: &[Measurement]) -> anyhow::Result<()> {
    for m in measurements {
        if m.requests == 0 {
            bail!("{}: no request completed", m.kind);
        }
        if m.errors > 0 {
            bail!("{}: {} of {} requests failed", m.kind, m.errors, m.requests);
        }
    }
    Ok(())
}
