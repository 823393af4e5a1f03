//! A shopper's session, kept whole in one sealed cookie: the storefront stores nothing.
//!
//! The cookie holds the guest cart's id, the signed-in user's tokens and a CSRF token. It is
//! sealed (AES-256-GCM) with the storefront's cookie key, so the browser can neither read the
//! tokens nor alter anything, and it is `HttpOnly` (no script reads it, so the refresh token
//! never reaches JavaScript), `SameSite=Lax` and, behind TLS, `Secure`.

use std::sync::Arc;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, header, request::Parts},
    response::{IntoResponseParts, ResponseParts},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use platform::secrets::MasterKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::App;

pub const COOKIE: &str = "emporium_session";
/// The name over HTTPS: the `__Host-` prefix makes browsers refuse the cookie from a sibling
/// subdomain (which could otherwise plant a session of its own, SameSite notwithstanding).
pub const SECURE_COOKIE: &str = "__Host-emporium_session";
/// What the seal is bound to: a value sealed for another purpose does not open as a session.
const PLACE: &str = "storefront session v1";
/// A browser keeps the cookie this long after the last page that changed it; the refresh
/// token inside decides how long a sign-in really lasts.
const MAX_AGE_SECONDS: u64 = 30 * 24 * 3600;
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' https: data:; script-src 'self'; \
     style-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'; object-src 'none'";
/// Sealing and base64 make a session about 1.4 times larger; browsers keep cookies to 4,096 bytes.
const MAX_PLAIN_BYTES: usize = 2_800;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Session {
    /// Every form carries this back; a request from another site cannot know it.
    pub csrf: String,
    /// The guest cart, before sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<SignedIn>,
    /// A message for the next page shown (after a redirect), shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash: Option<Flash>,
    /// Units in the cart when this session last saw it, for the header.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cart_count: i64,
    /// Where to go after a social sign-in comes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The `state` of a social sign-in under way: its return must bring it back, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_state: Option<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct SignedIn {
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds at which the access token expires.
    pub expires_at: i64,
    pub name: String,
    pub email: String,
}

/// The tokens are never printed, whatever prints a session.
impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Flash {
    pub error: bool,
    pub text: String,
}

impl Session {
    fn fresh() -> Self {
        Self { csrf: new_token(), ..Self::default() }
    }
}

/// 192 random bits, URL-safe.
pub fn new_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `sent` is `expected`, compared in constant time.
pub fn same_secret(expected: &str, sent: &str) -> bool {
    let (expected, sent) = (expected.as_bytes(), sent.as_bytes());
    expected.len() == sent.len() && expected.iter().zip(sent).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

/// The cookie key and how cookies are written.
pub struct Cookies {
    key: MasterKey,
}

impl Cookies {
    pub fn new(key: MasterKey) -> Self {
        Self { key }
    }

    fn open(&self, headers: &HeaderMap, secure: bool) -> Option<Session> {
        let name = if secure { SECURE_COOKIE } else { COOKIE };
        let value = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(cookie, _)| *cookie == name)?
            .1;
        let sealed = URL_SAFE_NO_PAD.decode(value).ok()?;
        let plain = self.key.open(&sealed, PLACE).ok()?;
        serde_json::from_slice(&plain).ok()
    }

    fn write(&self, session: &Session, secure: bool) -> Option<HeaderValue> {
        let mut plain = serde_json::to_vec(session).ok()?;
        if plain.len() > MAX_PLAIN_BYTES {
            // A browser drops a cookie over 4 KB whole: the message and the way back go first.
            tracing::warn!(bytes = plain.len(), "a session was too large for its cookie; its message was dropped");
            let trimmed = Session { flash: None, next: None, ..session.clone() };
            plain = serde_json::to_vec(&trimmed).ok()?;
        }
        let sealed = URL_SAFE_NO_PAD.encode(self.key.seal(&plain, PLACE));
        let (name, secure) = if secure { (SECURE_COOKIE, "; Secure") } else { (COOKIE, "") };
        HeaderValue::from_str(&format!(
            "{name}={sealed}; Path=/; Max-Age={MAX_AGE_SECONDS}; HttpOnly; SameSite=Lax{secure}"
        ))
        .ok()
    }
}

/// The session of the request being answered. A handler changes it through `session_mut` and
/// returns the `Visit` among its response parts; the cookie is written only if it changed.
pub struct Visit {
    pub session: Session,
    original: Option<Session>,
    app: Arc<App>,
    /// The browser reached the shop over HTTPS (the gateway terminated TLS or was told so).
    pub secure: bool,
    /// The request came from HTMX, which wants a fragment rather than a page.
    pub htmx: bool,
    /// What the API calls made for this page carry on: the browser's forwarded address (so the
    /// gateway counts its rate limits per shopper), the request id and trace context.
    pub forward: HeaderMap,
    /// `https://host` as the browser sees the shop.
    pub origin: String,
}

impl Visit {
    /// Takes the message left for this page.
    pub fn take_flash(&mut self) -> Option<Flash> {
        self.session.flash.take()
    }

    pub fn flash(&mut self, error: bool, text: impl Into<String>) {
        self.session.flash = Some(Flash { error, text: text.into() });
    }

    /// Whether `token` is this session's CSRF token (compared in constant time).
    pub fn csrf_ok(&self, token: &str) -> bool {
        same_secret(&self.session.csrf, token)
    }

    /// Forgets the signed-in user and the cart; forms opened before no longer send.
    pub fn sign_out(&mut self) {
        self.session = Session::fresh();
    }
}

impl FromRequestParts<Arc<App>> for Visit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        let forwarded_proto = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok());
        let secure = match &app.config.public_url {
            Some(url) => url.starts_with("https://"),
            None => forwarded_proto == Some("https"),
        };
        let original = app.cookies.open(headers, secure);
        let session = original.clone().unwrap_or_else(Session::fresh);
        let origin = match &app.config.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = headers
                    .get("x-forwarded-host")
                    .or_else(|| headers.get(header::HOST))
                    .and_then(|v| v.to_str().ok())
                    .filter(|host| host.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c)))
                    .unwrap_or("localhost");
                format!("{}://{host}", if secure { "https" } else { "http" })
            }
        };
        let mut forward = HeaderMap::new();
        for name in ["x-forwarded-for", "x-request-id", "traceparent", "tracestate"] {
            if let Some(value) = headers.get(name) {
                forward.insert(name, value.clone());
            }
        }
        Ok(Self {
            session,
            original,
            app: app.clone(),
            secure,
            htmx: headers.contains_key("hx-request"),
            forward,
            origin,
        })
    }
}

impl IntoResponseParts for Visit {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        if self.original.as_ref() != Some(&self.session)
            && let Some(cookie) = self.app.cookies.write(&self.session, self.secure)
        {
            res.headers_mut().append(header::SET_COOKIE, cookie);
        }
        // Pages differ per shopper (their cart, their name): no shared cache may keep one.
        res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        // Scripts and styles from this shop only, no inline script (HTMX runs without eval), no
        // framing; product pictures may come from anywhere over HTTPS.
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies() -> Cookies {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let config = platform::secrets::MasterKeyConfig { master_key: Some(key.into()), master_key_file: None };
        Cookies::new(MasterKey::load(&config, None).unwrap())
    }

    fn headers_with(cookie: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        headers
    }

    #[test]
    fn a_session_survives_its_cookie_and_nothing_else_opens() {
        let cookies = cookies();
        let mut session = Session::fresh();
        session.cart = Some("cart-id".to_owned());
        let written = cookies.write(&session, true).unwrap();
        let written = written.to_str().unwrap();
        assert!(written.contains("HttpOnly") && written.contains("SameSite=Lax") && written.contains("Secure"));
        assert!(written.starts_with("__Host-"), "over HTTPS, a sibling subdomain cannot set it");
        let pair = written.split(';').next().unwrap();
        assert!(!pair.contains("cart-id"), "the cookie is sealed, not merely encoded");
        assert_eq!(cookies.open(&headers_with(&format!("theme=dark; {pair}")), true), Some(session.clone()));
        assert_eq!(cookies.open(&headers_with(pair), false), None, "the plain name is another cookie");

        let value = pair.split_once('=').unwrap().1;
        let mut altered = URL_SAFE_NO_PAD.decode(value).unwrap();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        let altered = format!("{SECURE_COOKIE}={}", URL_SAFE_NO_PAD.encode(altered));
        assert_eq!(cookies.open(&headers_with(&altered), true), None);
        assert_eq!(cookies.open(&headers_with(&format!("{COOKIE}=not-base64!")), false), None);
        assert_ne!(Session::fresh().csrf, Session::fresh().csrf);

        // A session too large for a cookie loses its message, not its sign-in.
        let mut large = session;
        large.flash = Some(Flash { error: false, text: "x".repeat(4000) });
        let written = cookies.write(&large, false).unwrap();
        assert!(written.len() < 4096, "{}", written.len());
        let pair = written.to_str().unwrap().split(';').next().unwrap().to_owned();
        assert_eq!(cookies.open(&headers_with(&pair), false).unwrap().cart.as_deref(), Some("cart-id"));
    }
}
