//! Password hashing with argon2id.
//!
//! Hashing is deliberately slow and memory-hungry, so it runs on the blocking pool and at most
//! `max_concurrent` hashes run at once: a burst of logins queues instead of exhausting memory.
//! Logins for unknown emails verify against a dummy hash, so response time does not tell
//! whether an account exists.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{SaltString, rand_core::OsRng},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::{config::HashingConfig, error::IdentityError};

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The stored hash uses other parameters than the configured ones.
    pub needs_rehash: bool,
}

#[derive(Clone)]
pub struct Hasher {
    argon: Argon2<'static>,
    params: Params,
    permits: Arc<Semaphore>,
    dummy_hash: Arc<str>,
}

impl Hasher {
    pub async fn new(config: &HashingConfig) -> Result<Self, HashError> {
        let params = Params::new(config.memory_kib, config.iterations, config.parallelism, None)
            .map_err(|e| HashError(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let for_dummy = argon.clone();
        let dummy_hash = tokio::task::spawn_blocking(move || hash_with(&for_dummy, "not a real password"))
            .await
            .map_err(|e| HashError(e.to_string()))??;
        Ok(Self {
            argon,
            params,
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// The parameters new hashes use, for reports.
    pub fn describe(&self) -> String {
        format!("argon2id m={} KiB, t={}, p={}", self.params.m_cost(), self.params.t_cost(), self.params.p_cost())
    }

    pub async fn hash(&self, password: &str) -> Result<String, IdentityError> {
        let argon = self.argon.clone();
        let password = SecretString::from(password.to_owned());
        self.run(move || hash_with(&argon, password.expose_secret())).await?.map_err(IdentityError::internal)
    }

    /// Checks `password` against `stored`; with no stored hash it burns the same time on a
    /// dummy and reports no match.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<Verification, IdentityError> {
        let argon = self.argon.clone();
        let params = self.params.clone();
        let password = SecretString::from(password.to_owned());
        let (hash, real) = match stored {
            Some(hash) => (hash.to_owned(), true),
            None => (self.dummy_hash.to_string(), false),
        };
        self.run(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return Verification { matches: false, needs_rehash: false };
            };
            let matches = argon.verify_password(password.expose_secret().as_bytes(), &parsed).is_ok() && real;
            let needs_rehash = matches
                && (parsed.algorithm != Algorithm::Argon2id.ident()
                    || Params::try_from(&parsed).map(|p| !same_cost(&p, &params)).unwrap_or(true));
            Verification { matches, needs_rehash }
        })
        .await
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, IdentityError> {
        let _permit = self.permits.acquire().await.map_err(IdentityError::internal)?;
        tokio::task::spawn_blocking(work).await.map_err(IdentityError::internal)
    }
}

/// Whether two parameter sets cost the same; a parsed hash also records its output length,
/// which is not a cost.
fn same_cost(a: &Params, b: &Params) -> bool {
    (a.m_cost(), a.t_cost(), a.p_cost()) == (b.m_cost(), b.t_cost(), b.p_cost())
}

fn hash_with(argon: &Argon2<'_>, password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    argon.hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| HashError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> HashingConfig {
        HashingConfig { memory_kib: 1024, iterations: 1, parallelism: 1, max_concurrent: 2 }
    }

    #[tokio::test]
    async fn hashes_verify_and_detect_old_parameters() {
        let hasher = Hasher::new(&cheap()).await.unwrap();
        let hash = hasher.hash("correct horse battery").await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert_eq!(
            hasher.verify("correct horse battery", Some(&hash)).await.unwrap(),
            Verification { matches: true, needs_rehash: false }
        );
        assert!(!hasher.verify("wrong horse battery", Some(&hash)).await.unwrap().matches);
        assert!(!hasher.verify("not a real password", None).await.unwrap().matches, "dummy never matches");

        let stronger = Hasher::new(&HashingConfig { iterations: 2, ..cheap() }).await.unwrap();
        assert!(stronger.verify("correct horse battery", Some(&hash)).await.unwrap().needs_rehash);
    }
}
