//! OpenID Connect: the provider's discovery document names its endpoints and keys; the ID token
//! it returns for a code is verified with one of those keys, by an algorithm it publishes, and
//! must be for us (`aud`, `azp`), from it (`iss`), current (`exp`, `iat`) and for this sign-in
//! (`nonce`). The keys are cached and fetched again when a token names one not seen yet.

use std::time::{Duration, Instant};

use http_body_util::Full;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};
use serde::Deserialize;
use tokio::sync::RwLock;

use super::{Asserted, Client, SocialError, error_of, with_query};

/// How long a discovery document is trusted before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// Keys are fetched again for an unknown `kid` at most this often.
const KEYS_REFETCH: Duration = Duration::from_secs(30);
/// And in any case once they are this old, so that a key the provider withdrew stops counting.
const KEYS_TTL: Duration = Duration::from_secs(3600);
/// Clock skew tolerated on `exp` and `iat`.
const LEEWAY: u64 = 60;

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
}

struct Keys {
    keys: Vec<Jwk>,
    fetched: Instant,
}

pub struct Oidc {
    issuer: String,
    /// How soon keys may be fetched again for a `kid` not seen ([`KEYS_REFETCH`]).
    refetch_after: Duration,
    discovery: RwLock<Option<(Discovery, Instant)>>,
    keys: RwLock<Option<Keys>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    access_token: Option<String>,
}

/// What the userinfo endpoint says (OpenID Connect Core §5.3).
#[derive(Deserialize)]
struct UserInfo {
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<Flag>,
    #[serde(default)]
    name: Option<String>,
}

fn flag(flag: Option<Flag>) -> bool {
    match flag {
        Some(Flag::Bool(verified)) => verified,
        Some(Flag::Text(text)) => text == "true",
        None => false,
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Text(String),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// One audience or several (checked by the library; here only how many).
    aud: serde_json::Value,
    iat: i64,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<Flag>,
    #[serde(default)]
    name: Option<String>,
}

impl Oidc {
    pub fn new(issuer: String) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            refetch_after: KEYS_REFETCH,
            discovery: RwLock::new(None),
            keys: RwLock::new(None),
        }
    }

    /// The discovery document, read again once it is an hour old.
    async fn discovery(&self, client: &Client) -> Result<Discovery, SocialError> {
        if let Some((discovery, at)) = self.discovery.read().await.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(discovery.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let request = client.get(&url)?.body(Full::default()).map_err(|e| SocialError::Refused(e.to_string()))?;
        let (status, discovery): (_, Discovery) = client.json(request).await?;
        if !status.is_success() {
            return Err(SocialError::Unavailable(format!("discovery answered {status}")));
        }
        // OpenID Connect Discovery §4.3: the document must be the issuer's own.
        if discovery.issuer.trim_end_matches('/') != self.issuer {
            return Err(SocialError::Refused(format!("discovery names another issuer, {:?}", discovery.issuer)));
        }
        let endpoints = [
            Some(&discovery.authorization_endpoint),
            Some(&discovery.token_endpoint),
            Some(&discovery.jwks_uri),
            discovery.userinfo_endpoint.as_ref(),
        ];
        if let Some(bad) = endpoints.into_iter().flatten().find(|url| !crate::config::is_private_channel(url)) {
            return Err(SocialError::Refused(format!("discovery names an endpoint that is not https: {bad:?}")));
        }
        *self.discovery.write().await = Some((discovery.clone(), Instant::now()));
        Ok(discovery)
    }

    pub async fn authorization_url(
        &self,
        client: &Client,
        common: &[(&str, &str)],
        nonce: &str,
    ) -> Result<String, SocialError> {
        let discovery = self.discovery(client).await?;
        let mut pairs = common.to_vec();
        pairs.push(("nonce", nonce));
        Ok(with_query(&discovery.authorization_endpoint, &pairs))
    }

    /// RFC 9207: a provider that says it sends `iss` with its answers must send its own.
    pub async fn check_issuer(&self, client: &Client, iss: Option<&str>) -> Result<(), SocialError> {
        let discovery = self.discovery(client).await?;
        match iss {
            Some(iss) if iss.trim_end_matches('/') != self.issuer => {
                Err(SocialError::Refused(format!("the answer comes from another issuer, {iss:?}")))
            }
            None if discovery.authorization_response_iss_parameter_supported => {
                Err(SocialError::Refused("the answer does not name its issuer".to_owned()))
            }
            _ => Ok(()),
        }
    }

    pub async fn complete(
        &self,
        client: &Client,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<Asserted, SocialError> {
        let discovery = self.discovery(client).await?;
        let methods = &discovery.token_endpoint_auth_methods_supported;
        // `client_secret_basic` is the default when a provider names none (Discovery §3).
        let basic = methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic");
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", client.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        let request = client.token_request(&discovery.token_endpoint, &form, basic)?;
        let (status, answer): (_, serde_json::Value) = client.json(request).await?;
        if !status.is_success() {
            return Err(error_of(status, &answer));
        }
        let TokenAnswer { id_token, access_token } = serde_json::from_value(answer)
            .map_err(|_| SocialError::Refused("the token answer could not be read".to_owned()))?;
        let id_token = id_token.ok_or_else(|| SocialError::Refused("no ID token in the token answer".to_owned()))?;
        let asserted = self.verify(client, &discovery, &id_token, nonce).await?;
        match (&asserted.email, &discovery.userinfo_endpoint, access_token) {
            // Claims asked for by scope may come from the userinfo endpoint rather than in the
            // ID token (Core §5.4); they count only for the subject the ID token proved.
            (None, Some(endpoint), Some(token)) => self.userinfo(client, endpoint, &token, asserted).await,
            _ => Ok(asserted),
        }
    }

    async fn userinfo(
        &self,
        client: &Client,
        endpoint: &str,
        token: &str,
        proven: Asserted,
    ) -> Result<Asserted, SocialError> {
        let request = client
            .get(endpoint)?
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::default())
            .map_err(|e| SocialError::Refused(e.to_string()))?;
        let (status, info): (_, serde_json::Value) = client.json(request).await?;
        if !status.is_success() {
            return Err(error_of(status, &info));
        }
        let info: UserInfo = serde_json::from_value(info)
            .map_err(|_| SocialError::Refused("the userinfo answer could not be read".to_owned()))?;
        if info.sub != proven.subject {
            return Err(SocialError::Refused("userinfo is about another subject".to_owned()));
        }
        Ok(Asserted {
            email: info.email,
            email_verified: flag(info.email_verified),
            name: proven.name.or(info.name),
            ..proven
        })
    }

    /// Verifies an ID token (OpenID Connect Core §3.1.3.7) and reads who it is about.
    async fn verify(
        &self,
        client: &Client,
        discovery: &Discovery,
        token: &str,
        nonce: &str,
    ) -> Result<Asserted, SocialError> {
        let refuse = |why: String| SocialError::Refused(format!("ID token: {why}"));
        // An unsigned token (`alg: none`) does not even parse as a header here.
        let header = jsonwebtoken::decode_header(token).map_err(|e| refuse(e.to_string()))?;
        let published = if discovery.id_token_signing_alg_values_supported.is_empty() {
            vec!["RS256".to_owned()]
        } else {
            discovery.id_token_signing_alg_values_supported.clone()
        };
        let alg_name = format!("{:?}", header.alg);
        // Only asymmetric algorithms the provider publishes: an HMAC "signed" with a public key
        // proves nothing.
        if is_symmetric(header.alg) || !published.contains(&alg_name) {
            return Err(refuse(format!("algorithm {alg_name} is not one the provider signs with")));
        }
        let jwk = self.key(client, discovery, header.kid.as_deref(), header.alg).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| refuse(format!("unusable key: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.issuer.as_str(), discovery.issuer.as_str()]);
        validation.set_audience(&[client.id.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY;
        let claims =
            jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| refuse(e.to_string()))?.claims;
        let now = platform::time::now().timestamp();
        if claims.iat > now + LEEWAY as i64 {
            return Err(refuse("issued in the future".to_owned()));
        }
        if claims.nonce.as_deref() != Some(nonce) {
            return Err(refuse("the nonce is not this sign-in's".to_owned()));
        }
        let several_audiences = claims.aud.as_array().is_some_and(|list| list.len() > 1);
        match claims.azp.as_deref() {
            Some(azp) if azp != client.id => return Err(refuse("issued to another party (azp)".to_owned())),
            None if several_audiences => return Err(refuse("several audiences and no azp".to_owned())),
            _ => {}
        }
        let email_verified = flag(claims.email_verified);
        Ok(Asserted { subject: claims.sub, email: claims.email, email_verified, name: claims.name })
    }

    /// The signing key a token names, fetching the key set again for a `kid` not seen yet.
    async fn key(
        &self,
        client: &Client,
        discovery: &Discovery,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Jwk, SocialError> {
        let age = self.keys.read().await.as_ref().map(|k| k.fetched.elapsed());
        if age.is_some_and(|age| age < KEYS_TTL)
            && let Some(found) = self.cached_key(kid, alg).await
        {
            return Ok(found);
        }
        // Not cached, or cached too long ago: fetch, unless that was just done.
        if age.is_none_or(|age| age >= self.refetch_after) {
            let request = client
                .get(&discovery.jwks_uri)?
                .body(Full::default())
                .map_err(|e| SocialError::Refused(e.to_string()))?;
            let (status, set): (_, serde_json::Value) = client.json(request).await?;
            if !status.is_success() {
                return Err(SocialError::Unavailable(format!("the key set answered {status}")));
            }
            // Keys this library cannot use (encryption keys, other curves) are skipped, not fatal.
            let keys = set
                .get("keys")
                .and_then(|k| k.as_array())
                .map(|keys| keys.iter().filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok()).collect())
                .unwrap_or_default();
            *self.keys.write().await = Some(Keys { keys, fetched: Instant::now() });
        }
        self.cached_key(kid, alg)
            .await
            .ok_or_else(|| SocialError::Refused("ID token: signed by a key the provider does not publish".to_owned()))
    }

    async fn cached_key(&self, kid: Option<&str>, alg: Algorithm) -> Option<Jwk> {
        let keys = self.keys.read().await;
        let usable: Vec<&Jwk> = keys
            .as_ref()?
            .keys
            .iter()
            .filter(|k| {
                let signing =
                    k.common.public_key_use.as_ref().is_none_or(|u| *u == jsonwebtoken::jwk::PublicKeyUse::Signature);
                let for_alg = k.common.key_algorithm.is_none_or(|a| format!("{a:?}") == format!("{alg:?}"));
                let asymmetric = !matches!(k.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_));
                signing && for_alg && asymmetric
            })
            .collect();
        match kid {
            Some(kid) => usable.into_iter().find(|k| k.common.key_id.as_deref() == Some(kid)).cloned(),
            // Without a `kid`, only a provider with a single key leaves no doubt.
            None if usable.len() == 1 => usable.first().map(|k| (*k).clone()),
            None => None,
        }
    }
}

fn is_symmetric(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

#[cfg(test)]
mod tests {
    use testkit::providers::FakeProviders;

    use super::*;

    fn client(provider: &FakeProviders) -> Client {
        Client {
            id: "client".to_owned(),
            secret: "secret".to_owned().into(),
            redirect_uri: "http://127.0.0.1:1/callback".to_owned(),
            scopes: Vec::new(),
            http: platform::http::client::https(
                Duration::from_secs(2),
                platform::http::client::Egress::trusting([provider.base()]),
            ),
            timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn keys_are_fetched_again_for_a_kid_not_seen_but_not_at_every_token() {
        let fakes = FakeProviders::start("client", "secret").await;
        let client = client(&fakes);
        let oidc = Oidc::new(fakes.issuer());
        let discovery = oidc.discovery(&client).await.unwrap();
        assert!(oidc.key(&client, &discovery, Some("fake-key"), Algorithm::EdDSA).await.is_ok());
        // The provider rotates its key: a token under the new kid makes us fetch the keys again.
        fakes.rotate_key("second-key");
        let eager = Oidc { refetch_after: Duration::ZERO, ..Oidc::new(fakes.issuer()) };
        assert!(eager.key(&client, &discovery, Some("fake-key"), Algorithm::EdDSA).await.is_err(), "withdrawn");
        assert!(eager.key(&client, &discovery, Some("second-key"), Algorithm::EdDSA).await.is_ok(), "fetched again");
        // With the default pause, a kid nobody publishes cannot make us fetch at every token.
        assert!(oidc.key(&client, &discovery, Some("second-key"), Algorithm::EdDSA).await.is_err());
        assert!(oidc.key(&client, &discovery, Some("fake-key"), Algorithm::EdDSA).await.is_ok(), "still cached");
        // A key for another algorithm than the token's is not used.
        assert!(oidc.key(&client, &discovery, Some("fake-key"), Algorithm::RS256).await.is_err());
    }
}
