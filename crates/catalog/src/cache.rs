//! The product read cache: a product's rendered JSON and ETag by id, and slugs to ids.
//!
//! Redis when replicas share it, an in-process map otherwise, or nothing. Entries are dropped
//! right after a write commits and again when its event arrives (which covers every replica and
//! a reader that raced the write), and expire after a TTL whatever happens. The cache is an
//! optimisation only: when Redis is slow or down, reads go to the database.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use redis::{AsyncCommands, aio::ConnectionManager};
use uuid::Uuid;

/// A product as served: the body and its ETag, and whether anyone may see it.
#[derive(Debug, Clone)]
pub struct CachedProduct {
    pub id: Uuid,
    pub slug: String,
    pub active: bool,
    pub etag: String,
    pub body: Bytes,
}

impl CachedProduct {
    /// Stored in Redis as `id slug active etag\n` followed by the body.
    fn encode(&self) -> Vec<u8> {
        let mut out = format!("{} {} {} {}\n", self.id, self.slug, u8::from(self.active), self.etag).into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(bytes: Vec<u8>) -> Option<Self> {
        let newline = bytes.iter().position(|b| *b == b'\n')?;
        let head = std::str::from_utf8(&bytes[..newline]).ok()?;
        let mut parts = head.split(' ');
        let id = Uuid::try_parse(parts.next()?).ok()?;
        let slug = parts.next()?.to_owned();
        let active = parts.next()? == "1";
        let etag = parts.next()?.to_owned();
        let body = Bytes::copy_from_slice(&bytes[newline + 1..]);
        Some(Self { id, slug, active, etag, body })
    }
}

/// Redis calls give up after this long; the read then goes to the database.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub enum ProductCache {
    Disabled,
    Memory {
        products: Arc<quick_cache::sync::Cache<Uuid, CachedProduct>>,
        slugs: Arc<quick_cache::sync::Cache<String, Uuid>>,
    },
    Redis {
        connection: ConnectionManager,
        prefix: String,
        ttl: Duration,
    },
}

impl ProductCache {
    /// The cache `url` names: `memory:`, `none` or `redis://…`. Redis is connected lazily, so a
    /// Redis that is down at start delays nothing.
    pub fn open(url: &str, prefix: &str, ttl: Duration) -> Result<Self, redis::RedisError> {
        Ok(match url {
            "none" => Self::Disabled,
            "memory:" => Self::Memory {
                products: Arc::new(quick_cache::sync::Cache::new(20_000)),
                slugs: Arc::new(quick_cache::sync::Cache::new(20_000)),
            },
            url => {
                let client = redis::Client::open(url)?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                let connection = ConnectionManager::new_lazy_with_config(client, config)?;
                platform::telemetry::calls::register_redis(crate::SERVICE, &["GET", "SETEX"]);
                Self::Redis { connection, prefix: format!("{prefix}:catalog:"), ttl }
            }
        })
    }

    fn record(outcome: &'static str) {
        metrics::counter!("catalog_cache_requests_total", "outcome" => outcome).increment(1);
    }

    pub async fn get(&self, id: Uuid) -> Option<CachedProduct> {
        let found = match self {
            Self::Disabled => return None,
            Self::Memory { products, .. } => products.get(&id),
            Self::Redis { connection, prefix, .. } => {
                let mut connection = connection.clone();
                let key = format!("{prefix}product:{id}");
                match redis_call("GET", connection.get::<_, Option<Vec<u8>>>(key)).await {
                    Ok(bytes) => bytes.and_then(CachedProduct::decode),
                    Err(error) => {
                        Self::record("error");
                        tracing::debug!(error = %error, "product cache read failed");
                        return None;
                    }
                }
            }
        };
        Self::record(if found.is_some() { "hit" } else { "miss" });
        found
    }

    pub async fn id_for_slug(&self, slug: &str) -> Option<Uuid> {
        match self {
            Self::Disabled => None,
            Self::Memory { slugs, .. } => slugs.get(slug),
            Self::Redis { connection, prefix, .. } => {
                let mut connection = connection.clone();
                let found: Option<String> =
                    redis_call("GET", connection.get(format!("{prefix}slug:{slug}"))).await.ok()?;
                found.and_then(|id| Uuid::try_parse(&id).ok())
            }
        }
    }

    pub async fn put(&self, product: &CachedProduct) {
        match self {
            Self::Disabled => {}
            Self::Memory { products, slugs } => {
                products.insert(product.id, product.clone());
                slugs.insert(product.slug.clone(), product.id);
            }
            Self::Redis { connection, prefix, ttl } => {
                let mut connection = connection.clone();
                let result: redis::RedisResult<()> = redis_call(
                    "SETEX",
                    redis::pipe()
                        .set_ex(format!("{prefix}product:{}", product.id), product.encode(), ttl.as_secs().max(1))
                        .ignore()
                        .set_ex(format!("{prefix}slug:{}", product.slug), product.id.to_string(), ttl.as_secs().max(1))
                        .ignore()
                        .query_async(&mut connection),
                )
                .await;
                if let Err(error) = result {
                    Self::record("error");
                    tracing::debug!(error = %error, "product cache write failed");
                }
            }
        }
    }

    /// Drops the products' entries. A slug entry may outlive its product's; readers check
    /// that the product found under a slug still has it.
    pub async fn invalidate(&self, ids: &[Uuid]) {
        match self {
            Self::Disabled => {}
            Self::Memory { products, .. } => {
                for id in ids {
                    products.remove(id);
                }
            }
            Self::Redis { connection, prefix, .. } => {
                if ids.is_empty() {
                    return;
                }
                let mut connection = connection.clone();
                let keys: Vec<String> = ids.iter().map(|id| format!("{prefix}product:{id}")).collect();
                if let Err(error) = connection.del::<_, ()>(keys).await {
                    Self::record("error");
                    tracing::warn!(error = %error, "product cache invalidation failed; entries expire by TTL");
                }
            }
        }
    }

    /// For readiness: whether Redis answers (always true for the other kinds).
    pub async fn ping(&self) -> Result<(), String> {
        match self {
            Self::Redis { connection, .. } => {
                let mut connection = connection.clone();
                redis::cmd("PING").query_async::<String>(&mut connection).await.map(|_| ()).map_err(|e| e.to_string())
            }
            _ => Ok(()),
        }
    }
}

/// One observed round trip to the cache.
async fn redis_call<T>(
    command: &'static str,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    platform::telemetry::calls::redis(crate::SERVICE, command, call).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let entry = CachedProduct {
            id: Uuid::now_v7(),
            slug: "trail-runner".into(),
            active: true,
            etag: "\"abc\"".into(),
            body: Bytes::from_static(b"{\"title\":\"a\nb\"}"),
        };
        let back = CachedProduct::decode(entry.encode()).unwrap();
        assert_eq!(
            (back.id, back.slug, back.active, back.etag, back.body),
            (entry.id, entry.slug, true, entry.etag, entry.body)
        );
    }
}
