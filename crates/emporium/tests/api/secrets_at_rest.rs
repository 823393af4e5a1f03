//! Secrets at rest: identity's signing keys and link secret are sealed in its database with a
//! data key that only the master key, kept outside the database, opens. Another master key is
//! refused at start with both named; the rotation command rewraps while the shop runs; a
//! database from before sealing is sealed in place with nothing lost.

use emporium::{Service, Shop};
use platform::{
    db::Db,
    secrets::{MasterKey, MasterKeyConfig, is_sealed},
    with_db,
};
use testkit::{TestDatabase, on_both_backends};
use tokio_util::sync::CancellationToken;

use crate::common::*;

on_both_backends!(secrets_are_sealed_and_another_master_key_is_refused, rotation_and_databases_from_before_sealing);

fn master_key(settings: &emporium::Settings) -> MasterKey {
    MasterKey::load(&settings.identity.secrets, Some(&settings.data_dir.join("identity.master-key"))).unwrap()
}

fn with_key(key: &str) -> MasterKeyConfig {
    MasterKeyConfig { master_key: Some(key.to_owned().into()), master_key_file: None }
}

struct Stored {
    kid: String,
    private_key: Vec<u8>,
    link_secret: Vec<u8>,
    master_key_id: String,
    wrapped: Vec<u8>,
}

async fn stored(db: &Db) -> Stored {
    let (kid, private_key): (String, Vec<u8>) = with_db!(db, |pool| sqlx::query_as(
        "SELECT kid, private_key FROM signing_keys ORDER BY created_at DESC LIMIT 1"
    )
    .fetch_one(pool)
    .await)
    .unwrap();
    let link_secret: Vec<u8> =
        with_db!(db, |pool| sqlx::query_scalar("SELECT secret FROM link_secrets").fetch_one(pool).await).unwrap();
    let (master_key_id, wrapped): (String, Vec<u8>) =
        with_db!(db, |pool| sqlx::query_as("SELECT master_key_id, wrapped FROM data_keys").fetch_one(pool).await)
            .unwrap();
    Stored { kid, private_key, link_secret, master_key_id, wrapped }
}

/// The newest signing key's id and private key (PKCS#8 DER), opened as identity opens it.
pub async fn signing_key(shop: &TestShop) -> (String, Vec<u8>) {
    let db = shop.db().await;
    let stored = stored(&db).await;
    db.close().await;
    let data = master_key(&shop.settings).unwrap(&stored.master_key_id, &stored.wrapped).unwrap();
    let der = data.open(&stored.private_key, &format!("signing_keys.private_key:{}", stored.kid)).unwrap();
    (stored.kid, der)
}

/// Starting identity on `settings` fails; the message, whole.
async fn refused(mut settings: emporium::Settings) -> String {
    settings.data_dir = testkit::temp_dir("refused");
    let data_dir = settings.data_dir.clone();
    let started = Shop::start(settings, &[Service::Identity], CancellationToken::new()).await;
    let _ = std::fs::remove_dir_all(data_dir);
    match started {
        Ok(_) => panic!("identity started with a master key that does not open its database"),
        Err(error) => format!("{error:#}"),
    }
}

async fn me(shop: &TestShop, access: &str) -> u16 {
    shop.gateway.get("/api/v1/users/me").bearer(access).send().await.status.as_u16()
}

async fn secrets_are_sealed_and_another_master_key_is_refused(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let access = token(&shop.register(&unique_email("sealed")).await);
    let master = master_key(&shop.settings);
    let database = shop.db().await;
    let row = stored(&database).await;
    database.close().await;
    assert!(is_sealed(&row.private_key) && is_sealed(&row.link_secret));
    // PKCS#8 DER is a SEQUENCE (0x30); the sealed value is not, nor does it hold the key's bytes.
    let (_, der) = signing_key(&shop).await;
    assert_eq!(der[0], 0x30);
    assert!(!row.private_key.windows(32).any(|w| w == &der[der.len() - 32..]));
    assert_eq!(row.master_key_id, master.id());

    let original = shop.settings.identity.secrets.clone();
    let (mut settings, db) = shop.release().await;
    settings.identity.secrets = with_key(&new_master_key());
    let other = master_key(&settings);
    let message = refused(settings).await;
    assert!(message.contains(master.id()) && message.contains(other.id()), "{message}");
    assert!(message.contains("rotate-master-key"), "{message}");

    // With its own key it starts, and tokens signed before are still good.
    let shop = TestShop::start_with(db, |s| s.identity.secrets = original).await;
    assert_eq!(me(&shop, &access).await, 200);
    shop.stop().await;
}

async fn rotation_and_databases_from_before_sealing(db: TestDatabase) {
    let shop = TestShop::start(db).await;
    let email = unique_email("legacy");
    let access = token(&shop.register(&email).await);
    let (kid, der) = signing_key(&shop).await;
    let database = shop.db().await;
    let row = stored(&database).await;
    let data = master_key(&shop.settings).unwrap(&row.master_key_id, &row.wrapped).unwrap();
    let link_secret = data.open(&row.link_secret, "link_secrets.secret:1").unwrap();
    database.close().await;
    let (_, db) = shop.release().await;

    // The database as a version before sealing left it: plain values, no data key.
    let database = Db::connect(&db.url, &Default::default()).await.unwrap();
    with_db!(&database, |pool| sqlx::query("UPDATE signing_keys SET private_key = $1 WHERE kid = $2")
        .bind(&der)
        .bind(&kid)
        .execute(pool)
        .await
        .map(drop))
    .unwrap();
    with_db!(&database, |pool| sqlx::query("UPDATE link_secrets SET secret = $1")
        .bind(&link_secret)
        .execute(pool)
        .await
        .map(drop))
    .unwrap();
    with_db!(&database, |pool| sqlx::query("DELETE FROM data_keys").execute(pool).await.map(drop)).unwrap();
    database.close().await;

    // A new master key seals them in place. Having been readable, they are replaced too: a new
    // key signs (the old one, sealed, still verifies its tokens) and the link secret is new.
    let second = new_master_key();
    let shop = TestShop::start_with(db, |s| s.identity.secrets = with_key(&second)).await;
    assert_eq!(me(&shop, &access).await, 200);
    let (new_kid, new_der) = signing_key(&shop).await;
    assert!(new_kid != kid && new_der != der);
    let database = shop.db().await;
    let old_key: Vec<u8> =
        with_db!(&database, |pool| sqlx::query_scalar("SELECT private_key FROM signing_keys WHERE kid = $1")
            .bind(&kid)
            .fetch_one(pool)
            .await)
        .unwrap();
    let row = stored(&database).await;
    database.close().await;
    assert!(is_sealed(&old_key) && is_sealed(&row.private_key) && is_sealed(&row.link_secret));
    let data = master_key(&shop.settings).unwrap(&row.master_key_id, &row.wrapped).unwrap();
    assert_eq!(data.open(&old_key, &format!("signing_keys.private_key:{kid}")).unwrap(), der);
    assert_ne!(data.open(&row.link_secret, "link_secrets.secret:1").unwrap(), link_secret);
    let fresh = token(&shop.login(&email, PASSWORD).await.json());
    assert_eq!(jsonwebtoken::decode_header(&fresh).unwrap().kid.as_deref(), Some(new_kid.as_str()));

    // The operator's commands make a key, then rotate to it while the shop runs; it keeps working.
    let dir = testkit::temp_dir("master-key");
    let third_file = dir.join("identity.master-key");
    let admin = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_emporium"));
        command.arg("admin").args(args).arg(&third_file).env("EMPORIUM_DATA_DIR", &dir);
        command
    };
    let unmade = admin(&["rotate-master-key", "--new-key-file"])
        .env("EMPORIUM_IDENTITY__DATABASE_URL", shop.settings.identity.database_url.clone().unwrap())
        .env("EMPORIUM_IDENTITY__SECRETS__MASTER_KEY", &second)
        .output()
        .unwrap();
    assert!(!unmade.status.success(), "a key file that does not exist yet is not made on the spot");
    assert!(admin(&["new-master-key"]).status().unwrap().success());
    let rotated = std::process::Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args(["admin", "rotate-master-key", "--new-key-file"])
        .arg(&third_file)
        .env("EMPORIUM_DATA_DIR", &dir)
        .env("EMPORIUM_IDENTITY__DATABASE_URL", shop.settings.identity.database_url.clone().unwrap())
        .env("EMPORIUM_IDENTITY__SECRETS__MASTER_KEY", &second)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&rotated.stdout).into_owned() + &String::from_utf8_lossy(&rotated.stderr);
    assert!(rotated.status.success(), "{said}");
    let third = MasterKey::load(&MasterKeyConfig { master_key_file: Some(third_file.clone()), master_key: None }, None)
        .unwrap();
    assert!(said.contains(third.id()), "{said}");
    assert_eq!(me(&shop, &access).await, 200);

    // Restarted, the old key is refused and the new one works.
    let (mut settings_after, db) = shop.release().await;
    settings_after.identity.secrets = with_key(&second);
    let message = refused(settings_after).await;
    assert!(message.contains(third.id()), "{message}");
    let shop = TestShop::start_with(db, |s| {
        s.identity.secrets = MasterKeyConfig { master_key_file: Some(third_file.clone()), master_key: None }
    })
    .await;
    assert_eq!(me(&shop, &access).await, 200);
    assert_eq!(signing_key(&shop).await.1, new_der);
    shop.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
