//! Error pages: a person gets a page with a way back, never a JSON document.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

use crate::{App, session::Visit};

/// For when even the error page does not render.
pub const PLAIN_500: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Something went wrong</title></head>\
<body><main><h1>Something went wrong on our side</h1><p>Try again in a moment. <a href=\"/\">Back to the shop</a></p></main></body></html>";

pub async fn not_found(State(app): State<Arc<App>>, visit: Visit) -> Response {
    not_found_page(&app, visit)
}

pub fn not_found_page(app: &App, visit: Visit) -> Response {
    let message = "There is nothing at this address. It may have moved, or the product is no longer sold.";
    super::error_page(app, visit, StatusCode::NOT_FOUND, "Page not found", message)
}

/// What the shared server frame answers as problem+json (a wrong method, a panic) becomes a
/// page; the storefront's own routes answer pages already, and its operational routes
/// (`/health/*`, `/metrics`) are left as they are.
pub async fn html_for_people(response: Response) -> Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return response;
    }
    let mut page = plain_page(response.status());
    for name in [header::ALLOW, header::RETRY_AFTER, header::X_CONTENT_TYPE_OPTIONS] {
        if let Some(value) = response.headers().get(&name) {
            page.headers_mut().insert(name, value.clone());
        }
    }
    page
}

/// A page for an error met before the session is read: no frame, a way back.
pub fn plain_page(status: StatusCode) -> Response {
    let (heading, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("Not here", "This address does not take that kind of request."),
        StatusCode::NOT_FOUND => ("Page not found", "There is nothing at this address."),
        s if s.is_client_error() => ("That request was not understood", "Go back, reload the page and try again."),
        _ => ("Something went wrong on our side", "Try again in a moment."),
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{heading}</title></head><body><main><h1>{heading}</h1><p>{message}</p><p><a href=\"/\">Back to the shop</a></p></main></body></html>"
    );
    let mut page = (status, Html(html)).into_response();
    page.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    page
}
