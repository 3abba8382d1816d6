//! Authentication: tokens, passwords, API keys, and who a request is.

pub mod api_key;
pub mod endpoints;
pub mod identity;
pub mod jwt;
pub mod password;
pub mod verified;

use std::sync::Arc;

use crate::config::AuthConfig;
use crate::ratelimit::{Limiter, RatePolicy};
use crate::store::{RedisConnection, Store};

use self::api_key::ApiKeys;
use self::endpoints::{LoginThrottle, TokenService};
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
    pub redis: Option<Arc<RedisConnection>>,
}

impl Auth {
    pub fn new(
        config: &AuthConfig,
        store: Arc<dyn Store>,
        redis: Option<Arc<RedisConnection>>,
        limiter: Arc<Limiter>,
        limits: &RatePolicy,
    ) -> Auth {
        let api_keys = Arc::new(ApiKeys::new(store.clone(), config.api_key_cache_ttl));
        // Half the cores at most: the lowest priority keeps checks off the cores' time, not out
        // of the caches and memory bandwidth they share with proxying (19 MiB per argon2 check).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let token_service = config.tokens.clone().map(|tokens| TokenService {
            tokens,
            store: store.clone(),
            passwords: PasswordChecker::new((cores / 2).max(1), config.max_pending_logins),
            throttle: LoginThrottle {
                limiter,
                policy: limits.clone(),
            },
        });
        Auth {
            store,
            api_keys,
            tokens: config.tokens.clone(),
            token_service,
            redis,
        }
    }
}
