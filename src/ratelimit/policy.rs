//! Which limits apply to a request: its consumer's tier (anonymous by client address, user by
//! id — or the user's role tier instead — or API key), each of its route's limits per consumer,
//! and the failed-login limits. Client addresses are counted per IPv4 address and per IPv6
//! network (a /64 by default): whoever holds one IPv6 address usually holds its whole /64.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

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

/// `rate_limits.ipv6_prefix` when unset: the network a single subscriber or host is given.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The `rate_limits` section of gateway.yaml.
#[derive(Clone, Debug)]
pub struct RatePolicy {
    pub anonymous: Option<Rate>,
    pub user: Option<Rate>,
    pub api_key: Option<Rate>,
    /// Replaces `user` for users of that role.
    pub roles: HashMap<String, Rate>,
    pub login: Option<Rate>,
    pub on_store_error: OnStoreError,
    /// How many keys the in-process limiter tracks exactly (read once at start).
    pub max_tracked_keys: usize,
    /// The leading bits of an IPv6 client address that make one consumer (1 to 128).
    pub ipv6_prefix: u8,
}

impl Default for RatePolicy {
    fn default() -> RatePolicy {
        RatePolicy {
            anonymous: None,
            user: None,
            api_key: None,
            roles: HashMap::new(),
            login: None,
            on_store_error: OnStoreError::default(),
            max_tracked_keys: super::local::DEFAULT_MAX_TRACKED_KEYS,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

/// A client address as limits count it: an IPv4 address, or the IPv6 network of `prefix` bits
/// around an IPv6 address, written `2001:db8:1:2::/64` (or the bare address at 128 bits).
struct Counted {
    address: IpAddr,
    prefix: Option<u8>,
}

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix {
            Some(prefix) => write!(f, "{}/{prefix}", self.address),
            None => write!(f, "{}", self.address),
        }
    }
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
        // The consumer leads every key as a hash tag: a request's limits share a cluster node.
        let consumer = match identity.method {
            AuthMethod::Anonymous => format!("{{ip:{}}}", self.counted(client)),
            AuthMethod::ApiKey => format!("{{key:{}}}", identity.key_id.as_deref().unwrap_or("")),
            AuthMethod::Jwt => user_tag(identity),
        };
        let mut limits = Vec::with_capacity(1 + route.rate_limits.len());
        if let Some((policy, rate)) = tier {
            limits.push(Limit {
                policy: policy.to_string(),
                key: format!("{consumer}:tier:{policy}"),
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
                key: format!("{consumer}:route:{}:{index}", route.id),
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
        let client = self.counted(client);
        vec![
            Limit {
                policy: "login-ip".to_string(),
                key: format!("{{ip:{client}}}:login"),
                rate,
            },
            Limit {
                policy: "login".to_string(),
                key: format!("{{ip:{client}}}:login:user:{username}"),
                rate,
            },
        ]
    }

    /// What `client` is counted as. An IPv4 address written as IPv6 (`::ffff:192.0.2.1`) is the
    /// IPv4 one: else it would fall in one shared network, or be a second consumer beside it.
    fn counted(&self, client: IpAddr) -> Counted {
        match client.to_canonical() {
            IpAddr::V6(v6) if self.ipv6_prefix < 128 => {
                // A prefix of 0 (refused by the configuration) would shift by all 128 bits.
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.ipv6_prefix))
                    .unwrap_or(0);
                Counted {
                    address: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                    prefix: Some(self.ipv6_prefix),
                }
            }
            address => Counted {
                address,
                prefix: None,
            },
        }
    }
}

/// The tag of a user's keys: `{user:7}` for Guichet's own, `{user:<sub>@<issuer>}` for a trusted
/// issuer's, with `{`, `}` and `%` escaped so a provider's subject cannot end the tag early (the
/// keys of one request must share a cluster node).
fn user_tag(identity: &Identity) -> String {
    let user = identity.user_id.as_deref().unwrap_or("");
    match &identity.issuer {
        None => format!("{{user:{user}}}"),
        Some(issuer) => format!("{{user:{}@{}}}", escaped(user), escaped(issuer)),
    }
}

fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['{', '}', '%']) {
        return text.into();
    }
    text.replace('%', "%25")
        .replace('{', "%7B")
        .replace('}', "%7D")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthLevel;
    use crate::router::{MethodSet, PathPattern};

    fn route() -> Route {
        Route {
            index: 0,
            id: "r".to_string(),
            service: 0,
            pattern: PathPattern::parse("/r/").unwrap(),
            upstream_path: None,
            methods: MethodSet::ALL,
            max_body: None,
            auth: AuthLevel::None,
            min_role: None,
            scopes: Vec::new(),
            forward_authorization: false,
            rate_limits: vec![Rate::parse("10/min").unwrap()],
            encoded_slashes: crate::config::EncodedSlashes::Reject,
            cors: None,
            websocket: false,
        }
    }

    fn policy(ipv6_prefix: u8) -> RatePolicy {
        RatePolicy {
            anonymous: Some(Rate::parse("100/day").unwrap()),
            login: Some(Rate::parse("5/min").unwrap()),
            ipv6_prefix,
            ..RatePolicy::default()
        }
    }

    /// Every key an anonymous request from `client` and a login from it count under.
    fn keys(policy: &RatePolicy, client: &str) -> Vec<String> {
        let client = client.parse().unwrap();
        policy
            .limits(&route(), &Identity::anonymous(), client)
            .into_iter()
            .chain(policy.login_limits("Demo", client))
            .map(|l| l.key)
            .collect()
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_network_by_default() {
        let policy = RatePolicy {
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            ..policy(0)
        };
        let one = keys(&policy, "2001:db8:1:2::1");
        assert_eq!(
            one,
            [
                "{ip:2001:db8:1:2::/64}:tier:anonymous",
                "{ip:2001:db8:1:2::/64}:route:r:0",
                "{ip:2001:db8:1:2::/64}:login",
                "{ip:2001:db8:1:2::/64}:login:user:demo",
            ]
        );
        assert_eq!(keys(&policy, "2001:db8:1:2:ffff:ffff:ffff:ffff"), one);
        assert_ne!(keys(&policy, "2001:db8:1:3::1"), one);
    }

    #[test]
    fn the_prefix_sets_the_network_and_128_counts_each_address() {
        assert_eq!(
            keys(&policy(48), "2001:db8:1:2::1")[0],
            "{ip:2001:db8:1::/48}:tier:anonymous"
        );
        assert_eq!(
            keys(&policy(48), "2001:db8:1:ffff::9"),
            keys(&policy(48), "2001:db8:1::")
        );
        let exact = policy(128);
        assert_eq!(
            keys(&exact, "2001:db8:1:2::1")[0],
            "{ip:2001:db8:1:2::1}:tier:anonymous"
        );
        assert_ne!(
            keys(&exact, "2001:db8:1:2::1"),
            keys(&exact, "2001:db8:1:2::2")
        );
    }

    #[test]
    fn ipv4_clients_are_counted_per_address_however_written() {
        let policy = policy(64);
        let v4 = keys(&policy, "192.0.2.1");
        assert_eq!(v4[0], "{ip:192.0.2.1}:tier:anonymous");
        assert_eq!(keys(&policy, "::ffff:192.0.2.1"), v4);
        assert_ne!(keys(&policy, "192.0.2.2"), v4);
    }

    #[test]
    fn each_consumer_gets_its_tier_then_each_route_limit_under_its_own_key() {
        let tiered = RatePolicy {
            anonymous: Some(Rate::parse("100/day").unwrap()),
            user: Some(Rate::parse("1000/hour").unwrap()),
            api_key: Some(Rate::parse("5000/hour").unwrap()),
            roles: HashMap::from([("instructor".to_string(), Rate::parse("3000/hour").unwrap())]),
            ..RatePolicy::default()
        };
        let mut two_limits = route();
        two_limits
            .rate_limits
            .push(Rate::parse("100/hour").unwrap());
        let mut unlimited = route();
        unlimited.rate_limits.clear();
        let jwt = |role: &str| Identity {
            method: AuthMethod::Jwt,
            user_id: Some("7".to_string()),
            role: Some(role.to_string()),
            ..Identity::anonymous()
        };
        let api_key = Identity {
            method: AuthMethod::ApiKey,
            key_id: Some("gk_grading".to_string()),
            ..Identity::anonymous()
        };
        // (policy, route, identity, the (policy, key, rate) of every limit in order)
        let cases = [
            (
                &tiered,
                &route(),
                Identity::anonymous(),
                vec![
                    ("anonymous", "{ip:192.0.2.1}:tier:anonymous", "100/day"),
                    ("route", "{ip:192.0.2.1}:route:r:0", "10/min"),
                ],
            ),
            (
                &tiered,
                &route(),
                jwt("student"),
                vec![
                    ("user", "{user:7}:tier:user", "1000/hour"),
                    ("route", "{user:7}:route:r:0", "10/min"),
                ],
            ),
            (
                &tiered,
                &route(),
                jwt("instructor"),
                vec![
                    ("instructor", "{user:7}:tier:instructor", "3000/hour"),
                    ("route", "{user:7}:route:r:0", "10/min"),
                ],
            ),
            (
                &tiered,
                &route(),
                api_key.clone(),
                vec![
                    ("api_key", "{key:gk_grading}:tier:api_key", "5000/hour"),
                    ("route", "{key:gk_grading}:route:r:0", "10/min"),
                ],
            ),
            (
                &tiered,
                &two_limits,
                jwt("student"),
                vec![
                    ("user", "{user:7}:tier:user", "1000/hour"),
                    ("route", "{user:7}:route:r:0", "10/min"),
                    ("route-2", "{user:7}:route:r:1", "100/hour"),
                ],
            ),
            (
                &tiered,
                &unlimited,
                api_key.clone(),
                vec![("api_key", "{key:gk_grading}:tier:api_key", "5000/hour")],
            ),
            (&RatePolicy::default(), &unlimited, jwt("student"), vec![]),
            (
                &RatePolicy::default(),
                &route(),
                jwt("admin"),
                vec![("route", "{user:7}:route:r:0", "10/min")],
            ),
        ];
        let client = "192.0.2.1".parse().unwrap();
        for (policy, route, identity, expected) in cases {
            let got: Vec<(String, String, Rate)> = policy
                .limits(route, &identity, client)
                .into_iter()
                .map(|limit| (limit.policy, limit.key, limit.rate))
                .collect();
            let expected: Vec<(String, String, Rate)> = expected
                .into_iter()
                .map(|(policy, key, rate)| {
                    (
                        policy.to_string(),
                        key.to_string(),
                        Rate::parse(rate).unwrap(),
                    )
                })
                .collect();
            assert_eq!(got, expected, "{:?} {:?}", identity.method, identity.role);
        }
    }
}
