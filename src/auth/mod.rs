//! Authentication: tokens, passwords, API keys, and who a request is; and [`load`], the
//! configuration with the keys built from it.

pub mod api_key;
pub mod identity;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod verified;

use std::path::Path;
use std::sync::Arc;

use crate::config::{self, AuthConfig, Config, ConfigErrors, StoreBackend};
use crate::store::{RedisConnection, Store};

use self::api_key::ApiKeys;
use self::jwt::Tokens;
use self::keys::KeyFiles;

/// A configuration and the token keys built from it.
pub struct Loaded {
    pub config: Config,
    /// `None` without a `jwt` section.
    pub tokens: Option<Arc<Tokens>>,
}

/// Loads the configuration and builds what authentication needs beyond its plain data: the
/// token keys, and the store's URL (checked here, taken again where the store is opened).
/// `check`, `serve` and a reload report the errors of both in one list.
pub fn load(path: &Path, key_files: KeyFiles) -> Result<Loaded, ConfigErrors> {
    let (config, tokens) = config::load_with(path, |config| {
        let mut errors = ConfigErrors::default();
        if let StoreBackend::Redis(settings) = &config.auth.store {
            if let Err(e) = crate::store::redis_url(settings) {
                errors.0.push(e);
            }
        }
        let tokens = config.auth.tokens.as_ref().and_then(|settings| {
            keys::tokens(settings, key_files)
                .map_err(|more| errors.0.extend(more.0))
                .ok()
        });
        if errors.is_empty() {
            Ok(tokens.map(Arc::new))
        } else {
            Err(errors)
        }
    })?;
    Ok(Loaded { config, tokens })
}

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
