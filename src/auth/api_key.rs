//! API keys for service integrations: `<prefix>.<secret>`, stored as the SHA-256 of the secret,
//! found by prefix and compared in constant time. Lookups are cached in-process (see `cache`) so
//! the store stays off the hot path, and an index of every prefix the store holds refuses unknown
//! prefixes without asking it: a stream of made-up keys costs no more than a valid one. A cached
//! key keeps working while the store is down; `events` keeps the index and the cache in step
//! with Redis (new keys and revocations within a second).

mod cache;
mod events;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use self::cache::{Cached, Caches};
pub use self::events::follow_key_events;
use crate::credentials::split_api_key;
use crate::logs::{Repeated, WithCauses};
use crate::store::{ApiKey, Store, StoreError};

/// The result of checking a presented key.
#[derive(Debug)]
pub enum KeyCheck {
    Valid(ApiKey),
    /// Unknown, wrong secret, revoked or expired.
    Invalid,
    /// Not cached and the store cannot be asked.
    StoreUnavailable,
}

/// How long a stale key keeps being used while one request asks the store for it again.
const REFRESHING: Duration = Duration::from_secs(1);

/// Taken with every request that uses a stale key while the store is down.
static STALE_FALLBACK: Repeated = Repeated::new();

pub struct ApiKeys {
    store: Arc<dyn Store>,
    ttl: Duration,
    /// Read by every request with a key, written only when the store was asked or the index
    /// changes: readers do not wait for one another.
    caches: RwLock<Caches>,
}

impl ApiKeys {
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> ApiKeys {
        ApiKeys {
            store,
            ttl,
            caches: RwLock::new(Caches::new()),
        }
    }

    fn caches(&self) -> std::sync::RwLockReadGuard<'_, Caches> {
        self.caches
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn caches_mut(&self) -> std::sync::RwLockWriteGuard<'_, Caches> {
        self.caches
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub async fn check(&self, presented: &str) -> KeyCheck {
        let Some((prefix, secret)) = split_api_key(presented) else {
            return KeyCheck::Invalid;
        };
        let stale = match self.caches().lookup(prefix, self.ttl) {
            Cached::Fresh(key) => return verdict(key, secret),
            Cached::Absent => return KeyCheck::Invalid,
            Cached::Stale(key) => Some(key),
            Cached::Unknown => None,
        };
        if let Some(key) = &stale {
            let refresh = self
                .caches_mut()
                .claim_refresh(prefix, self.ttl, REFRESHING);
            if !refresh {
                // Another request is asking the store for it right now.
                return verdict(key.clone(), secret);
            }
        }
        match self.store.api_key(prefix).await {
            Ok(key) => {
                self.caches_mut()
                    .remember(prefix, key.clone(), Instant::now());
                match key {
                    Some(key) => verdict(key, secret),
                    None => KeyCheck::Invalid,
                }
            }
            Err(StoreError::Unavailable(cause)) => match stale {
                Some(key) => {
                    if let Some(suppressed) = STALE_FALLBACK.due() {
                        tracing::warn!(
                            cause = %WithCauses(&cause),
                            suppressed,
                            "API key store unavailable; using the cached key"
                        );
                    }
                    verdict(key, secret)
                }
                None => KeyCheck::StoreUnavailable,
            },
            Err(_) => KeyCheck::Invalid,
        }
    }

    /// Drops a cached key, so its next use asks the store.
    pub fn forget(&self, prefix: &str) {
        self.caches_mut().forget(prefix);
    }

    /// Takes in a key created after the index was read.
    pub fn created(&self, prefix: &str) {
        self.caches_mut().created(prefix);
    }

    /// Reads every prefix the store holds into the index; from then on unknown prefixes are
    /// refused without asking the store. Returns the index's size, or `None` if the store could
    /// not be read (the instrumented store has logged why).
    pub async fn reindex(&self) -> Option<usize> {
        let prefixes = self.store.api_key_prefixes().await.ok()?;
        let mut caches = self.caches_mut();
        caches.indexed(prefixes);
        Some(caches.index_len())
    }

    /// How long a found or not-found answer is used before the store is asked again.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

fn verdict(key: ApiKey, secret: &str) -> KeyCheck {
    if accepts(&key, secret) {
        KeyCheck::Valid(key)
    } else {
        KeyCheck::Invalid
    }
}

fn accepts(key: &ApiKey, secret: &str) -> bool {
    let presented = hash_secret(secret);
    let matches: bool = presented
        .as_bytes()
        .ct_eq(key.secret_hash.as_bytes())
        .into();
    let expired = key
        .expires
        .is_some_and(|at| at <= crate::auth::jwt::unix_now());
    matches && !key.revoked && !expired
}

/// Lower-case hex SHA-256 of a key's secret part.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new key: the whole key (shown once), its prefix and the hash to store.
pub fn generate() -> (String, String, String) {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let prefix: String = (0..10)
        .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
        .collect();
    let prefix = format!("gk_{prefix}");
    let secret = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let hash = hash_secret(&secret);
    (format!("{prefix}.{secret}"), prefix, hash)
}

#[cfg(test)]
mod tests;
