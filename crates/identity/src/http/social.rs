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
use utoipa::{IntoParams, ToSchema};

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
    /// Where the sign-in ends: exactly one of the configured client redirect URIs.
    pub redirect_uri: String,
    /// The client's own state, handed back with the code (at most 512 characters).
    pub state: Option<String>,
    /// `true` to link the provider to the signed-in user's account (send the access token).
    pub link: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// The issuer, from providers that send it (RFC 9207).
    pub iss: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ExchangeRequest {
    /// The one-time code the sign-in's redirect carried.
    pub code: String,
}

pub struct Exchange(String);

impl Input for Exchange {
    type Raw = ExchangeRequest;
    fn parse(raw: ExchangeRequest) -> Result<Self, Vec<platform::FieldError>> {
        let mut fields = Fields::default();
        let code = raw.code.trim().to_owned();
        if code.is_empty() || code.len() > 128 {
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

/// Where the browser goes to sign in at the provider: for a client that asked for JSON (a
/// script that cannot follow a cross-site redirect, such as one linking a provider with its
/// access token), `{"url": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizeView {
    pub url: String,
}

/// The social sign-in providers this shop offers.
#[utoipa::path(get, path = "/api/v1/auth/providers", tag = "identity",
    responses((status = 200, body = [ProviderView])))]
pub async fn providers(State(state): State<AppState>) -> Json<Vec<ProviderView>> {
    Json(state.accounts.providers().into_iter().map(Into::into).collect())
}

/// Begin signing in with a provider: a redirect to it.
#[utoipa::path(get, path = "/api/v1/auth/oauth/{provider}/authorize", tag = "identity",
    params(("provider" = String, Path), AuthorizeQuery),
    responses(
        (status = 302, description = "To the provider's authorization endpoint, with the browser's sign-in cookie"),
        (status = 200, description = "With `Accept: application/json`: where to send the browser", body = AuthorizeView),
        (status = 401, description = "`link=true` without a valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such provider", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A redirect_uri not on the allow-list", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider cannot be reached", body = Problem, content_type = "application/problem+json"),
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
#[utoipa::path(get, path = "/api/v1/auth/oauth/{provider}/callback", tag = "identity",
    params(("provider" = String, Path), CallbackQuery),
    responses(
        (status = 302, description = "To the client's redirect URI, with `code` or `error` (and the client's `state`)"),
        (status = 400, description = "No sign-in in flight matches (unknown, expired or already used state), or it began in another browser", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such provider", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failures from this address", body = Problem, content_type = "application/problem+json"),
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
#[utoipa::path(post, path = "/api/v1/auth/oauth/exchange", tag = "identity", request_body = ExchangeRequest,
    responses(
        (status = 200, description = "Signed in", body = TokensView),
        (status = 400, description = "Unknown, expired or used code", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failures from this address", body = Problem, content_type = "application/problem+json"),
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
    responses((status = 200, body = [IdentityView]), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn identities(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<IdentityView>>, IdentityError> {
    Ok(Json(state.accounts.identities(caller.user_id).await?.into_iter().map(Into::into).collect()))
}

/// Unlink a provider from the signed-in user's account.
#[utoipa::path(delete, path = "/api/v1/users/me/identities/{provider}", tag = "identity", security(("bearer" = [])),
    params(("provider" = String, Path)),
    responses(
        (status = 204, description = "Unlinked"),
        (status = 404, description = "No identity of this provider", body = Problem, content_type = "application/problem+json"),
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
