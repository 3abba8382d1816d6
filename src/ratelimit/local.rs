//! The in-process limiter: GCRA over tables of theoretical arrival times (TAT), with an injected
//! clock so tests advance time instead of sleeping. The keys are spread over shards, each with
//! its own lock, so worker threads checking different consumers do not wait for one another.
//!
//! Memory is bounded whatever clients do. A limit is tracked under a 64-bit keyed hash of its
//! key, not the key's text (16 bytes an entry). At most `max_tracked_keys` keys are tracked
//! exactly; a consumer arriving when its shard is full is counted in one of a fixed set of
//! shared cells chosen by its hash. Every merge of two consumers' counts — a hash collision in
//! the table, several consumers in one cell, a key leaving a cell for an exact entry with the
//! cell's state — only adds to what each one is charged: limits get stricter, never looser.
//! Entries are dropped only once their quota is full again, so a dropped key starts over from
//! a full quota or from its cell's state, never from more than it had: neither the cap nor a
//! sweep lets a throttled client through.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{gcra, Decision, Limit, Mode};
use crate::logs::Repeated;

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

/// `rate_limits.max_tracked_keys` when unset (its memory is in the README's "Rate limits").
pub const DEFAULT_MAX_TRACKED_KEYS: usize = 1_000_000;
/// Independent locks; a request's limits (its tier and its route's) usually fall in two.
const SHARDS: usize = 32;
const _: () = assert!(
    SHARDS <= u32::BITS as usize,
    "the shards a check needs are a u32 mask"
);
/// Shared cells per shard for the consumers its table has no room for: 65,536 in all, 512 KiB.
const CELLS: usize = 2_048;
/// Keys a shard's table has room for at first (at least; its size is rounded up). When full, it
/// grows straight to its share of the cap: a process with few clients stays small, and the
/// table is rehashed once while small, not doubled at tens of thousands of entries on the
/// check that happens to fill it.
const FIRST_ROOM: usize = 1_024;
/// A shard is swept when as many new keys arrived since its last sweep as that sweep kept, and
/// at least this many: a sweep over n entries is paid for by n / 2 arrivals or more, and its
/// scan of the table's empty slots (16 at a time) by this many.
const SWEEP_FLOOR: usize = 1_024;

/// The bits of a key's hash that pick its shard and its cell, apart from each other and from
/// the low bits the table's buckets use.
fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

fn cell_of(hash: u64) -> usize {
    (hash >> 40) as usize % CELLS
}

/// The tables are keyed by a hash already: hashing it again would only cost time.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One lock's worth of keys: the exact table, and the cells shared by the keys it has no room
/// for.
struct Shard {
    /// Key hash → TAT: room for [`FIRST_ROOM`] keys, then for `room`.
    tats: HashMap<u64, u64, BuildHasherDefault<Prehashed>>,
    /// How many keys this shard may track exactly: its share of `max_tracked_keys`.
    room: usize,
    /// TATs shared by the keys that arrived when the table was full.
    cells: Vec<u64>,
    /// Keys counted for the first time (in the table or a cell) since the last sweep.
    arrivals: usize,
    /// Entries the last sweep kept.
    kept: usize,
}

/// What recording one counted request found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Recorded {
    Tracked,
    /// The table was full: the key is counted in its shared cell.
    Shared,
}

impl Shard {
    fn new(room: usize) -> Shard {
        Shard {
            tats: HashMap::with_capacity_and_hasher(
                room.min(FIRST_ROOM),
                BuildHasherDefault::default(),
            ),
            room,
            cells: vec![0; CELLS],
            arrivals: 0,
            kept: 0,
        }
    }

    /// The TAT a key's check starts from: its own, else its cell's (0, a quota long full, until
    /// a key is counted there). A key without an entry may have been counted in its cell while
    /// the table was full, so it cannot start afresh.
    fn stored(&self, hash: u64) -> Option<u64> {
        self.tats
            .get(&hash)
            .or_else(|| self.cells.get(cell_of(hash)))
            .copied()
    }

    /// Stores a counted request's TAT. TATs only move forward (`max`): when two limits of one
    /// request share an entry or a cell, the later write must not undo the earlier one.
    fn record(&mut self, hash: u64, tat: u64, now: u64) -> Recorded {
        if let Some(stored) = self.tats.get_mut(&hash) {
            *stored = (*stored).max(tat);
            return Recorded::Tracked;
        }
        self.arrivals += 1;
        if self.arrivals >= self.kept.max(SWEEP_FLOOR) {
            self.sweep(now);
        }
        if self.tats.len() < self.room {
            if self.tats.len() == self.tats.capacity() {
                self.tats.reserve(self.room - self.tats.len());
            }
            self.tats.insert(hash, tat);
            return Recorded::Tracked;
        }
        if let Some(cell) = self.cells.get_mut(cell_of(hash)) {
            *cell = (*cell).max(tat);
        }
        Recorded::Shared
    }

    /// Drops the entries whose quota is full again (TAT not after now): a missing key starts
    /// from a full quota or from its cell's state, never with more left than it had.
    fn sweep(&mut self, now: u64) {
        self.tats.retain(|_, tat| *tat > now);
        self.kept = self.tats.len();
        self.arrivals = 0;
    }
}

pub struct LocalLimiter {
    clock: Arc<dyn Clock>,
    shards: Box<[Mutex<Shard>]>,
    /// Keyed at random per process, so clients cannot aim their keys at one shard or cell.
    hasher: RandomState,
    max_tracked_keys: usize,
    full: Repeated,
}

impl LocalLimiter {
    /// A limiter tracking up to [`DEFAULT_MAX_TRACKED_KEYS`] keys exactly.
    pub fn new(clock: Arc<dyn Clock>) -> LocalLimiter {
        LocalLimiter::with_max_tracked_keys(clock, DEFAULT_MAX_TRACKED_KEYS)
    }

    /// A limiter tracking up to `max_tracked_keys` keys exactly, shared out evenly over the
    /// shards (the first ones take the remainder), so the total never exceeds it.
    pub fn with_max_tracked_keys(clock: Arc<dyn Clock>, max_tracked_keys: usize) -> LocalLimiter {
        let (share, remainder) = (max_tracked_keys / SHARDS, max_tracked_keys % SHARDS);
        LocalLimiter {
            clock,
            shards: (0..SHARDS)
                .map(|index| Mutex::new(Shard::new(share + usize::from(index < remainder))))
                .collect(),
            hasher: RandomState::new(),
            max_tracked_keys,
            full: Repeated::new(),
        }
    }

    /// Checks (and with `Mode::Consume` counts) all of `limits` or none: the shards they fall
    /// in are locked together, always in ascending order, so two checks cannot deadlock.
    pub fn check(&self, limits: &[Limit], mode: Mode) -> Decision {
        let now = self.clock.now_us();
        let hashes: Vec<u64> = limits
            .iter()
            .map(|l| self.hasher.hash_one(&l.key))
            .collect();
        let needed = hashes
            .iter()
            .fold(0u32, |mask, &hash| mask | 1 << shard_of(hash));
        let mut guards: [Option<MutexGuard<'_, Shard>>; SHARDS] = std::array::from_fn(|_| None);
        for (index, guard) in guards.iter_mut().enumerate() {
            if needed & 1 << index != 0 {
                *guard = Some(
                    self.shards[index]
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()),
                );
            }
        }
        let outcomes: Vec<gcra::Outcome> = limits
            .iter()
            .zip(&hashes)
            .map(|(l, &hash)| {
                let stored = guards[shard_of(hash)]
                    .as_ref()
                    .and_then(|shard| shard.stored(hash));
                gcra::step(&l.rate, stored, now)
            })
            .collect();
        let allowed = outcomes.iter().all(|o| o.conforms);
        let mut shared = false;
        if allowed && mode == Mode::Consume {
            for (outcome, &hash) in outcomes.iter().zip(&hashes) {
                if let Some(shard) = guards[shard_of(hash)].as_mut() {
                    shared |= shard.record(hash, outcome.tat, now) == Recorded::Shared;
                }
            }
        }
        drop(guards);
        if shared {
            if let Some(suppressed) = self.full.due() {
                tracing::warn!(
                    max_tracked_keys = self.max_tracked_keys,
                    suppressed,
                    "the local rate limiter tracks as many keys as it may; new consumers share \
                     counters, so their limits are stricter until older keys expire"
                );
            }
        }
        decide(limits, &outcomes, allowed, mode, now)
    }

    /// Entries in the exact tables, over all shards.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.tats.len()))
            .sum()
    }

    /// Whether `key` has an exact entry.
    #[cfg(test)]
    fn tracks(&self, key: &str) -> bool {
        let hash = self.hasher.hash_one(key);
        self.shards[shard_of(hash)]
            .lock()
            .is_ok_and(|s| s.tats.contains_key(&hash))
    }

    /// Sweeps every shard now, whatever the arrivals since the last sweep.
    #[cfg(test)]
    fn sweep_all(&self) {
        let now = self.clock.now_us();
        for shard in self.shards.iter() {
            if let Ok(mut shard) = shard.lock() {
                shard.sweep(now);
            }
        }
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
mod tests;
