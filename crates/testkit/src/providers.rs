//! Sign-in providers that cannot run here, spoken exactly as documented, on a loopback port:
//!
//! - GitHub: `GET /login/oauth/authorize`, `POST /login/oauth/access_token` (an error answer
//!   is 200 with an `error` member, as GitHub does), `GET /user`, `GET /user/emails`;
//! - Facebook: `GET /dialog/oauth`, `POST /oauth/access_token`, `GET /me?fields=…` with the
//!   `appsecret_proof` checked;
//! - an OpenID Connect provider that signs ID tokens the way a test asks, including every way
//!   a forged or misdirected token can look (a certified provider never issues those).
//!
//! Each authorization request is approved at once for the account the test set (or declined),
//! and the code it issues is bound to the redirect URI and the PKCE challenge, as a real
//! provider binds them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The person who signs in at a fake provider.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub name: String,
    /// `(email, primary, verified)`, as GitHub lists them; Facebook and OIDC use the first.
    pub emails: Vec<(String, bool, bool)>,
    /// GitHub's public profile email.
    pub public_email: Option<String>,
    /// GitHub: `GET /user/emails` is refused (the token lacks `user:email`).
    pub hide_emails: bool,
}

impl Account {
    pub fn new(id: &str, email: Option<(&str, bool)>) -> Self {
        Self {
            id: id.to_owned(),
            name: format!("Test {id}"),
            emails: email.map(|(e, verified)| vec![(e.to_owned(), true, verified)]).unwrap_or_default(),
            public_email: None,
            hide_emails: false,
        }
    }
}

/// How the fake OpenID Connect provider makes its next ID token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdToken {
    Good,
    /// `alg: none`, no signature.
    Unsigned,
    /// HS256 with the provider's public key as the secret (the key-confusion attack).
    HmacWithPublicKey,
    /// Signed by a key the provider does not publish, under the published `kid`.
    OtherKey,
    Expired,
    OtherAudience,
    WrongNonce,
    OtherIssuer,
    /// Two audiences and no `azp`.
    SeveralAudiences,
    /// Issued to another party (`azp`).
    OtherParty,
    /// Issued an hour from now.
    FromTheFuture,
}

struct Issued {
    account: Account,
    redirect_uri: String,
    challenge: Option<String>,
    nonce: Option<String>,
}

struct Fake {
    base: String,
    client_id: String,
    client_secret: String,
    account: Mutex<Option<Account>>,
    id_token: Mutex<IdToken>,
    codes: Mutex<HashMap<String, Issued>>,
    tokens: Mutex<HashMap<String, Account>>,
    /// The provider's Ed25519 key (it changes when the test rotates it) and another it does not
    /// publish.
    key: Mutex<(Vec<u8>, Jwk)>,
    other_key: Vec<u8>,
    /// Members that replace the discovery document's own (endpoints a hostile document names).
    discovery_overrides: Mutex<Value>,
}

/// A running set of fake providers; it stops when dropped.
pub struct FakeProviders {
    fake: Arc<Fake>,
    _server: tokio::task::JoinHandle<()>,
}

fn signing_key(kid: &str) -> (Vec<u8>, Jwk) {
    let der = ed25519();
    let mut jwk = Jwk::from_encoding_key(&EncodingKey::from_ed_der(&der), Algorithm::EdDSA).expect("a JWK");
    jwk.common.key_id = Some(kid.to_owned());
    (der, jwk)
}

fn random() -> String {
    let mut bytes = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn ed25519() -> Vec<u8> {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    platform::auth::ed25519_pkcs8(&seed)
}

impl FakeProviders {
    /// Starts them for one client; every endpoint checks its credentials.
    pub async fn start(client_id: &str, client_secret: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        let fake = Arc::new(Fake {
            base,
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            account: Mutex::new(None),
            id_token: Mutex::new(IdToken::Good),
            codes: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            key: Mutex::new(signing_key("fake-key")),
            other_key: ed25519(),
            discovery_overrides: Mutex::new(json!({})),
        });
        let app = Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(github_token))
            .route("/user", get(github_user))
            .route("/user/emails", get(github_emails))
            .route("/dialog/oauth", get(authorize))
            .route("/oauth/access_token", post(facebook_token))
            .route("/me", get(facebook_me))
            .route("/oidc/.well-known/openid-configuration", get(discovery))
            .route("/oidc/authorize", get(authorize))
            .route("/oidc/token", post(oidc_token))
            .route("/oidc/jwks", get(jwks))
            .with_state(fake.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { fake, _server: server }
    }

    pub fn base(&self) -> &str {
        &self.fake.base
    }

    /// The OpenID Connect issuer.
    pub fn issuer(&self) -> String {
        format!("{}/oidc", self.fake.base)
    }

    /// Who signs in next; `None`: the next sign-in is declined (`access_denied`).
    pub fn sign_in_as(&self, account: Option<Account>) {
        *self.fake.account.lock().expect("account") = account;
    }

    /// Replaces the OpenID Connect provider's signing key with a new one under a new `kid`: only
    /// the new one is published from now on.
    pub fn rotate_key(&self, kid: &str) {
        *self.fake.key.lock().expect("key") = signing_key(kid);
    }

    pub fn next_id_token(&self, kind: IdToken) {
        *self.fake.id_token.lock().expect("id token") = kind;
    }

    /// From now on the discovery document names these members instead of its own (a document
    /// that sends the shop's requests somewhere else).
    pub fn discovery_names(&self, overrides: Value) {
        *self.fake.discovery_overrides.lock().expect("overrides") = overrides;
    }
}

async fn authorize(State(fake): State<Arc<Fake>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let (Some(redirect_uri), Some(state)) = (query.get("redirect_uri"), query.get("state")) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri and state are required").into_response();
    };
    if query.get("client_id") != Some(&fake.client_id) {
        return (StatusCode::BAD_REQUEST, "unknown client").into_response();
    }
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let Some(account) = fake.account.lock().expect("account").clone() else {
        let target = format!("{redirect_uri}{separator}error=access_denied&error_description=declined&state={state}");
        return Redirect::to(&target).into_response();
    };
    let code = random();
    let issued = Issued {
        account,
        redirect_uri: redirect_uri.clone(),
        challenge: query.get("code_challenge").cloned(),
        nonce: query.get("nonce").cloned(),
    };
    fake.codes.lock().expect("codes").insert(code.clone(), issued);
    let state = form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>();
    Redirect::to(&format!("{redirect_uri}{separator}code={code}&state={state}")).into_response()
}

/// Takes a code once, if it was issued to this client for this redirect and verifier.
fn redeem(fake: &Fake, form: &HashMap<String, String>, client_id: &str, client_secret: &str) -> Option<Issued> {
    if client_id != fake.client_id || client_secret != fake.client_secret {
        return None;
    }
    let issued = fake.codes.lock().expect("codes").remove(form.get("code")?)?;
    if form.get("redirect_uri") != Some(&issued.redirect_uri) {
        return None;
    }
    // PKCE is required, as Facebook and GitHub apps can require it: no challenge, no token.
    let verifier = form.get("code_verifier")?;
    (URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == *issued.challenge.as_ref()?).then_some(issued)
}

/// A form body, as a token endpoint receives it.
fn form(body: &Bytes) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::to_owned)
}

fn account_of(fake: &Fake, headers: &HeaderMap) -> Option<Account> {
    fake.tokens.lock().expect("tokens").get(&bearer(headers)?).cloned()
}

fn issue_token(fake: &Fake, account: Account) -> String {
    let token = format!("fake_{}", random());
    fake.tokens.lock().expect("tokens").insert(token.clone(), account);
    token
}

async fn github_token(State(fake): State<Arc<Fake>>, body: Bytes) -> Json<Value> {
    let form = form(&body);
    let id = form.get("client_id").cloned().unwrap_or_default();
    let secret = form.get("client_secret").cloned().unwrap_or_default();
    match redeem(&fake, &form, &id, &secret) {
        Some(issued) => Json(json!({
            "access_token": issue_token(&fake, issued.account),
            "token_type": "bearer",
            "scope": "read:user,user:email",
        })),
        None => Json(json!({
            "error": "bad_verification_code",
            "error_description": "The code passed is incorrect or expired.",
        })),
    }
}

async fn github_user(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    if !headers.contains_key(header::USER_AGENT) {
        return (StatusCode::FORBIDDEN, Json(json!({"message": "a User-Agent is required"}))).into_response();
    }
    let Some(account) = account_of(&fake, &headers) else {
        return (StatusCode::UNAUTHORIZED, Json(json!({"message": "Bad credentials"}))).into_response();
    };
    let id: u64 = account.id.parse().unwrap_or(4242);
    Json(json!({"id": id, "login": format!("login-{}", account.id), "name": account.name, "email": account.public_email}))
        .into_response()
}

async fn github_emails(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    let Some(account) = account_of(&fake, &headers) else {
        return (StatusCode::UNAUTHORIZED, Json(json!({"message": "Bad credentials"}))).into_response();
    };
    if account.hide_emails {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response();
    }
    let emails: Vec<Value> = account
        .emails
        .iter()
        .map(|(email, primary, verified)| {
            json!({"email": email, "primary": primary, "verified": verified, "visibility": if *primary { "private" } else { "public" }})
        })
        .collect();
    Json(Value::Array(emails)).into_response()
}

async fn facebook_token(State(fake): State<Arc<Fake>>, body: Bytes) -> Response {
    let form = form(&body);
    let id = form.get("client_id").cloned().unwrap_or_default();
    let secret = form.get("client_secret").cloned().unwrap_or_default();
    match redeem(&fake, &form, &id, &secret) {
        Some(issued) => Json(json!({
            "access_token": issue_token(&fake, issued.account),
            "token_type": "bearer",
            "expires_in": 5_183_944,
        }))
        .into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "Invalid verification code format.", "type": "OAuthException", "code": 100}})),
        )
            .into_response(),
    }
}

async fn facebook_me(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let refuse = |message: &str| {
        (StatusCode::BAD_REQUEST, Json(json!({"error": {"message": message, "type": "OAuthException", "code": 190}})))
            .into_response()
    };
    let (Some(token), Some(account)) = (bearer(&headers), account_of(&fake, &headers)) else {
        return refuse("Invalid OAuth access token.");
    };
    use hmac::Mac;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(fake.client_secret.as_bytes()).expect("an HMAC key");
    mac.update(token.as_bytes());
    if query.get("appsecret_proof") != Some(&hex::encode(mac.finalize().into_bytes())) {
        return refuse("Invalid appsecret_proof provided in the API argument");
    }
    let mut me = json!({"id": account.id, "name": account.name});
    if let Some((email, _, _)) = account.emails.first() {
        me["email"] = json!(email);
    }
    Json(me).into_response()
}

async fn discovery(State(fake): State<Arc<Fake>>) -> Json<Value> {
    let issuer = format!("{}/oidc", fake.base);
    let mut document = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
    });
    if let (Some(document), Some(overrides)) =
        (document.as_object_mut(), fake.discovery_overrides.lock().expect("overrides").as_object())
    {
        document.extend(overrides.clone());
    }
    Json(document)
}

async fn jwks(State(fake): State<Arc<Fake>>) -> Json<Value> {
    Json(json!({"keys": [fake.key.lock().expect("key").1]}))
}

async fn oidc_token(State(fake): State<Arc<Fake>>, body: Bytes) -> Response {
    let form = form(&body);
    let id = form.get("client_id").cloned().unwrap_or_default();
    let secret = form.get("client_secret").cloned().unwrap_or_default();
    let Some(issued) = redeem(&fake, &form, &id, &secret) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response();
    };
    let kind = *fake.id_token.lock().expect("id token");
    let issuer = format!("{}/oidc", fake.base);
    let now = platform::time::now().timestamp();
    let (email, verified) = issued.account.emails.first().map_or((None, false), |(e, _, v)| (Some(e.clone()), *v));
    let mut claims = json!({
        "iss": if kind == IdToken::OtherIssuer { format!("{}/elsewhere", fake.base) } else { issuer },
        "sub": issued.account.id,
        "aud": match kind {
            IdToken::OtherAudience => json!("someone-else"),
            IdToken::SeveralAudiences => json!([fake.client_id, "someone-else"]),
            _ => json!(fake.client_id),
        },
        "iat": if kind == IdToken::FromTheFuture { now + 3600 } else { now },
        "exp": if kind == IdToken::Expired { now - 600 } else { now + 300 },
        "nonce": if kind == IdToken::WrongNonce { Some("not-this-sign-ins".to_owned()) } else { issued.nonce },
        "name": issued.account.name,
    });
    if kind == IdToken::OtherParty {
        claims["azp"] = json!("someone-else");
    }
    if let Some(email) = email {
        claims["email"] = json!(email);
        claims["email_verified"] = json!(verified);
    }
    let (der, jwk) = fake.key.lock().expect("key").clone();
    let kid = jwk.common.key_id.clone();
    let header = |alg| Header { kid: kid.clone(), ..Header::new(alg) };
    let id_token = match kind {
        IdToken::Unsigned => {
            let head = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": "fake-key"}).to_string());
            format!("{head}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
        }
        IdToken::HmacWithPublicKey => {
            let public = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(okp) => okp.x.clone(),
                _ => unreachable!("an Ed25519 key"),
            };
            jsonwebtoken::encode(&header(Algorithm::HS256), &claims, &EncodingKey::from_secret(public.as_bytes()))
                .expect("an HS256 token")
        }
        IdToken::OtherKey => {
            jsonwebtoken::encode(&header(Algorithm::EdDSA), &claims, &EncodingKey::from_ed_der(&fake.other_key))
                .expect("a token")
        }
        _ => {
            jsonwebtoken::encode(&header(Algorithm::EdDSA), &claims, &EncodingKey::from_ed_der(&der)).expect("a token")
        }
    };
    Json(json!({
        "access_token": issue_token(&fake, issued.account),
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}
