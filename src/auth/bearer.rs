//! Bearer tokens of every source a route accepts: Guichet's own first (the common case, checked
//! with no lookup beyond the per-thread cache), then by the unverified `iss`: a trusted
//! issuer's, or with no `iss`, the Django app's legacy token, whose user is looked up in the
//! store. Every identity found is remembered per thread until its token expires.

use std::sync::Arc;

use super::identity::{Authentication, Identity};
use super::issuers::TrustedIssuer;
use super::jwt::{unix_now, unverified_issuer, TokenError, TokenType, Tokens};
use super::legacy::LegacyTokens;
use super::verified;
use crate::store::Store;

/// Token sources beyond the gateway's own keys.
#[derive(Default)]
pub struct Foreign {
    pub issuers: Vec<Arc<TrustedIssuer>>,
    pub legacy: Option<Arc<LegacyTokens>>,
}

impl Foreign {
    fn is_empty(&self) -> bool {
        self.issuers.is_empty() && self.legacy.is_none()
    }
}

pub struct BearerTokens {
    pub own: Arc<Tokens>,
    pub foreign: Foreign,
    pub store: Arc<dyn Store>,
}

impl BearerTokens {
    /// Who the token says the caller is, if any source vouches for it.
    pub async fn authenticate(&self, token: &str) -> Authentication {
        let refused = match self.own.verify_access(token) {
            Ok(identity) => return Authentication::Verified(identity),
            Err(refused) => refused,
        };
        if refused == TokenError::WrongType || self.foreign.is_empty() {
            return Authentication::InvalidToken;
        }
        // On the heap: a fetch of an issuer's keys may be in this future, and moving that state
        // with every request of Guichet's own users would cost them.
        Box::pin(self.verify_foreign(token)).await
    }

    /// A token from a trusted issuer or the Django app.
    async fn verify_foreign(&self, token: &str) -> Authentication {
        let now = unix_now();
        if let Some(identity) = verified::get(token, now, |v| self.is_current(v)) {
            return Authentication::Verified(identity);
        }
        match unverified_issuer(token) {
            Ok(Some(issuer)) => self.of_issuer(token, &issuer, now).await,
            Ok(None) => self.legacy(token, now).await,
            Err(_) => Authentication::InvalidToken,
        }
    }

    async fn of_issuer(&self, token: &str, issuer: &str, now: u64) -> Authentication {
        let Some(trusted) = self.foreign.issuers.iter().find(|t| t.issuer() == issuer) else {
            return Authentication::InvalidToken;
        };
        match trusted.verify(token).await {
            Ok(vouched) => {
                verified::remember(
                    vouched.verifier,
                    token,
                    &vouched.identity,
                    vouched.until,
                    now,
                );
                Authentication::Verified(vouched.identity)
            }
            Err(_) => Authentication::InvalidToken,
        }
    }

    /// A Django access token: its user must still exist and be active; the username and role
    /// are the store's.
    async fn legacy(&self, token: &str, now: u64) -> Authentication {
        let Some(legacy) = &self.foreign.legacy else {
            return Authentication::InvalidToken;
        };
        let Ok(claims) = legacy.verify(token, TokenType::Access) else {
            return Authentication::InvalidToken;
        };
        match self.store.user_by_id(claims.user_id).await {
            Ok(Some(user)) if user.active => {
                let identity = Identity::user(user.id, user.username, user.role);
                let until = legacy.remember_until(&claims);
                verified::remember(legacy.verifier(), token, &identity, until, now);
                Authentication::Verified(identity)
            }
            Ok(_) => Authentication::InvalidToken,
            Err(_) => Authentication::StoreUnavailable,
        }
    }

    /// Whether an entry of the per-thread cache was made by a verifier still in use: a
    /// trusted issuer's current key set, or the legacy window's.
    fn is_current(&self, verifier: u64) -> bool {
        self.foreign
            .legacy
            .as_ref()
            .is_some_and(|legacy| legacy.verifier() == verifier)
            || self
                .foreign
                .issuers
                .iter()
                .any(|issuer| issuer.jwks.verifier() == verifier)
    }
}
