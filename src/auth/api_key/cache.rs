//! What one gateway remembers of API key lookups, bounded whatever clients send: the keys found
//! (fresh for the TTL, then kept as the fallback while the store is down), the prefixes the store
//! did not have, and the index of every prefix the store holds. Unknown prefixes only ever enter
//! the not-found cache, so no stream of them can push a found key out; every operation is O(1).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use crate::store::ApiKey;

/// Found keys kept at most. Only prefixes the store holds get in, so this bounds memory only
/// where a deployment has more keys in use than this.
const FOUND: usize = 10_000;
/// Not-found prefixes kept at most (about 1 MiB), for while the index is not loaded.
const MISSING: usize = 10_000;

/// A map of at most `capacity` prefixes, each with when it was learnt. When it is full, a new
/// prefix replaces one picked at random: O(1), where finding the oldest would need a scan or a
/// second structure, and no pattern of requests can choose what goes.
pub(super) struct Bounded<V> {
    entries: IndexMap<Box<str>, (Instant, V)>,
    capacity: usize,
}

impl<V> Bounded<V> {
    pub(super) fn new(capacity: usize) -> Bounded<V> {
        Bounded {
            entries: IndexMap::new(),
            capacity,
        }
    }

    pub(super) fn get(&self, prefix: &str) -> Option<&(Instant, V)> {
        self.entries.get(prefix)
    }

    fn get_mut(&mut self, prefix: &str) -> Option<&mut (Instant, V)> {
        self.entries.get_mut(prefix)
    }

    pub(super) fn insert(&mut self, prefix: &str, value: V, at: Instant) {
        if let Some(entry) = self.entries.get_mut(prefix) {
            *entry = (at, value);
            return;
        }
        if self.entries.len() >= self.capacity {
            let victim = rand::random::<usize>() % self.entries.len();
            self.entries.swap_remove_index(victim);
        }
        self.entries.insert(prefix.into(), (at, value));
    }

    pub(super) fn remove(&mut self, prefix: &str) {
        self.entries.swap_remove(prefix);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What the caches know of a prefix.
#[derive(Debug)]
pub(super) enum Cached {
    /// Found within the TTL.
    Fresh(ApiKey),
    /// Found longer ago than the TTL: to be asked again, and used if the store cannot answer.
    Stale(ApiKey),
    /// Not in the index, or not found within the TTL.
    Absent,
    /// Nothing known: ask the store.
    Unknown,
}

pub(super) struct Caches {
    pub(super) found: Bounded<ApiKey>,
    pub(super) missing: Bounded<()>,
    /// Every prefix the store holds, once `indexed`; only grows (keys are revoked, never
    /// deleted), with prefixes read by a scan or announced on creation.
    known: HashSet<Box<str>>,
    /// Whether a full scan has completed, so that a prefix not in `known` does not exist.
    indexed: bool,
}

impl Caches {
    pub(super) fn new() -> Caches {
        Caches {
            found: Bounded::new(FOUND),
            missing: Bounded::new(MISSING),
            known: HashSet::new(),
            indexed: false,
        }
    }

    pub(super) fn lookup(&self, prefix: &str, ttl: Duration) -> Cached {
        if let Some((at, key)) = self.found.get(prefix) {
            return if at.elapsed() < ttl {
                Cached::Fresh(key.clone())
            } else {
                Cached::Stale(key.clone())
            };
        }
        if self.indexed && !self.known.contains(prefix) {
            return Cached::Absent;
        }
        match self.missing.get(prefix) {
            Some((at, ())) if at.elapsed() < ttl => Cached::Absent,
            _ => Cached::Unknown,
        }
    }

    /// What the store answered for `prefix`.
    pub(super) fn remember(&mut self, prefix: &str, key: Option<ApiKey>, at: Instant) {
        match key {
            Some(key) => {
                self.missing.remove(prefix);
                self.found.insert(prefix, key, at);
            }
            None => {
                self.found.remove(prefix);
                self.missing.insert(prefix, (), at);
            }
        }
    }

    /// Whether the caller is the one to ask the store again for a found key gone stale: the
    /// first caller is, and the key is marked fresh for `grace` meanwhile, so the requests that
    /// come during the refresh use it instead of all asking the store at once.
    pub(super) fn claim_refresh(&mut self, prefix: &str, ttl: Duration, grace: Duration) -> bool {
        match self.found.get_mut(prefix) {
            Some((at, _)) if at.elapsed() >= ttl => {
                let now = Instant::now();
                *at = now.checked_sub(ttl.saturating_sub(grace)).unwrap_or(now);
                true
            }
            _ => false,
        }
    }

    pub(super) fn forget(&mut self, prefix: &str) {
        self.found.remove(prefix);
        self.missing.remove(prefix);
    }

    /// A key was created: its prefix exists from now on.
    pub(super) fn created(&mut self, prefix: &str) {
        self.missing.remove(prefix);
        self.known.insert(prefix.into());
    }

    /// A full scan's prefixes: from now on, a prefix not in the index does not exist.
    pub(super) fn indexed(&mut self, prefixes: Vec<String>) {
        self.known
            .extend(prefixes.into_iter().map(String::into_boxed_str));
        self.indexed = true;
        // The index answers for every prefix now; what the store did not have is not needed.
        self.missing = Bounded::new(MISSING);
    }

    pub(super) fn index_len(&self) -> usize {
        self.known.len()
    }
}
