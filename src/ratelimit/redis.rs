//! The shared limiter: one Redis script carries every limit of a request, so N replicas enforce
//! one limit exactly. Checks that arrive while a script call is on its way wait for the next
//! call, which carries them all: under load one round trip and one script run serve many
//! requests, decided one after the other inside the script as if each had its own call. In a
//! cluster a script may only touch the keys of one slot, so a batch is split by slot (a
//! request's keys share one, the consumer's hash tag) into calls sent together. Redis's own
//! clock is used, so replicas with drifting clocks still agree. Keys expire once their quota is
//! full again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::cluster_routing::Slot;
use redis::Script;
use tokio::sync::oneshot;

use super::gcra::Outcome;
use super::local::decide;
use super::{Decision, Limit, Mode};
use crate::store::{keys, RedisConnection, StoreError};

/// KEYS: every check's keys, one check after the other. ARGV: the number of checks, then per
/// check: consume (1/0), its number of limits, and per limit its interval and tolerance (µs).
/// Returns now, then per check: allowed, then per limit its TAT after the step and whether it
/// conforms. A check that is allowed and consumes is counted before the next one is decided.
/// Each key is read once and written once per call, however many checks share it (one busy
/// consumer's requests usually do), with the TAT the last of them left.
const GCRA: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local result = {now}
local tats = {}
local changed = {}
local order = {}
local function tat_of(name)
  local tat = tats[name]
  if tat == nil then
    tat = tonumber(redis.call('GET', name) or now)
    if tat < now then tat = now end
    tats[name] = tat
  end
  return tat
end
local key = 1
local arg = 2
for _ = 1, tonumber(ARGV[1]) do
  local consume = ARGV[arg] == '1'
  local count = tonumber(ARGV[arg + 1])
  arg = arg + 2
  local allowed = 1
  local next = {}
  local verdict = #result + 1
  table.insert(result, 0)
  for i = 0, count - 1 do
    local interval = tonumber(ARGV[arg + 2 * i])
    local tolerance = tonumber(ARGV[arg + 2 * i + 1])
    local tat = tat_of(KEYS[key + i])
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
  result[verdict] = allowed
  if allowed == 1 and consume then
    for i = 0, count - 1 do
      local name = KEYS[key + i]
      if not changed[name] then
        changed[name] = true
        table.insert(order, name)
      end
      tats[name] = next[i]
    end
  end
  key = key + count
  arg = arg + 2 * count
end
for _, name in ipairs(order) do
  local tat = tats[name]
  redis.call('SET', name, tat, 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return result
";

/// At most this many checks go in one script call, so no call holds Redis long.
const MAX_BATCH: usize = 256;

/// Why the shared limiter gave no decision.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimitError {
    /// The script call that carried the check failed (the cause is shared by its whole batch).
    #[error(transparent)]
    Store(Arc<StoreError>),
    #[error("the rate limit script answered nothing")]
    NoAnswer,
    #[error("the rate limit script answered the wrong number of limits")]
    WrongCount,
}

/// What the script said about one check.
struct Verdict {
    now: u64,
    allowed: bool,
    outcomes: Vec<Outcome>,
}

/// One check waiting for a script call.
struct Queued {
    keys: Vec<String>,
    /// Per key: the interval and the tolerance, in µs.
    rates: Vec<(u64, u64)>,
    consume: bool,
    answer: oneshot::Sender<Result<Verdict, RedisLimitError>>,
}

#[derive(Default)]
struct Waiting {
    checks: Vec<Queued>,
    /// Whether a task is sending the waiting checks (it takes every check queued meanwhile).
    sending: bool,
}

struct Batcher {
    connection: Arc<RedisConnection>,
    script: Script,
    /// A cluster: one call per slot.
    by_slot: bool,
    waiting: Mutex<Waiting>,
}

pub struct RedisLimiter {
    batcher: Arc<Batcher>,
}

impl RedisLimiter {
    pub fn new(connection: Arc<RedisConnection>) -> RedisLimiter {
        RedisLimiter {
            batcher: Arc::new(Batcher {
                by_slot: connection.is_cluster(),
                connection,
                script: Script::new(GCRA),
                waiting: Mutex::default(),
            }),
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
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            keys: limits.iter().map(|l| keys::rate_limit(&l.key)).collect(),
            rates: limits
                .iter()
                .map(|l| (l.rate.interval_us(), l.rate.tolerance_us()))
                .collect(),
            consume: mode == Mode::Consume,
            answer,
        };
        if self.batcher.queue(queued) {
            tokio::spawn(self.batcher.clone().send_waiting());
        }
        let verdict = answered.await.map_err(|_| RedisLimitError::NoAnswer)??;
        if verdict.outcomes.len() != limits.len() {
            return Err(RedisLimitError::WrongCount);
        }
        Ok(decide(
            limits,
            &verdict.outcomes,
            verdict.allowed,
            mode,
            verdict.now,
        ))
    }
}

impl Batcher {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a check; true if no task is sending, so the caller must start one.
    fn queue(&self, check: Queued) -> bool {
        let mut waiting = self.waiting();
        waiting.checks.push(check);
        !std::mem::replace(&mut waiting.sending, true)
    }

    /// Sends the waiting checks, batch after batch, until none is left.
    async fn send_waiting(self: Arc<Self>) {
        // Should this task end early (its runtime shutting down), the next check starts another.
        let _sending = Sending(&self);
        loop {
            let batch: Vec<Queued> = {
                let mut waiting = self.waiting();
                if waiting.checks.is_empty() {
                    return;
                }
                let take = waiting.checks.len().min(MAX_BATCH);
                waiting.checks.drain(..take).collect()
            };
            if self.by_slot {
                let mut by_slot: HashMap<Slot, Vec<Queued>> = HashMap::new();
                for check in batch {
                    let slot = Slot::for_key(&check.keys[0]);
                    by_slot.entry(slot).or_default().push(check);
                }
                futures_util::future::join_all(by_slot.into_values().map(|b| self.send(b))).await;
            } else {
                self.send(batch).await;
            }
        }
    }

    /// One script call for `batch`; each check gets its verdict, or the call's failure.
    async fn send(&self, batch: Vec<Queued>) {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(batch.len());
        for check in &batch {
            invocation
                .arg(u8::from(check.consume))
                .arg(check.keys.len());
            for (key, (interval, tolerance)) in check.keys.iter().zip(&check.rates) {
                invocation.key(key).arg(interval).arg(tolerance);
            }
        }
        let reply: Result<Vec<u64>, StoreError> = self
            .connection
            .with(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                let error = Arc::new(error);
                for check in batch {
                    let _ = check
                        .answer
                        .send(Err(RedisLimitError::Store(error.clone())));
                }
                return;
            }
        };
        let now = reply.first().copied();
        let mut rest = reply.get(1..).unwrap_or_default();
        for check in batch {
            let count = check.keys.len();
            let verdict = match (now, rest.split_first()) {
                (Some(now), Some((&allowed, after))) if after.len() >= 2 * count => {
                    let (pairs, after) = after.split_at(2 * count);
                    rest = after;
                    Ok(Verdict {
                        now,
                        allowed: allowed == 1,
                        outcomes: pairs
                            .chunks(2)
                            .map(|pair| Outcome {
                                tat: pair[0],
                                conforms: pair[1] == 1,
                            })
                            .collect(),
                    })
                }
                _ => Err(RedisLimitError::NoAnswer),
            };
            let _ = check.answer.send(verdict);
        }
    }
}

/// Marks the batcher as not sending when the sending task ends, whether it emptied the queue
/// or was dropped on the way (a check queued after that starts another task).
struct Sending<'a>(&'a Batcher);

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.0.waiting().sending = false;
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
            key: "{user:1}:tier:user".to_string(),
            rate: Rate::parse("1/s").expect("a rate"),
        }];
        let error = limiter
            .check(&limits, Mode::Consume)
            .await
            .expect_err("nothing listens");
        let RedisLimitError::Store(cause) = &error else {
            panic!("{error:?}");
        };
        assert!(
            matches!(**cause, StoreError::Unavailable(Outage::Redis(_))),
            "{error:?}"
        );
        let outage = std::error::Error::source(&error).expect("the outage");
        assert!(outage.is::<Outage>(), "{error:?}");
    }
}
