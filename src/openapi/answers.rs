//! The answers the gateway itself may give on an operation a route exposes, in the document:
//! 400 (a request refused before routing, such as a malformed path), 502, 503 and 504 always;
//! 401 when the route needs credentials, 403 when it asks for roles or scopes, 413 with a body
//! limit and 429 with a rate limit. Each is a response component with a `GuichetError` body.
//! Where the service documents the same status, the two are merged into one response (both
//! bodies allowed, both descriptions) rather than one hiding the other: a client must expect
//! either.

use std::collections::HashMap;

use indexmap::map::Entry;
use openapiv3::{
    Components, Operation, PathItem, ReferenceOr, Response, Schema, SchemaData, SchemaKind,
    StatusCode,
};
use serde_json::Value;

use super::annotate;
use crate::config::{AuthLevel, Config, Route};

/// Adds the gateway's answers to every operation of `paths` that a route exposes (the routes
/// are found by the `x-guichet-route` the annotation left). `components` must hold the
/// gateway's response components and every response component the operations refer to.
pub fn add_to_routes<'a>(
    items: impl Iterator<Item = &'a mut PathItem>,
    components: &Components,
    config: &Config,
) {
    let routes: HashMap<&str, &Route> = config
        .routes
        .iter()
        .map(|r| (r.id.as_str(), &**r))
        .collect();
    for item in items {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            let route = operation
                .extensions
                .get("x-guichet-route")
                .and_then(Value::as_str)
                .and_then(|id| routes.get(id));
            if let Some(route) = route {
                for (status, component) in of_route(route, config) {
                    add(operation, status, component, components);
                }
                operation.responses.responses.sort_keys();
            }
        }
    }
}

/// What the gateway may answer on `route`: each status with the response component for it.
fn of_route(route: &Route, config: &Config) -> Vec<(u16, &'static str)> {
    let mut answers = vec![(400, "MalformedRequest")];
    if route.auth != AuthLevel::None {
        answers.push((401, "Unauthorized"));
    }
    if route.min_role.is_some() || !route.scopes.is_empty() {
        answers.push((403, "PermissionDenied"));
    }
    if route.max_body.is_some() {
        answers.push((413, "PayloadTooLarge"));
    }
    if annotate::rate_limits(route, config).is_some() {
        answers.push((429, "Throttled"));
    }
    answers.extend([
        (502, "BadGateway"),
        (503, "ServiceUnavailable"),
        (504, "GatewayTimeout"),
    ]);
    answers
}

/// Documents that the gateway may answer `status` as the response `component` describes: a
/// reference to it, or, when the operation documents that status already, one response that
/// allows both.
fn add(operation: &mut Operation, status: u16, component: &str, components: &Components) {
    let reference = ReferenceOr::ref_(&format!("#/components/responses/{component}"));
    let own = match operation
        .responses
        .responses
        .entry(StatusCode::Code(status))
    {
        Entry::Vacant(slot) => {
            slot.insert(reference);
            return;
        }
        Entry::Occupied(slot) => slot.into_mut(),
    };
    if *own == reference {
        return;
    }
    let (Some(gateway), Some(service)) =
        (resolve(&reference, components), resolve(own, components))
    else {
        return;
    };
    *own = ReferenceOr::Item(either(service, gateway));
}

/// The response component `response` is, or refers to.
fn resolve<'a>(
    response: &'a ReferenceOr<Response>,
    components: &'a Components,
) -> Option<&'a Response> {
    match response {
        ReferenceOr::Item(response) => Some(response),
        ReferenceOr::Reference { reference } => {
            let name = reference.strip_prefix("#/components/responses/")?;
            let name = name.replace("~1", "/").replace("~0", "~");
            resolve(components.responses.get(&name)?, components)
        }
    }
}

/// One response that is the service's or the gateway's: each JSON body of the service's may
/// also be the gateway's error (`anyOf`), a JSON body is added where the service documents
/// none, and the gateway's headers join the service's.
fn either(service: &Response, gateway: &Response) -> Response {
    let mut merged = service.clone();
    merged.description = format!(
        "{}; or the gateway's: {}",
        service.description, gateway.description
    );
    for (name, header) in &gateway.headers {
        merged
            .headers
            .entry(name.clone())
            .or_insert_with(|| header.clone());
    }
    let gateway_body = gateway
        .content
        .values()
        .find_map(|media| media.schema.clone());
    let mut has_json = false;
    for (media_type, media) in &mut merged.content {
        if !is_json(media_type) {
            continue;
        }
        has_json = true;
        if let (Some(own), Some(theirs)) = (media.schema.take(), &gateway_body) {
            media.schema = Some(ReferenceOr::Item(any_of(own, theirs.clone())));
        }
    }
    if !has_json {
        for (media_type, media) in &gateway.content {
            merged.content.insert(media_type.clone(), media.clone());
        }
    }
    merged
}

/// A media type whose bodies the gateway's JSON error could be.
fn is_json(media_type: &str) -> bool {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence.ends_with("+json")
        || essence == "*/*"
        || essence == "application/*"
}

fn any_of(own: ReferenceOr<Schema>, theirs: ReferenceOr<Schema>) -> Schema {
    Schema {
        schema_data: SchemaData::default(),
        schema_kind: SchemaKind::AnyOf {
            any_of: vec![own, theirs],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn components() -> Components {
        serde_json::from_value(json!({
            "schemas": {"GuichetError": {"type": "object"}, "NotFound": {"type": "object"}},
            "responses": {
                "BadGateway": {"description": "Unreachable (`bad_gateway`)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GuichetError"}}}},
                "Throttled": {"description": "Too many", "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GuichetError"}}}},
                "Gone": {"description": "The service's own", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NotFound"}}}}
            }
        }))
        .expect("components")
    }

    fn operation(responses: Value) -> Operation {
        serde_json::from_value(json!({"responses": responses})).expect("operation")
    }

    fn response(operation: &Operation, status: u16) -> Value {
        serde_json::to_value(&operation.responses.responses[&StatusCode::Code(status)])
            .expect("json")
    }

    #[test]
    fn a_status_the_service_does_not_document_refers_to_the_gateway_s_response() {
        let mut op = operation(json!({"200": {"description": "ok"}}));
        add(&mut op, 502, "BadGateway", &components());
        assert_eq!(
            response(&op, 502),
            json!({"$ref": "#/components/responses/BadGateway"})
        );
        let again = op.clone();
        add(&mut op, 502, "BadGateway", &components());
        assert_eq!(op, again, "adding twice changes nothing");
    }

    #[test]
    fn a_status_both_document_allows_either_body_and_keeps_both_descriptions() {
        let mut op = operation(json!({
            "429": {"description": "Slow down", "content": {
                "application/json": {"schema": {"type": "object", "properties": {"wait": {"type": "integer"}}}},
                "text/plain": {"schema": {"type": "string"}}
            }},
            "502": {"$ref": "#/components/responses/Gone"}
        }));
        add(&mut op, 429, "Throttled", &components());
        add(&mut op, 502, "BadGateway", &components());
        let throttled = response(&op, 429);
        assert_eq!(
            throttled["description"],
            json!("Slow down; or the gateway's: Too many")
        );
        assert_eq!(
            throttled["content"]["application/json"]["schema"]["anyOf"],
            json!([
                {"type": "object", "properties": {"wait": {"type": "integer"}}},
                {"$ref": "#/components/schemas/GuichetError"}
            ])
        );
        assert_eq!(
            throttled["content"]["text/plain"]["schema"],
            json!({"type": "string"})
        );
        assert!(
            throttled["headers"]["Retry-After"].is_object(),
            "{throttled}"
        );
        // A reference to the service's response component is followed, not overwritten.
        let gone = response(&op, 502);
        assert_eq!(
            gone["content"]["application/json"]["schema"]["anyOf"][0],
            json!({"$ref": "#/components/schemas/NotFound"})
        );
        assert_eq!(
            gone["description"],
            json!("The service's own; or the gateway's: Unreachable (`bad_gateway`)")
        );
    }

    #[test]
    fn a_service_response_without_a_json_body_gains_the_gateway_s() {
        let mut op = operation(json!({"502": {"description": "Down"}}));
        add(&mut op, 502, "BadGateway", &components());
        assert_eq!(
            response(&op, 502)["content"],
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/GuichetError"}}})
        );
    }
}
