//! Bearer tokens already verified, remembered per worker thread with the identity they gave. A
//! client sends the same token with each request, and verifying it again costs about 2 µs
//! (HS256) to 30 µs (EdDSA), more for a provider's RSA key. An entry serves only while its
//! verifier is current (the gateway's keys, or the one JWKS document that verified it) and only
//! until the token's `exp` plus the leeway; the cache is bounded; being per thread, it has no
//! lock that workers share. Only tokens that passed every check are remembered.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::identity::Identity;

/// Entries per thread; at this size, expired ones go, and if none has expired, all go.
const CAPACITY: usize = 4096;

static NEXT_VERIFIER: AtomicU64 = AtomicU64::new(1);

/// A number that no other verifier in the process has, to keep their entries apart.
pub fn verifier_id() -> u64 {
    NEXT_VERIFIER.fetch_add(1, Ordering::Relaxed)
}

struct Entry {
    verifier: u64,
    /// The last second (Unix time) the entry may serve.
    until: u64,
    identity: Identity,
}

thread_local! {
    static VERIFIED: RefCell<HashMap<Box<str>, Entry>> = RefCell::new(HashMap::new());
}

/// The identity `token` gave on this thread, if the verifier that checked it is `current` and
/// the token has not expired.
pub fn get(token: &str, now: u64, current: impl Fn(u64) -> bool) -> Option<Identity> {
    VERIFIED.with(|cache| {
        let cache = cache.borrow();
        let entry = cache.get(token)?;
        (entry.until >= now && current(entry.verifier)).then(|| entry.identity.clone())
    })
}

/// Remembers a token `verifier` has just verified, until the second `until`.
pub fn remember(verifier: u64, token: &str, identity: &Identity, until: u64, now: u64) {
    VERIFIED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= CAPACITY {
            cache.retain(|_, entry| entry.until >= now);
            if cache.len() >= CAPACITY {
                cache.clear();
            }
        }
        let entry = Entry {
            verifier,
            until,
            identity: identity.clone(),
        };
        cache.insert(token.into(), entry);
    });
}
