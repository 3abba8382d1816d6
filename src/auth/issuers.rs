//! Trusted issuers: identity providers (Keycloak, any OIDC provider) whose tokens routes accept.
//! A token's `iss` picks the issuer and its `kid` the key from the issuer's JWKS; only the
//! issuer's asymmetric algorithms are accepted, with a key of the matching type; `aud`, `exp`
//! and `nbf` are checked; the user id, username and roles are read from configured claim paths,
//! and the provider's roles mapped to Guichet's. A background service keeps the keys fresh.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use jsonwebtoken::{Algorithm, Validation};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::Value;

use super::identity::{AuthMethod, Identity};
use super::jwks::Jwks;
use super::jwt::{unix_now, JoseHeader, TokenError};
use crate::config::ClaimPaths;
use crate::credentials::fits_a_header;
use crate::metrics::Metrics;

/// One identity provider and its keys.
pub struct TrustedIssuer {
    issuer: Arc<str>,
    algorithms: Vec<Algorithm>,
    claims: ClaimPaths,
    /// Provider role → Guichet role.
    roles: Vec<(String, String)>,
    /// Guichet's roles from least to most privileged: of several mapped roles, the highest wins.
    hierarchy: Vec<String>,
    audience: String,
    leeway: u64,
    pub jwks: Jwks,
}

/// What an issuer's token proved: who, and until when (its `exp` plus the leeway).
pub struct Vouched {
    pub identity: Identity,
    pub until: u64,
    /// The key set that verified it.
    pub verifier: u64,
}

/// How an issuer is set up, apart from its keys.
pub struct IssuerRules {
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<Algorithm>,
    pub claims: ClaimPaths,
    pub roles: Vec<(String, String)>,
    pub hierarchy: Vec<String>,
    pub leeway: u64,
}

impl TrustedIssuer {
    pub fn new(rules: IssuerRules, jwks: Jwks) -> TrustedIssuer {
        TrustedIssuer {
            issuer: rules.issuer.into(),
            algorithms: rules.algorithms,
            claims: rules.claims,
            roles: rules.roles,
            hierarchy: rules.hierarchy,
            audience: rules.audience,
            leeway: rules.leeway,
            jwks,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Verifies a token whose `iss` names this issuer. An unknown `kid` fetches the keys again
    /// (rate-limited in [`Jwks`]) before the token is refused.
    pub async fn verify(&self, token: &str) -> Result<Vouched, TokenError> {
        let header = JoseHeader::of(token)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::Invalid);
        }
        let mut keys = self.jwks.keys();
        if let Some(kid) = header.kid.as_deref() {
            if !keys.has(kid) {
                self.jwks.refresh_for_unknown_kid().await;
                keys = self.jwks.keys();
            }
        }
        let key = match header.kid.as_deref() {
            Some(kid) => keys.named(kid, header.alg),
            None => keys.only_key_for(header.alg),
        }
        .ok_or(TokenError::Invalid)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[&*self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Value>(token, &key.decoding, &validation)
            .map_err(|_| TokenError::Invalid)?
            .claims;
        let identity = self.identity(&claims).ok_or(TokenError::Invalid)?;
        let exp = claims["exp"].as_u64().unwrap_or_else(unix_now);
        Ok(Vouched {
            identity,
            until: exp.saturating_add(self.leeway),
            verifier: keys.verifier,
        })
    }

    /// The identity the verified claims describe; `None` without a usable user id, or with a
    /// value no identity header can carry.
    fn identity(&self, claims: &Value) -> Option<Identity> {
        let user_id = match at_path(claims, &self.claims.user_id)? {
            Value::String(id) if !id.is_empty() => id.clone(),
            Value::Number(id) => id.to_string(),
            _ => return None,
        };
        let username = match self
            .claims
            .username
            .as_deref()
            .and_then(|p| at_path(claims, p))
        {
            Some(Value::String(name)) => Some(name.clone()),
            _ => None,
        };
        let role = self.role(claims);
        let carried = [Some(&user_id), username.as_ref()];
        if !carried.into_iter().flatten().all(|v| fits_a_header(v)) {
            return None;
        }
        Some(Identity {
            method: AuthMethod::Jwt,
            user_id: Some(user_id),
            username,
            role,
            issuer: Some(self.issuer.clone()),
            ..Identity::anonymous()
        })
    }

    /// The highest Guichet role any of the provider's roles maps to; unmapped ones give none.
    fn role(&self, claims: &Value) -> Option<String> {
        let theirs: Vec<&str> = match at_path(claims, self.claims.role.as_deref()?)? {
            Value::String(role) => vec![role.as_str()],
            Value::Array(roles) => roles.iter().filter_map(Value::as_str).collect(),
            _ => return None,
        };
        self.roles
            .iter()
            .filter(|(provider, _)| theirs.contains(&provider.as_str()))
            .filter_map(|(_, ours)| Some((self.hierarchy.iter().position(|r| r == ours)?, ours)))
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, ours)| ours.clone())
    }
}

/// The pingora background service that fetches each issuer's keys when they are due (at start,
/// at the end of their lifetime, or a retry after a failure), and shows their age and whether
/// the last fetch failed in the metrics.
pub struct KeyRefresh {
    pub issuers: Vec<Arc<TrustedIssuer>>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for KeyRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if self.issuers.is_empty() {
            return;
        }
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            let due = self.issuers.iter().filter(|issuer| issuer.jwks.due());
            join_all(due.map(|issuer| issuer.jwks.refresh())).await;
            for issuer in &self.issuers {
                let name = [issuer.issuer()];
                if let Some(age) = issuer.jwks.age() {
                    self.metrics.jwks_age.with_label_values(&name).set(age);
                }
                let failing = issuer.jwks.last_error().is_some();
                self.metrics
                    .jwks_refresh_failing
                    .with_label_values(&name)
                    .set(i64::from(failing));
            }
        }
    }
}

/// The value at a dotted path such as `realm_access.roles`.
fn at_path<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(claims, |value, name| value.get(name))
}

#[cfg(test)]
mod tests;
