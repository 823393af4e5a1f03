//! What search engines read: `robots.txt` and a sitemap made from the catalog.

use std::{
    sync::{Arc, Mutex},
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

#[derive(Default)]
pub struct SitemapCache(Mutex<Option<(Instant, String, Arc<String>)>>);

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
    let cached = app.sitemap.0.lock().ok().and_then(|c| {
        c.as_ref()
            .filter(|(at, origin, _)| at.elapsed() < SITEMAP_TTL && *origin == visit.origin)
            .map(|(_, _, x)| x.clone())
    });
    if let Some(xml) = cached {
        return text(xml.as_str().to_owned(), "application/xml; charset=utf-8", cache_for(&app, "public, max-age=600"));
    }
    let categories = match app.api.public::<Vec<Category>>(&visit.forward, "/api/v1/categories".into()).await {
        Ok(categories) => categories,
        Err(failure) => return super::failure_page(&app, visit, &failure),
    };
    let mut urls = vec![format!("{}/", visit.origin)];
    urls.extend(categories.iter().filter(|c| c.product_count > 0).map(|c| format!("{}/c/{}", visit.origin, c.slug)));
    let mut slugs = std::collections::BTreeSet::new();
    // The API pages search up to an offset of 10,000; walking each category as well reaches
    // beyond that in a large catalog.
    let scopes =
        std::iter::once(None).chain(categories.iter().filter(|c| c.parent.is_none()).map(|c| Some(c.slug.clone())));
    'scopes: for scope in scopes {
        let mut offset = 0;
        while offset <= 10_000 {
            let category = scope.as_ref().map(|c| format!("&category={c}")).unwrap_or_default();
            let path = format!("/api/v1/products?sort=newest&limit=100&offset={offset}{category}");
            let found = match app.api.public::<SearchPage>(&visit.forward, path).await {
                Ok(found) => found,
                Err(failure) => return super::failure_page(&app, visit, &failure),
            };
            let count = found.items.len();
            slugs.extend(found.items.iter().map(|p| p.slug.clone()));
            if slugs.len() + urls.len() >= MAX_URLS {
                break 'scopes;
            }
            if count < 100 {
                break;
            }
            offset += 100;
        }
    }
    urls.extend(slugs.iter().map(|slug| format!("{}/p/{slug}", visit.origin)));
    urls.truncate(MAX_URLS);
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n",
    );
    for url in &urls {
        xml.push_str("<url><loc>");
        xml.push_str(&url.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"));
        xml.push_str("</loc></url>\n");
    }
    xml.push_str("</urlset>\n");
    if let Ok(mut cache) = app.sitemap.0.lock() {
        *cache = Some((Instant::now(), visit.origin.clone(), Arc::new(xml.clone())));
    }
    text(xml, "application/xml; charset=utf-8", cache_for(&app, "public, max-age=600"))
}

fn text(body: String, content_type: &'static str, cache: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}
