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
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        let token_service = config.tokens.clone().map(|tokens| TokenService {
            tokens,
            store: store.clone(),
            passwords: PasswordChecker::new(parallelism.div_ceil(2)),
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
