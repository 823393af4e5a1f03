//! A stand-in for Elasticsearch's `_bulk` API, on loopback: it records every document it is
//! sent and answers as Elasticsearch does when all of them were indexed. Elasticsearch itself
//! cannot run on the test machines; log shippers (syslog-ng, Filebeat) only need this endpoint.

use std::sync::{Arc, Mutex};

use axum::{Json, Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use serde_json::{Value, json};

/// The documents received, in order, with the action line that announced each.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub requests: usize,
    pub documents: Vec<(Value, Value)>,
    /// Lines that were not JSON, or a document without its action line.
    pub malformed: Vec<String>,
}

pub struct BulkRecorder {
    pub url: String,
    received: Arc<Mutex<Received>>,
}

impl BulkRecorder {
    /// Listens on a free loopback port; `url` is the data stream's `_bulk` endpoint.
    pub async fn start(index: &str) -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let app =
            Router::new().route("/_bulk", post(bulk)).route("/{index}/_bulk", post(bulk)).with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url: format!("http://{addr}/{index}/_bulk"), received }
    }

    pub fn received(&self) -> Received {
        self.received.lock().expect("recorder state").clone()
    }
}

async fn bulk(State(received): State<Arc<Mutex<Received>>>, body: Bytes) -> (StatusCode, Json<Value>) {
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut received = received.lock().expect("recorder state");
    received.requests += 1;
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let mut items = Vec::new();
    while let Some(action) = lines.next() {
        let (Ok(action), Some(document)) = (serde_json::from_str::<Value>(action), lines.next()) else {
            received.malformed.push(action.to_owned());
            continue;
        };
        match serde_json::from_str::<Value>(document) {
            Ok(document) => {
                items.push(json!({"create": {"status": 201, "result": "created"}}));
                received.documents.push((action, document));
            }
            Err(_) => received.malformed.push(document.to_owned()),
        }
    }
    (StatusCode::OK, Json(json!({"took": 1, "errors": false, "items": items})))
}
