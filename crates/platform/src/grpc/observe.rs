//! Tower layers around every gRPC call, on both sides: a span (`rpc.system=grpc`, continuing the
//! caller's `traceparent` from the metadata on the server, injecting it on the client) and the
//! `grpc_{server,client}_requests_total` / `_request_duration_seconds` metrics by method and
//! status code.
//!
//! All our calls are unary, and tonic answers a failed unary call with its status in the
//! headers ("trailers-only"), so the status is known when the response head arrives; a call
//! whose status would come in the trailers succeeded.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use tower::{Layer, Service};
use tracing::{Instrument, Span, field::Empty};

use crate::telemetry::trace;

/// Which side of the call a layer observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// Observes the calls of `service` (our service's name, a metric label).
#[derive(Debug, Clone, Copy)]
pub struct ObserveLayer {
    service: &'static str,
    side: Side,
}

impl ObserveLayer {
    pub fn server(service: &'static str) -> Self {
        Self { service, side: Side::Server }
    }

    pub fn client(service: &'static str) -> Self {
        Self { service, side: Side::Client }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observed { inner, layer: *self }
    }
}

#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
    layer: ObserveLayer,
}

impl<S, B, R> Service<Request<B>> for Observed<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let (grpc_service, method) = split_path(request.uri().path());
        let (grpc_service, method) = (grpc_service.to_owned(), method.to_owned());
        let ObserveLayer { service, side } = self.layer;
        let (span, scope) = match side {
            Side::Server => {
                let traceparent = request.headers().get(trace::TRACEPARENT).and_then(|v| v.to_str().ok());
                let (span, scope) = trace::start(traceparent, || call_span(side, &grpc_service, &method, &request));
                (span, Some(scope))
            }
            Side::Client => {
                let span =
                    if trace::recording() { call_span(side, &grpc_service, &method, &request) } else { Span::none() };
                trace::inject(&span, request.headers_mut());
                (span, None)
            }
        };
        let call = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let result = match scope {
                Some(scope) => scope.run(call).await,
                None => call.await,
            };
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unavailable,
            };
            span.record("rpc.grpc.status_code", code as i32);
            if code != tonic::Code::Ok {
                trace::fail(&span, code_name(code));
            }
            // Only methods that exist name a series: anyone can send any path to a server.
            let (grpc_service, method) = if code == tonic::Code::Unimplemented {
                ("unknown".to_owned(), "unknown".to_owned())
            } else {
                (grpc_service, method)
            };
            let labels = [
                ("service", service.to_owned()),
                ("grpc_service", grpc_service),
                ("grpc_method", method),
                ("grpc_code", code_name(code).to_owned()),
            ];
            let (total, duration) = match side {
                Side::Server => ("grpc_server_requests_total", "grpc_server_request_duration_seconds"),
                Side::Client => ("grpc_client_requests_total", "grpc_client_request_duration_seconds"),
            };
            metrics::counter!(total, &labels).increment(1);
            metrics::histogram!(duration, &labels).record(started.elapsed().as_secs_f64());
            result
        })
    }
}

fn call_span<B>(side: Side, grpc_service: &str, method: &str, request: &Request<B>) -> Span {
    let name = trace::recording().then(|| format!("{grpc_service}/{method}"));
    macro_rules! call_span {
        (target: $target:expr, kind: $kind:literal, address: $address:expr, port: $port:expr) => {
            tracing::info_span!(
                target: $target,
                "grpc",
                otel.name = name,
                otel.kind = $kind,
                otel.status_code = Empty,
                "rpc.system" = "grpc",
                "rpc.service" = grpc_service,
                "rpc.method" = method,
                "rpc.grpc.status_code" = Empty,
                "server.address" = $address,
                "server.port" = $port,
            )
        };
    }
    match side {
        // Made only when the call is sampled (see `Observed::call`).
        Side::Client => call_span!(
            target: trace::TRACE_ONLY,
            kind: "client",
            address: request.uri().host(),
            port: request.uri().port_u16().map(i64::from)
        ),
        Side::Server => call_span!(target: module_path!(), kind: "server", address: Empty, port: Empty),
    }
}

/// `/catalog.v1.Inventory/Reserve` → (`catalog.v1.Inventory`, `Reserve`).
fn split_path(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    path.split_once('/').unwrap_or((path, ""))
}

/// The status code's canonical name, as gRPC's specification spells it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(split_path("/catalog.v1.Inventory/Reserve"), ("catalog.v1.Inventory", "Reserve"));
        assert_eq!(split_path("/nonsense"), ("nonsense", ""));
    }
}
