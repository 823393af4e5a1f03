//! A real OTLP trace receiver for tests, built from the `opentelemetry-proto` and `grpcio`
//! Python packages: it accepts spans over gRPC and over HTTP/protobuf on loopback and lists them.
//! `.ci/run` installs those packages into a virtual environment under `$HOME/.cache/emporium`
//! and names its interpreter in `EMPORIUM_TEST_PYTHON`.

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::TestClient;

const SCRIPT: &str = include_str!("../otlp/receiver.py");

/// A running receiver; it stops when dropped.
pub struct OtlpReceiver {
    pub grpc_endpoint: String,
    pub http_endpoint: String,
    client: TestClient,
    _child: Child,
}

/// The interpreter of the virtual environment that has the receiver's packages.
pub fn python() -> PathBuf {
    std::env::var_os("EMPORIUM_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/emporium/otlp-venv/bin/python")
    })
}

impl OtlpReceiver {
    /// `None` (the test skips, or fails when backends are required) when the packages are not
    /// installed.
    pub async fn start() -> Option<Self> {
        let python = python();
        let imports = "import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc";
        let installed = crate::runs(&python, &["-c", imports]).await;
        if !installed {
            crate::skip_or_fail(&format!("the OTLP receiver's packages are not installed for {}", python.display()));
            return None;
        }
        let (grpc_port, http_port) = (crate::free_port(), crate::free_port());
        let mut child = Command::new(&python)
            .args(["-c", SCRIPT, &grpc_port.to_string(), &http_port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        assert!(matches!(first, Ok(Ok(Some(ref line))) if line == "ready"), "the OTLP receiver did not start");
        let http_endpoint = format!("http://127.0.0.1:{http_port}");
        Some(Self {
            grpc_endpoint: format!("http://127.0.0.1:{grpc_port}"),
            client: TestClient::new(http_endpoint.clone()),
            http_endpoint,
            _child: child,
        })
    }

    /// Every span received so far: `{trace_id, span_id, parent_span_id, name, kind, status,
    /// service, resource, attributes, transport}` (`kind` and `status` as OTLP's numbers).
    pub async fn spans(&self) -> Vec<Value> {
        let answer = self.client.get("/spans").send().await;
        answer.json().as_array().cloned().unwrap_or_default()
    }

    /// The spans of one trace.
    pub async fn trace(&self, trace_id: &str) -> Vec<Value> {
        self.spans().await.into_iter().filter(|span| span["trace_id"] == trace_id).collect()
    }
}
