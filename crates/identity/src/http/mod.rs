//! Identity's HTTP API (the Identity section of API.md) and its OpenAPI document.

mod dto;
mod social;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    Extension, Json, Router,
    extract::{ConnectInfo, FromRequestParts, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use platform::{
    Problem,
    auth::{Admin, Caller},
    http::{ApiJson, ApiPath, ApiQuery, RequestContext, openapi::BearerAuth},
    pagination::PageQuery,
};
use utoipa::OpenApi;
use uuid::Uuid;

use crate::{
    accounts::{Accounts, Origin, Register, UpdateProfile},
    domain::RoleSet,
    error::IdentityError,
};
pub use dto::*;

#[derive(Clone)]
pub struct AppState {
    pub accounts: Arc<Accounts>,
    pub trusted_proxy_hops: usize,
}

/// The API routes (without the operational ones every service adds).
pub fn router(state: AppState) -> Router {
    let verifier = state.accounts.keys().verifier();
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/email/verify", post(verify_email))
        .route("/api/v1/auth/email/resend", post(resend_verification))
        .route("/api/v1/auth/password/forgot", post(forgot_password))
        .route("/api/v1/auth/password/reset", post(reset_password))
        .route("/api/v1/auth/providers", get(social::providers))
        .route("/api/v1/auth/oauth/{provider}/authorize", get(social::authorize))
        .route("/api/v1/auth/oauth/{provider}/callback", get(social::callback))
        .route("/api/v1/auth/oauth/exchange", post(social::exchange))
        .route("/api/v1/users/me/identities", get(social::identities))
        .route("/api/v1/users/me/identities/{provider}", axum::routing::delete(social::unlink))
        .route("/api/v1/users/me", get(me).patch(update_me))
        .route("/api/v1/users", get(list_users))
        .route("/api/v1/users/{id}/roles", put(set_roles))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/openapi.json", get(openapi))
        .layer(Extension(verifier))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    paths(register, login, refresh, logout, verify_email, resend_verification, forgot_password, reset_password, me, update_me, list_users, set_roles, jwks,
        social::providers, social::authorize, social::callback, social::exchange, social::identities, social::unlink),
    components(schemas(Problem, platform::FieldError, social::ProviderView, social::IdentityView, social::ExchangeRequest, social::AuthorizeView)),
    modifiers(&BearerAuth),
    tags((name = "identity", description = "Accounts, sessions and tokens"))
)]
pub struct ApiDoc;

/// The document as this instance answers: the sign-in parameters that configuration decides are
/// narrowed to what it accepts.
async fn openapi(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    let mut document = ApiDoc::openapi();
    let providers: Vec<String> = state.accounts.providers().into_iter().map(|p| p.id).collect();
    social::narrow_to_configuration(&mut document, &providers, state.accounts.redirect_uris());
    Json(document)
}

/// The client's address: taken from `X-Forwarded-For` as written by the trusted proxies in
/// front of us, else the peer of the connection.
fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>, trusted_hops: usize) -> Option<IpAddr> {
    if trusted_hops > 0 {
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if !forwarded.is_empty() {
            let index = forwarded.len().saturating_sub(trusted_hops);
            if let Ok(ip) = forwarded[index].parse() {
                return Some(ip);
            }
        }
    }
    peer.map(|p| p.ip())
}

/// Where the request came from: the client's address and the trace it belongs to.
struct RequestOrigin(Origin);

impl FromRequestParts<AppState> for RequestOrigin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        Ok(Self(Origin {
            client_ip: client_ip(&parts.headers, peer, state.trusted_proxy_hops),
            traceparent: parts.extensions.get::<RequestContext>().map(|c| c.trace.traceparent()),
        }))
    }
}

/// Token responses must not be cached by anything between us and the client.
fn no_store(status: StatusCode, body: impl serde::Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Create an account and sign in.
///
/// An invalid email, a password under 10 characters or a blank name is a 422 naming each field.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "identity", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered and signed in", body = TokensView),
        (status = 409, description = "The email is taken", body = Problem, content_type = "application/problem+json"),
    ))]
async fn register(
    State(state): State<AppState>,
    RequestOrigin(origin): RequestOrigin,
    ApiJson(command): ApiJson<Register>,
) -> Result<Response, IdentityError> {
    let tokens = state.accounts.register(command, &origin).await?;
    Ok(no_store(StatusCode::CREATED, TokensView::from(tokens)))
}

/// Sign in with email and password.
///
/// Repeated failures for one account or from one address are answered 429, with `Retry-After`.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "identity", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokensView),
        (status = 401, description = "Unknown email or wrong password (one answer for both)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn login(
    State(state): State<AppState>,
    RequestOrigin(origin): RequestOrigin,
    ApiJson(command): ApiJson<Login>,
) -> Result<Response, IdentityError> {
    let tokens = state.accounts.login(&command.email, &command.password, &origin).await?;
    Ok(no_store(StatusCode::OK, TokensView::from(tokens)))
}

/// Exchange a refresh token for a new pair; the presented token is spent.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "identity", request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair", body = TokensView),
        (status = 401, description = "Unknown, expired or spent token; a spent token revokes its whole session", body = Problem, content_type = "application/problem+json"),
    ))]
async fn refresh(
    State(state): State<AppState>,
    ApiJson(token): ApiJson<PresentedToken>,
) -> Result<Response, IdentityError> {
    let tokens = state.accounts.refresh(&token.0).await?;
    Ok(no_store(StatusCode::OK, TokensView::from(tokens)))
}

/// End the session a refresh token belongs to.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "identity", request_body = RefreshRequest,
    responses((status = 204, description = "The session's refresh token no longer works")))]
async fn logout(
    State(state): State<AppState>,
    ApiJson(token): ApiJson<PresentedToken>,
) -> Result<StatusCode, IdentityError> {
    state.accounts.logout(&token.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Prove the email a verification link was sent to.
///
/// A token that is not 64 base64url characters is answered 400.
#[utoipa::path(post, path = "/api/v1/auth/email/verify", tag = "identity", request_body = VerifyEmailRequest,
    responses(
        (status = 204, description = "The user's email_verified is true; access tokens issued from now on say so"),
        (status = 401, description = "Unknown, spent, expired or replaced link", body = Problem, content_type = "application/problem+json"),
    ))]
async fn verify_email(
    State(state): State<AppState>,
    ApiJson(token): ApiJson<LinkToken>,
) -> Result<StatusCode, IdentityError> {
    state.accounts.verify_email(&token.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send the signed-in user a new verification email (the previous link stops working).
///
/// Asking too often for one account or from one address is answered 429, with `Retry-After`.
#[utoipa::path(post, path = "/api/v1/auth/email/resend", tag = "identity", security(("bearer" = [])),
    responses(
        (status = 202, description = "A new link is on its way (nothing is sent for an email already verified)"),
        (status = 404, description = "The token's user no longer exists", body = Problem, content_type = "application/problem+json"),
    ))]
async fn resend_verification(
    State(state): State<AppState>,
    RequestOrigin(origin): RequestOrigin,
    caller: Caller,
) -> Result<StatusCode, IdentityError> {
    state.accounts.resend_verification(caller.user_id, &origin).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Ask for a password reset link. The answer is the same whether or not an account has this
/// email.
///
/// Asking too often for one address or from one client is answered 429, with `Retry-After`.
#[utoipa::path(post, path = "/api/v1/auth/password/forgot", tag = "identity", request_body = ForgotPasswordRequest,
    responses(
        (status = 202, description = "If an account has this email, a link valid 30 minutes is on its way"),
    ))]
async fn forgot_password(
    State(state): State<AppState>,
    RequestOrigin(origin): RequestOrigin,
    ApiJson(command): ApiJson<ForgotPassword>,
) -> Result<StatusCode, IdentityError> {
    state.accounts.forgot_password(&command.email, &origin).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Set a new password with a reset link; every session of the user is revoked.
///
/// A token that is not 64 base64url characters is answered 400, a password under 10 characters
/// 422.
#[utoipa::path(post, path = "/api/v1/auth/password/reset", tag = "identity", request_body = ResetPasswordRequest,
    responses(
        (status = 204, description = "The password is set, the email counts as verified, every session is revoked"),
        (status = 401, description = "Unknown, spent, expired or replaced link", body = Problem, content_type = "application/problem+json"),
    ))]
async fn reset_password(
    State(state): State<AppState>,
    RequestOrigin(origin): RequestOrigin,
    ApiJson(command): ApiJson<ResetPassword>,
) -> Result<StatusCode, IdentityError> {
    state.accounts.reset_password(&command.token, &command.password, &origin).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "identity", security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = UserView),
        (status = 404, description = "The token's user no longer exists", body = Problem, content_type = "application/problem+json"),
    ))]
async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<UserView>, IdentityError> {
    Ok(Json(state.accounts.user(caller.user_id).await?.into()))
}

/// Change the signed-in user's name or password.
///
/// A new password signs out every other session of the user.
#[utoipa::path(patch, path = "/api/v1/users/me", tag = "identity", security(("bearer" = [])), request_body = UpdateMeRequest,
    responses(
        (status = 200, description = "The user as changed", body = UserView),
        (status = 403, description = "A new password without the right current_password (or, for an account without a password, without a sign-in in the last 10 minutes); nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The token's user no longer exists", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_me(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(update): ApiJson<UpdateProfile>,
) -> Result<Json<UserView>, IdentityError> {
    Ok(Json(state.accounts.update_profile(caller.user_id, caller.session_id, update).await?.into()))
}

/// All users, newest first (admin).
#[utoipa::path(get, path = "/api/v1/users", tag = "identity", security(("bearer" = [])),
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (default 20)"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 403, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A limit out of range, or a cursor this service did not make", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<UserPage>, Response> {
    let page = query.parse::<Uuid>().map_err(IntoResponse::into_response)?;
    let users = state.accounts.list_users(&page).await.map_err(IntoResponse::into_response)?;
    Ok(Json(UserPage { items: users.items.into_iter().map(Into::into).collect(), next_cursor: users.next_cursor }))
}

/// Replace a user's roles (admin).
///
/// An unknown user is answered 404.
#[utoipa::path(put, path = "/api/v1/users/{id}/roles", tag = "identity", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")), request_body = SetRolesRequest,
    responses(
        (status = 200, description = "The user with the new roles", body = UserView),
        (status = 403, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Would remove the last administrator", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_roles(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(roles): ApiJson<RoleSet>,
) -> Result<Json<UserView>, IdentityError> {
    Ok(Json(state.accounts.set_roles(id, roles).await?.into()))
}

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "identity",
    responses((status = 200, description = "A JSON Web Key Set", content_type = "application/json", body = Object,
        headers(("Cache-Control" = String, description = "public, max-age=60")))))]
async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.accounts.keys().jwks().as_ref().clone()).into_response();
    // Verifiers refetch on an unknown kid anyway; a short max-age keeps caches honest.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_trusts_only_the_configured_hops() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(client_ip(&headers, Some(peer), 1), Some("10.0.0.9".parse().unwrap()));
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 203.0.113.7"));
        assert_eq!(client_ip(&headers, Some(peer), 1), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(client_ip(&headers, Some(peer), 2), Some("6.6.6.6".parse().unwrap()));
        assert_eq!(client_ip(&headers, Some(peer), 0), Some("10.0.0.9".parse().unwrap()));
    }
}
