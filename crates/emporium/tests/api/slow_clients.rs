//! Slow and greedy clients through the gateway: a request head dribbled a byte at a time is cut
//! at the header-read timeout, an idle kept-alive connection is closed, a flood of headers is
//! refused, a stalled body is given up, and none of it delays a client that behaves.

use std::time::{Duration, Instant};

use testkit::TestDatabase;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::common::*;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(1);

async fn shop() -> TestShop {
    TestShop::start_with(TestDatabase::sqlite(), |settings| {
        settings.gateway.connections.header_read_timeout = HEADER_READ_TIMEOUT;
        settings.gateway.connections.body_read_timeout = BODY_READ_TIMEOUT;
    })
    .await
}

fn address(shop: &TestShop) -> String {
    shop.gateway.base().trim_start_matches("http://").to_owned()
}

/// Sends a request head a byte at a time, every `pace`, until the server closes the connection;
/// how long that took (or `None` if it never did within `give_up`).
async fn dribble(address: String, pace: Duration, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(&address).await.ok()?;
    let head = b"GET /api/v1/categories HTTP/1.1\r\nHost: shop\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a'));
    let (mut reader, mut writer) = stream.split();
    let writing = async {
        for byte in head {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(pace).await;
        }
    };
    let closed = async {
        let mut buffer = [0u8; 512];
        // The server's answer (if any, a 408) and then the end of the stream.
        while matches!(reader.read(&mut buffer).await, Ok(n) if n > 0) {}
    };
    let ended = tokio::time::timeout(give_up, async {
        tokio::select! {
            () = closed => {},
            () = writing => {},
        }
    })
    .await;
    ended.ok().map(|()| started.elapsed())
}

/// Whether the server closes `stream` within `limit`, whatever it answers before.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 512];
    tokio::time::timeout(limit, async { while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {} })
        .await
        .is_ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// A client that behaves browses for `how_long`: its answers' latencies, sorted.
async fn browse(shop: &TestShop, how_long: Duration) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let browsing = Instant::now();
    while browsing.elapsed() < how_long {
        let asked = Instant::now();
        let answer = shop.gateway.get("/api/v1/categories").send().await;
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
        latencies.push(asked.elapsed());
    }
    latencies.sort();
    latencies
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_dribbling_clients_are_cut_and_delay_no_one() {
    let shop = shop().await;
    let alone = browse(&shop, Duration::from_secs(1)).await;
    let dribblers: Vec<_> = (0..1_000)
        .map(|_| tokio::spawn(dribble(address(&shop), Duration::from_millis(250), Duration::from_secs(30))))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let beside = browse(&shop, Duration::from_secs(2)).await;
    let (p99_alone, p99_beside) = (percentile(&alone, 0.99), percentile(&beside, 0.99));
    println!(
        "browsing alone: {} requests, p99 {p99_alone:?}; beside 1,000 dribbling clients: {} requests, p50 {:?}, p99 {p99_beside:?}",
        alone.len(),
        beside.len(),
        percentile(&beside, 0.5)
    );
    // 50 ms is the bound; on a CI machine busy with the other tests, a p99 no worse than
    // browsing alone there also shows that the slow clients cost the others nothing.
    assert!(
        p99_beside < Duration::from_millis(50) || p99_beside <= p99_alone * 3 / 2 + Duration::from_millis(5),
        "p99 {p99_beside:?} beside slow clients, {p99_alone:?} alone"
    );

    let mut cut = Vec::new();
    for dribbler in dribblers {
        cut.push(dribbler.await.unwrap().expect("the server closes a connection whose head never ends"));
    }
    cut.sort();
    let last = cut[cut.len() - 1];
    assert!(
        percentile(&cut, 0.0) >= HEADER_READ_TIMEOUT - Duration::from_millis(100),
        "no connection is cut before its time: {:?}",
        cut[0]
    );
    assert!(last < HEADER_READ_TIMEOUT * 4, "every slow connection is cut soon after the timeout: {last:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed_and_header_floods_refused() {
    let shop = shop().await;
    // A connection that says nothing is closed at the header-read timeout.
    let mut idle = TcpStream::connect(address(&shop)).await.unwrap();
    let opened = Instant::now();
    assert!(closed_within(&mut idle, HEADER_READ_TIMEOUT * 4).await, "an idle connection is closed");
    assert!(opened.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_millis(100));

    // A kept-alive connection is closed once it has been idle that long after an answer.
    let mut kept = TcpStream::connect(address(&shop)).await.unwrap();
    kept.write_all(b"GET /health/live HTTP/1.1\r\nHost: shop\r\n\r\n").await.unwrap();
    let mut buffer = [0u8; 512];
    let read = kept.read(&mut buffer).await.unwrap();
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buffer[..read]));
    let answered = Instant::now();
    assert!(closed_within(&mut kept, HEADER_READ_TIMEOUT * 4).await, "an idle kept-alive connection is closed");
    assert!(answered.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_millis(100));

    // More header fields than allowed, or a head larger than allowed: 431, nothing served.
    for head in [
        (0..100).map(|i| format!("X-Field-{i}: {i}\r\n")).collect::<String>(),
        format!("X-Large: {}\r\n", "a".repeat(20 * 1024)),
    ] {
        let mut flood = TcpStream::connect(address(&shop)).await.unwrap();
        let request = format!("GET /api/v1/categories HTTP/1.1\r\nHost: shop\r\n{head}\r\n");
        let _ = flood.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), flood.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }

    // A body that stops halfway is given up at the body-read timeout, not held for ever.
    let mut stalled = TcpStream::connect(address(&shop)).await.unwrap();
    let head = "POST /api/v1/auth/login HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    stalled.write_all(head.as_bytes()).await.unwrap();
    let sent = Instant::now();
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(BODY_READ_TIMEOUT * 5, stalled.read_to_end(&mut answer)).await;
    assert!(ended.is_ok(), "a stalled body is given up");
    assert!(sent.elapsed() >= BODY_READ_TIMEOUT - Duration::from_millis(100));
    // The client's fault, answered as such: not a 502 that would count against the service.
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("stopped arriving"), "{answer}");

    // The start of an HTTP/2 preface, then silence, is cut like any other head that never ends.
    let mut preface = TcpStream::connect(address(&shop)).await.unwrap();
    preface.write_all(b"PRI * HTTP").await.unwrap();
    let opened = Instant::now();
    assert!(closed_within(&mut preface, HEADER_READ_TIMEOUT * 4).await, "a stalled preface is cut");
    assert!(opened.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_is_closed() {
    let shop = shop().await;
    let stream = TcpStream::connect(address(&shop)).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    let driving = tokio::spawn(connection);
    let request = http::Request::get(format!("{}/health/live", shop.gateway.base()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let answer = sender.send_request(request).await.unwrap();
    assert_eq!(answer.status(), 200, "HTTP/2 with prior knowledge is served");
    let answered = Instant::now();
    // hyper keeps an HTTP/2 connection whose client answers pings; the server closes it once no
    // request has been answered for the idle limit.
    let closed = tokio::time::timeout(HEADER_READ_TIMEOUT * 4, driving).await;
    assert!(closed.is_ok(), "an idle HTTP/2 connection is closed");
    assert!(answered.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_millis(200));
}
