//! `cors:` as written, in gateway.yaml (every route's default) or on a route (its own, or
//! `cors: off`), read into a [`CorsPolicy`].

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::decode::Reader;
use super::yaml::{Node, NodeKind};
use crate::cors::{CorsPolicy, OriginPattern};

const CORS_KEYS: &[&str] = &[
    "allow_origins",
    "allow_methods",
    "allow_headers",
    "expose_headers",
    "allow_credentials",
    "max_age",
];

const DEFAULT_ALLOW_HEADERS: &[&str] =
    &["Authorization", "Content-Type", "X-API-Key", "X-Request-Id"];
const DEFAULT_EXPOSE_HEADERS: &[&str] = &[
    "X-Request-Id",
    "RateLimit",
    "RateLimit-Policy",
    "Retry-After",
];
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

/// A `cors:` setting: `Some(None)` for `cors: off`, `Some(Some(..))` for a section, `None`
/// when it has errors (reported).
pub fn read(node: &Node, field: &str, r: &mut Reader) -> Option<Option<Arc<CorsPolicy>>> {
    if let NodeKind::Scalar { text, plain: true } = &node.kind {
        if matches!(text.as_str(), "off" | "false") {
            return Some(None);
        }
    }
    if !matches!(node.kind, NodeKind::Map(_)) {
        r.error(
            node.mark,
            field,
            format!(
                "expected a map of settings or `off`, found {}",
                node.describe()
            ),
            "write `cors: { allow_origins: [https://app.hackitech.example] }`, or `cors: off`",
        );
        return None;
    }
    let fields = r.fields(node, field, CORS_KEYS)?;
    let origins = match fields.get("allow_origins") {
        Some((node, field)) => {
            let origins = r.list(node, &field, "[https://app.hackitech.example]", read_origin)?;
            if origins.is_empty() {
                r.error(
                    node.mark,
                    &field,
                    "the list is empty: no browser origin would be allowed",
                    "list origins such as https://app.hackitech.example, or write `cors: off`",
                );
                return None;
            }
            origins
        }
        None => {
            r.error(
                fields.mark,
                &format!("{field}.allow_origins"),
                "missing: CORS needs the origins it allows",
                "add `allow_origins: [https://app.hackitech.example]`",
            );
            return None;
        }
    };
    let methods = match fields.get("allow_methods") {
        Some((node, field)) => Some(super::routes_file::read_methods(node, &field, r)?),
        None => None,
    };
    let allow_headers = match fields.get("allow_headers") {
        Some((node, field)) => {
            r.list(node, &field, "[Authorization, Content-Type]", |r, n, f| {
                read_field_name(r, n, f, true)
            })?
        }
        None => DEFAULT_ALLOW_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect(),
    };
    let expose = match fields.get("expose_headers") {
        Some((node, field)) => r.list(node, &field, "[X-Request-Id]", |r, n, f| {
            read_field_name(r, n, f, false)
        })?,
        None => DEFAULT_EXPOSE_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect(),
    };
    let credentials = match fields.get("allow_credentials") {
        Some((node, field)) => {
            let credentials = r.boolean(node, &field)?;
            if credentials && origins.contains(&OriginPattern::Any) {
                r.error(
                    node.mark,
                    &field,
                    "`allow_origins: [\"*\"]` with credentials would let every site act with the user's cookies",
                    "list the origins allowed, or set `allow_credentials: false`",
                );
                return None;
            }
            credentials
        }
        None => false,
    };
    let max_age = match fields.get("max_age") {
        Some((node, field)) => r.duration_or_zero(node, &field)?,
        None => DEFAULT_MAX_AGE,
    };
    let expose_headers = (!expose.is_empty())
        .then(|| HeaderValue::from_str(&expose.join(", ")).ok())
        .flatten();
    Some(Some(Arc::new(CorsPolicy {
        origins,
        methods,
        allow_headers: allow_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        expose_headers,
        credentials,
        max_age,
    })))
}

fn read_origin(r: &mut Reader, node: &Node, field: &str) -> Option<OriginPattern> {
    let text = r.scalar(node, field, "an origin")?;
    OriginPattern::parse(text)
        .map_err(|(message, hint)| r.error(node.mark, field, message, &hint))
        .ok()
}

/// A header field name as written; `*` where `star` allows it.
fn read_field_name(r: &mut Reader, node: &Node, field: &str, star: bool) -> Option<String> {
    let text = r.scalar(node, field, "a header field name")?;
    if (star && text == "*") || HeaderName::from_bytes(text.as_bytes()).is_ok() {
        return Some(text.to_string());
    }
    r.error(
        node.mark,
        field,
        format!("`{text}` is not a header field name"),
        "write a name such as Authorization or X-Request-Id",
    );
    None
}
