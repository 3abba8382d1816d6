//! Which limits apply to a request: its consumer's tier (anonymous by client IP, user by id — or
//! the user's role tier instead — or API key), each of its route's limits per consumer, and the
//! failed-login limits.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{Limit, Rate};
use crate::auth::identity::{AuthMethod, Identity};
use crate::config::Route;

/// What to do when the Redis limiter cannot be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnStoreError {
    /// Keep serving, limited by each process's local limiter.
    #[default]
    Allow,
    /// Answer 503.
    Deny,
}

/// The `rate_limits` section of gateway.yaml.
#[derive(Clone, Debug, Default)]
pub struct RatePolicy {
    pub anonymous: Option<Rate>,
    pub user: Option<Rate>,
    pub api_key: Option<Rate>,
    /// Replaces `user` for users of that role.
    pub roles: HashMap<String, Rate>,
    pub login: Option<Rate>,
    pub on_store_error: OnStoreError,
}

impl RatePolicy {
    /// Every limit a request to `route` by `identity` from `client` must pass.
    pub fn limits(&self, route: &Route, identity: &Identity, client: IpAddr) -> Vec<Limit> {
        let tier = match identity.method {
            AuthMethod::Anonymous => self.anonymous.map(|r| ("anonymous", r)),
            AuthMethod::ApiKey => self.api_key.map(|r| ("api_key", r)),
            AuthMethod::Jwt => {
                let role = identity.role.as_deref().unwrap_or("");
                match self.roles.get_key_value(role) {
                    Some((role, rate)) => Some((role.as_str(), *rate)),
                    None => self.user.map(|r| ("user", r)),
                }
            }
        };
        if tier.is_none() && route.rate_limits.is_empty() {
            return Vec::new();
        }
        let consumer = match identity.method {
            AuthMethod::Anonymous => format!("ip:{client}"),
            AuthMethod::ApiKey => format!("key:{}", identity.key_id.as_deref().unwrap_or("")),
            AuthMethod::Jwt => format!("user:{}", identity.user_id.unwrap_or(0)),
        };
        let mut limits = Vec::with_capacity(1 + route.rate_limits.len());
        if let Some((policy, rate)) = tier {
            limits.push(Limit {
                policy: policy.to_string(),
                key: format!("tier:{policy}:{consumer}"),
                rate,
            });
        }
        for (index, rate) in route.rate_limits.iter().enumerate() {
            let policy = if index == 0 {
                "route".to_string()
            } else {
                format!("route-{}", index + 1)
            };
            limits.push(Limit {
                key: format!("route:{}:{index}:{consumer}", route.id),
                policy,
                rate: *rate,
            });
        }
        limits
    }

    /// The failed-login limits for `username` from `client`: one per address, and one per
    /// username from that address (so an attacker cannot lock a user out from everywhere).
    pub fn login_limits(&self, username: &str, client: IpAddr) -> Vec<Limit> {
        let Some(rate) = self.login else {
            return Vec::new();
        };
        let username = username.trim().to_lowercase();
        vec![
            Limit {
                policy: "login-ip".to_string(),
                key: format!("login:ip:{client}"),
                rate,
            },
            Limit {
                policy: "login".to_string(),
                key: format!("login:user:{username}:{client}"),
                rate,
            },
        ]
    }
}
