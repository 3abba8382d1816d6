//! The Redis store's URL: `GUICHET_REDIS_URL` when it is set, else `store.url` from
//! gateway.yaml. Taken where the store is opened, and by every load so that `check` and a
//! reload refuse a bad one at the setting's position.

use crate::config::{ConfigError, RedisSettings, Setting};

const REDIS_URL_ENV: &str = "GUICHET_REDIS_URL";

/// The URL the Redis store opens.
pub fn redis_url(settings: &RedisSettings) -> Result<String, ConfigError> {
    let from_env = std::env::var(REDIS_URL_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|value| Setting {
            value,
            at: settings.at.clone(),
            field: format!("{}.url", settings.section),
        });
    let Some(url) = from_env.or_else(|| settings.url.clone()) else {
        let backend = Setting {
            value: (),
            at: settings.at.clone(),
            field: format!("{}.backend", settings.section),
        };
        return Err(backend.error(
            "the redis store needs a URL",
            &format!("add `url: redis://127.0.0.1:6379/0`, or set {REDIS_URL_ENV}"),
        ));
    };
    match ::redis::Client::open(url.value.as_str()) {
        Ok(_) => Ok(url.value),
        Err(e) => Err(url.error(
            format!("`{}` is not a Redis URL: {e}", url.value),
            "write redis://host:6379/0 or unix:///path/to/redis.sock",
        )),
    }
}
