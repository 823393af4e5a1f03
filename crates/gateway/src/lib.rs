//! The API gateway: the one public entry point. It routes by path prefix to upstream pools,
//! refuses bad tokens before they reach a service, applies rate limits, sets request ids and
//! trace context, applies CORS and the body limit, turns a down or slow upstream into a prompt 503
//! or 504, and serves the merged OpenAPI document.
#![forbid(unsafe_code)]

mod admission;
pub mod config;
pub mod limits;
pub mod openapi;
mod proxy;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderName, HeaderValue, Method},
    response::{IntoResponse, Response},
    routing::any,
};
use platform::{
    auth::Verifier,
    config::Shared,
    health::Health,
    service::{Server, StartError},
};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use config::{AuthPolicy, Config, RouteConfig, UpstreamConfig};
use limits::{Budget, Client, Limiter};
use proxy::Upstream;

pub const SERVICE: &str = platform::service::names::GATEWAY;

struct Route {
    upstream: Arc<Upstream>,
    /// The storefront's pages: what the gateway itself answers there is a page, not JSON.
    pages: bool,
    auth: AuthPolicy,
    verifier: Arc<Verifier>,
    limiter: Arc<Limiter>,
    body_limit: usize,
}

/// Binds the gateway. An upstream whose service is bound in this process (`shared.bound`) is
/// reached there; the others at their configured URLs.
pub async fn build(mut config: Config, shared: &Shared) -> Result<Server, StartError> {
    config.validate().map_err(StartError::Config)?;
    for (name, upstream) in &mut config.upstreams {
        if let Some(url) = shared.bound.http_url(name) {
            upstream.urls = vec![url];
        }
    }
    let verifier = Verifier::remote(
        &shared.auth,
        shared.revocations.clone(),
        platform::http::client::client(std::time::Duration::from_secs(1)),
    );
    let limiter = Arc::new(Limiter::new(&config.rate_limits).map_err(StartError::Config)?);
    let upstreams: Vec<(String, Arc<Upstream>)> =
        config.upstreams.iter().map(|(name, up)| (name.clone(), Arc::new(Upstream::new(name, up)))).collect();

    let mut api = Router::new();
    for route in &config.routes {
        let Some((_, upstream)) = upstreams.iter().find(|(name, _)| *name == route.upstream) else {
            continue;
        };
        let target = Arc::new(Route {
            upstream: upstream.clone(),
            pages: route.upstream == platform::service::names::STOREFRONT,
            auth: route.auth,
            verifier: verifier.clone(),
            limiter: limiter.clone(),
            body_limit: config.body_limit,
        });
        let handler = any(forward).with_state(target);
        api = if route.prefix == "/" {
            // The home page only: everything else below `/` is another route's, or no route.
            api.route("/", handler)
        } else {
            api.route(&route.prefix, handler.clone()).route(&format!("{}/{{*rest}}", route.prefix), handler)
        };
    }
    let documents = Arc::new(openapi::Documents::new(upstreams.iter().map(|(_, u)| u.clone()).collect()));
    api = api.merge(openapi::router(documents));

    // Preflights are answered by the CORS layer, outside what `finish` wraps: they too say nosniff.
    let mut router = platform::server::finish(SERVICE, api, Health::new())
        .layer(axum::middleware::from_fn(metrics_for_scrapers_only))
        .layer(cors(&config.cors))
        .layer(axum::middleware::map_response(platform::server::no_sniffing));
    let acceptor = match &config.tls {
        Some(tls) => {
            let hsts = format!("max-age={}; includeSubDomains", tls.hsts_max_age.as_secs());
            let hsts = HeaderValue::from_str(&hsts).map_err(|e| StartError::Config(e.to_string()))?;
            router = router
                .layer(axum::middleware::map_response(move |mut response: Response| {
                    let hsts = hsts.clone();
                    async move {
                        response.headers_mut().insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
                        response
                    }
                }))
                // The services behind learn that the client came over TLS (the storefront marks
                // its cookie `Secure`), whatever the client claimed.
                .layer(axum::middleware::map_request(|mut request: Request| async move {
                    request.headers_mut().insert("x-forwarded-proto", HeaderValue::from_static("https"));
                    request
                }));
            Some(platform::tls::acceptor(&tls.cert_file, &tls.key_file).map_err(StartError::Config)?)
        }
        None => None,
    };
    let probed: Vec<Arc<Upstream>> = upstreams.into_iter().map(|(_, upstream)| upstream).collect();
    let mut server = Server::bind(SERVICE, config.listen, router).await?.connection_limits(config.connections);
    if let Some(acceptor) = acceptor {
        server = server.tls(acceptor);
    }
    Ok(server.task(move |stop| async move {
        futures_util::future::join_all(probed.iter().map(|upstream| upstream.probe_until_stopped(stop.clone()))).await;
    }))
}

/// `/metrics` is for a scraper beside the gateway: a peer not on the public internet that
/// comes through no proxy. Anyone else (a public address, or anything an ingress forwards, which
/// says so in `X-Forwarded-For`) gets the 404 of a route that does not exist: the counters tell
/// a stranger how the shop is built and how busy it is.
async fn metrics_for_scrapers_only(request: Request, next: axum::middleware::Next) -> Response {
    if request.uri().path() != "/metrics" {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let forwarded = ["x-forwarded-for", "forwarded", "x-real-ip"].iter().any(|h| request.headers().contains_key(*h));
    if !forwarded && peer.is_some_and(|address| !platform::http::client::is_public(address)) {
        next.run(request).await
    } else {
        platform::server::not_found().await.into_response()
    }
}

/// Checks the caller's token as the route demands and spends a request of the caller's budget,
/// then forwards.
async fn forward(State(route): State<Arc<Route>>, mut request: Request) -> Response {
    if route.limiter.trusts(request.extensions().get()) {
        request.extensions_mut().insert(proxy::FromTrustedProxy);
    }
    if route.pages {
        return as_page(forward_checked(route, request).await).await;
    }
    forward_checked(route, request).await
}

async fn forward_checked(route: Arc<Route>, request: Request) -> Response {
    if let Some(busy) = route.upstream.busy() {
        platform::http::extract::drain(request.into_body()).await;
        return busy;
    }
    let check = match route.auth {
        AuthPolicy::None => false,
        AuthPolicy::Required => true,
        AuthPolicy::Optional => request.headers().contains_key(http::header::AUTHORIZATION),
    };
    let caller = if check { Some(route.verifier.verify_headers(request.headers()).await) } else { None };
    let budget = Budget::of(request.method(), request.uri().path());
    let client = match &caller {
        Some(Ok(caller)) => Some(Client::User(caller.user_id)),
        // Refused tokens count against the address too: they cost the gateway work.
        _ => route.limiter.address(request.headers(), request.extensions().get()).map(Client::Address),
    };
    let decision = match &client {
        Some(client) => route.limiter.check(budget, client).await,
        None => None,
    };
    if let Some(decision) = &decision
        && !decision.allowed()
    {
        return decision.refusal();
    }
    let mut response = match caller {
        Some(Err(error)) => {
            tracing::debug!(reason = %error, "token refused at the gateway");
            error.to_problem().into_response()
        }
        _ => route.upstream.forward(request, route.body_limit).await,
    };
    if let Some(decision) = decision {
        decision.add_headers(response.headers_mut());
    }
    response
}

/// A page for a person where the gateway itself refused or failed (a rate limit, the storefront
/// down or slow): the same status and headers, in words, not a problem document.
async fn as_page(response: Response) -> Response {
    let problem = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !problem {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let (heading, text) = match parts.status.as_u16() {
        429 => ("Slow down a little", "Too many requests came from you at once. Wait a few seconds, then try again."),
        _ => ("The shop is busy or down for a moment", "Nothing you did was lost. Try again in a few seconds."),
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{heading}</title></head><body><main><h1>{heading}</h1>\
         <p>{text}</p><p><a href=\"/\">Back to the shop</a></p></main></body></html>"
    );
    parts.headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(html))
}

fn cors(config: &config::CorsConfig) -> CorsLayer {
    let origins = if config.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(config.allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers(
            ["authorization", "content-type", "idempotency-key", "if-none-match", "traceparent", "x-request-id"]
                .map(HeaderName::from_static),
        )
        .expose_headers(
            ["x-request-id", "retry-after", "etag", "location", "ratelimit", "ratelimit-policy"]
                .map(HeaderName::from_static),
        )
        .max_age(config.max_age)
}
