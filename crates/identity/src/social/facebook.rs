//! Facebook (OAuth 2.0 with PKCE): the code is exchanged for an access token, with which the
//! Graph API's `me?fields=id,name,email` says who the person is. Every Graph call carries an
//! `appsecret_proof`, so a token leaked elsewhere is useless without the app secret.
//!
//! Facebook gives no verification flag for the email it returns. Whether its emails count as
//! vouched for is the operator's choice (`trust_verified_email`, off by default for Facebook).

use hmac::{Hmac, Mac};
use http::header;
use http_body_util::Full;
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::Sha256;

use super::{Asserted, Client, SocialError, error_of};
use crate::config::ProviderConfig;

pub struct Facebook {
    pub authorization_endpoint: String,
    token_endpoint: String,
    api_base: String,
}

#[derive(Deserialize)]
struct Me {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

const GRAPH: &str = "https://graph.facebook.com/v21.0";

impl Facebook {
    pub fn new(config: &ProviderConfig) -> Self {
        let api_base = config.api_base.clone().unwrap_or_else(|| GRAPH.to_owned()).trim_end_matches('/').to_owned();
        Self {
            authorization_endpoint: config
                .authorization_endpoint
                .clone()
                .unwrap_or_else(|| "https://www.facebook.com/v21.0/dialog/oauth".to_owned()),
            token_endpoint: config.token_endpoint.clone().unwrap_or_else(|| format!("{api_base}/oauth/access_token")),
            api_base,
        }
    }

    pub async fn complete(&self, client: &Client, code: &str, verifier: &str) -> Result<Asserted, SocialError> {
        let token = client.access_token(&self.token_endpoint, code, verifier).await?;
        let mut mac = Hmac::<Sha256>::new_from_slice(client.secret.expose_secret().as_bytes())
            .map_err(|e| SocialError::Refused(e.to_string()))?;
        mac.update(token.expose_secret().as_bytes());
        let proof = hex::encode(mac.finalize().into_bytes());
        let url = format!("{}/me?fields=id,name,email&appsecret_proof={proof}", self.api_base);
        let request = client
            .get(&url)?
            .header(header::AUTHORIZATION, format!("Bearer {}", token.expose_secret()))
            .body(Full::default())
            .map_err(|e| SocialError::Refused(e.to_string()))?;
        let (status, me): (_, serde_json::Value) = client.json(request).await?;
        if !status.is_success() {
            return Err(error_of(status, &me));
        }
        let me: Me = serde_json::from_value(me)
            .map_err(|_| SocialError::Refused("the Graph API's user could not be read".to_owned()))?;
        // Counted as vouched for only where the operator chose to trust Facebook's emails.
        Ok(Asserted { subject: me.id, email_verified: me.email.is_some(), email: me.email, name: me.name })
    }
}
