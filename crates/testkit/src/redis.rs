//! The Redis server tests share. Each test writes under a key prefix of its own and deletes
//! its keys when done.

use std::time::Duration;

/// The Redis tests use.
pub fn redis_url() -> String {
    std::env::var("EMPORIUM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

async fn connect() -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(redis_url()).ok()?;
    tokio::time::timeout(Duration::from_secs(3), client.get_multiplexed_async_connection()).await.ok()?.ok()
}

/// Whether Redis answers; when not, the test skips (or fails when backends are required).
pub async fn redis_available() -> bool {
    let available = match connect().await {
        Some(mut connection) => redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok(),
        None => false,
    };
    if !available {
        crate::skip_or_fail(&format!("Redis at {} is unreachable", redis_url()));
    }
    available
}

/// Deletes every key that starts with `prefix`; returns how many there were.
pub async fn redis_delete_prefix(prefix: &str) -> usize {
    let Some(mut connection) = connect().await else { return 0 };
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .unwrap_or((0, Vec::new()));
        if !keys.is_empty() {
            deleted += keys.len();
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query_async(&mut connection).await;
        }
        if next == 0 {
            return deleted;
        }
        cursor = next;
    }
}
