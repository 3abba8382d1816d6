//! Rate limits: which limits apply to a request (its consumer tier, its route, failed logins),
//! checked all at once with GCRA — in process, or in Redis so every replica enforces one limit —
//! and the IETF `RateLimit-Policy` / `RateLimit` fields that tell clients where they stand.

pub mod gcra;
mod local;
mod policy;
pub mod rate;
mod redis;

use std::fmt::Write;
use std::sync::Arc;

use prometheus::IntCounter;

use crate::logs::{Repeated, WithCauses};

pub use self::local::{Clock, LocalLimiter, SystemClock, DEFAULT_MAX_TRACKED_KEYS};
pub use self::policy::{OnStoreError, RatePolicy, DEFAULT_IPV6_PREFIX};
pub use self::rate::Rate;
pub use self::redis::RedisLimiter;

/// One limit to check: a named policy, the key it counts under, and its rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The policy's name in the response fields, such as `user` or `route`.
    pub policy: String,
    pub key: String,
    pub rate: Rate,
}

/// Whether a check counts the request (`Consume`) or only looks (`Peek`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Consume,
    Peek,
}

/// The verdict on a set of limits: all pass (and are all counted) or none is counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Whole seconds until the request would pass, when refused.
    pub retry_after: u64,
    /// Per limit, in order: requests remaining now and seconds until the quota is full again.
    pub states: Vec<(u64, u64)>,
    /// The first limit that refused the request.
    pub refused_by: Option<usize>,
}

impl Decision {
    /// The `RateLimit-Policy` and `RateLimit` field values (draft-ietf-httpapi-ratelimit-headers-11).
    /// Each is written into one string (this runs for every limited request).
    pub fn fields(&self, limits: &[Limit]) -> (String, String) {
        let mut policy = String::with_capacity(32 * limits.len());
        let mut current = String::with_capacity(32 * limits.len());
        for (index, (l, (remaining, reset))) in limits.iter().zip(&self.states).enumerate() {
            let separator = if index == 0 { "" } else { ", " };
            let (name, burst, window) = (&l.policy, l.rate.burst, l.rate.period.as_secs());
            // Writing to a String cannot fail.
            let _ = write!(policy, "{separator}\"{name}\";q={burst};w={window}");
            let _ = write!(current, "{separator}\"{name}\";r={remaining};t={reset}");
        }
        (policy, current)
    }
}

/// The limiter the gateway uses: Redis when configured (falling back as `on_store_error`
/// says), the local one otherwise.
pub struct Limiter {
    local: LocalLimiter,
    redis: Option<RedisLimiter>,
    on_store_error: OnStoreError,
    redis_down: Repeated,
    /// Counts the checks Redis could not answer (`guichet_store_errors_total{op="rate_limit"}`).
    redis_errors: IntCounter,
}

/// The shared limiter could not be asked and the configuration says to refuse.
#[derive(Debug)]
pub struct Unavailable;

impl Limiter {
    /// Reads `on_store_error` and `max_tracked_keys` from `policy`; they hold until a restart.
    pub fn new(
        clock: Arc<dyn Clock>,
        redis: Option<RedisLimiter>,
        policy: &RatePolicy,
        redis_errors: IntCounter,
    ) -> Limiter {
        Limiter {
            local: LocalLimiter::with_max_tracked_keys(clock, policy.max_tracked_keys),
            redis,
            on_store_error: policy.on_store_error,
            redis_down: Repeated::new(),
            redis_errors,
        }
    }

    pub async fn check(&self, limits: &[Limit], mode: Mode) -> Result<Decision, Unavailable> {
        let Some(redis) = &self.redis else {
            return Ok(self.local.check(limits, mode));
        };
        match redis.check(limits, mode).await {
            Ok(decision) => Ok(decision),
            Err(cause) => {
                self.redis_errors.inc();
                if let Some(suppressed) = self.redis_down.due() {
                    let fallback = match self.on_store_error {
                        OnStoreError::Allow => "limiting locally until it is back",
                        OnStoreError::Deny => "refusing limited requests with 503 until it is back",
                    };
                    let cause = WithCauses(&cause);
                    tracing::warn!(%cause, suppressed, "the Redis rate limiter is unavailable; {fallback}");
                }
                match self.on_store_error {
                    OnStoreError::Allow => Ok(self.local.check(limits, mode)),
                    OnStoreError::Deny => Err(Unavailable),
                }
            }
        }
    }
}
