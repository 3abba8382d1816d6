//! Tests of key checking, the bounded caches, the index of prefixes, and key parsing.

use std::time::Duration;

use super::cache::{Bounded, Cached, Caches};
use super::*;
use crate::store::MemoryStore;

const TTL: Duration = Duration::from_secs(30);

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

/// A well-formed key that no store holds, different for every `n`.
fn unknown(n: usize) -> String {
    format!("gk_{n:010}.the-secret-does-not-matter")
}

#[tokio::test]
async fn the_right_secret_is_valid_and_anything_else_is_not() {
    let store = Arc::new(MemoryStore::new());
    store.add_api_key(&stored("gk_a", "s3cret")).await.unwrap();
    let keys = ApiKeys::new(store, TTL);
    assert!(matches!(keys.check("gk_a.s3cret").await, KeyCheck::Valid(k) if k.name == "grading"));
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
    let keys = ApiKeys::new(store, TTL);
    assert!(matches!(keys.check("gk_old.x").await, KeyCheck::Invalid));
    assert!(matches!(keys.check("gk_rev.y").await, KeyCheck::Invalid));
}

#[tokio::test]
async fn answers_are_cached_until_forgotten() {
    let store = Arc::new(MemoryStore::new());
    store.add_api_key(&stored("gk_a", "s")).await.unwrap();
    let keys = ApiKeys::new(store.clone(), TTL);
    assert!(matches!(keys.check("gk_a.s").await, KeyCheck::Valid(_)));
    store.revoke_api_key("gk_a").await.unwrap();
    assert!(
        matches!(keys.check("gk_a.s").await, KeyCheck::Valid(_)),
        "still cached"
    );
    keys.forget("gk_a");
    assert!(matches!(keys.check("gk_a.s").await, KeyCheck::Invalid));
}

#[tokio::test]
async fn a_stream_of_unknown_keys_stays_bounded_and_keeps_the_valid_key_cached() {
    let store = Arc::new(MemoryStore::new());
    store.add_api_key(&stored("gk_a", "s")).await.unwrap();
    let keys = ApiKeys::new(store, TTL);
    assert!(matches!(keys.check("gk_a.s").await, KeyCheck::Valid(_)));
    // Not indexed yet: every unknown prefix is asked of the store and its absence remembered.
    for n in 0..100_000 {
        assert!(matches!(keys.check(&unknown(n)).await, KeyCheck::Invalid));
    }
    {
        let caches = keys.caches();
        assert!(caches.missing.len() <= 10_000, "{}", caches.missing.len());
        assert_eq!(caches.found.len(), 1);
        assert!(matches!(caches.lookup("gk_a", TTL), Cached::Fresh(_)));
    }
    assert!(matches!(keys.check("gk_a.s").await, KeyCheck::Valid(_)));
}

#[tokio::test]
async fn once_indexed_unknown_prefixes_are_refused_without_asking_the_store() {
    let store = Arc::new(MemoryStore::new());
    store.add_api_key(&stored("gk_a", "s")).await.unwrap();
    let keys = ApiKeys::new(store.clone(), TTL);
    assert!(matches!(keys.check(&unknown(1)).await, KeyCheck::Invalid));
    assert_eq!(keys.reindex().await, Some(1));
    assert_eq!(keys.caches().missing.len(), 0, "the index answers for them");

    // Added behind the index's back: refused until announced, though the store has it.
    store.add_api_key(&stored("gk_new", "t")).await.unwrap();
    assert!(matches!(keys.check("gk_new.t").await, KeyCheck::Invalid));
    keys.created("gk_new");
    assert!(matches!(keys.check("gk_new.t").await, KeyCheck::Valid(_)));

    for n in 0..100_000 {
        assert!(matches!(keys.check(&unknown(n)).await, KeyCheck::Invalid));
    }
    {
        let caches = keys.caches();
        assert_eq!(caches.missing.len(), 0);
        assert_eq!(
            caches.found.len(),
            1,
            "gk_new only: gk_a was never presented"
        );
    }
    assert!(matches!(keys.check("gk_a.s").await, KeyCheck::Valid(_)));
}

#[test]
fn cached_answers_go_stale_after_the_ttl() {
    let mut caches = Caches::new();
    let long_ago = Instant::now() - 2 * TTL;
    caches.remember("gk_old", Some(stored("gk_old", "s")), long_ago);
    caches.remember("gk_gone", None, long_ago);
    caches.remember("gk_new", Some(stored("gk_new", "s")), Instant::now());
    caches.remember("gk_none", None, Instant::now());
    assert!(matches!(caches.lookup("gk_old", TTL), Cached::Stale(_)));
    assert!(matches!(caches.lookup("gk_gone", TTL), Cached::Unknown));
    assert!(matches!(caches.lookup("gk_new", TTL), Cached::Fresh(_)));
    assert!(matches!(caches.lookup("gk_none", TTL), Cached::Absent));
    // A key created after its prefix was looked up is found again.
    caches.created("gk_none");
    assert!(matches!(caches.lookup("gk_none", TTL), Cached::Unknown));
}

#[test]
fn a_full_bounded_cache_replaces_one_entry_and_keeps_updating_the_others() {
    let mut cache = Bounded::new(3);
    let now = Instant::now();
    for prefix in ["a", "b", "c"] {
        cache.insert(prefix, (), now);
    }
    cache.insert("a", (), now);
    assert_eq!(cache.len(), 3, "a known prefix is updated in place");
    cache.insert("d", (), now);
    assert_eq!(cache.len(), 3);
    assert!(cache.get("d").is_some());
    cache.remove("d");
    assert_eq!(cache.len(), 2);
}

#[test]
fn generated_keys_split_back_and_hash_to_what_is_stored() {
    let (key, prefix, hash) = generate();
    let (p, secret) = split_api_key(&key).unwrap();
    assert_eq!(p, prefix);
    assert_eq!(hash_secret(secret), hash);
    assert_eq!(hash.len(), 64);
    assert_ne!(generate().0, key);
}
