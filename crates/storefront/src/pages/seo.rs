//! What search engines read: `robots.txt` and a sitemap made from the catalog.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{
    App,
    api::{Category, SearchPage},
    session::Visit,
};

/// A sitemap walks the whole catalog: it is made at most this often.
const SITEMAP_TTL: Duration = Duration::from_secs(600);
/// The sitemap protocol's limit of addresses per file.
const MAX_URLS: usize = 50_000;

/// The catalog's pages (paths), made at most every `SITEMAP_TTL` by one request at a time:
/// whatever host a request names, the walk is not repeated for it.
#[derive(Default)]
pub struct SitemapCache(tokio::sync::Mutex<Option<(Instant, Arc<Vec<String>>)>>);

/// Shared caches may keep these only when their addresses come from `public_url`: otherwise they
/// follow the request's forwarded host, which a client can choose.
fn cache_for(app: &App, max_age: &'static str) -> &'static str {
    if app.config.public_url.is_some() { max_age } else { "private, no-cache" }
}

pub async fn robots(State(app): State<Arc<App>>, visit: Visit) -> Response {
    let body = format!(
        "User-agent: *\nDisallow: /cart\nDisallow: /checkout\nDisallow: /account\nDisallow: /orders/\n\
         Disallow: /login\nDisallow: /register\nDisallow: /search\nDisallow: /api/\n\nSitemap: {}/sitemap.xml\n",
        visit.origin
    );
    text(body, "text/plain; charset=utf-8", cache_for(&app, "public, max-age=3600"))
}

pub async fn sitemap(State(app): State<Arc<App>>, visit: Visit) -> Response {
    let paths = {
        let mut cached = app.sitemap.0.lock().await;
        match cached.as_ref().filter(|(at, _)| at.elapsed() < SITEMAP_TTL) {
            Some((_, paths)) => paths.clone(),
            None => match catalog_paths(&app, &visit).await {
                Ok(paths) => {
                    let paths = Arc::new(paths);
                    *cached = Some((Instant::now(), paths.clone()));
                    paths
                }
                Err(failure) => {
                    drop(cached);
                    return super::failure_page(&app, visit, &failure);
                }
            },
        }
    };
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n",
    );
    for path in paths.iter() {
        let url = format!("{}{path}", visit.origin);
        xml.push_str("<url><loc>");
        xml.push_str(&url.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"));
        xml.push_str("</loc></url>\n");
    }
    xml.push_str("</urlset>\n");
    text(xml, "application/xml; charset=utf-8", cache_for(&app, "public, max-age=600"))
}

/// The home page, every category with products, and every product, as paths.
async fn catalog_paths(app: &App, visit: &Visit) -> Result<Vec<String>, crate::api::Failure> {
    let categories = app.api.public::<Vec<Category>>(&visit.forward, "/api/v1/categories".into()).await?;
    let mut paths = vec!["/".to_owned()];
    paths.extend(categories.iter().filter(|c| c.product_count > 0).map(|c| format!("/c/{}", c.slug)));
    let mut slugs = std::collections::BTreeSet::new();
    // The API pages search up to an offset of 10,000; walking each top category as well reaches
    // beyond that in a large catalog.
    let scopes =
        std::iter::once(None).chain(categories.iter().filter(|c| c.parent.is_none()).map(|c| Some(c.slug.clone())));
    'scopes: for scope in scopes {
        let mut offset = 0;
        while offset <= 10_000 {
            let category = scope.as_ref().map(|c| format!("&category={}", super::encode(c))).unwrap_or_default();
            let path = format!("/api/v1/products?sort=newest&limit=100&offset={offset}{category}");
            let found = app.api.public::<SearchPage>(&visit.forward, path).await?;
            slugs.extend(found.items.iter().map(|p| p.slug.clone()));
            if slugs.len() + paths.len() >= MAX_URLS {
                break 'scopes;
            }
            if found.items.len() < 100 {
                break;
            }
            offset += 100;
        }
    }
    paths.extend(slugs.iter().map(|slug| format!("/p/{slug}")));
    paths.truncate(MAX_URLS);
    Ok(paths)
}

fn text(body: String, content_type: &'static str, cache: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}
