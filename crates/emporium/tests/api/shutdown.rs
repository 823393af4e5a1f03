//! The real binary: it starts with nothing configured but a data directory, and on SIGTERM it
//! lets a request that is in flight finish before it exits.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::Command,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish() {
    let data_dir = testkit::temp_dir("sigterm");
    let mut child = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .arg("serve")
        .env("EMPORIUM_DATA_DIR", &data_dir)
        .env("EMPORIUM_GATEWAY__LISTEN", "127.0.0.1:0")
        .env("EMPORIUM_IDENTITY__LISTEN", "127.0.0.1:0")
        .env("EMPORIUM_IDENTITY__GRPC_LISTEN", "127.0.0.1:0")
        .env("EMPORIUM_NOTIFICATIONS__LISTEN", "127.0.0.1:0")
        .env("EMPORIUM_STOREFRONT__LISTEN", "127.0.0.1:0")
        .env("EMPORIUM_IDENTITY__PASSWORD_HASHING__MEMORY_KIB", "1024")
        .env("EMPORIUM_LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");

    // The JSON log says where each service listens.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut gateway = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.is_none() && Instant::now() < deadline {
        let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await else { break };
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if event["message"] == "listening" && event["service.name"] == "gateway" {
            gateway = event["addr"].as_str().map(str::to_owned);
        }
    }
    let gateway = gateway.expect("the gateway logs where it listens");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    // Send the headers and half the body, then SIGTERM, then the rest.
    let body = r#"{"email":"late@example.com","password":"correct horse battery","name":"Late"}"#;
    let (first, second) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(&gateway).await.unwrap();
    let head = format!(
        "POST /api/v1/auth/register HTTP/1.1\r\nHost: {gateway}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // New connections are no longer accepted...
    let refused = TcpStream::connect(&gateway).await;
    assert!(refused.is_err(), "the listener is closed once shutdown begins");

    // ...but the request in flight completes.
    stream.write_all(second.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await.unwrap().unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    let status =
        tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("exits after draining").unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(data_dir);
}
