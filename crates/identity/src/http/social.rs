//! Social sign-in over HTTP: the providers, the two legs of the authorization code flow (both
//! answered with redirects), the code exchange, and the user's linked identities.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use platform::{
    Problem,
    auth::Caller,
    http::{ApiJson, ApiPath, ApiQuery, Fields, Input},
};
use serde::{Deserialize, Serialize};
use utoipa::{
    IntoParams, ToSchema,
    openapi::{OpenApi, RefOr, Schema},
};

use super::{AppState, RequestOrigin, TokensView, no_store};
use crate::{
    accounts::{BeginSignIn, Callback, Identity, ProviderInfo},
    error::IdentityError,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    #[schema(example = "google")]
    pub id: String,
    #[schema(example = "Google")]
    pub name: String,
}

impl From<ProviderInfo> for ProviderView {
    fn from(p: ProviderInfo) -> Self {
        Self { id: p.id, name: p.name }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeQuery {
    /// Where the sign-in ends: exactly one of the configured client redirect URIs (422 for any
    /// other).
    pub redirect_uri: String,
    /// The client's own state, handed back with the code: at most 512 characters, no control
    /// characters.
    #[param(max_length = 512, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$", example = "checkout")]
    pub state: Option<String>,
    /// `true` to link the provider to the signed-in user's account (send the access token:
    /// 401 without one).
    pub link: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The provider's authorization code.
    pub code: Option<String>,
    /// The `state` this shop sent the provider: it names the sign-in in flight (400 when it names
    /// none).
    pub state: Option<String>,
    /// The provider's error code, passed on to the client when it is one of RFC 6749's.
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// The issuer, from providers that send it (RFC 9207).
    pub iss: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ExchangeRequest {
    /// The one-time code the sign-in's redirect carried: not blank, at most 128 characters
    /// (surrounding whitespace is ignored).
    #[schema(
        example = "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY",
        max_length = 128,
        pattern = r"[^\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub code: String,
}

pub struct Exchange(String);

impl Input for Exchange {
    type Raw = ExchangeRequest;
    fn parse(raw: ExchangeRequest) -> Result<Self, Vec<platform::FieldError>> {
        let mut fields = Fields::default();
        let code = raw.code.trim().to_owned();
        // Counted as sent, in characters: the limit the schema's maxLength states.
        if code.is_empty() || raw.code.chars().count() > 128 {
            fields.push("code", "must be 1 to 128 characters");
        }
        if fields.is_empty() { Ok(Self(code)) } else { Err(fields.into_errors()) }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityView {
    #[schema(example = "google")]
    pub provider: String,
    /// The provider's id of the account.
    pub subject: String,
    pub email: Option<String>,
    pub linked_at: DateTime<Utc>,
}

impl From<Identity> for IdentityView {
    fn from(i: Identity) -> Self {
        Self { provider: i.provider, subject: i.subject, email: i.email, linked_at: i.linked_at }
    }
}

/// The cookie that binds a sign-in to the browser that began it.
const BROWSER_COOKIE: &str = "emporium_sign_in";

/// The browser's sign-in cookie, if it sent one.
fn browser_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == BROWSER_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// A redirect that nothing may cache, and that tells the next page nothing about this one.
fn redirect(location: &str) -> Result<Response, IdentityError> {
    let location = HeaderValue::from_str(location).map_err(IdentityError::internal)?;
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(response)
}

/// Narrows the sign-in operations' parameters to what this instance's configuration accepts: the
/// provider ids and the client redirect URIs become enums, so that the document states the
/// allow-list the code enforces. An empty list is left unstated rather than made an enum no
/// request could satisfy (without providers, every sign-in is a 404 anyway).
pub fn narrow_to_configuration(document: &mut OpenApi, providers: &[String], redirect_uris: &[String]) {
    for path in ["/api/v1/auth/oauth/{provider}/authorize", "/api/v1/auth/oauth/{provider}/callback"] {
        let Some(operation) = document.paths.paths.get_mut(path).and_then(|item| item.get.as_mut()) else { continue };
        for parameter in operation.parameters.iter_mut().flatten() {
            let allowed = match parameter.name.as_str() {
                "provider" => providers,
                "redirect_uri" => redirect_uris,
                _ => continue,
            };
            if allowed.is_empty() {
                continue;
            }
            if let Some(RefOr::T(Schema::Object(schema))) = &mut parameter.schema {
                schema.enum_values = Some(allowed.iter().map(|value| value.as_str().into()).collect());
            }
        }
    }
}

/// Where the browser goes to sign in at the provider: for a client that asked for JSON (a
/// script that cannot follow a cross-site redirect, such as one linking a provider with its
/// access token), `{"url": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizeView {
    pub url: String,
}

/// The social sign-in providers this shop offers.
#[utoipa::path(get, path = "/api/v1/auth/providers", tag = "identity",
    responses((status = 200, description = "The configured providers", body = [ProviderView])))]
pub async fn providers(State(state): State<AppState>) -> Json<Vec<ProviderView>> {
    Json(state.accounts.providers().into_iter().map(Into::into).collect())
}

/// Begin signing in with a provider: a redirect to it.
///
/// A provider that is not configured is answered 404; one that cannot be reached 503. The access
/// token is optional: it is needed only with `link=true`, and a token sent must be valid.
#[utoipa::path(get, path = "/api/v1/auth/oauth/{provider}/authorize", tag = "identity",
    security((), ("bearer" = [])),
    params(("provider" = String, Path, description = "A configured provider's id, as /api/v1/auth/providers lists it"), AuthorizeQuery),
    responses(
        (status = 302, description = "To the provider's authorization endpoint, with the browser's sign-in cookie",
            headers(("Location" = String, description = "The provider's authorization URL"), ("Set-Cookie" = String, description = "The browser's sign-in cookie"))),
        (status = 200, description = "With `Accept: application/json`: where to send the browser (the sign-in cookie is set as well)", body = AuthorizeView),
        (status = 422, description = "A redirect_uri not on the allow-list, or a state over 512 characters or with control characters", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn authorize(
    State(state): State<AppState>,
    caller: Option<Caller>,
    headers: HeaderMap,
    ApiPath(provider): ApiPath<String>,
    ApiQuery(query): ApiQuery<AuthorizeQuery>,
) -> Result<Response, Response> {
    let linking = match (query.link.unwrap_or(false), caller) {
        (false, _) => None,
        (true, Some(caller)) => Some(caller.user_id),
        (true, None) => {
            return Err(Problem::with_detail(
                platform::ErrorCode::Unauthorized,
                "linking needs the user's access token",
            )
            .into_response());
        }
    };
    let begin = BeginSignIn {
        provider,
        browser: browser_cookie(&headers),
        redirect_uri: query.redirect_uri,
        client_state: query.state,
        linking,
    };
    let began = state.accounts.begin_sign_in(begin).await.map_err(IntoResponse::into_response)?;
    let wants_json =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"));
    let mut response = if wants_json {
        no_store(StatusCode::OK, AuthorizeView { url: began.url })
    } else {
        redirect(&began.url).map_err(IntoResponse::into_response)?
    };
    // Sent back on the provider's redirect to the callback (a top-level navigation: Lax).
    let secure = if state.accounts.public_url_is_https() { "; Secure" } else { "" };
    let cookie = format!(
        "{BROWSER_COOKIE}={}; Path=/api/v1/auth/oauth/; Max-Age=600; HttpOnly; SameSite=Lax{secure}",
        began.browser
    );
    let cookie = HeaderValue::from_str(&cookie).map_err(|e| IdentityError::internal(e).into_response())?;
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

/// Where the provider sends the browser back: a redirect to the client's redirect URI with a
/// one-time `code` (or an `error`: `access_denied`, `account_exists`, …).
///
/// Only a callback that matches no sign-in in flight (an unknown, expired or used `state`, or one
/// begun in another browser) is answered with an error here: 400. A provider that is not
/// configured is answered 404; too many failures from one address 429, with `Retry-After`.
#[utoipa::path(get, path = "/api/v1/auth/oauth/{provider}/callback", tag = "identity",
    params(("provider" = String, Path, description = "A configured provider's id"), CallbackQuery),
    responses(
        (status = 302, description = "To the client's redirect URI, with `code` or `error` (and the client's `state`)",
            headers(("Location" = String, description = "The client's redirect URI with its query"))),
    ))]
pub async fn callback(
    State(state): State<AppState>,
    RequestOrigin(origin): RequestOrigin,
    headers: HeaderMap,
    ApiPath(provider): ApiPath<String>,
    ApiQuery(query): ApiQuery<CallbackQuery>,
) -> Result<Response, IdentityError> {
    if let Some(description) = &query.error_description {
        // The provider's words, bounded; quoted, so that they cannot pass for log lines.
        let description: String = description.chars().take(200).collect();
        tracing::info!(provider = %provider, error = ?query.error, description = ?description, "the provider answered with an error");
    }
    let callback = Callback {
        browser: browser_cookie(&headers),
        code: query.code,
        state: query.state,
        error: query.error,
        iss: query.iss,
    };
    redirect(&state.accounts.finish_sign_in(&provider, callback, &origin).await?)
}

/// Exchange a sign-in's one-time code for tokens (once, within 60 seconds).
///
/// Failures count against the client's address like failed logins: too many are answered 429,
/// with `Retry-After`.
#[utoipa::path(post, path = "/api/v1/auth/oauth/exchange", tag = "identity", request_body = ExchangeRequest,
    responses(
        (status = 200, description = "Signed in", body = TokensView),
        (status = 401, description = "Unknown, expired or used code", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn exchange(
    State(state): State<AppState>,
    RequestOrigin(origin): RequestOrigin,
    ApiJson(Exchange(code)): ApiJson<Exchange>,
) -> Result<Response, IdentityError> {
    let tokens = state.accounts.exchange_code(&code, &origin).await?;
    Ok(no_store(StatusCode::OK, TokensView::from(tokens)))
}

/// The signed-in user's linked sign-in identities.
#[utoipa::path(get, path = "/api/v1/users/me/identities", tag = "identity", security(("bearer" = [])),
    responses((status = 200, description = "The linked identities", body = [IdentityView])))]
pub async fn identities(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<IdentityView>>, IdentityError> {
    Ok(Json(state.accounts.identities(caller.user_id).await?.into_iter().map(Into::into).collect()))
}

/// Unlink a provider from the signed-in user's account.
///
/// A provider the user has no identity of is answered 404.
#[utoipa::path(delete, path = "/api/v1/users/me/identities/{provider}", tag = "identity", security(("bearer" = [])),
    params(("provider" = String, Path, description = "The provider's id, as the user's identities name it")),
    responses(
        (status = 204, description = "Unlinked"),
        (status = 409, description = "It is the user's last way to sign in", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn unlink(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(provider): ApiPath<String>,
) -> Result<StatusCode, IdentityError> {
    state.accounts.unlink(caller.user_id, &provider).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use utoipa::OpenApi as _;

    use super::*;

    fn enum_of(document: &OpenApi, path: &str, name: &str) -> Option<Vec<Value>> {
        let operation = document.paths.paths[path].get.as_ref()?;
        let parameter = operation.parameters.as_ref()?.iter().find(|p| p.name == name)?;
        match parameter.schema.as_ref()? {
            RefOr::T(Schema::Object(schema)) => schema.enum_values.clone(),
            _ => None,
        }
    }

    #[test]
    fn configuration_narrows_the_sign_in_parameters() {
        let authorize = "/api/v1/auth/oauth/{provider}/authorize";
        let callback = "/api/v1/auth/oauth/{provider}/callback";
        let mut document = crate::http::ApiDoc::openapi();
        narrow_to_configuration(&mut document, &[], &[]);
        assert_eq!(enum_of(&document, authorize, "provider"), None, "an empty allow-list is not an empty enum");
        assert_eq!(enum_of(&document, authorize, "redirect_uri"), None);

        let providers = ["google".to_owned()];
        let redirect_uris = ["https://shop.example/signed-in".to_owned()];
        narrow_to_configuration(&mut document, &providers, &redirect_uris);
        assert_eq!(enum_of(&document, authorize, "provider"), Some(vec![json!("google")]));
        assert_eq!(enum_of(&document, callback, "provider"), Some(vec![json!("google")]));
        assert_eq!(enum_of(&document, authorize, "redirect_uri"), Some(vec![json!("https://shop.example/signed-in")]));
        assert_eq!(enum_of(&document, authorize, "state"), None);
    }

    #[test]
    fn codes_are_counted_in_characters_as_sent() {
        let code = |code: String| Exchange::parse(ExchangeRequest { code });
        assert!(code("é".repeat(128)).is_ok());
        assert!(code(format!(" {} ", "x".repeat(127))).is_err());
        assert!(code(" \u{3000}".to_owned()).is_err());
        assert_eq!(code(" abc\n".to_owned()).unwrap().0, "abc");
    }
}
