//! Usage statistics: per consumer and per route, requests, 4xx and 5xx errors, throttled
//! requests and latency percentiles over the last hour, day or week. Each process aggregates in
//! memory by minute; with the Redis store it flushes those minutes about every second, off the
//! request path, into hashes that every replica reads, so the numbers are cluster-wide.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::errors::GatewayError;
use crate::store::{keys, RedisConnection, StoreError};

/// Latency buckets, in milliseconds (one more for anything slower).
const LATENCY_MS: [f64; 17] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    10000.0, 30000.0,
];
/// Minutes kept: the longest window.
const RETAINED_MINUTES: u64 = 7 * 24 * 60;
const SEPARATOR: char = '\t';

/// What `GET /api/analytics/usage/` was asked.
pub struct Query {
    pub window: Duration,
    pub consumer: Option<String>,
    pub route: Option<String>,
}

impl Query {
    /// `window=1h|24h|7d` (default 1h), `consumer=…`, `route=…`.
    pub fn parse(query: &str) -> Result<Query, GatewayError> {
        let mut parsed = Query {
            window: Duration::from_secs(3600),
            consumer: None,
            route: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            match name {
                "window" => {
                    parsed.window = window(&value).ok_or_else(|| {
                        GatewayError::BadRequest(format!(
                            "Unknown window \"{value}\"; use 1h, 24h or 7d."
                        ))
                    })?
                }
                "consumer" => parsed.consumer = Some(value),
                "route" => parsed.route = Some(value),
                _ => {}
            }
        }
        Ok(parsed)
    }
}

/// Form-style decoding of a query value (`+` is a space).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (decoded, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The windows the endpoint answers for.
pub fn window(name: &str) -> Option<Duration> {
    match name {
        "1h" => Some(Duration::from_secs(3600)),
        "24h" => Some(Duration::from_secs(24 * 3600)),
        "7d" => Some(Duration::from_secs(7 * 24 * 3600)),
        _ => None,
    }
}

/// Counts for one consumer on one route in one minute (or summed over many).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    pub throttled: u64,
    latency: [u64; LATENCY_MS.len() + 1],
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.errors_4xx += other.errors_4xx;
        self.errors_5xx += other.errors_5xx;
        self.throttled += other.throttled;
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            *mine += theirs;
        }
    }

    /// The upper bound of the bucket holding the `q` quantile, in milliseconds.
    fn percentile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(LATENCY_MS.get(index).copied().unwrap_or(f64::INFINITY));
            }
        }
        None
    }

    fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "errors_4xx": self.errors_4xx,
            "errors_5xx": self.errors_5xx,
            "throttled": self.throttled,
            "p50_ms": self.percentile_ms(0.5),
            "p95_ms": self.percentile_ms(0.95),
        })
    }

    /// `(field, delta)` pairs for a Redis hash.
    fn fields(&self) -> Vec<(String, u64)> {
        let mut fields = vec![
            ("requests".to_string(), self.requests),
            ("e4xx".to_string(), self.errors_4xx),
            ("e5xx".to_string(), self.errors_5xx),
            ("throttled".to_string(), self.throttled),
        ];
        for (index, count) in self.latency.iter().enumerate() {
            if *count > 0 {
                fields.push((format!("lat{index}"), *count));
            }
        }
        fields.retain(|(_, v)| *v > 0);
        fields
    }

    fn set_field(&mut self, name: &str, value: u64) {
        match name {
            "requests" => self.requests = value,
            "e4xx" => self.errors_4xx = value,
            "e5xx" => self.errors_5xx = value,
            "throttled" => self.throttled = value,
            _ => {
                if let Some(slot) = name
                    .strip_prefix("lat")
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| self.latency.get_mut(i))
                {
                    *slot = value;
                }
            }
        }
    }
}

/// One request, as the usage statistics see it.
pub struct Observation<'a> {
    pub consumer: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub latency: Duration,
    pub throttled: bool,
}

type Minutes = BTreeMap<u64, HashMap<(String, String), Counters>>;

/// A (consumer, route) cell's key, owned or borrowed: a request adds to its cell without
/// allocating the key unless the cell is new in its minute.
trait CellKey {
    fn parts(&self) -> (&str, &str);
}

impl CellKey for (String, String) {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl CellKey for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn CellKey + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn CellKey + 'a) {
        self
    }
}

/// Hashes as the owned tuple does: `(&str, &str)` and `(String, String)` hash alike.
impl std::hash::Hash for dyn CellKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn CellKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn CellKey + '_ {}

/// Independent locks over the (consumer, route) cells, so worker threads recording requests of
/// different consumers or routes do not wait for one another.
const SHARDS: usize = 16;

pub struct Usage {
    /// Memory store: everything kept. Redis store: what has not been flushed yet.
    shards: Box<[Mutex<Minutes>]>,
    hasher: std::collections::hash_map::RandomState,
    redis: Option<Arc<RedisConnection>>,
}

impl Usage {
    pub fn new(redis: Option<Arc<RedisConnection>>) -> Usage {
        Usage {
            shards: (0..SHARDS).map(|_| Mutex::new(BTreeMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            redis,
        }
    }

    /// The shard that holds the cell of `consumer` on `route`.
    fn shard(&self, consumer: &str, route: &str) -> std::sync::MutexGuard<'_, Minutes> {
        let index = std::hash::BuildHasher::hash_one(&self.hasher, (consumer, route)) as usize;
        lock(&self.shards[index % SHARDS])
    }

    pub fn record(&self, seen: &Observation, now_secs: u64) {
        let minute = now_secs / 60;
        let mut counters = Counters {
            requests: 1,
            errors_4xx: u64::from((400..500).contains(&seen.status)),
            errors_5xx: u64::from(seen.status >= 500),
            throttled: u64::from(seen.throttled),
            ..Counters::default()
        };
        let ms = seen.latency.as_secs_f64() * 1000.0;
        let bucket = LATENCY_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_MS.len());
        counters.latency[bucket] = 1;
        let mut minutes = self.shard(seen.consumer, seen.route);
        let cells = minutes.entry(minute).or_default();
        let key = (seen.consumer, seen.route);
        match cells.get_mut(&key as &dyn CellKey) {
            Some(cell) => cell.add(&counters),
            None => {
                cells.insert((key.0.to_string(), key.1.to_string()), counters);
            }
        }
        if self.redis.is_none() {
            let oldest = minute.saturating_sub(RETAINED_MINUTES);
            while minutes.first_key_value().is_some_and(|(m, _)| *m < oldest) {
                minutes.pop_first();
            }
        }
    }

    /// Sends what was aggregated since the last flush to Redis, in one round trip. On failure
    /// the counts are put back for the next flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let mut pending = Minutes::new();
        for shard in self.shards.iter() {
            merge(&mut pending, std::mem::take(&mut *lock(shard)));
        }
        if pending.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (minute, cells) in &pending {
            let key = keys::usage_minute(*minute);
            for ((consumer, route), counters) in cells {
                for (field, delta) in counters.fields() {
                    pipe.hincr(
                        &key,
                        format!("{consumer}{SEPARATOR}{route}{SEPARATOR}{field}"),
                        delta,
                    )
                    .ignore();
                }
            }
            pipe.expire(&key, ((RETAINED_MINUTES + 60) * 60) as i64)
                .ignore();
        }
        let result = redis
            .with(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await;
        if result.is_err() {
            for (minute, cells) in pending {
                for (cell, counters) in cells {
                    let mut minutes = self.shard(&cell.0, &cell.1);
                    let slot = minutes.entry(minute).or_default();
                    slot.entry(cell).or_default().add(&counters);
                }
            }
        }
        result
    }

    /// The report for the last `window`, optionally for one consumer and/or one route.
    pub async fn report(
        &self,
        window: Duration,
        now_secs: u64,
        consumer: Option<&str>,
        route: Option<&str>,
    ) -> Result<Value, StoreError> {
        let last = now_secs / 60;
        let first = last + 1 - window.as_secs() / 60;
        let cells = match &self.redis {
            None => {
                let mut cells: HashMap<(String, String), Counters> = HashMap::new();
                for shard in self.shards.iter() {
                    for (_, minute) in lock(shard).range(first..=last) {
                        for (cell, counters) in minute {
                            cells.entry(cell.clone()).or_default().add(counters);
                        }
                    }
                }
                cells
            }
            Some(redis) => read_redis(redis, first, last).await?,
        };
        let (mut by_consumer, mut by_route, mut total) = (
            BTreeMap::<String, Counters>::new(),
            BTreeMap::<String, Counters>::new(),
            Counters::default(),
        );
        for ((c, r), counters) in cells {
            if consumer.is_some_and(|want| want != c) || route.is_some_and(|want| want != r) {
                continue;
            }
            by_consumer.entry(c).or_default().add(&counters);
            by_route.entry(r).or_default().add(&counters);
            total.add(&counters);
        }
        let render = |map: BTreeMap<String, Counters>| {
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, v.to_json()))
                    .collect::<Map<_, _>>(),
            )
        };
        Ok(json!({
            "window_seconds": window.as_secs(),
            "consumers": render(by_consumer),
            "routes": render(by_route),
            "total": total.to_json(),
        }))
    }
}

fn lock(shard: &Mutex<Minutes>) -> std::sync::MutexGuard<'_, Minutes> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Adds the cells of `more` into `into`.
fn merge(into: &mut Minutes, more: Minutes) {
    for (minute, cells) in more {
        let slot = into.entry(minute).or_default();
        for (cell, counters) in cells {
            slot.entry(cell).or_default().add(&counters);
        }
    }
}

async fn read_redis(
    redis: &RedisConnection,
    first: u64,
    last: u64,
) -> Result<HashMap<(String, String), Counters>, StoreError> {
    let minutes: Vec<String> = (first..=last).map(keys::usage_minute).collect();
    let hashes: Vec<HashMap<String, u64>> = redis
        .with(|mut c| async move {
            let mut pipe = redis::pipe();
            for key in &minutes {
                pipe.hgetall(key);
            }
            pipe.query_async(&mut c).await
        })
        .await?;
    let mut cells: HashMap<(String, String), Counters> = HashMap::new();
    for hash in hashes {
        for (field, value) in hash {
            let mut parts = field.splitn(3, SEPARATOR);
            if let (Some(consumer), Some(route), Some(name)) =
                (parts.next(), parts.next(), parts.next())
            {
                let mut delta = Counters::default();
                delta.set_field(name, value);
                cells
                    .entry((consumer.to_string(), route.to_string()))
                    .or_default()
                    .add(&delta);
            }
        }
    }
    Ok(cells)
}

/// Flushes `usage` about every second until shutdown.
pub async fn flush_every_second(usage: Arc<Usage>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let failing = crate::logs::Repeated::new();
    loop {
        ticks.tick().await;
        if let Err(error) = usage.flush().await {
            if let Some(suppressed) = failing.due() {
                let error = crate::logs::WithCauses(&error);
                tracing::warn!(%error, suppressed, "usage statistics not flushed; kept for the next try");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(
        consumer: &'static str,
        route: &'static str,
        status: u16,
        ms: u64,
    ) -> Observation<'static> {
        Observation {
            consumer,
            route,
            status,
            latency: Duration::from_millis(ms),
            throttled: status == 429,
        }
    }

    #[tokio::test]
    async fn counts_by_consumer_and_route_within_the_window() {
        let usage = Usage::new(None);
        let now = 1_800_000_000;
        usage.record(&seen("user:ada", "courses", 200, 3), now);
        usage.record(&seen("user:ada", "courses", 404, 3), now);
        usage.record(&seen("user:ada", "grades", 502, 40), now);
        usage.record(&seen("anonymous", "courses", 429, 1), now);
        usage.record(&seen("anonymous", "courses", 200, 1), now - 7200);
        let report = usage
            .report(Duration::from_secs(3600), now, None, None)
            .await
            .unwrap();
        assert_eq!(report["total"]["requests"], 4);
        assert_eq!(report["consumers"]["user:ada"]["requests"], 3);
        assert_eq!(report["consumers"]["user:ada"]["errors_4xx"], 1);
        assert_eq!(report["consumers"]["user:ada"]["errors_5xx"], 1);
        assert_eq!(report["routes"]["courses"]["throttled"], 1);
        assert_eq!(report["routes"]["grades"]["p50_ms"], 50.0);
        let day = usage
            .report(Duration::from_secs(86_400), now, Some("anonymous"), None)
            .await
            .unwrap();
        assert_eq!(day["total"]["requests"], 2);
        assert!(day["consumers"].get("user:ada").is_none());
    }

    #[test]
    fn queries_are_decoded_and_bad_windows_refused() {
        let query = Query::parse("window=24h&consumer=user%3Aada&route=app%3A%2Fapi%2F").unwrap();
        assert_eq!(query.window, Duration::from_secs(86_400));
        assert_eq!(query.consumer.as_deref(), Some("user:ada"));
        assert_eq!(query.route.as_deref(), Some("app:/api/"));
        assert_eq!(Query::parse("").unwrap().window, Duration::from_secs(3600));
        assert!(Query::parse("window=1y").is_err());
    }

    #[test]
    fn percentiles_come_from_the_buckets() {
        let mut counters = Counters::default();
        counters.latency[3] = 90; // ≤ 1 ms
        counters.latency[9] = 10; // ≤ 100 ms
        assert_eq!(counters.percentile_ms(0.5), Some(1.0));
        assert_eq!(counters.percentile_ms(0.95), Some(100.0));
        assert_eq!(Counters::default().percentile_ms(0.5), None);
    }
}
