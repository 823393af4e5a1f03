//! Starting a shop for a test, and the little helpers tests share.

use std::path::PathBuf;

use emporium::{Service, Settings, Shop};
use platform::{db::Db, with_db};
use serde_json::{Value, json};
use testkit::{TestClient, TestDatabase, TestResponse};
use tokio_util::sync::CancellationToken;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const PASSWORD: &str = "correct horse battery";

/// Settings for a test: everything on port 0, the test's database, cheap password hashing
/// (the cost factor is configuration; the algorithm is the production one).
pub fn test_settings(db: &TestDatabase, data_dir: PathBuf) -> Settings {
    let mut settings = Settings { data_dir, ..Settings::default() };
    settings.identity.listen = "127.0.0.1:0".parse().unwrap();
    settings.identity.grpc_listen = "127.0.0.1:0".parse().unwrap();
    settings.gateway.listen = "127.0.0.1:0".parse().unwrap();
    settings.identity.database_url = Some(db.url.clone());
    settings.identity.pool.max_connections = Some(8);
    settings.identity.password_hashing.memory_kib = 1024;
    settings.identity.password_hashing.iterations = 1;
    settings.catalog.listen = "127.0.0.1:0".parse().unwrap();
    settings.catalog.grpc_listen = "127.0.0.1:0".parse().unwrap();
    settings.catalog.pool.max_connections = Some(8);
    settings.catalog.demo_catalog = Some(false);
    settings.catalog.sweep_interval = std::time::Duration::from_millis(200);
    settings.cart.listen = "127.0.0.1:0".parse().unwrap();
    settings.cart.grpc_listen = "127.0.0.1:0".parse().unwrap();
    // The deadline is for an optimised catalog; an unoptimised one sharing two cores with a
    // hundred other tests took longer than 500 ms for its first answer of a burst.
    settings.cart.catalog_timeout = std::time::Duration::from_secs(3);
    settings.orders.listen = "127.0.0.1:0".parse().unwrap();
    settings.notifications.listen = "127.0.0.1:0".parse().unwrap();
    settings.storefront.listen = "127.0.0.1:0".parse().unwrap();
    settings.orders.sweep_interval = std::time::Duration::from_millis(200);
    settings.orders.rpc_timeout = std::time::Duration::from_secs(1);
    settings.orders.payments.timeout = std::time::Duration::from_secs(2);
    settings.orders.saga_lease = std::time::Duration::from_secs(3);
    // Tests send far more than a shopper from one address; the limits' own tests set tight ones.
    let plenty = gateway::limits::Quota { requests: 60_000, per: std::time::Duration::from_secs(60) };
    let limits = &mut settings.gateway.rate_limits;
    (limits.auth, limits.write, limits.read) = (plenty, plenty, plenty);
    // Bursts of a few hundred requests to an unoptimised shop wait their turn rather than be
    // shed; admission's own tests set tight limits.
    for upstream in settings.gateway.upstreams.values_mut() {
        upstream.queue_timeout = std::time::Duration::from_secs(5);
    }
    settings.identity.bootstrap_admin =
        Some(identity::BootstrapAdmin { email: ADMIN_EMAIL.to_owned(), password: ADMIN_PASSWORD.to_owned().into() });
    // A shop started again on the same database gets the same master key, wherever its data
    // directory is.
    settings.identity.secrets.master_key = Some(new_master_key().into());
    settings
}

/// A random master key, as `emporium admin new-master-key` writes it.
pub fn new_master_key() -> String {
    use base64::Engine;
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

pub struct TestShop {
    pub gateway: TestClient,
    pub identity: TestClient,
    pub catalog: TestClient,
    pub cart: TestClient,
    pub orders: TestClient,
    pub notifications: TestClient,
    /// Identity's gRPC service for notifications.
    pub identity_grpc: String,
    /// The catalog's gRPC inventory service.
    pub catalog_grpc: String,
    /// The cart's gRPC service for orders.
    pub cart_grpc: String,
    pub settings: Settings,
    shop: Option<Shop>,
    stop: CancellationToken,
    data_dir: PathBuf,
    db: TestDatabase,
    /// The catalog's own database, on the same backend as identity's.
    catalog_db: Option<TestDatabase>,
    /// The orders service's own database, on the same backend as identity's.
    orders_db: Option<TestDatabase>,
    /// The notifications service's own database, on the same backend as identity's (held so
    /// that it is dropped with the shop).
    _notifications_db: Option<TestDatabase>,
}

impl TestShop {
    pub async fn start(db: TestDatabase) -> Self {
        Self::start_with(db, |_| {}).await
    }

    pub async fn start_with(db: TestDatabase, configure: impl FnOnce(&mut Settings)) -> Self {
        platform::metrics::install();
        let data_dir = testkit::temp_dir("shop");
        let mut settings = test_settings(&db, data_dir.clone());
        let catalog_db = TestDatabase::create(db.backend).await;
        settings.catalog.database_url = catalog_db.as_ref().map(|d| d.url.clone());
        let orders_db = TestDatabase::create(db.backend).await;
        settings.orders.database_url = orders_db.as_ref().map(|d| d.url.clone());
        let notifications_db = TestDatabase::create(db.backend).await;
        settings.notifications.database_url = notifications_db.as_ref().map(|d| d.url.clone());
        configure(&mut settings);
        let stop = CancellationToken::new();
        let shop = Shop::start(settings.clone(), &Service::ALL, stop.clone()).await.expect("shop starts");
        let gateway = TestClient::new(format!("http://{}", shop.gateway.unwrap()));
        let identity = TestClient::new(format!("http://{}", shop.identity.unwrap()));
        let catalog = TestClient::new(format!("http://{}", shop.catalog.unwrap()));
        let cart = TestClient::new(format!("http://{}", shop.cart.unwrap()));
        let orders = TestClient::new(format!("http://{}", shop.orders.unwrap()));
        let notifications = TestClient::new(format!("http://{}", shop.notifications.unwrap()));
        let identity_grpc = format!("http://{}", shop.identity_grpc.unwrap());
        let catalog_grpc = format!("http://{}", shop.catalog_grpc.unwrap());
        let cart_grpc = format!("http://{}", shop.cart_grpc.unwrap());
        Self {
            gateway,
            identity,
            catalog,
            cart,
            orders,
            notifications,
            identity_grpc,
            catalog_grpc,
            cart_grpc,
            settings,
            shop: Some(shop),
            stop,
            data_dir,
            db,
            catalog_db,
            orders_db,
            _notifications_db: notifications_db,
        }
    }

    /// A direct connection to identity's database, to check what was (not) stored.
    pub async fn db(&self) -> Db {
        Db::connect(&self.db.url, &Default::default()).await.expect("test connects to the database")
    }

    /// A direct connection to the catalog's database.
    pub async fn catalog_db(&self) -> Db {
        let url = self.catalog_db.as_ref().expect("the catalog has a test database").url.clone();
        Db::connect(&url, &Default::default()).await.expect("test connects to the catalog database")
    }

    /// A direct connection to the orders service's database.
    pub async fn orders_db(&self) -> Db {
        let url = self.orders_db.as_ref().expect("orders has a test database").url.clone();
        Db::connect(&url, &Default::default()).await.expect("test connects to the orders database")
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        let db = self.db().await;
        let n = with_db!(&db, |pool| sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await).expect("count");
        db.close().await;
        n
    }

    pub async fn register(&self, email: &str) -> Value {
        let response = self.register_raw(email, PASSWORD).await;
        assert_eq!(response.status, 201, "{}", String::from_utf8_lossy(&response.body));
        response.json()
    }

    pub async fn register_raw(&self, email: &str, password: &str) -> TestResponse {
        self.gateway
            .post("/api/v1/auth/register")
            .json(&json!({"email": email, "password": password, "name": "Test User"}))
            .send()
            .await
    }

    pub async fn login(&self, email: &str, password: &str) -> TestResponse {
        self.gateway.post("/api/v1/auth/login").json(&json!({"email": email, "password": password})).send().await
    }

    /// An access token of the bootstrap administrator.
    pub async fn admin_token(&self) -> String {
        let response = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
        token(&response.json())
    }

    /// Stops the shop and hands back its settings and database, to start another on them.
    pub async fn release(mut self) -> (Settings, TestDatabase) {
        self.stop.cancel();
        if let Some(shop) = self.shop.take() {
            shop.wait().await.expect("shop stops cleanly");
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let mut settings = self.settings.clone();
        // The catalog's and orders' databases go with this shop; the next one gets embedded ones.
        settings.catalog.database_url = None;
        settings.orders.database_url = None;
        settings.notifications.database_url = None;
        // A placeholder takes the database's place so that Drop has something to drop.
        let db = std::mem::replace(&mut self.db, TestDatabase::sqlite());
        (settings, db)
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(shop) = self.shop.take() {
            shop.wait().await.expect("shop stops cleanly");
        }
    }
}

impl Drop for TestShop {
    fn drop(&mut self) {
        self.stop.cancel();
        // Wait for the services to stop, so that none writes into the data directory (its
        // search index, its event log) after it is removed.
        if let Some(shop) = self.shop.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
            && runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        {
            let _ = tokio::task::block_in_place(|| runtime.block_on(shop.wait()));
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub fn token(body: &Value) -> String {
    body["access_token"].as_str().unwrap_or_else(|| panic!("an access token in {body}")).to_owned()
}

pub fn refresh_token(body: &Value) -> String {
    body["refresh_token"].as_str().expect("a refresh token").to_owned()
}

pub fn unique_email(prefix: &str) -> String {
    format!("{prefix}-{}@example.com", uuid::Uuid::new_v4().simple())
}
