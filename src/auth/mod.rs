//! Authentication: tokens, passwords, API keys, and who a request is.

pub mod api_key;
pub mod bearer;
pub mod identity;
pub mod issuers;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod legacy;
pub mod password;
pub mod verified;

use std::sync::Arc;

use crate::config::AuthConfig;
use crate::store::{RedisConnection, Store};

use self::api_key::ApiKeys;
use self::bearer::{BearerTokens, Foreign};
use self::jwt::Tokens;

/// The authentication state shared by every request.
pub struct Auth {
    pub store: Arc<dyn Store>,
    pub api_keys: Arc<ApiKeys>,
    /// Every kind of bearer token routes accept; `None` without a `jwt` section.
    pub bearer: Option<Arc<BearerTokens>>,
    /// For following revocations; `None` with the memory store.
    pub redis: Option<Arc<RedisConnection>>,
}

impl Auth {
    pub fn new(
        config: &AuthConfig,
        tokens: Option<Arc<Tokens>>,
        foreign: Foreign,
        store: Arc<dyn Store>,
        redis: Option<Arc<RedisConnection>>,
    ) -> Auth {
        let api_keys = Arc::new(ApiKeys::new(store.clone(), config.api_key_cache_ttl));
        let bearer = tokens.map(|own| {
            Arc::new(BearerTokens {
                own,
                foreign,
                store: store.clone(),
            })
        });
        Auth {
            store,
            api_keys,
            bearer,
            redis,
        }
    }
}
