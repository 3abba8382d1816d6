//! The in-process limiter: GCRA over maps of theoretical arrival times, with an injected clock
//! so tests advance time instead of sleeping. The keys are spread over shards, each with its
//! own lock, so worker threads checking different consumers do not wait for one another.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{gcra, Decision, Limit, Mode};

/// Microseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now_us(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }
}

/// Above this many keys in one shard, its expired ones are swept on the next check.
const SWEEP_AT: usize = 4_096;
/// Independent locks; a request's limits (its tier and its route's) usually fall in two.
const SHARDS: usize = 32;
const _: () = assert!(
    SHARDS <= u32::BITS as usize,
    "the shards a check needs are a u32 mask"
);

type Tats = HashMap<String, u64>;

pub struct LocalLimiter {
    clock: Arc<dyn Clock>,
    shards: Box<[Mutex<Tats>]>,
    hasher: RandomState,
}

impl LocalLimiter {
    pub fn new(clock: Arc<dyn Clock>) -> LocalLimiter {
        LocalLimiter {
            clock,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// Checks (and with `Mode::Consume` counts) all of `limits` or none: the shards they fall
    /// in are locked together, always in ascending order, so two checks cannot deadlock.
    pub fn check(&self, limits: &[Limit], mode: Mode) -> Decision {
        let now = self.clock.now_us();
        let shard_of_limit: Vec<usize> = limits.iter().map(|l| self.shard_of(&l.key)).collect();
        let needed = shard_of_limit
            .iter()
            .fold(0u32, |mask, shard| mask | 1 << shard);
        let mut guards: [Option<MutexGuard<'_, Tats>>; SHARDS] = std::array::from_fn(|_| None);
        for (index, guard) in guards.iter_mut().enumerate() {
            if needed & 1 << index != 0 {
                let mut tats = self.shards[index]
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if tats.len() > SWEEP_AT {
                    tats.retain(|_, tat| *tat > now);
                }
                *guard = Some(tats);
            }
        }
        let outcomes: Vec<gcra::Outcome> = limits
            .iter()
            .zip(&shard_of_limit)
            .map(|(l, &shard)| {
                let tat = guards[shard].as_ref().and_then(|tats| tats.get(&l.key));
                gcra::step(&l.rate, tat.copied(), now)
            })
            .collect();
        let allowed = outcomes.iter().all(|o| o.conforms);
        if allowed && mode == Mode::Consume {
            for ((limit, outcome), &shard) in limits.iter().zip(&outcomes).zip(&shard_of_limit) {
                let Some(tats) = guards[shard].as_mut() else {
                    continue;
                };
                match tats.get_mut(&limit.key) {
                    Some(tat) => *tat = outcome.tat,
                    None => {
                        tats.insert(limit.key.clone(), outcome.tat);
                    }
                }
            }
        }
        decide(limits, &outcomes, allowed, mode, now)
    }
}

/// The decision from each limit's outcome (shared with the Redis limiter).
pub(super) fn decide(
    limits: &[Limit],
    outcomes: &[gcra::Outcome],
    allowed: bool,
    mode: Mode,
    now: u64,
) -> Decision {
    let mut retry_us = 0;
    let states = limits
        .iter()
        .zip(outcomes)
        .map(|(limit, outcome)| {
            // Unless counted, the state is what it was before this request.
            let tat = if allowed && mode == Mode::Consume {
                outcome.tat
            } else {
                outcome.tat.saturating_sub(if outcome.conforms {
                    limit.rate.interval_us()
                } else {
                    0
                })
            };
            if !outcome.conforms {
                retry_us = retry_us.max(gcra::wait_us(&limit.rate, tat, now));
            }
            let remaining = gcra::remaining(&limit.rate, tat, now);
            let reset = tat.saturating_sub(now).div_ceil(1_000_000);
            (remaining, reset)
        })
        .collect();
    Decision {
        allowed,
        retry_after: retry_us.div_ceil(1_000_000).max(u64::from(!allowed)),
        states,
        refused_by: outcomes.iter().position(|o| !o.conforms),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::ratelimit::Rate;

    /// A clock the test moves by hand.
    #[derive(Default)]
    struct ManualClock(AtomicU64);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            self.0.fetch_add(by.as_micros() as u64, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now_us(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn limit(policy: &str, key: &str, rate: &str) -> Limit {
        Limit {
            policy: policy.to_string(),
            key: key.to_string(),
            rate: Rate::parse(rate).unwrap(),
        }
    }

    fn limiter() -> (Arc<ManualClock>, LocalLimiter) {
        let clock = Arc::new(ManualClock::default());
        clock.advance(Duration::from_secs(1_000_000));
        (clock.clone(), LocalLimiter::new(clock))
    }

    #[test]
    fn threads_sharing_limits_across_shards_let_exactly_the_count_through() {
        let (_, limiter) = limiter();
        let limiter = Arc::new(limiter);
        // Eight consumers' tiers and one shared route limit: keys in several shards, and each
        // check locking more than one of them.
        let allowed: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|consumer| {
                    let limiter = limiter.clone();
                    scope.spawn(move || {
                        let limits = [
                            limit("user", &format!("tier:u{consumer}"), "1000/min"),
                            limit("route", "route:shared", "100/min"),
                        ];
                        (0..50)
                            .filter(|_| limiter.check(&limits, Mode::Consume).allowed)
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(allowed, 100);
    }

    #[test]
    fn a_limit_lets_its_count_through_then_refuses_with_retry_after() {
        let (clock, limiter) = limiter();
        let limits = [limit("user", "u1", "3/min")];
        for remaining in [2, 1, 0] {
            let decision = limiter.check(&limits, Mode::Consume);
            assert!(decision.allowed);
            assert_eq!(decision.states[0].0, remaining);
        }
        let refused = limiter.check(&limits, Mode::Consume);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 20);
        assert_eq!(refused.states[0], (0, 60));
        clock.advance(Duration::from_secs(20));
        assert!(limiter.check(&limits, Mode::Consume).allowed);
    }

    #[test]
    fn every_limit_must_pass_and_a_refusal_counts_against_none() {
        let (_, limiter) = limiter();
        let tier = limit("user", "u1", "10/min");
        let route = limit("route", "r:u1", "2/min");
        let both = [tier.clone(), route.clone()];
        assert!(limiter.check(&both, Mode::Consume).allowed);
        assert!(limiter.check(&both, Mode::Consume).allowed);
        let refused = limiter.check(&both, Mode::Consume);
        assert!(!refused.allowed);
        // The refused request did not use the tier's quota: 8 of 10 remain.
        let alone = limiter.check(std::slice::from_ref(&tier), Mode::Peek);
        assert_eq!(alone.states[0].0, 8);
    }

    #[test]
    fn peeking_counts_nothing() {
        let (_, limiter) = limiter();
        let limits = [limit("login", "ip", "1/min")];
        for _ in 0..5 {
            assert!(limiter.check(&limits, Mode::Peek).allowed);
        }
        assert!(limiter.check(&limits, Mode::Consume).allowed);
        assert!(!limiter.check(&limits, Mode::Peek).allowed);
    }

    #[test]
    fn keys_are_counted_apart() {
        let (_, limiter) = limiter();
        assert!(
            limiter
                .check(&[limit("a", "k1", "1/hour")], Mode::Consume)
                .allowed
        );
        assert!(
            limiter
                .check(&[limit("a", "k2", "1/hour")], Mode::Consume)
                .allowed
        );
        assert!(
            !limiter
                .check(&[limit("a", "k1", "1/hour")], Mode::Consume)
                .allowed
        );
    }

    #[test]
    fn the_fields_follow_the_draft() {
        let (_, limiter) = limiter();
        let limits = [limit("user", "u", "100/hour"), limit("route", "r", "5/min")];
        let decision = limiter.check(&limits, Mode::Consume);
        let (policy, current) = decision.fields(&limits);
        assert_eq!(policy, "\"user\";q=100;w=3600, \"route\";q=5;w=60");
        assert_eq!(current, "\"user\";r=99;t=36, \"route\";r=4;t=12");
    }
}
