//! GitHub (OAuth 2.0, not OpenID Connect): the code is exchanged for an access token, with which
//! `GET /user` says who the person is and `GET /user/emails` which of their emails GitHub has
//! verified. The primary email is taken, and vouched for only when GitHub verified it.

use http::{StatusCode, header};
use http_body_util::Full;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Asserted, Client, SocialError, error_of};
use crate::config::ProviderConfig;

pub struct GitHub {
    pub authorization_endpoint: String,
    token_endpoint: String,
    api_base: String,
}

#[derive(Deserialize)]
struct User {
    id: u64,
    login: String,
    #[serde(default)]
    name: Option<String>,
    /// The public email, if the user shows one; not proof of anything.
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    primary: bool,
    verified: bool,
}

impl GitHub {
    pub fn new(config: &ProviderConfig) -> Self {
        Self {
            authorization_endpoint: config
                .authorization_endpoint
                .clone()
                .unwrap_or_else(|| "https://github.com/login/oauth/authorize".to_owned()),
            token_endpoint: config
                .token_endpoint
                .clone()
                .unwrap_or_else(|| "https://github.com/login/oauth/access_token".to_owned()),
            api_base: config
                .api_base
                .clone()
                .unwrap_or_else(|| "https://api.github.com".to_owned())
                .trim_end_matches('/')
                .to_owned(),
        }
    }

    pub async fn complete(&self, client: &Client, code: &str, verifier: &str) -> Result<Asserted, SocialError> {
        let token = client.access_token(&self.token_endpoint, code, verifier).await?;
        let (status, user): (_, serde_json::Value) = self.api(client, "/user", &token).await?;
        if !status.is_success() {
            return Err(error_of(status, &user));
        }
        let user: User = serde_json::from_value(user)
            .map_err(|_| SocialError::Refused("GitHub's user could not be read".to_owned()))?;
        let (status, emails): (_, serde_json::Value) = self.api(client, "/user/emails", &token).await?;
        let primary = match status {
            s if s.is_success() => serde_json::from_value::<Vec<Email>>(emails)
                .map_err(|_| SocialError::Refused("GitHub's emails could not be read".to_owned()))?
                .into_iter()
                .find(|e| e.primary),
            // Without the `user:email` scope the list is closed: nothing is vouched for.
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => None,
            other => return Err(error_of(other, &emails)),
        };
        let (email, email_verified) = match primary {
            Some(primary) => (Some(primary.email), primary.verified),
            None => (user.email, false),
        };
        Ok(Asserted {
            subject: user.id.to_string(),
            email,
            email_verified,
            name: user.name.filter(|n| !n.trim().is_empty()).or(Some(user.login)),
        })
    }

    async fn api(
        &self,
        client: &Client,
        path: &str,
        token: &SecretString,
    ) -> Result<(StatusCode, serde_json::Value), SocialError> {
        let request = client
            .get(&format!("{}{path}", self.api_base))?
            .header(header::ACCEPT, "application/vnd.github+json")
            .header(header::AUTHORIZATION, format!("Bearer {}", token.expose_secret()))
            .header("x-github-api-version", "2022-11-28")
            .body(Full::default())
            .map_err(|e| SocialError::Refused(e.to_string()))?;
        client.json(request).await
    }
}
