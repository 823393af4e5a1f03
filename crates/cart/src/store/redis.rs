//! Carts in Redis: `{prefix}cart:{sN}:{key}:meta` (a hash: id, owner, currency, timestamps,
//! retired, the orders that emptied it) and `{prefix}cart:{sN}:{key}:lines` (a hash: SKU →
//! quantity), where `N` is the cart's shard. Every change is one Lua script, so concurrent changes
//! never lose one and the rules hold in the same atomic step.
//!
//! The script that empties a cart at checkout also appends the `cart.checked_out` event to its
//! shard's outbox stream, `{prefix}cart:{sN}:outbox`, and [`RedisOutbox`] publishes what the
//! streams hold, then deletes it. The braces put a cart's keys and its shard's stream in one Redis
//! Cluster slot, which a script needs; one stream for every cart would not be, and a stream per
//! cart could not be found again without an index outside the script.

use std::{collections::HashMap, sync::Arc, sync::LazyLock, time::Duration};

use chrono::{DateTime, Utc};
use events::{Bus, BusError, CloudEvent, RelayConfig, bus::Outgoing};
use redis::{Script, aio::ConnectionManager};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{CartRef, LineChange, LineOutcome, Merge, MergeOutcome, StoreError, StoredCart};
use crate::rules::{self, Mode, Refusal};

/// Redis calls that take longer than this fail, and the request answers 503.
const TIMEOUT: Duration = Duration::from_millis(500);

/// Creates a missing cart when asked; refuses retired ones; checks currency, the line limit, cap
/// and stock as `rules::change_line` does; then applies the change and renews both keys' TTL.
/// Public so that `bench cart` can time the same script with `redis-benchmark`.
pub const CHANGE_LINE_LUA: &str = r#"
local meta, lines = KEYS[1], KEYS[2]
local sku, quantity, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local available, cap, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now, currency = ARGV[7], ARGV[8]
if redis.call('EXISTS', meta) == 0 then
  if ARGV[9] ~= '1' then return {'missing', '0'} end
  redis.call('HSET', meta, 'id', ARGV[10], 'owner', ARGV[11], 'created_at', now)
end
if redis.call('HEXISTS', meta, 'retired') == 1 then return {'missing', '0'} end
local cart_currency = redis.call('HGET', meta, 'currency')
if cart_currency and cart_currency ~= currency and redis.call('HLEN', lines) > 0 then
  return {'currency', cart_currency}
end
local current = tonumber(redis.call('HGET', lines, sku) or '0')
local wanted = quantity
if mode == 'add' then wanted = current + quantity end
if current == 0 and wanted > 0 and redis.call('HLEN', lines) >= tonumber(ARGV[12]) then return {'lines', '0'} end
if wanted <= 0 then
  redis.call('HDEL', lines, sku)
else
  if wanted > cap then return {'cap', tostring(current)} end
  if wanted > available and wanted > current then return {'stock', tostring(current)} end
  redis.call('HSET', lines, sku, wanted)
  redis.call('HSET', meta, 'currency', currency)
end
redis.call('HSET', meta, 'updated_at', now)
redis.call('EXPIRE', meta, ttl)
redis.call('EXPIRE', lines, ttl)
return {'ok', tostring(math.max(wanted, 0))}
"#;

static CHANGE_LINE: LazyLock<Script> = LazyLock::new(|| Script::new(CHANGE_LINE_LUA));

/// Removes one line (`ARGV[1]` a SKU) or all of them (no SKU).
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta, lines = KEYS[1], KEYS[2]
if redis.call('EXISTS', meta) == 0 or redis.call('HEXISTS', meta, 'retired') == 1 then return 0 end
if ARGV[1] ~= '' then redis.call('HDEL', lines, ARGV[1]) else redis.call('DEL', lines) end
redis.call('HSET', meta, 'updated_at', ARGV[2])
redis.call('EXPIRE', meta, tonumber(ARGV[3]))
redis.call('EXPIRE', lines, tonumber(ARGV[3]))
return 1
"#,
    )
});

/// Adds the guest's lines to the user's (`rules::merged_quantity`, refused on
/// `rules::merge_conflict`), then retires the guest cart.
static MERGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local guest_meta, guest_lines, user_meta, user_lines = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cap, user_ttl, guest_ttl, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if redis.call('EXISTS', guest_meta) == 0 or redis.call('HEXISTS', guest_meta, 'retired') == 1 then
  return {'missing', ''}
end
if redis.call('EXISTS', user_meta) == 0 then
  redis.call('HSET', user_meta, 'id', ARGV[5], 'owner', 'user', 'created_at', now)
end
local guest_currency = redis.call('HGET', guest_meta, 'currency')
local user_currency = redis.call('HGET', user_meta, 'currency')
local guest_has = redis.call('HLEN', guest_lines) > 0
local user_has = redis.call('HLEN', user_lines) > 0
if guest_has and user_has and guest_currency and user_currency and guest_currency ~= user_currency then
  return {'currency', user_currency}
end
local available = {}
for i = 6, #ARGV, 2 do available[ARGV[i]] = tonumber(ARGV[i + 1]) end
local guest = redis.call('HGETALL', guest_lines)
for i = 1, #guest, 2 do
  local sku, quantity = guest[i], tonumber(guest[i + 1])
  local mine = tonumber(redis.call('HGET', user_lines, sku) or '0')
  local merged = math.min(mine + quantity, cap, math.max(available[sku] or 0, mine))
  if merged > 0 then redis.call('HSET', user_lines, sku, merged) end
end
if guest_has and not user_has and guest_currency then redis.call('HSET', user_meta, 'currency', guest_currency) end
redis.call('HSET', user_meta, 'updated_at', now)
redis.call('EXPIRE', user_meta, user_ttl)
redis.call('EXPIRE', user_lines, user_ttl)
redis.call('DEL', guest_lines)
redis.call('HSET', guest_meta, 'retired', now)
redis.call('EXPIRE', guest_meta, guest_ttl)
return {'ok', ''}
"#,
    )
});

/// Takes an order's lines (`ARGV[5..]`: SKU, quantity, …; none: all) out of the cart once per
/// order id, appending the event (`ARGV[4]`) to the outbox stream.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta, lines, outbox = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', meta) == 0 then return -1 end
local field = 'order:' .. ARGV[1]
if redis.call('HEXISTS', meta, field) == 1 then return 0 end
if #ARGV < 5 then
  redis.call('DEL', lines)
else
  for i = 5, #ARGV, 2 do
    if redis.call('HGET', lines, ARGV[i]) == ARGV[i + 1] then redis.call('HDEL', lines, ARGV[i]) end
  end
end
redis.call('HSET', meta, field, ARGV[2], 'updated_at', ARGV[2])
redis.call('EXPIRE', meta, tonumber(ARGV[3]))
redis.call('XADD', outbox, '*', 'event', ARGV[4])
return 1
"#,
    )
});

/// How many outbox streams carts are spread over: each is one Redis Cluster slot, so this many
/// slots share the carts. Changing it moves every cart to other keys.
pub const SHARDS: u32 = 64;

#[derive(Clone)]
pub struct RedisCarts {
    connection: ConnectionManager,
    prefix: String,
    /// Raised when a checkout appended an event, so that this replica's relay publishes it at once.
    written: Arc<Notify>,
}

fn now() -> String {
    platform::time::now().to_rfc3339()
}

fn secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

/// One observed round trip (`command` names it in metrics and traces), bounded by [`TIMEOUT`].
async fn bounded<T>(command: &'static str, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
    let call = async {
        match tokio::time::timeout(TIMEOUT, call).await {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable(format!("Redis did not answer within {TIMEOUT:?}"))),
        }
    };
    platform::telemetry::calls::redis(crate::SERVICE, command, call).await
}

impl RedisCarts {
    /// Connects lazily: a Redis that is down at start delays nothing, and one that comes back
    /// is used again without a restart.
    pub fn open(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        platform::telemetry::calls::register_redis(
            crate::SERVICE,
            &[
                "create",
                "get",
                "change_line",
                "remove_line",
                "merge",
                "complete_checkout",
                "outbox_read",
                "outbox_delete",
                "PING",
            ],
        );
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self { connection, prefix: format!("{prefix}:"), written: Arc::new(Notify::new()) })
    }

    /// The relay of this store's outbox streams.
    pub fn outbox(&self) -> RedisOutbox {
        RedisOutbox { carts: self.clone() }
    }

    /// What every key of this store starts with.
    #[cfg(test)]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn keys(&self, cart: CartRef) -> (String, String) {
        let cart_keys = format!("{}cart:{{s{}}}:{}", self.prefix, cart.shard(), cart.key());
        (format!("{cart_keys}:meta"), format!("{cart_keys}:lines"))
    }

    fn outbox_key(&self, shard: u32) -> String {
        format!("{}cart:{{s{shard}}}:outbox", self.prefix)
    }

    pub async fn create(&self, cart: CartRef, id: Uuid, ttl: Duration) -> Result<(), StoreError> {
        let (meta, _) = self.keys(cart);
        let stamp = now();
        let mut connection = self.connection.clone();
        bounded(
            "create",
            redis::pipe()
                .atomic()
                .hset_nx(&meta, "id", id.to_string())
                .ignore()
                .hset_nx(&meta, "owner", cart.owner())
                .ignore()
                .hset_nx(&meta, "created_at", &stamp)
                .ignore()
                .hset_nx(&meta, "updated_at", &stamp)
                .ignore()
                .expire(&meta, secs(ttl) as i64)
                .ignore()
                .query_async::<()>(&mut connection),
        )
        .await
    }

    pub async fn get(&self, cart: CartRef, ttl: Duration) -> Result<Option<StoredCart>, StoreError> {
        let (meta, lines) = self.keys(cart);
        let mut connection = self.connection.clone();
        // Reading is activity too: the TTLs are renewed in the same round trip.
        let (fields, quantities): (HashMap<String, String>, HashMap<String, i64>) = bounded(
            "get",
            redis::pipe()
                .atomic()
                .hgetall(&meta)
                .hgetall(&lines)
                .expire(&meta, secs(ttl) as i64)
                .ignore()
                .expire(&lines, secs(ttl) as i64)
                .ignore()
                .query_async(&mut connection),
        )
        .await?;
        if fields.is_empty() || fields.contains_key("retired") {
            return Ok(None);
        }
        let id = fields
            .get("id")
            .and_then(|id| Uuid::try_parse(id).ok())
            .ok_or_else(|| StoreError::Broken("cart without id".into()))?;
        let updated_at = fields
            .get("updated_at")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(platform::time::now, |t| t.with_timezone(&Utc));
        let mut lines: Vec<(String, i64)> = quantities.into_iter().collect();
        lines.sort();
        Ok(Some(StoredCart {
            id,
            owner: fields.get("owner").cloned().unwrap_or_else(|| cart.owner().to_owned()),
            currency: fields.get("currency").cloned().filter(|_| !lines.is_empty()),
            lines,
            updated_at,
        }))
    }

    pub async fn change_line(
        &self,
        cart: CartRef,
        change: &LineChange<'_>,
        new_id: Uuid,
    ) -> Result<LineOutcome, StoreError> {
        let (meta, lines) = self.keys(cart);
        let mut connection = self.connection.clone();
        let mode = match change.change.mode {
            Mode::Add => "add",
            Mode::Set => "set",
        };
        let mut invocation = CHANGE_LINE.key(&meta);
        invocation
            .key(&lines)
            .arg(change.sku)
            .arg(change.change.quantity)
            .arg(mode)
            .arg(change.change.available)
            .arg(rules::MAX_LINE_QUANTITY)
            .arg(secs(change.ttl))
            .arg(now())
            .arg(change.change.currency)
            .arg(if change.create { "1" } else { "0" })
            .arg(new_id.to_string())
            .arg(cart.owner())
            .arg(rules::MAX_LINES);
        let (outcome, value): (String, String) =
            bounded("change_line", invocation.invoke_async(&mut connection)).await?;
        let number = || value.parse::<i64>().unwrap_or(0);
        Ok(match outcome.as_str() {
            "ok" => LineOutcome::Changed { quantity: number() },
            "missing" => LineOutcome::Missing,
            "cap" => LineOutcome::Refused(Refusal::OverCap { current: number() }),
            "stock" => LineOutcome::Refused(Refusal::OverStock { current: number() }),
            "currency" => LineOutcome::Refused(Refusal::OtherCurrency { cart: value }),
            "lines" => LineOutcome::Refused(Refusal::TooManyLines),
            other => return Err(StoreError::Broken(format!("unexpected script answer {other:?}"))),
        })
    }

    async fn remove(&self, cart: CartRef, sku: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (meta, lines) = self.keys(cart);
        let mut connection = self.connection.clone();
        let mut invocation = REMOVE.key(&meta);
        invocation.key(&lines).arg(sku).arg(now()).arg(secs(ttl));
        let found: i64 = bounded("remove_line", invocation.invoke_async(&mut connection)).await?;
        Ok(found == 1)
    }

    pub async fn remove_line(&self, cart: CartRef, sku: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.remove(cart, sku, ttl).await
    }

    pub async fn clear(&self, cart: CartRef, ttl: Duration) -> Result<bool, StoreError> {
        self.remove(cart, "", ttl).await
    }

    pub async fn merge(&self, merge: &Merge<'_>) -> Result<MergeOutcome, StoreError> {
        let (guest_meta, guest_lines) = self.keys(CartRef::Guest(merge.guest));
        let (user_meta, user_lines) = self.keys(CartRef::User(merge.user));
        let mut connection = self.connection.clone();
        let mut invocation = MERGE.key(&guest_meta);
        invocation
            .key(&guest_lines)
            .key(&user_meta)
            .key(&user_lines)
            .arg(rules::MAX_LINE_QUANTITY)
            .arg(secs(merge.user_ttl))
            .arg(secs(merge.guest_ttl))
            .arg(now())
            .arg(merge.new_id.to_string());
        for (sku, units) in merge.available {
            invocation.arg(sku).arg(units);
        }
        let (outcome, value): (String, String) = bounded("merge", invocation.invoke_async(&mut connection)).await?;
        Ok(match outcome.as_str() {
            "ok" => MergeOutcome::Merged,
            "missing" => MergeOutcome::GuestMissing,
            _ => MergeOutcome::OtherCurrency { cart: value },
        })
    }

    pub async fn complete_checkout(
        &self,
        cart: CartRef,
        order_id: Uuid,
        ordered: &[(String, i64)],
        event: &CloudEvent,
        ttl: Duration,
    ) -> Result<Option<bool>, StoreError> {
        let (meta, lines) = self.keys(cart);
        let envelope = serde_json::to_string(event).map_err(|e| StoreError::Broken(e.to_string()))?;
        let mut connection = self.connection.clone();
        let mut invocation = COMPLETE.key(&meta);
        invocation
            .key(&lines)
            .key(self.outbox_key(cart.shard()))
            .arg(order_id.to_string())
            .arg(now())
            .arg(secs(ttl))
            .arg(envelope);
        for (sku, quantity) in ordered {
            invocation.arg(sku).arg(quantity);
        }
        let outcome: i64 = bounded("complete_checkout", invocation.invoke_async(&mut connection)).await?;
        Ok(match outcome {
            -1 => None,
            0 => Some(false),
            _ => {
                self.written.notify_one();
                Some(true)
            }
        })
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        bounded("PING", redis::cmd("PING").query_async::<String>(&mut connection)).await.map(|_| ())
    }
}

/// Publishes the events checkouts appended to the outbox streams, each stream in order, and
/// deletes them once the broker confirmed them. Replicas may each relay: an event two of them read
/// at once is published twice, which consumers absorb by its id.
#[derive(Clone)]
pub struct RedisOutbox {
    carts: RedisCarts,
}

impl RedisOutbox {
    /// Relays until `stop`, waking at once after a checkout of this replica and polling for the
    /// others'; Redis or the broker being down delays events and loses none.
    pub async fn run_until_stopped(self, bus: Bus, config: RelayConfig, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let (wait, failed) = match self.relay_once(&bus, config.batch_size).await {
                Ok(full) if full => (Duration::ZERO, false),
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    (config.poll_interval, false)
                }
                Err(error) => {
                    tracing::warn!(service = crate::SERVICE, error = %platform::http::problem::error_chain(&error), retry_in = ?backoff, "cart outbox relay round failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    (wait, true)
                }
            };
            if wait.is_zero() && !stop.is_cancelled() {
                continue;
            }
            // After a failure, new events must not cut the backoff short.
            let written =
                async { if failed { std::future::pending().await } else { self.carts.written.notified().await } };
            tokio::select! {
                () = stop.cancelled() => return,
                () = written => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round over every shard: read up to `batch` events of each stream, publish the oldest
    /// `batch` of them in the order they were appended, delete those. Whether more may be waiting.
    pub async fn relay_once(&self, bus: &Bus, batch: u32) -> Result<bool, OutboxError> {
        let keys: Vec<String> = (0..SHARDS).map(|shard| self.carts.outbox_key(shard)).collect();
        let mut read = redis::pipe();
        for key in &keys {
            read.cmd("XRANGE").arg(key).arg("-").arg("+").arg("COUNT").arg(batch);
            read.cmd("XLEN").arg(key);
        }
        let mut connection = self.carts.connection.clone();
        let answers: Vec<redis::Value> = bounded("outbox_read", read.query_async(&mut connection)).await?;
        let (mut waiting, mut pending, mut full) = (Vec::new(), 0_u64, false);
        for (key, answer) in keys.iter().zip(answers.chunks_exact(2)) {
            let entries: Vec<(String, HashMap<String, String>)> = parse(&answer[0])?;
            pending += parse::<u64>(&answer[1])?;
            full |= entries.len() >= batch as usize;
            waiting.extend(entries.into_iter().map(|(id, fields)| (entry_order(&id), key, id, fields)));
        }
        // A user's checkouts may sit in several shards: appending order keeps their subject's order.
        waiting.sort_unstable_by_key(|(order, ..)| *order);
        full |= waiting.len() > batch as usize;
        waiting.truncate(batch as usize);
        // Set before publishing: while the broker is down, these show the events waiting.
        metrics::gauge!("outbox_pending", "service" => crate::SERVICE).set(pending as f64);
        let age = waiting.first().map_or(0.0, |((ms, _), ..)| {
            (platform::time::now().timestamp_millis() - *ms as i64).max(0) as f64 / 1000.0
        });
        metrics::gauge!("outbox_oldest_pending_age_seconds", "service" => crate::SERVICE).set(age);
        if waiting.is_empty() {
            return Ok(false);
        }

        let events = waiting
            .iter()
            .map(|(_, key, id, fields)| {
                let malformed = || OutboxError::Malformed(format!("{key} entry {id}"));
                let event: CloudEvent =
                    serde_json::from_str(fields.get("event").ok_or_else(malformed)?).map_err(|_| malformed())?;
                Ok(Outgoing::encode(&event)?)
            })
            .collect::<Result<Vec<_>, OutboxError>>()?;
        events::relay::publish_observed(bus, crate::SERVICE, &events).await?;
        let mut delete = redis::pipe();
        for (_, key, id, _) in &waiting {
            delete.cmd("XDEL").arg(*key).arg(id).ignore();
        }
        bounded("outbox_delete", delete.query_async::<()>(&mut connection)).await?;
        Ok(full)
    }
}

/// A stream entry id, `{milliseconds}-{sequence}`, as numbers that sort in appending order.
fn entry_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn parse<T: redis::FromRedisValue>(value: &redis::Value) -> Result<T, StoreError> {
    redis::from_redis_value_ref(value).map_err(|e| StoreError::Broken(format!("unexpected answer from Redis: {e}")))
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cart outbox")]
    Store(#[from] StoreError),
    #[error("bus")]
    Bus(#[from] BusError),
    /// Never written by this code: the relay stops at it rather than lose or skip it.
    #[error("{0} holds no event")]
    Malformed(String),
}
