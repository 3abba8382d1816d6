//! The document made from the merge's parts: path items, `operationId`s made unique, one tag
//! per service, the gateway's security schemes and the components sorted.

use std::collections::{BTreeSet, HashMap};

use indexmap::IndexMap;
use openapiv3::{Components, Operation, PathItem, ReferenceOr, SecurityScheme, Tag};
use serde_json::{json, Value};

use super::{Owner, Prepared, METHODS};
use crate::config::Config;
use crate::openapi::GATEWAY_TAG;

/// The gateway's schemes. The bearer scheme lists the trusted issuers (also as
/// `x-trusted-issuers`) and the legacy window, so a client knows which tokens it may bring.
pub(super) fn security_schemes(
    config: &Config,
) -> indexmap::IndexMap<String, ReferenceOr<SecurityScheme>> {
    let tokens = config.auth.tokens.as_ref();
    let mut bearer = "An access token from POST /api/auth/token/".to_string();
    let issuers: Vec<Value> = tokens
        .map(|t| t.trusted_issuers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|entry| {
            let algorithms: Vec<String> =
                entry.algorithms.iter().map(|a| format!("{a:?}")).collect();
            bearer.push_str(&format!(
                "; or one from the identity provider `{}` (audience `{}`, {})",
                entry.issuer,
                entry.audience,
                algorithms.join(", ")
            ));
            json!({"issuer": entry.issuer, "audience": entry.audience, "algorithms": algorithms})
        })
        .collect();
    if let Some(legacy) = tokens.and_then(|t| t.legacy.as_ref()) {
        let until =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(legacy.accept_until.value);
        bearer.push_str(&format!(
            "; until {}, an access token of the Django app (its refresh token is exchanged once at POST /api/auth/token/refresh/)",
            humantime::format_rfc3339(until)
        ));
    }
    let mut bearer = json!({
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": bearer,
    });
    if !issuers.is_empty() {
        bearer["x-trusted-issuers"] = Value::Array(issuers);
    }
    let schemes = json!({
        "bearerAuth": bearer,
        "apiKeyAuth": {
            "type": "apiKey", "in": "header", "name": "X-API-Key",
            "description": "A service integration's API key (also accepted as `Authorization: Api-Key <key>`)"
        }
    });
    serde_json::from_value(schemes).unwrap_or_default()
}

pub(super) fn sort_components(components: &mut Components) {
    components.schemas.sort_keys();
    components.responses.sort_keys();
    components.parameters.sort_keys();
    components.examples.sort_keys();
    components.request_bodies.sort_keys();
    components.headers.sort_keys();
    components.links.sort_keys();
    components.callbacks.sort_keys();
}

/// The path items of `paths` (a merged document holds no references there).
pub(super) fn path_items(
    paths: &mut IndexMap<String, ReferenceOr<PathItem>>,
) -> impl Iterator<Item = &mut PathItem> {
    paths.values_mut().filter_map(|item| match item {
        ReferenceOr::Item(item) => Some(item),
        ReferenceOr::Reference { .. } => None,
    })
}

pub(super) fn path_item(operations: Vec<(&'static str, Option<Operation>)>) -> PathItem {
    let mut item = PathItem::default();
    for (method, operation) in operations {
        *operation_slot(&mut item, method) = operation;
    }
    item
}

fn operation_slot<'a>(item: &'a mut PathItem, method: &str) -> &'a mut Option<Operation> {
    match method {
        "get" => &mut item.get,
        "put" => &mut item.put,
        "post" => &mut item.post,
        "delete" => &mut item.delete,
        "options" => &mut item.options,
        "head" => &mut item.head,
        "patch" => &mut item.patch,
        _ => &mut item.trace,
    }
}

/// `operationId`s are unique: a repeated one gets its service's prefix, then a number.
pub(super) fn unique_operation_ids<'a>(items: impl Iterator<Item = &'a mut PathItem>) {
    let mut seen = BTreeSet::new();
    for item in items {
        for method in METHODS {
            let Some(operation) = operation_slot(item, method).as_mut() else {
                continue;
            };
            let Some(id) = operation.operation_id.clone() else {
                continue;
            };
            let tag = operation.tags.first().cloned().unwrap_or_default();
            let mut unique = id.clone();
            let mut n = 1;
            while seen.contains(&unique) {
                unique = if n == 1 {
                    format!("{tag}_{id}")
                } else {
                    format!("{tag}_{id}_{n}")
                };
                n += 1;
            }
            seen.insert(unique.clone());
            operation.operation_id = Some(unique);
        }
    }
}

/// One tag per service, described by its fragment's title, the gateway's first.
pub(super) fn tags(config: &Config, prepared: &[Prepared]) -> Vec<Tag> {
    let mut tags = vec![Tag {
        name: GATEWAY_TAG.to_string(),
        description: Some(
            "The gateway's own endpoints: tokens, keys, usage statistics".to_string(),
        ),
        ..Tag::default()
    }];
    let info_of: HashMap<&str, &Value> = prepared
        .iter()
        .filter(|p| p.owner != Owner::Gateway)
        .filter_map(|p| Some((p.tag.as_str(), p.document.get("info")?)))
        .collect();
    for service in &config.services {
        let info = info_of.get(service.name.as_str()).copied();
        let title = info.and_then(|i| i.get("title")).and_then(Value::as_str);
        let description = info
            .and_then(|i| i.get("description"))
            .and_then(Value::as_str);
        let text = match (title, description) {
            (Some(t), Some(d)) => format!("{t}: {d}"),
            (Some(t), None) => t.to_string(),
            (None, _) => format!("The {} service (no fragment)", service.name),
        };
        tags.push(Tag {
            name: service.name.clone(),
            description: Some(text),
            ..Tag::default()
        });
    }
    tags
}
