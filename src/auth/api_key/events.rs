//! Keeps one gateway's index of key prefixes and its key cache in step with the store. With
//! Redis, new keys and revocations are announced on pub/sub and taken in within a moment; after
//! every (re)subscription the index is read again, so nothing announced while this gateway was not
//! listening is missed (subscribe first, then scan: a key created in between is in one or the
//! other). Every TTL the index is read again as well, so a key that was never announced (written
//! by an older `guichet`, or by hand) is refused no longer than a not-found answer is cached.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubStream;
use tokio::time::Instant;

use super::ApiKeys;
use crate::logs::Repeated;
use crate::store::{RedisConnection, CREATIONS, REVOCATIONS};

/// The pause before subscribing or reading the index again after a failure.
const RETRY: Duration = Duration::from_secs(1);
/// Subscribing waits no longer than this for Redis (the index is not read meanwhile).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The index is read at most this often, whatever the TTL.
const MIN_REINDEX: Duration = Duration::from_secs(1);

static CANNOT_SUBSCRIBE: Repeated = Repeated::new();
static SUBSCRIPTION_LOST: Repeated = Repeated::new();

/// Loads the index at once and keeps it current until the future is dropped: from Redis
/// pub/sub when `redis` is given, else (memory store) by reading it again every TTL.
pub async fn follow_key_events(redis: Option<Arc<RedisConnection>>, keys: Arc<ApiKeys>) {
    let every = keys.ttl().max(MIN_REINDEX);
    let mut messages: Option<PubSubStream> = None;
    let mut next_subscribe = Instant::now();
    let mut next_index = Instant::now();
    // The first index read after each subscription is logged: tests and operators wait for it.
    let mut report = true;
    loop {
        tokio::select! {
            message = next_message(&mut messages) => match message {
                Some(message) => take_in(&keys, &message),
                None => {
                    if let Some(suppressed) = SUBSCRIPTION_LOST.due() {
                        tracing::warn!(suppressed, "lost the subscription to API key events; subscribing again");
                    }
                    messages = None;
                    next_subscribe = Instant::now() + RETRY;
                }
            },
            () = tokio::time::sleep_until(next_subscribe), if messages.is_none() && redis.is_some() => {
                if let Some(redis) = &redis {
                    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe(redis)).await {
                        Ok(Ok((stream, node))) => {
                            tracing::info!(%node, "subscribed to API key events");
                            messages = Some(stream);
                            next_index = Instant::now();
                            report = true;
                        }
                        Ok(Err(error)) => cannot_subscribe(&error),
                        Err(_) => cannot_subscribe(&"no answer within the timeout"),
                    }
                }
                next_subscribe = Instant::now() + RETRY;
            }
            () = tokio::time::sleep_until(next_index) => {
                // Announcements wait in the subscription's buffer while the index is read.
                let read = keys.reindex().await;
                if let (Some(size), true) = (read, report) {
                    tracing::info!(keys = size, "API key index loaded");
                    report = false;
                }
                next_index = Instant::now() + if read.is_some() { every } else { RETRY };
            }
        }
    }
}

/// A subscription to both channels, and the node it is made on.
async fn subscribe(redis: &RedisConnection) -> redis::RedisResult<(PubSubStream, String)> {
    let (mut pubsub, node) = redis.subscriber().await?;
    pubsub.subscribe(&[REVOCATIONS, CREATIONS]).await?;
    Ok((pubsub.into_on_message(), node))
}

fn cannot_subscribe(error: &dyn std::fmt::Display) {
    if let Some(suppressed) = CANNOT_SUBSCRIBE.due() {
        tracing::warn!(%error, suppressed, "cannot subscribe to API key events");
    }
}

/// The next announcement; never, without a subscription.
async fn next_message(messages: &mut Option<PubSubStream>) -> Option<redis::Msg> {
    match messages {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

fn take_in(keys: &ApiKeys, message: &redis::Msg) {
    let Ok(prefix) = message.get_payload::<String>() else {
        return;
    };
    match message.get_channel_name() {
        REVOCATIONS => {
            keys.forget(&prefix);
            tracing::info!(%prefix, "API key revoked; evicted from the cache");
        }
        CREATIONS => {
            keys.created(&prefix);
            tracing::info!(%prefix, "API key created; added to the index");
        }
        _ => {}
    }
}
