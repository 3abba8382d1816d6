//! The Redis store, shared by every replica: one node, a sentinel master or a cluster (the keys
//! of each script share a hash tag, see `keys`). Each call has a short timeout so a slow Redis
//! never hangs a request.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};

use super::connection::{InvalidUrl, Link, Outage, RedisConnection};
use super::keys;
use super::target::RedisTarget;
use super::{ApiKey, FamilyRotation, NewUser, Rotation, Store, StoreError, User};

/// How many prefixes one SSCAN step asks for: few round trips, and no step blocks Redis long.
const SCAN_STEP: usize = 1000;

pub struct RedisStore {
    connection: Arc<RedisConnection>,
}

fn json_failure(e: serde_json::Error) -> StoreError {
    StoreError::Unavailable(Outage::Json(e))
}

impl RedisStore {
    pub fn new(target: RedisTarget, timeout: Duration) -> Result<RedisStore, InvalidUrl> {
        Ok(RedisStore {
            connection: Arc::new(RedisConnection::new(target, timeout)?),
        })
    }

    /// The connection, to share with other users of the same Redis (the rate limiter).
    pub fn connection(&self) -> Arc<RedisConnection> {
        self.connection.clone()
    }

    async fn with<T, F>(&self, op: impl FnOnce(Link) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.connection.with(op).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: String,
    ) -> Result<Option<T>, StoreError> {
        let text: Option<String> = self.with(|mut c| async move { c.get(key).await }).await?;
        text.map(|t| serde_json::from_str(&t).map_err(json_failure))
            .transpose()
    }
}

/// Adds a user only if neither of its names is taken.
const ADD_USER: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[1])
return 1
";

/// Adds an API key only if its prefix is free, lists it and announces it, in one step: a key is
/// never stored without being in the set the gateways index, nor indexed before it is stored.
const ADD_API_KEY: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX') == false then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
";

/// Moves a family to its next token only if the presented one is current; else revokes it.
const ROTATE_FAMILY: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
redis.call('SET', KEYS[1], '-revoked-', 'EX', ARGV[3])
return 0
";

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(drop)
    }

    fn whereabouts(&self) -> serde_json::Value {
        let redis = &self.connection;
        serde_json::json!({"backend": "redis", "redis": redis.describe(), "node": redis.serving()})
    }

    async fn user_by_login(&self, login: &str) -> Result<Option<User>, StoreError> {
        let index = keys::login(login);
        let id: Option<u64> = self.with(|mut c| async move { c.get(index).await }).await?;
        match id {
            Some(id) => self.user_by_id(id).await,
            None => Ok(None),
        }
    }

    async fn user_by_id(&self, id: u64) -> Result<Option<User>, StoreError> {
        self.get_json(keys::user(id)).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let ids: Vec<u64> = self
            .with(|mut c| async move { c.smembers(keys::users()).await })
            .await?;
        let mut users = Vec::new();
        for id in ids {
            users.extend(self.user_by_id(id).await?);
        }
        users.sort_by_key(|u| u.id);
        Ok(users)
    }

    async fn add_user(&self, new: NewUser) -> Result<User, StoreError> {
        let id: u64 = self
            .with(|mut c| async move { c.incr(keys::next_user_id(), 1).await })
            .await?;
        let user = new.into_user(id);
        let json = serde_json::to_string(&user).map_err(json_failure)?;
        let (name, email) = (keys::login(&user.username), keys::login(&user.email));
        let added: i64 = self
            .with(|mut c| async move {
                Script::new(ADD_USER)
                    .key(name)
                    .key(email)
                    .key(keys::user(id))
                    .key(keys::users())
                    .arg(id)
                    .arg(json)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if added == 1 {
            Ok(user)
        } else {
            Err(StoreError::Conflict(format!(
                "the username `{}` or the email `{}` is already taken",
                user.username, user.email
            )))
        }
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let mut stored = self
            .user_by_id(user.id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no user with id {}", user.id)))?;
        stored.role.clone_from(&user.role);
        stored.password_hash.clone_from(&user.password_hash);
        stored.active = user.active;
        let json = serde_json::to_string(&stored).map_err(json_failure)?;
        self.with(|mut c| async move { c.set(keys::user(stored.id), json).await })
            .await
    }

    async fn api_key(&self, prefix: &str) -> Result<Option<ApiKey>, StoreError> {
        self.get_json(keys::api_key(prefix)).await
    }

    async fn add_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let json = serde_json::to_string(key).map_err(json_failure)?;
        let (id, prefix) = (keys::api_key(&key.prefix), key.prefix.clone());
        let added: i64 = self
            .with(|mut c| async move {
                Script::new(ADD_API_KEY)
                    .key(id)
                    .key(keys::api_keys())
                    .arg(json)
                    .arg(prefix)
                    .arg(keys::CREATIONS)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if added == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "an API key with prefix `{}` exists",
                key.prefix
            )))
        }
    }

    async fn api_key_prefixes(&self) -> Result<Vec<String>, StoreError> {
        let mut prefixes = Vec::new();
        let mut cursor = 0u64;
        // Step by step, each within the timeout: SMEMBERS of a large set would hold Redis up.
        loop {
            let (next, step): (u64, Vec<String>) = self
                .with(|mut c| async move {
                    redis::cmd("SSCAN")
                        .arg(keys::api_keys())
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(SCAN_STEP)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            prefixes.extend(step);
            if next == 0 {
                return Ok(prefixes);
            }
            cursor = next;
        }
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let prefixes: Vec<String> = self
            .with(|mut c| async move { c.smembers(keys::api_keys()).await })
            .await?;
        let mut keys = Vec::new();
        for prefix in prefixes {
            keys.extend(self.api_key(&prefix).await?);
        }
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(keys)
    }

    async fn revoke_api_key(&self, prefix: &str) -> Result<bool, StoreError> {
        let Some(mut key) = self.api_key(prefix).await? else {
            return Ok(false);
        };
        key.revoked = true;
        let json = serde_json::to_string(&key).map_err(json_failure)?;
        let (id, prefix) = (keys::api_key(prefix), prefix.to_string());
        self.with(|mut c| async move {
            let () = c.set(id, json).await?;
            let _: i64 = c.publish(keys::REVOCATIONS, prefix).await?;
            Ok(())
        })
        .await?;
        Ok(true)
    }

    async fn start_family(&self, family: &str, jti: &str, ttl: Duration) -> Result<(), StoreError> {
        let (key, jti) = (keys::family(family), jti.to_string());
        self.with(|mut c| async move { c.set_ex(key, jti, ttl.as_secs().max(1)).await })
            .await
    }

    async fn rotate_family(&self, rotation: &FamilyRotation<'_>) -> Result<Rotation, StoreError> {
        let (key, presented, next) = (
            keys::family(rotation.family),
            rotation.presented.to_string(),
            rotation.next.to_string(),
        );
        let ttl = rotation.ttl.as_secs().max(1);
        let rotated: i64 = self
            .with(|mut c| async move {
                Script::new(ROTATE_FAMILY)
                    .key(key)
                    .arg(presented)
                    .arg(next)
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(if rotated == 1 {
            Rotation::Rotated
        } else {
            Rotation::Refused
        })
    }

    async fn revoke_family(&self, family: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = keys::family(family);
        self.with(|mut c| async move { c.set_ex(key, "-revoked-", ttl.as_secs().max(1)).await })
            .await
    }

    async fn mark_used(
        &self,
        mark: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let (key, value) = (keys::used_once(mark), value.to_string());
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::EX(ttl.as_secs().max(1)));
        let first = key.clone();
        let set: Option<String> = self
            .with(|mut c| async move { c.set_options(first, value, options).await })
            .await?;
        if set.is_some() {
            return Ok(None);
        }
        // Used before: what the first use left (a reuse, rare, pays a second round trip).
        let left: Option<String> = self.with(|mut c| async move { c.get(key).await }).await?;
        Ok(Some(left.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_redis_that_cannot_be_reached_is_the_cause_of_the_outage() {
        let store = RedisStore {
            connection: Arc::new(RedisConnection::unreachable()),
        };
        let error = store.ping().await.expect_err("nothing listens");
        assert!(
            matches!(error, StoreError::Unavailable(Outage::Redis(_))),
            "{error:?}"
        );
        let outage = std::error::Error::source(&error).expect("the outage");
        let cause = outage.source().expect("Redis's error");
        assert!(cause.is::<redis::RedisError>(), "{error:?}");
        // The next call fails fast, without asking Redis.
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(Outage::Resting))
        ));
    }

    #[test]
    fn a_url_the_client_refuses_is_named_with_the_cause() {
        let Err(error) =
            RedisStore::new(RedisTarget::node("nonsense://here"), Duration::from_secs(1))
        else {
            panic!("the URL was taken");
        };
        assert!(
            error.to_string().starts_with("`nonsense://here`: "),
            "{error}"
        );
        assert!(std::error::Error::source(&error).is_some_and(|c| c.is::<redis::RedisError>()));
    }
}
