//! Authentication: tokens, passwords, API keys, and who a request is.

pub mod api_key;
pub mod endpoints;
pub mod identity;
pub mod jwt;
pub mod password;

use std::sync::Arc;

use crate::config::{AuthConfig, StoreBackend};
use crate::store::{MemoryStore, RedisStore, Store};

use self::api_key::ApiKeys;
use self::endpoints::TokenService;
use self::jwt::Tokens;
use self::password::PasswordChecker;

/// The authentication state shared by every request.
pub struct Auth {
    pub store: Arc<dyn Store>,
    pub api_keys: Arc<ApiKeys>,
    pub tokens: Option<Arc<Tokens>>,
    /// `None` without a `jwt` section: the token endpoints are off.
    pub token_service: Option<TokenService>,
    /// For following revocations; `None` with the memory store.
    pub redis: Option<redis::Client>,
}

impl Auth {
    /// Builds the configured store (seeded, for memory) and everything that uses it.
    pub fn new(config: &AuthConfig) -> Result<Auth, String> {
        let (store, redis): (Arc<dyn Store>, _) = match &config.store {
            StoreBackend::Memory => {
                let store = MemoryStore::new();
                for user in &config.seed_users {
                    store
                        .insert_user(user.clone())
                        .map_err(|e| format!("seed user `{}`: {e}", user.username))?;
                }
                for key in &config.seed_api_keys {
                    store
                        .insert_api_key(key.clone())
                        .map_err(|e| format!("seed API key `{}`: {e}", key.name))?;
                }
                (Arc::new(store), None)
            }
            StoreBackend::Redis { url } => {
                let store = RedisStore::new(url, config.store_timeout)?;
                let client = store.client().clone();
                (Arc::new(store), Some(client))
            }
        };
        let api_keys = Arc::new(ApiKeys::new(store.clone(), config.api_key_cache_ttl));
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        let token_service = config.tokens.clone().map(|tokens| TokenService {
            tokens,
            store: store.clone(),
            passwords: PasswordChecker::new(parallelism.div_ceil(2)),
        });
        Ok(Auth {
            store,
            api_keys,
            tokens: config.tokens.clone(),
            token_service,
            redis,
        })
    }
}
