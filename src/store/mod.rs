//! Where state lives: users, API keys and refresh-token families. One [`Store`] interface with
//! two implementations: in-process memory (the embedded default, seeded from config) and Redis
//! (shared by every replica).

mod connection;
mod instrumented;
pub mod keys;
mod memory;
mod redis;
mod target;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::connection::{InvalidUrl, Link, Outage, RedisConnection};
pub use self::instrumented::Instrumented;
pub use self::keys::{CREATIONS, REVOCATIONS};
pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;
pub use self::target::{redis_target, RedisTarget, Topology};

/// A user who can log in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub username: String,
    pub email: String,
    pub role: String,
    /// An argon2id PHC string; never the password.
    pub password_hash: String,
    pub active: bool,
}

/// A user before the store gives it an id.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub role: String,
    pub password_hash: String,
}

impl NewUser {
    /// The user as stored under `id`: active, since a new account can log in at once.
    pub fn into_user(self, id: u64) -> User {
        User {
            id,
            username: self.username,
            email: self.email,
            role: self.role,
            password_hash: self.password_hash,
            active: true,
        }
    }
}

/// An API key as stored: the SHA-256 of its secret, never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The public part of `<prefix>.<secret>`, by which the key is found.
    pub prefix: String,
    pub name: String,
    /// Lower-case hex SHA-256 of the secret part.
    pub secret_hash: String,
    pub role: String,
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created: u64,
    pub expires: Option<u64>,
    pub revoked: bool,
}

/// One refresh of a token family, each part named: `presented` and `next` are both token ids
/// and easy to swap in a positional call.
#[derive(Clone, Copy, Debug)]
pub struct FamilyRotation<'a> {
    pub family: &'a str,
    /// The token the client presented, which must be the family's current one.
    pub presented: &'a str,
    /// The token that becomes current if it is.
    pub next: &'a str,
    /// How long the family is kept from now, rotated or revoked.
    pub ttl: Duration,
}

/// What presenting a refresh token did to its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was the family's current one; the next one is now current.
    Rotated,
    /// The token was already rotated, revoked or unknown: the whole family is now revoked.
    Refused,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(#[source] Outage),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
}

/// Every piece of shared state the gateway keeps.
#[async_trait]
pub trait Store: Send + Sync {
    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Which store this is and, for Redis, the node in use (for `/readyz`).
    fn whereabouts(&self) -> serde_json::Value {
        serde_json::json!({"backend": "memory"})
    }

    /// The user whose username or email (either, case-insensitively) is `login`.
    async fn user_by_login(&self, login: &str) -> Result<Option<User>, StoreError>;
    async fn user_by_id(&self, id: u64) -> Result<Option<User>, StoreError>;
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    /// Adds a user with the next id; a taken username or email is a conflict.
    async fn add_user(&self, user: NewUser) -> Result<User, StoreError>;
    /// Replaces a user's role, password hash or active flag (not its names).
    async fn update_user(&self, user: &User) -> Result<(), StoreError>;

    async fn api_key(&self, prefix: &str) -> Result<Option<ApiKey>, StoreError>;
    async fn add_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// The prefix of every key, revoked and expired ones included (for each gateway's index of
    /// the prefixes that exist); may name one twice.
    async fn api_key_prefixes(&self) -> Result<Vec<String>, StoreError>;
    /// Marks a key revoked and tells every replica; false if there is no such key.
    async fn revoke_api_key(&self, prefix: &str) -> Result<bool, StoreError>;

    /// Starts a refresh-token family whose current token is `jti`.
    async fn start_family(&self, family: &str, jti: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Atomically moves the family from `presented` to `next`, or revokes it if `presented` is
    /// not its current token.
    async fn rotate_family(&self, rotation: &FamilyRotation<'_>) -> Result<Rotation, StoreError>;
    async fn revoke_family(&self, family: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Marks `mark` as used for `ttl`, leaving `value` with it: `None` the first time, and while
    /// the mark stands, the value the first use left.
    async fn mark_used(
        &self,
        mark: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError>;
}

/// The configured store and, for Redis, its connection, to share with the rate limiter.
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub redis: Option<Arc<RedisConnection>>,
}

/// Why the configured store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("seed user `{username}`: {source}")]
    SeedUser {
        username: String,
        #[source]
        source: StoreError,
    },
    #[error("seed API key `{name}`: {source}")]
    SeedApiKey {
        name: String,
        #[source]
        source: StoreError,
    },
    /// No usable Redis settings: the configuration's message, at the setting's position.
    #[error("{0}")]
    Url(crate::config::ConfigError),
    #[error("{0}")]
    Redis(#[from] InvalidUrl),
}

/// Opens the configured store (seeded, for memory).
pub fn open(config: &crate::config::AuthConfig) -> Result<Opened, OpenError> {
    match &config.store {
        crate::config::StoreBackend::Memory => {
            let store = MemoryStore::new();
            for user in &config.seed_users {
                store
                    .insert_user(user.clone())
                    .map_err(|source| OpenError::SeedUser {
                        username: user.username.clone(),
                        source,
                    })?;
            }
            for key in &config.seed_api_keys {
                store
                    .insert_api_key(key.clone())
                    .map_err(|source| OpenError::SeedApiKey {
                        name: key.name.clone(),
                        source,
                    })?;
            }
            Ok(Opened {
                store: Arc::new(store),
                redis: None,
            })
        }
        crate::config::StoreBackend::Redis(settings) => {
            let target = redis_target(settings).map_err(OpenError::Url)?;
            let store = RedisStore::new(target, config.store_timeout)?;
            let redis = Some(store.connection());
            Ok(Opened {
                store: Arc::new(store),
                redis,
            })
        }
    }
}

/// Usernames and emails are matched case-insensitively.
pub(crate) fn login_key(login: &str) -> String {
    login.trim().to_lowercase()
}
