//! Access-token signing keys: generated on first start, stored in identity's database, published
//! as a JWKS, rotated without invalidating tokens already issued.
//!
//! The newest unretired key signs. Rotation inserts a new key and retires the others; a retired
//! key stays published until every token it may have signed has expired (the access-token
//! lifetime, plus the time a replica may take to notice the rotation, plus clock leeway).

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use jsonwebtoken::{
    EncodingKey, Header,
    jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash},
};
use platform::{
    auth::{ALGORITHM, AccessClaims, AuthConfig, Revocations, Verifier, ed25519_pkcs8},
    secrets::DataKey,
};
use rand::RngCore;
use sqlx::types::Json;
use uuid::Uuid;

use crate::{
    domain::User,
    error::IdentityError,
    secrets::private_key_place,
    store::{Store, StoredKey},
};

struct ActiveKey {
    kid: String,
    encoding: EncodingKey,
}

/// The keys this replica signs with and publishes.
pub struct KeyRing {
    active: RwLock<Arc<ActiveKey>>,
    published: RwLock<Arc<JwkSet>>,
    verifier: Arc<Verifier>,
    /// Opens the private keys as they are read.
    data_key: Arc<DataKey>,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    publish_window: Duration,
}

impl KeyRing {
    /// Loads the stored keys, generating the first one on a fresh database.
    pub async fn load(
        store: &Store,
        data_key: Arc<DataKey>,
        auth: &AuthConfig,
        revocations: Arc<Revocations>,
        access_ttl: Duration,
        reload_interval: Duration,
    ) -> Result<Self, IdentityError> {
        let publish_window = access_ttl + reload_interval + auth.leeway;
        let (active, published) = match read(store, &data_key, publish_window).await? {
            Some(keys) => keys,
            None => {
                store.insert_signing_key(&generate(&data_key)?).await?;
                // Re-read rather than use what we generated: a replica starting at the same
                // moment may have inserted too, and all must agree on the newest.
                read(store, &data_key, publish_window).await?.ok_or_else(|| {
                    IdentityError::internal(std::io::Error::other("no signing key after generating one"))
                })?
            }
        };
        let verifier = Verifier::local(auth, revocations);
        verifier.set_keys(&published);
        Ok(Self {
            active: RwLock::new(Arc::new(active)),
            published: RwLock::new(Arc::new(published)),
            verifier,
            data_key,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            access_ttl,
            publish_window,
        })
    }

    /// Picks up keys rotated by another replica or an operator.
    pub async fn reload(&self, store: &Store) -> Result<(), IdentityError> {
        if let Some((active, published)) = read(store, &self.data_key, self.publish_window).await? {
            self.verifier.set_keys(&published);
            *self.active.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(active);
            *self.published.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(published);
        }
        Ok(())
    }

    /// Signs an access token; returns it with its lifetime in seconds.
    pub fn issue(&self, user: &User, session_id: Uuid) -> Result<(String, u64), IdentityError> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner()).clone();
        let ttl = self.access_ttl.as_secs();
        let mut claims =
            AccessClaims::new(user.id, user.roles.names(), &self.issuer, &self.audience, ttl as i64, Some(session_id));
        claims.email_verified = user.email_verified;
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(active.kid.clone());
        header.typ = Some("at+jwt".to_owned());
        let token = jsonwebtoken::encode(&header, &claims, &active.encoding).map_err(IdentityError::internal)?;
        Ok((token, ttl))
    }

    /// The public keys, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Arc<JwkSet> {
        self.published.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Verifies tokens against the keys this replica publishes.
    pub fn verifier(&self) -> Arc<Verifier> {
        self.verifier.clone()
    }
}

/// Starts signing with a new key; the old ones stay published until their tokens expire.
/// Returns the new key id.
pub async fn rotate(store: &Store, ring: &KeyRing) -> Result<String, IdentityError> {
    rotate_with(store, &ring.data_key).await
}

/// [`rotate`], before there is a key ring.
pub async fn rotate_with(store: &Store, data_key: &DataKey) -> Result<String, IdentityError> {
    let key = generate(data_key)?;
    store.insert_signing_key(&key).await?;
    store.retire_signing_keys_except(&key.kid, platform::time::now()).await?;
    Ok(key.kid)
}

async fn read(
    store: &Store,
    data_key: &DataKey,
    publish_window: Duration,
) -> Result<Option<(ActiveKey, JwkSet)>, IdentityError> {
    let window = chrono::Duration::from_std(publish_window).map_err(IdentityError::internal)?;
    let keys = store.signing_keys(platform::time::now() - window).await?;
    let Some(newest) = keys.iter().find(|k| k.retired_at.is_none()) else {
        return Ok(None);
    };
    let der = data_key.open(&newest.private_key, &private_key_place(&newest.kid)).map_err(IdentityError::internal)?;
    let active = ActiveKey { kid: newest.kid.clone(), encoding: EncodingKey::from_ed_der(&der) };
    let published = JwkSet { keys: keys.iter().map(|k| k.public_jwk.0.clone()).collect() };
    Ok(Some((active, published)))
}

/// A new Ed25519 key, its private half sealed; its id is its RFC 7638 thumbprint.
fn generate(data_key: &DataKey) -> Result<StoredKey, IdentityError> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let der = ed25519_pkcs8(&seed);
    let mut jwk =
        Jwk::from_encoding_key(&EncodingKey::from_ed_der(&der), ALGORITHM).map_err(IdentityError::internal)?;
    let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(IdentityError::internal)?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let private_key = data_key.seal(&der, &private_key_place(&kid));
    Ok(StoredKey {
        kid,
        algorithm: "EdDSA".to_owned(),
        private_key,
        public_jwk: Json(jwk),
        created_at: platform::time::now(),
        retired_at: None,
    })
}
