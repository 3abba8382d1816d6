//! A [`Store`] that times every call and counts the failures, by operation, for
//! `guichet_store_duration_seconds` and `guichet_store_errors_total`; while the store is down,
//! each operation's failures are logged at most once every ten seconds.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus::{HistogramVec, IntCounterVec};

use super::{ApiKey, FamilyRotation, NewUser, Rotation, Store, StoreError, User};
use crate::logs::{Repeated, WithCauses};

/// Every operation, in the order of their warnings in [`Instrumented::down`].
const OPERATIONS: [&str; 15] = [
    "ping",
    "user_by_login",
    "user_by_id",
    "list_users",
    "add_user",
    "update_user",
    "api_key",
    "add_api_key",
    "list_api_keys",
    "api_key_prefixes",
    "revoke_api_key",
    "start_family",
    "rotate_family",
    "revoke_family",
    "mark_used",
];

pub struct Instrumented {
    inner: Arc<dyn Store>,
    duration: HistogramVec,
    errors: IntCounterVec,
    /// One "store call failed" warning per operation.
    down: [Repeated; OPERATIONS.len()],
}

impl Instrumented {
    pub fn new(
        inner: Arc<dyn Store>,
        duration: HistogramVec,
        errors: IntCounterVec,
    ) -> Instrumented {
        // Every operation's series exists from the start, at 0: a query by operation (an
        // alert's rate(), a dashboard) then sees each one on a healthy gateway, not no series.
        for op in OPERATIONS {
            errors.with_label_values(&[op]);
        }
        Instrumented {
            inner,
            duration,
            errors,
            down: std::array::from_fn(|_| Repeated::new()),
        }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            self.errors.with_label_values(&[op]).inc();
            let warning = OPERATIONS.iter().position(|known| *known == op);
            if let (StoreError::Unavailable(_), Some(warning)) = (error, warning) {
                if let Some(suppressed) = self.down[warning].due() {
                    let error = WithCauses(error);
                    tracing::warn!(op, %error, suppressed, "store call failed");
                }
            }
        }
        result
    }
}

#[async_trait]
impl Store for Instrumented {
    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }

    fn whereabouts(&self) -> serde_json::Value {
        self.inner.whereabouts()
    }

    async fn user_by_login(&self, login: &str) -> Result<Option<User>, StoreError> {
        self.timed("user_by_login", self.inner.user_by_login(login))
            .await
    }

    async fn user_by_id(&self, id: u64) -> Result<Option<User>, StoreError> {
        self.timed("user_by_id", self.inner.user_by_id(id)).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.timed("list_users", self.inner.list_users()).await
    }

    async fn add_user(&self, user: NewUser) -> Result<User, StoreError> {
        self.timed("add_user", self.inner.add_user(user)).await
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        self.timed("update_user", self.inner.update_user(user))
            .await
    }

    async fn api_key(&self, prefix: &str) -> Result<Option<ApiKey>, StoreError> {
        self.timed("api_key", self.inner.api_key(prefix)).await
    }

    async fn add_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        self.timed("add_api_key", self.inner.add_api_key(key)).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.timed("list_api_keys", self.inner.list_api_keys())
            .await
    }

    async fn api_key_prefixes(&self) -> Result<Vec<String>, StoreError> {
        self.timed("api_key_prefixes", self.inner.api_key_prefixes())
            .await
    }

    async fn revoke_api_key(&self, prefix: &str) -> Result<bool, StoreError> {
        self.timed("revoke_api_key", self.inner.revoke_api_key(prefix))
            .await
    }

    async fn start_family(&self, family: &str, jti: &str, ttl: Duration) -> Result<(), StoreError> {
        self.timed("start_family", self.inner.start_family(family, jti, ttl))
            .await
    }

    async fn rotate_family(&self, rotation: &FamilyRotation<'_>) -> Result<Rotation, StoreError> {
        self.timed("rotate_family", self.inner.rotate_family(rotation))
            .await
    }

    async fn revoke_family(&self, family: &str, ttl: Duration) -> Result<(), StoreError> {
        self.timed("revoke_family", self.inner.revoke_family(family, ttl))
            .await
    }

    async fn mark_used(
        &self,
        mark: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.timed("mark_used", self.inner.mark_used(mark, value, ttl))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::MemoryStore;

    #[test]
    fn every_operation_has_an_error_series_at_zero_before_any_call() {
        let metrics = Metrics::new().unwrap();
        let _store = Instrumented::new(
            Arc::new(MemoryStore::new()),
            metrics.store_duration.clone(),
            metrics.store_errors.clone(),
        );
        let exposition = String::from_utf8(metrics.render()).unwrap();
        for op in OPERATIONS {
            let line = format!("guichet_store_errors_total{{op=\"{op}\"}} 0");
            assert!(
                exposition.lines().any(|l| l == line),
                "no {line} in\n{exposition}"
            );
        }
    }
}
