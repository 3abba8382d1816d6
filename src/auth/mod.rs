//! Authentication: tokens, passwords, API keys, and who a request is.

pub mod api_key;
pub mod identity;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod verified;

use std::sync::Arc;

use crate::config::AuthConfig;
use crate::store::{RedisConnection, Store};

use self::api_key::ApiKeys;
use self::jwt::Tokens;

/// The authentication state shared by every request.
pub struct Auth {
    pub store: Arc<dyn Store>,
    pub api_keys: Arc<ApiKeys>,
    pub tokens: Option<Arc<Tokens>>,
    /// For following revocations; `None` with the memory store.
    pub redis: Option<Arc<RedisConnection>>,
}

impl Auth {
    pub fn new(
        config: &AuthConfig,
        tokens: Option<Arc<Tokens>>,
        store: Arc<dyn Store>,
        redis: Option<Arc<RedisConnection>>,
    ) -> Auth {
        let api_keys = Arc::new(ApiKeys::new(store.clone(), config.api_key_cache_ttl));
        Auth {
            store,
            api_keys,
            tokens,
            redis,
        }
    }
}
