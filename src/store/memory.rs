//! The in-process store: the embedded default for one gateway, seeded from config.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{login_key, ApiKey, FamilyRotation, NewUser, Rotation, Store, StoreError, User};

#[derive(Default)]
struct State {
    users: HashMap<u64, User>,
    logins: HashMap<String, u64>,
    api_keys: HashMap<String, ApiKey>,
    /// Family → (current jti, or `None` once revoked; expiry).
    families: HashMap<String, (Option<String>, Instant)>,
    /// Marks used once → (the value the use left, expiry).
    used: HashMap<String, (String, Instant)>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-written: recover them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Inserts a user with a given id (seeding); names must be unique.
    pub fn insert_user(&self, user: User) -> Result<(), StoreError> {
        let mut state = self.lock();
        for login in [&user.username, &user.email] {
            if state.logins.contains_key(&login_key(login)) {
                return Err(StoreError::Conflict(format!("`{login}` is already taken")));
            }
        }
        state.logins.insert(login_key(&user.username), user.id);
        state.logins.insert(login_key(&user.email), user.id);
        state.users.insert(user.id, user);
        Ok(())
    }
}

impl MemoryStore {
    /// Inserts an API key (seeding); prefixes must be unique.
    pub fn insert_api_key(&self, key: ApiKey) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state.api_keys.contains_key(&key.prefix) {
            return Err(StoreError::Conflict(format!(
                "an API key with prefix `{}` exists",
                key.prefix
            )));
        }
        state.api_keys.insert(key.prefix.clone(), key);
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn user_by_login(&self, login: &str) -> Result<Option<User>, StoreError> {
        let state = self.lock();
        Ok(state
            .logins
            .get(&login_key(login))
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    async fn user_by_id(&self, id: u64) -> Result<Option<User>, StoreError> {
        Ok(self.lock().users.get(&id).cloned())
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let mut users: Vec<User> = self.lock().users.values().cloned().collect();
        users.sort_by_key(|u| u.id);
        Ok(users)
    }

    async fn add_user(&self, new: NewUser) -> Result<User, StoreError> {
        let id = self.lock().users.keys().max().map_or(1, |max| max + 1);
        let user = new.into_user(id);
        self.insert_user(user.clone())?;
        Ok(user)
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let mut state = self.lock();
        match state.users.get_mut(&user.id) {
            Some(stored) => {
                stored.role.clone_from(&user.role);
                stored.password_hash.clone_from(&user.password_hash);
                stored.active = user.active;
                Ok(())
            }
            None => Err(StoreError::NotFound(format!("no user with id {}", user.id))),
        }
    }

    async fn api_key(&self, prefix: &str) -> Result<Option<ApiKey>, StoreError> {
        Ok(self.lock().api_keys.get(prefix).cloned())
    }

    async fn add_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        self.insert_api_key(key.clone())
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let mut keys: Vec<ApiKey> = self.lock().api_keys.values().cloned().collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(keys)
    }

    async fn api_key_prefixes(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().api_keys.keys().cloned().collect())
    }

    async fn revoke_api_key(&self, prefix: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .api_keys
            .get_mut(prefix)
            .map(|key| key.revoked = true)
            .is_some())
    }

    async fn start_family(&self, family: &str, jti: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut state = self.lock();
        let now = Instant::now();
        state.families.retain(|_, (_, expires)| *expires > now);
        state
            .families
            .insert(family.to_string(), (Some(jti.to_string()), now + ttl));
        Ok(())
    }

    async fn rotate_family(&self, rotation: &FamilyRotation<'_>) -> Result<Rotation, StoreError> {
        let mut state = self.lock();
        let now = Instant::now();
        let expires = now + rotation.ttl;
        let entry = state
            .families
            .entry(rotation.family.to_string())
            .or_insert((None, expires));
        let current = entry.0.as_deref().filter(|_| entry.1 > now);
        if current == Some(rotation.presented) {
            *entry = (Some(rotation.next.to_string()), expires);
            Ok(Rotation::Rotated)
        } else {
            *entry = (None, expires);
            Ok(Rotation::Refused)
        }
    }

    async fn revoke_family(&self, family: &str, ttl: Duration) -> Result<(), StoreError> {
        self.lock()
            .families
            .insert(family.to_string(), (None, Instant::now() + ttl));
        Ok(())
    }

    async fn mark_used(
        &self,
        mark: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let mut state = self.lock();
        let now = Instant::now();
        state.used.retain(|_, (_, expires)| *expires > now);
        if let Some((left, _)) = state.used.get(mark) {
            return Ok(Some(left.clone()));
        }
        state
            .used
            .insert(mark.to_string(), (value.to_string(), now + ttl));
        Ok(None)
    }
}
