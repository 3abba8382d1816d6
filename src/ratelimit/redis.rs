//! The shared limiter: one Redis script carries every limit of a request, so N replicas enforce
//! one limit exactly. Checks that arrive while a script call is on its way wait for the next
//! call, which carries them all, and a call leaves only once the requests already runnable on
//! its thread have added theirs: under load one round trip and one script run serve many
//! requests, decided one after the other as if each had its own call. Identical checks (one
//! consumer's requests to one route) travel as one group, which the script decides in one step:
//! how many of them the limits let through. In a cluster a script may only touch the keys of one
//! slot, so a batch is split by slot (a request's keys share one, the consumer's hash tag) into
//! calls sent together. Redis's own clock is used, so replicas with drifting clocks still agree.
//! Keys expire once their quota is full again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::cluster_routing::Slot;
use redis::Script;
use tokio::sync::oneshot;

use super::gcra::{self, Outcome};
use super::local::decide;
use super::{Decision, Limit, Mode, Rate};
use crate::store::{keys, RedisConnection, StoreError};

/// KEYS: every group's keys, one group after the other. ARGV: the number of groups, then per
/// group: consume (1/0), its number of checks, its number of limits, and per limit its interval
/// and tolerance (µs). Returns now, then per group: how many of its checks are allowed, and per
/// limit its TAT before the group. The checks of a group are decided one after the other: with
/// `consume`, each allowed check moves every TAT on by one interval, so the first `allowed` pass
/// and the rest see the limits full; without it, all pass or none. Each key is read once and
/// written once per call, however many groups share it.
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
  local checks = tonumber(ARGV[arg + 1])
  local count = tonumber(ARGV[arg + 2])
  arg = arg + 3
  local allowed = checks
  local before = {}
  table.insert(result, 0)
  local verdict = #result
  for i = 0, count - 1 do
    local interval = tonumber(ARGV[arg + 2 * i])
    local tolerance = tonumber(ARGV[arg + 2 * i + 1])
    local tat = tat_of(KEYS[key + i])
    before[i] = tat
    table.insert(result, tat)
    -- How many checks in a row conform: the largest c with tat + c * interval - now <= tolerance.
    local room = tolerance + now - tat
    local conforming = math.floor(room / interval)
    if (conforming + 1) * interval <= room then conforming = conforming + 1 end
    if conforming * interval > room then conforming = conforming - 1 end
    if conforming < 0 then conforming = 0 end
    if consume then
      if conforming < allowed then allowed = conforming end
    elseif conforming == 0 then
      allowed = 0
    end
  end
  result[verdict] = allowed
  if consume and allowed > 0 then
    for i = 0, count - 1 do
      local name = KEYS[key + i]
      if not changed[name] then
        changed[name] = true
        table.insert(order, name)
      end
      tats[name] = before[i] + allowed * tonumber(ARGV[arg + 2 * i])
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
    /// Per key, its limit's rate.
    rates: Vec<Rate>,
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
            rates: limits.iter().map(|l| l.rate).collect(),
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
            // Requests already runnable on this thread run first and add their checks: one call
            // then carries every check that is ready, not only those that came during the last.
            tokio::task::yield_now().await;
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

    /// One script call for `batch`, a group per set of identical checks; each check gets its
    /// verdict, or the call's failure.
    async fn send(&self, batch: Vec<Queued>) {
        let groups = groups(&batch);
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(groups.len());
        for members in &groups {
            let check = &batch[members[0]];
            invocation
                .arg(u8::from(check.consume))
                .arg(members.len())
                .arg(check.keys.len());
            for (key, rate) in check.keys.iter().zip(&check.rates) {
                invocation
                    .key(key)
                    .arg(rate.interval_us())
                    .arg(rate.tolerance_us());
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
        let mut verdicts: Vec<Option<Verdict>> = batch.iter().map(|_| None).collect();
        if let Some((&now, mut rest)) = reply.split_first() {
            for members in &groups {
                let check = &batch[members[0]];
                let Some((&allowed, after)) = rest.split_first() else {
                    break;
                };
                let Some((tats, after)) = after.split_at_checked(check.keys.len()) else {
                    break;
                };
                rest = after;
                for (position, &place) in (0..).zip(members) {
                    verdicts[place] = Some(verdict(check, tats, allowed, position, now));
                }
            }
        }
        for (check, verdict) in batch.into_iter().zip(verdicts) {
            let _ = check.answer.send(verdict.ok_or(RedisLimitError::NoAnswer));
        }
    }
}

/// The checks of `batch` by group: the places of the checks with the same keys, rates and mode,
/// groups in the order of their first check.
fn groups(batch: &[Queued]) -> Vec<Vec<usize>> {
    let mut group_of: HashMap<(&[String], &[Rate], bool), usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (place, check) in batch.iter().enumerate() {
        let group = *group_of
            .entry((&check.keys, &check.rates, check.consume))
            .or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
        groups[group].push(place);
    }
    groups
}

/// The verdict on the check at `position` in its group, whose keys stood at `tats` before the
/// group and of which the first `allowed` checks passed: each one before it that passed and
/// consumed moved the limits on by one interval.
fn verdict(check: &Queued, tats: &[u64], allowed: u64, position: u64, now: u64) -> Verdict {
    let counted = if check.consume {
        position.min(allowed)
    } else {
        0
    };
    Verdict {
        now,
        allowed: position < allowed,
        outcomes: check
            .rates
            .iter()
            .zip(tats)
            .map(|(rate, &tat)| gcra::step(rate, Some(tat + counted * rate.interval_us()), now))
            .collect(),
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
    use crate::store::Outage;

    fn queued(keys: &[&str], rates: &[Rate], consume: bool) -> Queued {
        Queued {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            rates: rates.to_vec(),
            consume,
            answer: oneshot::channel().0,
        }
    }

    #[test]
    fn identical_checks_share_a_group_in_the_order_of_their_first_check() {
        let (tier, route) = (Rate::parse("5/s").unwrap(), Rate::parse("2/s").unwrap());
        let batch = [
            queued(&["a"], &[tier], true),
            queued(&["b", "r"], &[tier, route], true),
            queued(&["a"], &[tier], true),
            queued(&["a"], &[tier], false),
            queued(&["b", "r"], &[tier, route], true),
            queued(&["a"], &[route], true),
        ];
        assert_eq!(groups(&batch), [vec![0, 2], vec![1, 4], vec![3], vec![5]]);
    }

    /// What the checks of a group would find one by one, each step feeding the next if it
    /// passed and consumed: the verdicts that one script call per check would give.
    fn one_by_one(
        check: &Queued,
        tats: &[u64],
        checks: u64,
        now: u64,
    ) -> Vec<(bool, Vec<Outcome>)> {
        let mut tats = tats.to_vec();
        (0..checks)
            .map(|_| {
                let outcomes: Vec<Outcome> = check
                    .rates
                    .iter()
                    .zip(&tats)
                    .map(|(rate, &tat)| gcra::step(rate, Some(tat), now))
                    .collect();
                let allowed = outcomes.iter().all(|o| o.conforms);
                if allowed && check.consume {
                    tats = outcomes.iter().map(|o| o.tat).collect();
                }
                (allowed, outcomes)
            })
            .collect()
    }

    #[test]
    fn a_group_decided_at_once_gets_the_verdicts_of_its_checks_one_by_one() {
        let now = 1_000_000_000;
        let (tier, route) = (Rate::parse("5/s").unwrap(), Rate::parse("3/s").unwrap());
        // Fresh keys, and keys with part of their quota used.
        for tats in [[now, now], [now + 400_000, now + 100_000]] {
            for consume in [true, false] {
                let check = queued(&["t", "r"], &[tier, route], consume);
                let expected = one_by_one(&check, &tats, 8, now);
                let allowed = expected.iter().filter(|(allowed, _)| *allowed).count() as u64;
                assert!(allowed > 0, "some pass");
                for (position, (passes, outcomes)) in (0..).zip(expected) {
                    let verdict = verdict(&check, &tats, allowed, position, now);
                    assert_eq!(
                        verdict.allowed, passes,
                        "check {position}, consume {consume}"
                    );
                    assert_eq!(
                        verdict.outcomes, outcomes,
                        "check {position}, consume {consume}"
                    );
                }
            }
        }
    }

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
