//! Reading rates: the `rate_limits` section of gateway.yaml and a route's `rate_limit`, written
//! `100/hour` or `{ rate: 100/hour, burst: 20 }`.

use std::collections::HashMap;

use super::decode::Reader;
use super::yaml::{Node, NodeKind};
use crate::ratelimit::{OnStoreError, Rate, RatePolicy};

const SECTION_KEYS: &[&str] = &[
    "anonymous",
    "user",
    "api_key",
    "roles",
    "login",
    "on_store_error",
];
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
    policy
}
