//! The shared limiter: one Redis script per check carries every limit of the request, so N
//! replicas enforce one limit in a single round trip. Redis's own clock is used, so replicas
//! with drifting clocks still agree. Keys expire once their quota is full again.

use std::sync::Arc;

use redis::Script;

use super::gcra::Outcome;
use super::local::decide;
use super::{Decision, Limit, Mode};
use crate::store::{keys, RedisConnection, StoreError};

/// KEYS: the limits' keys. ARGV: consume (1/0), then per limit its interval and tolerance (µs).
/// Returns now, allowed, then per limit its TAT after the step and whether it conforms.
const GCRA: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local consume = ARGV[1] == '1'
local allowed = 1
local result = {now, 0}
local next = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local conforms = 0
  if tat + interval - now <= tolerance then
    conforms = 1
    next[i] = tat + interval
  else
    allowed = 0
    next[i] = tat
  end
  table.insert(result, next[i])
  table.insert(result, conforms)
end
result[2] = allowed
if allowed == 1 and consume then
  for i, key in ipairs(KEYS) do
    redis.call('SET', key, next[i], 'PX', math.ceil((next[i] - now) / 1000) + 1000)
  end
end
return result
";

/// Why the shared limiter gave no decision.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimitError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the rate limit script answered nothing")]
    NoAnswer,
    #[error("the rate limit script answered the wrong number of limits")]
    WrongCount,
}

pub struct RedisLimiter {
    connection: Arc<RedisConnection>,
    script: Script,
}

impl RedisLimiter {
    pub fn new(connection: Arc<RedisConnection>) -> RedisLimiter {
        RedisLimiter {
            connection,
            script: Script::new(GCRA),
        }
    }

    /// The decision, or why Redis could not give one.
    pub async fn check(&self, limits: &[Limit], mode: Mode) -> Result<Decision, RedisLimitError> {
        if limits.is_empty() {
            return Ok(Decision {
                allowed: true,
                retry_after: 0,
                states: Vec::new(),
                refused_by: None,
            });
        }
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(u8::from(mode == Mode::Consume));
        for limit in limits {
            invocation
                .key(keys::rate_limit(&limit.key))
                .arg(limit.rate.interval_us())
                .arg(limit.rate.tolerance_us());
        }
        let reply: Vec<u64> = self
            .connection
            .with(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        let (Some(&now), Some(&allowed)) = (reply.first(), reply.get(1)) else {
            return Err(RedisLimitError::NoAnswer);
        };
        let outcomes: Vec<Outcome> = reply[2..]
            .chunks(2)
            .map(|pair| Outcome {
                tat: pair[0],
                conforms: pair.get(1) == Some(&1),
            })
            .collect();
        if outcomes.len() != limits.len() {
            return Err(RedisLimitError::WrongCount);
        }
        Ok(decide(limits, &outcomes, allowed == 1, mode, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::Rate;
    use crate::store::Outage;

    #[tokio::test]
    async fn a_redis_that_cannot_be_reached_is_the_cause_of_no_decision() {
        let limiter = RedisLimiter::new(Arc::new(RedisConnection::unreachable()));
        let limits = [Limit {
            policy: "user".to_string(),
            key: "user:1".to_string(),
            rate: Rate::parse("1/s").expect("a rate"),
        }];
        let error = limiter
            .check(&limits, Mode::Consume)
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(
                error,
                RedisLimitError::Store(StoreError::Unavailable(Outage::Redis(_)))
            ),
            "{error:?}"
        );
        assert!(std::error::Error::source(&error).is_some_and(|c| c.is::<StoreError>()));
    }
}
