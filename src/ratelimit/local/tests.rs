use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;

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

fn clock() -> Arc<ManualClock> {
    let clock = Arc::new(ManualClock::default());
    clock.advance(Duration::from_secs(1_000_000));
    clock
}

fn limiter() -> (Arc<ManualClock>, LocalLimiter) {
    let clock = clock();
    (clock.clone(), LocalLimiter::new(clock))
}

fn capped(max_tracked_keys: usize) -> (Arc<ManualClock>, LocalLimiter) {
    let clock = clock();
    (
        clock.clone(),
        LocalLimiter::with_max_tracked_keys(clock, max_tracked_keys),
    )
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
    assert_eq!(limiter.tracked(), 1);
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

/// The issue's attack: a million client addresses at `anonymous: 100/day` over two minutes.
/// The cap is a quarter of that, so every shard fills and three quarters of the consumers
/// are counted in shared cells. Consumers throttled before and after the cap was reached stay
/// throttled through it and through sweeps.
#[test]
fn a_million_consumers_stay_within_the_cap_and_the_throttled_stay_throttled() {
    const CAP: usize = 250_000;
    const CONSUMERS: usize = 1_000_000;
    let (clock, limiter) = capped(CAP);
    let anonymous = |n: usize| {
        [limit(
            "anonymous",
            &format!("tier:anonymous:ip:{n}"),
            "100/day",
        )]
    };
    let exhaust = |limits: &[Limit]| {
        let allowed = (0..150)
            .filter(|_| limiter.check(limits, Mode::Consume).allowed)
            .count();
        assert!(allowed <= 100, "{allowed} requests passed a limit of 100");
    };
    let mut throttled = Vec::new();
    for n in 0..5 {
        let limits = anonymous(CONSUMERS + n);
        exhaust(&limits);
        throttled.push(limits);
    }
    let still_throttled = |throttled: &[[Limit; 1]]| {
        for limits in throttled {
            assert!(!limiter.check(limits, Mode::Peek).allowed, "{limits:?}");
            assert!(!limiter.check(limits, Mode::Consume).allowed, "{limits:?}");
        }
    };
    for n in 0..CONSUMERS {
        clock.advance(Duration::from_micros(120));
        limiter.check(&anonymous(n), Mode::Consume);
        if n % 1_000 == 0 {
            assert!(limiter.tracked() <= CAP, "{} tracked", limiter.tracked());
        }
        if n % 100_000 == 99_999 {
            still_throttled(&throttled);
            // Beyond the cap, a new consumer is limited too, in a shared cell.
            if n >= CAP {
                let limits = anonymous(CONSUMERS + n);
                exhaust(&limits);
                throttled.push(limits);
            }
        }
    }
    assert_eq!(limiter.tracked(), CAP, "every shard filled up");
    limiter.sweep_all();
    assert_eq!(limiter.tracked(), CAP, "no entry of the last day expired");
    still_throttled(&throttled);
    // A day on, every quota is full again: the sweep empties the tables and nobody is stuck.
    clock.advance(Duration::from_secs(86_400));
    limiter.sweep_all();
    assert_eq!(limiter.tracked(), 0);
    for limits in &throttled {
        assert!(limiter.check(limits, Mode::Consume).allowed);
    }
}

#[test]
fn a_key_given_an_entry_after_sharing_a_cell_keeps_what_it_used() {
    let (clock, limiter) = capped(64);
    // Short-lived keys fill every shard's room (two each).
    for n in 0..1_000 {
        limiter.check(&[limit("a", &format!("filler:{n}"), "1/s")], Mode::Consume);
    }
    assert_eq!(limiter.tracked(), 64);
    // Two seconds on the fillers' quotas are full again, so their cells say nothing of the
    // consumer below, but no sweep has run: its shard is still full and it gets a cell.
    clock.advance(Duration::from_secs(2));
    let late = [limit("anonymous", "late", "3/day")];
    assert!(limiter.check(&late, Mode::Consume).allowed);
    assert!(limiter.check(&late, Mode::Consume).allowed);
    assert!(!limiter.tracks("late"));
    limiter.sweep_all();
    assert_eq!(limiter.tracked(), 0);
    // Room again: its third request gets an exact entry, which starts from the cell's state,
    // so the fourth is refused as it would have been without the cap.
    assert!(limiter.check(&late, Mode::Consume).allowed);
    assert!(limiter.tracks("late"));
    let refused = limiter.check(&late, Mode::Consume);
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after, 28_800);
}

#[test]
fn two_limits_of_one_request_in_one_cell_both_keep_their_count() {
    // No room at all: every key is counted in a cell.
    let (clock, limiter) = capped(0);
    let spot = |key: &String| {
        let hash = limiter.hasher.hash_one(key);
        (shard_of(hash), cell_of(hash))
    };
    let mut seen = HashMap::new();
    let (slow, quick) = (0..)
        .map(|n| format!("k{n}"))
        .find_map(|key| {
            seen.insert(spot(&key), key.clone())
                .map(|other| (other, key))
        })
        .unwrap();
    let slow = limit("slow", &slow, "1/day");
    let both = [slow.clone(), limit("quick", &quick, "3/s")];
    assert!(limiter.check(&both, Mode::Consume).allowed);
    // The quick limit's quota is full again a second later; the slow one's is not.
    clock.advance(Duration::from_secs(1));
    assert!(!limiter.check(&[slow], Mode::Consume).allowed);
}

#[test]
fn sweeps_run_as_the_table_doubles_not_on_every_check() {
    let (_, limiter) = capped(DEFAULT_MAX_TRACKED_KEYS);
    let hashes: Vec<u64> = (0..200_000)
        .map(|n| limiter.hasher.hash_one(format!("k{n}")))
        .collect();
    for n in 0..200_000 {
        limiter.check(&[limit("a", &format!("k{n}"), "100/day")], Mode::Consume);
    }
    // Every key is live; each shard was swept when its arrivals since the last sweep reached
    // what that sweep kept, so what it kept is at least half of what it holds.
    for (index, shard) in limiter.shards.iter().enumerate() {
        let shard = shard.lock().unwrap();
        let holds = hashes.iter().filter(|&&h| shard_of(h) == index).count();
        assert_eq!(shard.tats.len(), holds);
        assert!(shard.kept >= SWEEP_FLOOR && 2 * shard.kept >= holds - SWEEP_FLOOR);
        assert!(shard.arrivals < shard.kept.max(SWEEP_FLOOR));
    }
}

#[test]
fn a_table_starts_small_and_grows_once_straight_to_its_share_of_the_cap() {
    let (_, limiter) = capped(64_000);
    let capacity = |shard: usize| limiter.shards[shard].lock().unwrap().tats.capacity();
    let mut seen: Vec<Vec<usize>> = (0..SHARDS).map(|shard| vec![capacity(shard)]).collect();
    assert!(seen.iter().all(|c| c[0] < 2 * FIRST_ROOM));
    for n in 0..150_000 {
        let key = format!("k{n}");
        limiter.check(&[limit("a", &key, "100/day")], Mode::Consume);
        let shard = shard_of(limiter.hasher.hash_one(&key));
        let now = capacity(shard);
        if seen[shard].last() != Some(&now) {
            seen[shard].push(now);
        }
    }
    assert_eq!(limiter.tracked(), 64_000);
    for (shard, capacities) in seen.iter().enumerate() {
        assert_eq!(capacities.len(), 2, "shard {shard}: {capacities:?}");
        assert!(capacities[1] >= 2_000, "shard {shard}: {capacities:?}");
    }
}

/// One step of a property run.
#[derive(Clone, Debug)]
enum Step {
    /// A request with one or two limits (keys from a small pool, distinct).
    Check {
        keys: Vec<usize>,
        consume: bool,
    },
    Advance(u64),
    Sweep,
}

/// Each key of the pool has its rate, from quick to slow.
fn pool_limit(key: usize) -> Limit {
    let rate = ["3/s", "2/min", "5/hour", "100/day", "1/min"][key % 5];
    limit("p", &format!("key:{key}"), rate)
}

fn steps(pool: usize) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => (prop::sample::subsequence((0..pool).collect::<Vec<_>>(), 1..=2), any::<bool>())
            .prop_map(|(keys, consume)| Step::Check { keys, consume }),
        2 => (0u64..120_000_000).prop_map(Step::Advance),
        1 => Just(Step::Sweep),
    ];
    prop::collection::vec(step, 1..400)
}

/// Runs `steps` through `limiter` and through an exact GCRA per key that counts what the
/// limiter let through. Returns, per check, (limiter allowed, exact model would allow).
fn run(limiter: &LocalLimiter, clock: &ManualClock, steps: &[Step]) -> Vec<(bool, bool)> {
    let mut exact: HashMap<usize, u64> = HashMap::new();
    let mut verdicts = Vec::new();
    for step in steps {
        match step {
            Step::Advance(us) => clock.advance(Duration::from_micros(*us)),
            Step::Sweep => limiter.sweep_all(),
            Step::Check { keys, consume } => {
                let limits: Vec<Limit> = keys.iter().map(|&k| pool_limit(k)).collect();
                let mode = if *consume { Mode::Consume } else { Mode::Peek };
                let now = clock.now_us();
                let allowed = limiter.check(&limits, mode).allowed;
                let outcomes: Vec<gcra::Outcome> = keys
                    .iter()
                    .zip(&limits)
                    .map(|(k, l)| gcra::step(&l.rate, exact.get(k).copied(), now))
                    .collect();
                if allowed && *consume {
                    for (k, outcome) in keys.iter().zip(&outcomes) {
                        exact.insert(*k, outcome.tat);
                    }
                }
                verdicts.push((allowed, outcomes.iter().all(|o| o.conforms)));
            }
        }
    }
    verdicts
}

proptest! {
    /// With a small cap (down to none at all), the limiter never lets through a request that,
    /// after what it already let through, exceeds one of its limits.
    #[test]
    fn the_limiter_never_allows_what_an_exact_limiter_refuses(
        cap in 0usize..48,
        steps in steps(40),
    ) {
        let (clock, limiter) = capped(cap);
        for (index, (allowed, exact)) in run(&limiter, &clock, &steps).into_iter().enumerate() {
            prop_assert!(!allowed || exact, "check {} was let through", index);
            prop_assert!(limiter.tracked() <= cap);
        }
    }

    /// With room for every key, the limiter is the exact one.
    #[test]
    fn with_room_for_every_key_the_limiter_is_exact(steps in steps(40)) {
        let (clock, limiter) = capped(DEFAULT_MAX_TRACKED_KEYS);
        for (index, (allowed, exact)) in run(&limiter, &clock, &steps).into_iter().enumerate() {
            prop_assert_eq!(allowed, exact, "check {}", index);
        }
    }
}
