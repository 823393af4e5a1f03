//! Identity's secrets at rest: the signing keys' private halves and the link secret are sealed
//! with the database's data key, itself wrapped by the master key (`platform::secrets`).

use platform::{
    config::Shared,
    secrets::{DataKey, MasterKey, is_sealed},
    service::StartError,
    time::now,
};
use rand::RngCore;

use crate::{Config, SERVICE, store::Store};

/// Where a signing key's private half is stored, for binding its seal.
pub fn private_key_place(kid: &str) -> String {
    format!("signing_keys.private_key:{kid}")
}

const LINK_SECRET_PLACE: &str = "link_secrets.secret:1";

/// The configured master key; for the embedded database only, the one beside it (made on first
/// start). A database elsewhere outlives any data directory (an emptyDir, a container's tmpfs),
/// so a key made there on the spot would be lost with it, and the secrets with the key.
pub fn master_key(config: &Config, shared: &Shared) -> Result<MasterKey, StartError> {
    let default_file = shared.data_dir.join(format!("{SERVICE}.master-key"));
    let default = config.database_url.is_none().then_some(default_file.as_path());
    MasterKey::load(&config.secrets, default).map_err(|e| StartError::Config(format!("identity.secrets: {e}")))
}

/// Opens the database's data key (making it on a fresh database) and the link secret, and seals
/// in place whatever was stored before secrets were sealed. Refuses a data key the master key
/// does not open, naming both keys.
pub async fn open(store: &Store, master: &MasterKey) -> Result<(DataKey, Vec<u8>), StartError> {
    let db = || StartError::dependency("sealed secrets");
    let stored = match store.data_key().await.map_err(db())? {
        Some(stored) => stored,
        None => {
            let (_, wrapped) = master.new_data_key();
            store.insert_data_key(master.id(), &wrapped, now()).await.map_err(db())?;
            // Re-read: a replica starting at the same moment may have stored its own first.
            let stored = store.data_key().await.map_err(db())?;
            stored.ok_or_else(|| StartError::Config("identity's data key vanished as it was made".to_owned()))?
        }
    };
    let key = master.unwrap(&stored.0, &stored.1).map_err(refused)?;
    // Values from before sealing were readable in every copy of the database made until now
    // (backups, dumps, replicas): they are sealed here, and also replaced, since sealing does not
    // unexpose them. A plain private key stays only to verify the tokens it signed (a new key
    // signs from now on); a plain link secret is replaced, so links already sent stop working.
    let mut exposed = false;
    for (kid, private_key) in store.stored_private_keys().await.map_err(db())? {
        if !is_sealed(&private_key) {
            let sealed = key.seal(&private_key, &private_key_place(&kid));
            store.replace_private_key(&kid, &private_key, &sealed).await.map_err(db())?;
            exposed = true;
        }
    }
    if exposed {
        crate::keys::rotate_with(store, &key).await.map_err(StartError::dependency("signing keys"))?;
        tracing::warn!("signing keys were stored unsealed: sealed them, and a new key signs from now on");
    }
    let fresh = || {
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        key.seal(&fresh, LINK_SECRET_PLACE)
    };
    let mut stored = store.stored_link_secret(&fresh()).await.map_err(db())?;
    if !is_sealed(&stored) {
        let replacement = fresh();
        store.replace_link_secret(&stored, &replacement).await.map_err(db())?;
        stored = store.stored_link_secret(&replacement).await.map_err(db())?;
        tracing::warn!("the link secret was stored unsealed: replaced it; links sent before no longer work");
    }
    let link_secret = key.open(&stored, LINK_SECRET_PLACE).map_err(refused)?;
    Ok((key, link_secret))
}

fn refused(error: platform::secrets::SecretsError) -> StartError {
    StartError::Config(format!("identity: {error}"))
}

/// Wraps the data key with `next` instead of the master key `current`.
pub async fn rotate_master_key(store: &Store, current: &MasterKey, next: &MasterKey) -> Result<(), StartError> {
    let (id, wrapped) =
        store.data_key().await.map_err(StartError::dependency("sealed secrets"))?.ok_or_else(|| {
            StartError::Config("identity's database has no data key yet: start identity once".to_owned())
        })?;
    let rewrapped = current.rewrap(&id, &wrapped, next).map_err(refused)?;
    if !store
        .rewrap_data_key(&id, next.id(), &rewrapped, now())
        .await
        .map_err(StartError::dependency("sealed secrets"))?
    {
        return Err(StartError::Config("the data key was rewrapped by someone else meanwhile; try again".to_owned()));
    }
    Ok(())
}
