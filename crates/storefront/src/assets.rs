//! The stylesheet and scripts, built into the binary and served under names that carry a digest
//! of their content (`style.1a2b3c4d5e6f7a8b.css`): such a name always means the same bytes, so
//! browsers may keep them for a year without asking again, and a new release changes the name.

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

struct Asset {
    /// The name pages link to.
    hashed: String,
    content_type: &'static str,
    body: &'static [u8],
    /// The same, gzip-compressed, where the vendor ships it so.
    gzip: Option<&'static [u8]>,
}

pub struct Assets {
    files: Vec<Asset>,
    /// What pages link to: `/static/style.<digest>.css`, `/static/htmx.<digest>.js`.
    style: String,
    htmx: String,
}

/// The vendored HTMX: the file as htmx.org 2.0.8 publishes it (Zero-Clause BSD).
const HTMX: &[u8] = include_bytes!("../static/htmx.min.js");
const HTMX_GZ: &[u8] = include_bytes!("../static/htmx.min.js.gz");
const STYLE: &[u8] = include_bytes!("../static/style.css");

impl Assets {
    pub fn load() -> Self {
        let style = asset("style", "css", "text/css; charset=utf-8", STYLE, None);
        let htmx = asset("htmx", "js", "text/javascript; charset=utf-8", HTMX, Some(HTMX_GZ));
        let (style_path, htmx_path) = (format!("/static/{}", style.hashed), format!("/static/{}", htmx.hashed));
        Self { files: vec![style, htmx], style: style_path, htmx: htmx_path }
    }

    pub fn style(&self) -> &str {
        &self.style
    }

    pub fn htmx(&self) -> &str {
        &self.htmx
    }

    pub fn serve(&self, name: &str, request: &HeaderMap) -> Response {
        let Some(file) = self.files.iter().find(|f| f.hashed == name) else {
            return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "no such file")
                .into_response();
        };
        let gzip_ok = request
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim().split(';').next() == Some("gzip")));
        let mut response = Response::new(Body::empty());
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(file.content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
        let body = match file.gzip {
            Some(gzip) if gzip_ok => {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                gzip
            }
            _ => file.body,
        };
        if file.gzip.is_some() {
            headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        *response.body_mut() = Body::from(body);
        response
    }
}

fn asset(
    stem: &str,
    extension: &str,
    content_type: &'static str,
    body: &'static [u8],
    gzip: Option<&'static [u8]>,
) -> Asset {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let short: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    Asset { hashed: format!("{stem}.{short}.{extension}"), content_type, body, gzip }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_content_and_are_cached_for_good() {
        let assets = Assets::load();
        let style = assets.style().to_owned();
        assert!(style.starts_with("/static/style.") && style.ends_with(".css") && style.len() > 30, "{style}");
        let name = style.trim_start_matches("/static/");
        let served = assets.serve(name, &HeaderMap::new());
        assert_eq!(served.status(), StatusCode::OK);
        assert!(served.headers()[header::CACHE_CONTROL].to_str().unwrap().contains("immutable"));
        assert_eq!(assets.serve("style.css", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);

        let mut gzip = HeaderMap::new();
        gzip.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br, gzip;q=0.8"));
        let htmx = assets.htmx();
        let served = assets.serve(htmx.trim_start_matches("/static/"), &gzip);
        assert_eq!(served.headers()[header::CONTENT_ENCODING], "gzip");
    }
}
