//! Secrets at rest, by envelope encryption.
//!
//! A service's database holds one random data key, stored only wrapped (AES-256-GCM) by a master
//! key that never enters the database: from the environment, a file (a Kubernetes Secret), or,
//! when neither is configured, a file created beside the embedded databases. Secrets in rows are
//! sealed with the data key, bound to where they are stored (the AAD names the table and row),
//! so a sealed value copied into another row does not open.
//!
//! A copy of the database (a backup, a dump, a read replica) thus reveals no secret without the
//! master key; rotating the master key rewraps one value and leaves every row alone.

use std::path::{Path, PathBuf};

use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Where the master key comes from. With neither set, it is a file beside the embedded databases
/// (`<data_dir>/<service>.master-key`), created on first start: fine for one process, but
/// replicas must all be given the same key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MasterKeyConfig {
    /// A file holding the key: 32 random bytes, base64 (`emporium admin new-master-key FILE`).
    pub master_key_file: Option<PathBuf>,
    /// The key itself, base64; prefer the file (environments leak into process listings).
    #[serde(deserialize_with = "crate::config::lenient_secret")]
    pub master_key: Option<SecretString>,
}

/// Sealed values start with this, which no plain value we store does (PKCS#8 DER starts with
/// 0x30, link secrets were raw random bytes of exactly 32): it lets a database from before
/// sealing be sealed in place.
const SEALED: &[u8; 4] = b"\x00es1";
/// Values sealed with a key of their own ([`MasterKey::seal`]) start with this.
const SEALED_DERIVED: &[u8; 4] = b"\x00es2";
const SALT_LEN: usize = 16;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{0}")]
    Key(String),
    /// The stored data key does not open with the master key given.
    #[error(
        "the database's secrets are sealed with master key {stored}, but the configured master key is {configured}: \
         configure the key they were sealed with ({where_}), or rotate to a new one with `emporium admin rotate-master-key`"
    )]
    WrongMasterKey { stored: String, configured: String, where_: String },
    #[error("a sealed secret ({0}) does not open: it was altered or moved")]
    Tampered(String),
}

/// The key that wraps a database's data key.
pub struct MasterKey {
    key: LessSafeKey,
    /// For keys derived per sealed value ([`MasterKey::seal`]).
    derive: ring::hkdf::Prk,
    id: String,
    origin: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).field("origin", &self.origin).finish_non_exhaustive()
    }
}

impl MasterKey {
    /// The configured master key; without one, the key in `default_file` (created when absent)
    /// if there is a default, else an error. Both a key and a key file configured is an error:
    /// which one counts must not be a guess.
    pub fn load(config: &MasterKeyConfig, default_file: Option<&Path>) -> Result<Self, SecretsError> {
        let file = match (&config.master_key, &config.master_key_file, default_file) {
            (Some(_), Some(_), _) => {
                return Err(SecretsError::Key("set master_key or master_key_file, not both".to_owned()));
            }
            (Some(key), None, _) => return Self::parse(key.expose_secret(), "the configured key".to_owned()),
            (None, Some(file), _) => file.as_path(),
            (None, None, Some(default)) => {
                if !default.exists() {
                    write_new_key(default).or_else(|error| if default.exists() { Ok(()) } else { Err(error) })?;
                }
                default
            }
            (None, None, None) => {
                return Err(SecretsError::Key(
                    "no master key is configured: set master_key_file (`emporium admin new-master-key FILE` makes one)"
                        .to_owned(),
                ));
            }
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| SecretsError::Key(format!("cannot read the master key file {}: {e}", file.display())))?;
        Self::parse(text.trim(), format!("the key file {}", file.display()))
    }

    fn parse(text: &str, origin: String) -> Result<Self, SecretsError> {
        let bytes = STANDARD
            .decode(text.trim())
            .ok()
            .filter(|b| b.len() == KEY_LEN)
            .ok_or_else(|| SecretsError::Key(format!("{origin} is not 32 bytes in base64")))?;
        let id = hex::encode(&ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()[..8]);
        let derive = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"emporium sealed values").extract(&bytes);
        Ok(Self { key: aead_key(&bytes), derive, id, origin })
    }

    /// A fingerprint that names the key without revealing it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A fresh data key, and the same wrapped by this master key for storing.
    pub fn new_data_key(&self) -> (DataKey, Vec<u8>) {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let wrapped = seal_with(&self.key, &bytes, b"data-key");
        (DataKey { key: aead_key(&bytes) }, wrapped)
    }

    /// Seals a value kept nowhere but with its owner (the storefront's session cookies), bound
    /// to `place`, its purpose. Such values are sealed by the billion over a key's life, far past
    /// the 2^32 random nonces one AES-GCM key bears: each is sealed with a key of its own,
    /// derived (HKDF-SHA256) from this key and 128 random bits kept beside it.
    pub fn seal(&self, plain: &[u8], place: &str) -> Vec<u8> {
        let mut salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let mut body = plain.to_vec();
        self.derived(&salt, place)
            .seal_in_place_append_tag(Nonce::assume_unique_for_key([0; NONCE_LEN]), Aad::from(place), &mut body)
            .expect("sealing fails only for inputs of gigabytes");
        [SEALED_DERIVED.as_slice(), &salt, &body].concat()
    }

    /// Opens what [`MasterKey::seal`] sealed for the same `place`.
    pub fn open(&self, sealed: &[u8], place: &str) -> Result<Vec<u8>, SecretsError> {
        let tampered = || SecretsError::Tampered(place.to_owned());
        let rest = sealed.strip_prefix(SEALED_DERIVED).ok_or_else(tampered)?;
        if rest.len() < SALT_LEN {
            return Err(tampered());
        }
        let (salt, body) = rest.split_at(SALT_LEN);
        let mut body = body.to_vec();
        let plain = self
            .derived(salt, place)
            .open_in_place(Nonce::assume_unique_for_key([0; NONCE_LEN]), Aad::from(place), &mut body)
            .map_err(|_| tampered())?;
        Ok(plain.to_vec())
    }

    /// The key of one sealed value: used once, so its nonce may be fixed.
    fn derived(&self, salt: &[u8], place: &str) -> LessSafeKey {
        let info = [salt, place.as_bytes()];
        let okm = self.derive.expand(&info, &AES_256_GCM).expect("AES-256's key length is within HKDF's bounds");
        LessSafeKey::new(UnboundKey::from(okm))
    }

    /// Opens a stored data key, wrapped by the master key `stored_id`.
    pub fn unwrap(&self, stored_id: &str, wrapped: &[u8]) -> Result<DataKey, SecretsError> {
        Ok(DataKey { key: aead_key(&self.unwrapped_bytes(stored_id, wrapped)?) })
    }

    /// The stored data key wrapped again, by `next` (rotation).
    pub fn rewrap(&self, stored_id: &str, wrapped: &[u8], next: &MasterKey) -> Result<Vec<u8>, SecretsError> {
        Ok(seal_with(&next.key, &self.unwrapped_bytes(stored_id, wrapped)?, b"data-key"))
    }

    fn unwrapped_bytes(&self, stored_id: &str, wrapped: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let wrong = || SecretsError::WrongMasterKey {
            stored: stored_id.to_owned(),
            configured: self.id.clone(),
            where_: format!("now {}", self.origin),
        };
        if stored_id != self.id {
            return Err(wrong());
        }
        open_with(&self.key, wrapped, b"data-key").ok_or_else(wrong)
    }
}

/// Writes a new random master key to `file`, readable by its owner only. The file appears whole
/// or not at all (written aside, then linked into place), and an existing one is never replaced:
/// two processes making the default key at once both end up reading the same one.
pub fn write_new_key(file: &Path) -> Result<(), SecretsError> {
    let mut bytes = [0u8; KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let text = format!("{}\n", STANDARD.encode(bytes));
    let failed =
        |e: std::io::Error| SecretsError::Key(format!("cannot write the master key file {}: {e}", file.display()));
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(failed)?;
    let aside = dir.join(format!(".master-key-{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(&aside)?;
        std::io::Write::write_all(&mut out, text.as_bytes())?;
        out.sync_all()?;
        std::fs::hard_link(&aside, file)
    })();
    let _ = std::fs::remove_file(&aside);
    written.map_err(failed)
}

/// The key that seals a database's secrets.
pub struct DataKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// Seals `plain`, bound to `place` (the table and row it is stored in).
    pub fn seal(&self, plain: &[u8], place: &str) -> Vec<u8> {
        seal_with(&self.key, plain, place.as_bytes())
    }

    /// Opens what [`DataKey::seal`] sealed for the same `place`.
    pub fn open(&self, sealed: &[u8], place: &str) -> Result<Vec<u8>, SecretsError> {
        open_with(&self.key, sealed, place.as_bytes()).ok_or_else(|| SecretsError::Tampered(place.to_owned()))
    }
}

/// Whether `stored` is sealed (rather than a value stored before secrets were sealed).
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(SEALED)
}

fn aead_key(bytes: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes make an AES-256 key"))
}

/// `SEALED ‖ nonce ‖ ciphertext ‖ tag`. Random 96-bit nonces are safe here: a key seals a
/// handful of values in its life, far below the 2^32 where collisions start to matter.
fn seal_with(key: &LessSafeKey, plain: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut body = plain.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
        .expect("sealing fails only for inputs of gigabytes");
    [SEALED.as_slice(), &nonce, &body].concat()
}

fn open_with(key: &LessSafeKey, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let rest = sealed.strip_prefix(SEALED)?;
    if rest.len() < NONCE_LEN {
        return None;
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut body = body.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut body).ok()?;
    Some(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Self {
            Self(std::env::temp_dir().join(format!("emporium-secrets-{}", uuid::Uuid::new_v4().simple())))
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn key_file(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        write_new_key(&path).unwrap();
        path
    }

    #[test]
    fn values_sealed_with_a_key_of_their_own_open_only_in_their_place() {
        let dir = Dir::new();
        let master = MasterKey::load(&MasterKeyConfig::default(), Some(&key_file(dir.path(), "a"))).unwrap();
        let other = MasterKey::load(&MasterKeyConfig::default(), Some(&key_file(dir.path(), "b"))).unwrap();
        let (one, two) = (master.seal(b"session", "cookie"), master.seal(b"session", "cookie"));
        assert_ne!(one, two, "each seal has a salt, and so a key, of its own");
        assert!(!one.windows(7).any(|w| w == b"session"));
        assert_eq!(master.open(&one, "cookie").unwrap(), b"session");
        assert_eq!(master.open(&two, "cookie").unwrap(), b"session");
        assert!(master.open(&one, "another place").is_err());
        assert!(other.open(&one, "cookie").is_err());
        let mut flipped = one.clone();
        flipped[6] ^= 1;
        assert!(master.open(&flipped, "cookie").is_err(), "a salt changed is another key");
        assert!(master.open(&one[..10], "cookie").is_err());
        let (data, _) = master.new_data_key();
        assert!(master.open(&data.seal(b"session", "cookie"), "cookie").is_err(), "not a data key's seal");
    }

    #[test]
    fn sealed_values_open_only_in_their_place_and_with_their_key() {
        let dir = Dir::new();
        let master =
            MasterKey::load(&MasterKeyConfig::default(), Some(&dir.path().join("identity.master-key"))).unwrap();
        let (data, wrapped) = master.new_data_key();
        let sealed = data.seal(b"private key", "signing_keys:k1");
        assert!(is_sealed(&sealed) && !sealed.windows(11).any(|w| w == b"private key"));
        assert_eq!(data.open(&sealed, "signing_keys:k1").unwrap(), b"private key");
        assert!(matches!(data.open(&sealed, "signing_keys:k2"), Err(SecretsError::Tampered(_))));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(data.open(&flipped, "signing_keys:k1").is_err());

        // The same file gives the same key; the stored data key opens and seals alike.
        let again =
            MasterKey::load(&MasterKeyConfig::default(), Some(&dir.path().join("identity.master-key"))).unwrap();
        assert_eq!(again.id(), master.id());
        let reopened = again.unwrap(master.id(), &wrapped).unwrap();
        assert_eq!(reopened.open(&sealed, "signing_keys:k1").unwrap(), b"private key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("identity.master-key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn another_master_key_is_refused_by_name_and_rotation_rewraps() {
        let dir = Dir::new();
        let config = |file: PathBuf| MasterKeyConfig { master_key_file: Some(file), master_key: None };
        let first = MasterKey::load(&config(key_file(dir.path(), "first")), None).unwrap();
        let second = MasterKey::load(&config(key_file(dir.path(), "second")), None).unwrap();
        let (data, wrapped) = first.new_data_key();
        let sealed = data.seal(b"secret", "link_secrets:1");

        let refused = second.unwrap(first.id(), &wrapped).unwrap_err().to_string();
        assert!(refused.contains(first.id()) && refused.contains(second.id()), "{refused}");
        assert!(refused.contains("second"), "names where the configured key came from: {refused}");
        // A forged id does not help: the wrapped key still has to open.
        assert!(second.unwrap(second.id(), &wrapped).is_err());

        let rewrapped = first.rewrap(first.id(), &wrapped, &second).unwrap();
        let opened = second.unwrap(second.id(), &rewrapped).unwrap();
        assert_eq!(opened.open(&sealed, "link_secrets:1").unwrap(), b"secret");
        assert!(first.unwrap(first.id(), &rewrapped).is_err());
    }

    #[test]
    fn a_configured_key_must_be_32_bytes_of_base64_and_a_named_file_must_exist() {
        let short = MasterKeyConfig { master_key: Some("c2hvcnQ=".to_owned().into()), master_key_file: None };
        assert!(MasterKey::load(&short, None).unwrap_err().to_string().contains("not 32 bytes"));
        let missing = MasterKeyConfig { master_key_file: Some("/nonexistent/master-key".into()), master_key: None };
        let error = MasterKey::load(&missing, None).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/master-key"), "{error}");
        let good = MasterKeyConfig { master_key: Some(STANDARD.encode([7u8; 32]).into()), master_key_file: None };
        assert!(MasterKey::load(&good, None).is_ok());
        let both = MasterKeyConfig { master_key_file: Some("/etc/key".into()), ..good };
        assert!(MasterKey::load(&both, None).unwrap_err().to_string().contains("not both"));
        let error = MasterKey::load(&MasterKeyConfig::default(), None).unwrap_err().to_string();
        assert!(error.contains("no master key is configured"), "{error}");
        // An existing key file is never replaced.
        let dir = Dir::new();
        let file = key_file(dir.path(), "kept");
        let kept = std::fs::read(&file).unwrap();
        assert!(write_new_key(&file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), kept);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing left aside");
    }
}
