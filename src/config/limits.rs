//! Reading rates: the `rate_limits` section of gateway.yaml (tiers, login limits and how the
//! limiter keeps its state) and a route's `rate_limit`, written `100/hour` or
//! `{ rate: 100/hour, burst: 20 }`.

use std::collections::HashMap;

use super::decode::Reader;
use super::yaml::{Node, NodeKind};
use crate::ratelimit::{
    OnStoreError, Rate, RatePolicy, DEFAULT_IPV6_PREFIX, DEFAULT_MAX_TRACKED_KEYS,
};

const SECTION_KEYS: &[&str] = &[
    "anonymous",
    "user",
    "api_key",
    "roles",
    "login",
    "on_store_error",
    "max_tracked_keys",
    "ipv6_prefix",
];
/// More than this is a typo: at about 42 bytes a key it would take gigabytes.
const MAX_TRACKED_KEYS: usize = 100_000_000;
const RATE_KEYS: &[&str] = &["rate", "burst"];
const RATE_HINT: &str =
    "write N/s, N/min, N/hour or N/day, such as 100/hour, or { rate: 100/hour, burst: 20 }";

/// One rate, as a scalar or a map with a burst.
pub fn read_rate(node: &Node, field: &str, r: &mut Reader) -> Option<Rate> {
    if let NodeKind::Map(_) = node.kind {
        let fields = r.fields(node, field, RATE_KEYS)?;
        let Some((rate_node, rate_field)) = fields.get("rate") else {
            r.error(node.mark, field, "missing `rate`", RATE_HINT);
            return None;
        };
        let mut rate = r.parsed(rate_node, &rate_field, "a rate", RATE_HINT, Rate::parse)?;
        if let Some((node, field)) = fields.get("burst") {
            rate.burst = u32::try_from(r.count(node, &field, 1_000_000_000)?).ok()?;
        }
        return Some(rate);
    }
    r.parsed(node, field, "a rate", RATE_HINT, Rate::parse)
}

/// A route's `rate_limit`: one rate or a list of them.
pub fn read_route_rates(node: &Node, field: &str, r: &mut Reader) -> Option<Vec<Rate>> {
    match node.kind {
        NodeKind::Seq(_) => r.list(node, field, "[10/s, 500/hour]", |r, node, field| {
            read_rate(node, field, r)
        }),
        _ => read_rate(node, field, r).map(|rate| vec![rate]),
    }
}

/// The `rate_limits` section; role names are checked against `roles`.
pub fn read_policy(node: &Node, field: &str, r: &mut Reader, roles: &[String]) -> RatePolicy {
    let mut policy = RatePolicy::default();
    let Some(fields) = r.fields(node, field, SECTION_KEYS) else {
        return policy;
    };
    let tier = |key: &str, r: &mut Reader| {
        fields
            .get(key)
            .and_then(|(node, field)| read_rate(node, &field, r))
    };
    policy.anonymous = tier("anonymous", r);
    policy.user = tier("user", r);
    policy.api_key = tier("api_key", r);
    policy.login = tier("login", r);
    if let Some((node, field)) = fields.get("roles") {
        if let NodeKind::Map(entries) = &node.kind {
            let mut rates = HashMap::new();
            for (key, value) in entries {
                let field = format!("{field}.{}", key.name);
                if !roles.contains(&key.name) {
                    r.error(
                        key.mark,
                        &field,
                        format!("`{}` is not a role", key.name),
                        &format!("write one of {}", roles.join(", ")),
                    );
                } else if let Some(rate) = read_rate(value, &field, r) {
                    rates.insert(key.name.clone(), rate);
                }
            }
            policy.roles = rates;
        } else {
            r.error(
                node.mark,
                &field,
                format!("expected a map of role to rate, found {}", node.describe()),
                "write { instructor: 5000/hour, admin: 20000/hour }",
            );
        }
    }
    if let Some((node, field)) = fields.get("on_store_error") {
        policy.on_store_error = r
            .parsed(
                node,
                &field,
                "allow or deny",
                "write allow (fall back to a local limiter) or deny (answer 503)",
                |t| match t {
                    "allow" => Ok(OnStoreError::Allow),
                    "deny" => Ok(OnStoreError::Deny),
                    other => Err(format!("`{other}` is neither allow nor deny")),
                },
            )
            .unwrap_or_default();
    }
    if let Some((node, field)) = fields.get("max_tracked_keys") {
        policy.max_tracked_keys = r
            .parsed(
                node,
                &field,
                "a number of keys",
                &format!(
                    "write a whole number from 1 to {MAX_TRACKED_KEYS}; the default, \
                     {DEFAULT_MAX_TRACKED_KEYS}, takes about 42 MiB"
                ),
                |text| match text.parse::<usize>() {
                    Ok(n) if (1..=MAX_TRACKED_KEYS).contains(&n) => Ok(n),
                    _ => Err(format!(
                        "`{text}` is not a whole number from 1 to {MAX_TRACKED_KEYS}"
                    )),
                },
            )
            .unwrap_or(DEFAULT_MAX_TRACKED_KEYS);
    }
    if let Some((node, field)) = fields.get("ipv6_prefix") {
        policy.ipv6_prefix = r
            .parsed(
                node,
                &field,
                "a prefix length",
                "write 64 to count each /64 network as one client, the default; 128 to count \
                 each address; or another length from 1 to 128",
                |text| match text.parse::<u8>() {
                    Ok(n) if (1..=128).contains(&n) => Ok(n),
                    _ => Err(format!("`{text}` is not a prefix length from 1 to 128")),
                },
            )
            .unwrap_or(DEFAULT_IPV6_PREFIX);
    }
    policy
}
