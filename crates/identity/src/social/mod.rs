//! Signing in with someone else's account: the configured providers, and for each the end of
//! the authorization code flow, which turns a code into an identity we can trust (who the
//! provider says the person is, and whether it vouches for their email).
//!
//! OpenID Connect providers (Google among them) prove the identity with a signed ID token,
//! checked here against the provider's published keys. GitHub and Facebook speak plain OAuth
//! 2.0: the identity is what their APIs answer for the access token. Every call has a deadline,
//! and no provider token or secret is ever logged.

mod facebook;
mod github;
mod oidc;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use platform::http::client::{FetchError, HttpsClient};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use crate::config::{ProviderConfig, ProviderKind, SocialConfig};

/// What a provider says about the person who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asserted {
    /// The provider's stable id of the account (`sub`), never reassigned.
    pub subject: String,
    pub email: Option<String>,
    /// Whether the provider vouches that the email is the person's.
    pub email_verified: bool,
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SocialError {
    /// The provider did not answer in time, or answered with a server error.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// What came back does not hold up (a bad token, another issuer, an error answer): the
    /// sign-in is refused.
    #[error("refused: {0}")]
    Refused(String),
}

/// Most bytes of any provider answer; documents and tokens are small.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How this service presents itself to a provider.
struct Client {
    id: String,
    secret: SecretString,
    /// Our callback, registered with the provider.
    redirect_uri: String,
    scopes: Vec<String>,
    http: HttpsClient,
    timeout: Duration,
}

impl Client {
    /// Sends a request and reads a JSON answer. 5xx and transport failures are `Unavailable`;
    /// other statuses are returned with the body for the protocol to judge.
    async fn json<T: DeserializeOwned>(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, T), SocialError> {
        let (status, body) = platform::http::client::exchange(&self.http, request, self.timeout, MAX_ANSWER_BYTES)
            .await
            .map_err(|error| match error {
                FetchError::Timeout(after) => SocialError::Unavailable(format!("no answer within {after:?}")),
                other => SocialError::Unavailable(platform::http::problem::error_chain(&other)),
            })?;
        if status.is_server_error() {
            return Err(SocialError::Unavailable(format!("answered {status}")));
        }
        let value = serde_json::from_slice(&body)
            .map_err(|e| SocialError::Refused(format!("answered {status} with an unreadable body: {e}")))?;
        Ok((status, value))
    }

    /// Exchanges a code for an OAuth 2.0 access token, the client's credentials in the form.
    /// A refusal may come as an error status or, from GitHub, as 200 with an `error` member.
    async fn access_token(&self, endpoint: &str, code: &str, verifier: &str) -> Result<SecretString, SocialError> {
        let form = [("code", code), ("redirect_uri", self.redirect_uri.as_str()), ("code_verifier", verifier)];
        let request = self.token_request(endpoint, &form, false)?;
        let (status, answer): (_, serde_json::Value) = self.json(request).await?;
        match answer.get("access_token").and_then(|t| t.as_str()) {
            Some(token) if status.is_success() => Ok(SecretString::from(token.to_owned())),
            _ => Err(error_of(status, &answer)),
        }
    }

    fn get(&self, url: &str) -> Result<http::request::Builder, SocialError> {
        let uri: http::Uri = url.parse().map_err(|_| SocialError::Refused(format!("invalid URL {url:?}")))?;
        Ok(Request::get(uri).header(header::ACCEPT, "application/json").header(header::USER_AGENT, USER_AGENT))
    }

    /// A form POST to a token endpoint. `basic`: the client authenticates with HTTP Basic
    /// (`client_secret_basic`), else with the credentials in the form (`client_secret_post`).
    fn token_request(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: bool,
    ) -> Result<Request<Full<Bytes>>, SocialError> {
        let mut body = form_urlencoded::Serializer::new(String::new());
        body.extend_pairs(form);
        let mut request = Request::post(url)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if basic {
            // RFC 6749 §2.3.1: both parts form-encoded before Basic encoding.
            use base64::Engine;
            let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let credentials = format!("{}:{}", encode(&self.id), encode(self.secret.expose_secret()));
            let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials));
            request = request.header(header::AUTHORIZATION, value);
        } else {
            body.append_pair("client_id", &self.id).append_pair("client_secret", self.secret.expose_secret());
        }
        request.body(Full::new(Bytes::from(body.finish()))).map_err(|e| SocialError::Refused(format!("request: {e}")))
    }
}

/// Sent to providers that want to know who calls (GitHub requires one).
const USER_AGENT: &str = "emporium";

/// `url` with these query parameters added (to a query it may have already).
pub fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

enum Protocol {
    Oidc(Box<oidc::Oidc>),
    GitHub(github::GitHub),
    Facebook(facebook::Facebook),
}

/// One configured provider.
pub struct Provider {
    pub id: String,
    pub name: String,
    client: Client,
    protocol: Protocol,
    /// Whether its word that an email is verified is taken.
    trusts_verified_email: bool,
}

impl Provider {
    /// The URL that sends the browser to the provider: `state`, the PKCE challenge (S256) and,
    /// for OpenID Connect, the nonce.
    pub async fn authorization_url(&self, state: &str, challenge: &str, nonce: &str) -> Result<String, SocialError> {
        let scope = self.client.scopes.join(" ");
        let common = [
            ("response_type", "code"),
            ("client_id", self.client.id.as_str()),
            ("redirect_uri", self.client.redirect_uri.as_str()),
            ("scope", scope.as_str()),
            ("state", state),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ];
        match &self.protocol {
            Protocol::Oidc(oidc) => oidc.authorization_url(&self.client, &common, nonce).await,
            Protocol::GitHub(github) => Ok(with_query(&github.authorization_endpoint, &common)),
            Protocol::Facebook(facebook) => Ok(with_query(&facebook.authorization_endpoint, &common)),
        }
    }

    /// Whether the provider says it sends `iss` with its answers (RFC 9207), which must then
    /// be there and be its own.
    pub async fn check_issuer(&self, iss: Option<&str>) -> Result<(), SocialError> {
        match &self.protocol {
            Protocol::Oidc(oidc) => oidc.check_issuer(&self.client, iss).await,
            _ => Ok(()),
        }
    }

    /// Turns the code the provider sent back into the identity it vouches for.
    pub async fn complete(&self, code: &str, verifier: &str, nonce: &str) -> Result<Asserted, SocialError> {
        let mut asserted = match &self.protocol {
            Protocol::Oidc(oidc) => oidc.complete(&self.client, code, verifier, nonce).await,
            Protocol::GitHub(github) => github.complete(&self.client, code, verifier).await,
            Protocol::Facebook(facebook) => facebook.complete(&self.client, code, verifier).await,
        }?;
        asserted.email_verified &= self.trusts_verified_email;
        Ok(asserted)
    }
}

/// The configured providers.
#[derive(Clone, Default)]
pub struct Providers(Arc<Vec<Provider>>);

impl Providers {
    /// Builds the providers from configuration (secrets from files are read here). Nothing is
    /// fetched yet: a provider that is down delays no start.
    pub fn from_config(config: &SocialConfig) -> Result<Self, String> {
        let mut providers = Vec::new();
        for (id, provider) in &config.providers {
            // A client of its own, trusting the origins configured for this provider alone: what
            // its discovery document names elsewhere, another provider's host included, is
            // reached only at public addresses.
            let configured =
                [&provider.issuer, &provider.authorization_endpoint, &provider.token_endpoint, &provider.api_base];
            let egress = platform::http::client::Egress::trusting(configured.into_iter().flatten().map(String::as_str));
            let http = platform::http::client::https(config.timeout, egress);
            let secret = secret(id, provider)?;
            let client = Client {
                id: provider.client_id.clone(),
                secret,
                redirect_uri: format!("{}/api/v1/auth/oauth/{id}/callback", config.public_url.trim_end_matches('/')),
                scopes: if provider.scopes.is_empty() {
                    default_scopes(provider.kind)
                } else {
                    provider.scopes.clone()
                },
                http,
                timeout: config.timeout,
            };
            let protocol = match provider.kind {
                ProviderKind::Oidc | ProviderKind::Google => {
                    let issuer = provider.issuer.clone().unwrap_or_else(|| "https://accounts.google.com".to_owned());
                    Protocol::Oidc(Box::new(oidc::Oidc::new(issuer)))
                }
                ProviderKind::Github => Protocol::GitHub(github::GitHub::new(provider)),
                ProviderKind::Facebook => Protocol::Facebook(facebook::Facebook::new(provider)),
            };
            let name = provider.name.clone().unwrap_or_else(|| match provider.kind {
                ProviderKind::Google => "Google".to_owned(),
                ProviderKind::Github => "GitHub".to_owned(),
                ProviderKind::Facebook => "Facebook".to_owned(),
                ProviderKind::Oidc => id.clone(),
            });
            let trusts_verified_email = provider.trusts_verified_email();
            providers.push(Provider { id: id.clone(), name, client, protocol, trusts_verified_email });
        }
        Ok(Self(Arc::new(providers)))
    }

    pub fn get(&self, id: &str) -> Option<&Provider> {
        self.0.iter().find(|p| p.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Provider> {
        self.0.iter()
    }
}

fn secret(id: &str, provider: &ProviderConfig) -> Result<SecretString, String> {
    if let Some(secret) = &provider.client_secret {
        return Ok(secret.clone());
    }
    let Some(path) = &provider.client_secret_file else {
        return Err(format!("identity.social.providers.{id}.client_secret is not set"));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("identity.social.providers.{id}.client_secret_file {}: {e}", path.display()))?;
    Ok(SecretString::from(text.trim().to_owned()))
}

fn default_scopes(kind: ProviderKind) -> Vec<String> {
    let scopes: &[&str] = match kind {
        ProviderKind::Oidc | ProviderKind::Google => &["openid", "email", "profile"],
        ProviderKind::Github => &["read:user", "user:email"],
        ProviderKind::Facebook => &["email", "public_profile"],
    };
    scopes.iter().map(|s| (*s).to_owned()).collect()
}

/// The error answer of a token endpoint or API, as far as one can be read.
fn error_of(status: StatusCode, body: &serde_json::Value) -> SocialError {
    let code = body
        .get("error")
        .and_then(|e| {
            e.as_str().map(str::to_owned).or_else(|| e.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        })
        .unwrap_or_else(|| "no error code".to_owned());
    SocialError::Refused(format!("answered {status}: {code}"))
}
