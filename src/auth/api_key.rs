//! API keys for service integrations: `<prefix>.<secret>`, stored as the SHA-256 of the secret,
//! found by prefix and compared in constant time. Lookups are cached in-process (found and
//! not-found alike) so Redis stays off the hot path; a cached key keeps working while the store
//! is down, and revocations announced on Redis pub/sub evict the cache within a second.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{ApiKey, Store, StoreError};

/// More entries than this and not-found answers are no longer cached (random prefixes must not
/// grow memory without bound).
const MAX_CACHED: usize = 10_000;

/// The result of checking a presented key.
#[derive(Debug)]
pub enum KeyCheck {
    Valid(ApiKey),
    /// Unknown, wrong secret, revoked or expired.
    Invalid,
    /// Not cached and the store cannot be asked.
    StoreUnavailable,
}

struct Cached {
    fetched: Instant,
    key: Option<ApiKey>,
}

pub struct ApiKeys {
    store: Arc<dyn Store>,
    ttl: Duration,
    /// Read by every request with a key, written only on a miss: readers do not wait for one
    /// another.
    cache: RwLock<HashMap<String, Cached>>,
}

impl ApiKeys {
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> ApiKeys {
        ApiKeys {
            store,
            ttl,
            cache: RwLock::new(HashMap::new()),
        }
    }

    fn cached(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Cached>> {
        self.cache
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cache_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Cached>> {
        self.cache
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub async fn check(&self, presented: &str) -> KeyCheck {
        let Some((prefix, secret)) = split(presented) else {
            return KeyCheck::Invalid;
        };
        let (fresh, stale) = match self.cached().get(prefix) {
            Some(entry) if entry.fetched.elapsed() < self.ttl => (Some(entry.key.clone()), None),
            Some(entry) => (None, Some(entry.key.clone())),
            None => (None, None),
        };
        let key = match fresh {
            Some(key) => key,
            None => match self.store.api_key(prefix).await {
                Ok(key) => {
                    self.remember(prefix, key.clone());
                    key
                }
                Err(StoreError::Unavailable(cause)) => match stale {
                    Some(key) => {
                        tracing::warn!(%cause, "API key store unavailable; using the cached key");
                        key
                    }
                    None => return KeyCheck::StoreUnavailable,
                },
                Err(_) => return KeyCheck::Invalid,
            },
        };
        match key {
            Some(key) if accepts(&key, secret) => KeyCheck::Valid(key),
            _ => KeyCheck::Invalid,
        }
    }

    fn remember(&self, prefix: &str, key: Option<ApiKey>) {
        let mut cache = self.cache_mut();
        if cache.len() >= MAX_CACHED {
            let ttl = self.ttl;
            cache.retain(|_, entry| entry.fetched.elapsed() < ttl);
            if cache.len() >= MAX_CACHED && key.is_none() {
                return;
            }
        }
        cache.insert(
            prefix.to_string(),
            Cached {
                fetched: Instant::now(),
                key,
            },
        );
    }

    /// Drops a cached key, so its next use asks the store.
    pub fn forget(&self, prefix: &str) {
        self.cache_mut().remove(prefix);
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

/// `<prefix>.<secret>` split in two, if it has that shape.
pub fn split(presented: &str) -> Option<(&str, &str)> {
    let (prefix, secret) = presented.trim().split_once('.')?;
    let valid_prefix = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (valid_prefix && !secret.is_empty() && secret.len() <= 256).then_some((prefix, secret))
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

/// Evicts revoked keys from `keys` as Redis announces them, reconnecting after failures.
pub async fn follow_revocations(client: redis::Client, keys: Arc<ApiKeys>) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if let Err(e) = pubsub.subscribe(crate::store::REVOCATIONS).await {
                    tracing::warn!(error = %e, "cannot subscribe to API key revocations");
                } else {
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        if let Ok(prefix) = message.get_payload::<String>() {
                            keys.forget(&prefix);
                            tracing::info!(%prefix, "API key revoked; evicted from the cache");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot follow API key revocations"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn stored(prefix: &str, secret: &str) -> ApiKey {
        ApiKey {
            prefix: prefix.to_string(),
            name: "grading".to_string(),
            secret_hash: hash_secret(secret),
            role: "instructor".to_string(),
            scopes: vec![],
            created: 0,
            expires: None,
            revoked: false,
        }
    }

    #[tokio::test]
    async fn the_right_secret_is_valid_and_anything_else_is_not() {
        let store = Arc::new(MemoryStore::new());
        store.add_api_key(&stored("gk_a", "s3cret")).await.unwrap();
        let keys = ApiKeys::new(store, Duration::from_secs(30));
        assert!(
            matches!(keys.check("gk_a.s3cret").await, KeyCheck::Valid(k) if k.name == "grading")
        );
        for bad in [
            "gk_a.wrong",
            "gk_b.s3cret",
            "gk_a",
            ".s3cret",
            "gk a.s3cret",
            "",
        ] {
            assert!(matches!(keys.check(bad).await, KeyCheck::Invalid), "{bad}");
        }
    }

    #[tokio::test]
    async fn revoked_and_expired_keys_are_invalid() {
        let store = Arc::new(MemoryStore::new());
        let mut expired = stored("gk_old", "x");
        expired.expires = Some(1);
        store.add_api_key(&expired).await.unwrap();
        store.add_api_key(&stored("gk_rev", "y")).await.unwrap();
        store.revoke_api_key("gk_rev").await.unwrap();
        let keys = ApiKeys::new(store, Duration::from_secs(30));
        assert!(matches!(keys.check("gk_old.x").await, KeyCheck::Invalid));
        assert!(matches!(keys.check("gk_rev.y").await, KeyCheck::Invalid));
    }

    #[tokio::test]
    async fn answers_are_cached_until_forgotten() {
        let store = Arc::new(MemoryStore::new());
        store.add_api_key(&stored("gk_a", "s")).await.unwrap();
        let keys = ApiKeys::new(store.clone(), Duration::from_secs(30));
        assert!(matches!(keys.check("gk_a.s").await, KeyCheck::Valid(_)));
        store.revoke_api_key("gk_a").await.unwrap();
        assert!(
            matches!(keys.check("gk_a.s").await, KeyCheck::Valid(_)),
            "still cached"
        );
        keys.forget("gk_a");
        assert!(matches!(keys.check("gk_a.s").await, KeyCheck::Invalid));
    }

    #[test]
    fn generated_keys_split_back_and_hash_to_what_is_stored() {
        let (key, prefix, hash) = generate();
        let (p, secret) = split(&key).unwrap();
        assert_eq!(p, prefix);
        assert_eq!(hash_secret(secret), hash);
        assert_eq!(hash.len(), 64);
        assert_ne!(generate().0, key);
    }
}
