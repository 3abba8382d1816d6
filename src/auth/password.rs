//! Password hashing with argon2id, off the event loop and with bounded concurrency, so a burst
//! of logins never stalls proxied traffic. An unknown user costs the same as a wrong password.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::Semaphore;

/// Verifies passwords on the blocking pool, at most `permits` at a time.
#[derive(Clone)]
pub struct PasswordChecker {
    permits: Arc<Semaphore>,
    /// Verified against when the user does not exist, to spend the same time.
    decoy: Arc<str>,
}

impl PasswordChecker {
    pub fn new(permits: usize) -> PasswordChecker {
        PasswordChecker {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            decoy: hash("decoy password that never matches").into(),
        }
    }

    /// Whether `password` matches `stored` (an argon2 PHC string); `None` checks the decoy and
    /// returns false. A malformed stored hash never matches.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let matches_user = stored.is_some();
        let stored: Arc<str> = stored.map_or_else(|| self.decoy.clone(), Arc::from);
        let password = password.to_string();
        let verified = tokio::task::spawn_blocking(move || verify_blocking(&password, &stored))
            .await
            .unwrap_or(false);
        verified && matches_user
    }
}

fn verify_blocking(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// An argon2id PHC string for `password` with a fresh salt.
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// Whether `text` is an argon2 PHC string, for config checks.
pub fn is_argon2_hash(text: &str) -> bool {
    PasswordHash::new(text).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let checker = PasswordChecker::new(2);
        let stored = hash("demo-password");
        assert!(stored.starts_with("$argon2id$"));
        assert!(is_argon2_hash(&stored));
        assert!(checker.verify("demo-password", Some(&stored)).await);
        assert!(!checker.verify("Demo-password", Some(&stored)).await);
        assert!(!checker.verify("demo-password", Some("not a hash")).await);
        assert!(
            !checker
                .verify("decoy password that never matches", None)
                .await
        );
        assert!(!is_argon2_hash("$2b$12$bcrypt-hash"));
    }
}
