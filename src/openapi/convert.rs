//! OpenAPI 3.1 fragments (FastAPI's default) converted to 3.0.3, the version of the merged
//! document. Each 3.1 construct with a 3.0 equivalent is rewritten to it (`type: [T, "null"]`,
//! `const`, numeric `exclusiveMinimum`, `examples`, `$ref` with siblings, …); what has none is
//! removed and reported with its pointer, never dropped silently.

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use super::Problem;

/// JSON Schema keywords of 3.1 that a 3.0 schema object cannot express.
const SCHEMA_ONLY_IN_3_1: &[&str] = &[
    "$schema",
    "$id",
    "$anchor",
    "$defs",
    "$dynamicRef",
    "$dynamicAnchor",
    "$comment",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependentRequired",
    "prefixItems",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contains",
    "minContains",
    "maxContains",
    "propertyNames",
    "patternProperties",
    "contentSchema",
    "dependencies",
    "$vocabulary",
    "$recursiveRef",
    "$recursiveAnchor",
];

/// Document-level fields of 3.1 with no place in 3.0, as JSON pointers.
const DOCUMENT_ONLY_IN_3_1: &[&str] = &[
    "/webhooks",
    "/jsonSchemaDialect",
    "/components/pathItems",
    "/info/summary",
    "/info/license/identifier",
];

/// Brings `document` to OpenAPI 3.0.3 in place. Returns an error when it is not OpenAPI 3.
pub fn to_3_0(
    document: &mut Value,
    source: &str,
    problems: &mut Vec<Problem>,
) -> Result<(), String> {
    let version = document
        .get("openapi")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if version.starts_with("3.0.") {
        return Ok(());
    }
    if !version.starts_with("3.1.") {
        let found = document
            .get("swagger")
            .map_or(format!("`openapi: {version}`"), |_| {
                "Swagger 2.0".to_string()
            });
        return Err(format!(
            "{found} is not OpenAPI 3.0 or 3.1; publish an OpenAPI 3 document"
        ));
    }
    document["openapi"] = json!("3.0.3");
    for pointer in DOCUMENT_ONLY_IN_3_1 {
        if remove_at(document, pointer).is_some() {
            problems.push(Problem::new(
                source,
                pointer,
                "OpenAPI 3.1 only; left out of the 3.0.3 document",
            ));
        }
    }
    let mut walker = Walker { source, problems };
    if let Some(Value::Object(schemas)) = document.pointer_mut("/components/schemas") {
        for (name, schema) in schemas.iter_mut() {
            walker.schema(schema, &format!("/components/schemas/{}", escape(name)));
        }
    }
    for section in ["paths", "components"] {
        if let Some(value) = document.get_mut(section) {
            walker.find_schemas(value, &format!("/{section}"));
        }
    }
    Ok(())
}

/// Escapes a key for a JSON pointer (RFC 6901).
pub fn escape(key: &str) -> Cow<'_, str> {
    // Most keys hold neither character: no copy for them, on every node of every fragment.
    if key.contains(['~', '/']) {
        Cow::Owned(key.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(key)
    }
}

fn remove_at(document: &mut Value, pointer: &str) -> Option<Value> {
    let (parent, key) = pointer.rsplit_once('/')?;
    document.pointer_mut(parent)?.as_object_mut()?.remove(key)
}

struct Walker<'a> {
    source: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl Walker<'_> {
    /// Converts every `schema` outside `components/schemas` (parameters, media types, headers).
    fn find_schemas(&mut self, value: &mut Value, pointer: &str) {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    let here = format!("{pointer}/{}", escape(key));
                    match key.as_str() {
                        "schema" => self.schema(child, &here),
                        // Example values are data, and component schemas are done already.
                        "example" | "examples" => {}
                        "schemas" if pointer == "/components" => {}
                        _ => self.find_schemas(child, &here),
                    }
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter_mut().enumerate() {
                    self.find_schemas(child, &format!("{pointer}/{index}"));
                }
            }
            _ => {}
        }
    }

    fn schema(&mut self, schema: &mut Value, pointer: &str) {
        let map = match schema {
            Value::Bool(true) => {
                *schema = json!({});
                return;
            }
            Value::Bool(false) => {
                *schema = json!({"not": {}});
                return;
            }
            Value::Object(map) => map,
            _ => return,
        };
        for keyword in SCHEMA_ONLY_IN_3_1 {
            if map.remove(*keyword).is_some() {
                self.problems.push(Problem::new(
                    self.source,
                    &format!("{pointer}/{}", escape(keyword)),
                    "JSON Schema keyword with no OpenAPI 3.0 equivalent; left out",
                ));
            }
        }
        if map.contains_key("$ref") && map.len() > 1 {
            // 3.0 ignores a reference's siblings; `allOf` keeps them.
            let reference = map.remove("$ref").unwrap_or_default();
            push_all_of(map, json!({ "$ref": reference }));
        }
        types(map);
        nullable_alternatives(map);
        if let Some(value) = map.remove("const") {
            map.insert("enum".to_string(), json!([value]));
        }
        if let Some(Value::Array(mut examples)) = map.remove("examples") {
            if !examples.is_empty() && !map.contains_key("example") {
                map.insert("example".to_string(), examples.swap_remove(0));
            }
        }
        for (exclusive, bound) in [
            ("exclusiveMinimum", "minimum"),
            ("exclusiveMaximum", "maximum"),
        ] {
            if let Some(number @ Value::Number(_)) = map.get(exclusive).cloned() {
                map.insert(bound.to_string(), number);
                map.insert(exclusive.to_string(), json!(true));
            }
        }
        if map.remove("contentEncoding").is_some() {
            map.insert("format".to_string(), json!("byte"));
        }
        if map.remove("contentMediaType").is_some() && !map.contains_key("format") {
            map.insert("format".to_string(), json!("binary"));
        }
        self.subschemas(map, pointer);
    }

    fn subschemas(&mut self, map: &mut Map<String, Value>, pointer: &str) {
        for key in ["items", "not", "additionalProperties"] {
            if let Some(child) = map.get_mut(key) {
                if key == "additionalProperties" && child.is_boolean() {
                    continue;
                }
                self.schema(child, &format!("{pointer}/{key}"));
            }
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(children)) = map.get_mut(key) {
                for (index, child) in children.iter_mut().enumerate() {
                    self.schema(child, &format!("{pointer}/{key}/{index}"));
                }
            }
        }
        if let Some(Value::Object(properties)) = map.get_mut("properties") {
            for (name, child) in properties.iter_mut() {
                self.schema(child, &format!("{pointer}/properties/{}", escape(name)));
            }
        }
    }
}

/// Adds `schema` to the schema's `allOf`, keeping what is there.
fn push_all_of(map: &mut Map<String, Value>, schema: Value) {
    let all_of = map.entry("allOf").or_insert_with(|| json!([]));
    if let Value::Array(list) = all_of {
        list.push(schema);
    }
}

/// `type: [string, "null"]` becomes `type: string, nullable: true`; several types, `anyOf`.
fn types(map: &mut Map<String, Value>) {
    let Some(Value::Array(list)) = map.get("type").cloned() else {
        return;
    };
    let mut names: Vec<Value> = list.into_iter().filter(|t| t != "null").collect();
    let nullable = map.get("type").and_then(Value::as_array).map(Vec::len) != Some(names.len());
    map.remove("type");
    match names.len() {
        0 => {}
        1 => {
            map.insert("type".to_string(), names.swap_remove(0));
        }
        _ => {
            let alternatives: Vec<Value> =
                names.into_iter().map(|t| json!({ "type": t })).collect();
            // An `anyOf` already there must hold too: both go under `allOf`.
            match map.remove("anyOf") {
                Some(existing) => {
                    push_all_of(map, json!({ "anyOf": existing }));
                    push_all_of(map, json!({ "anyOf": alternatives }));
                }
                None => {
                    map.insert("anyOf".to_string(), Value::Array(alternatives));
                }
            }
        }
    }
    if nullable {
        map.insert("nullable".to_string(), json!(true));
    }
}

/// `anyOf: [X, {type: "null"}]` (how FastAPI writes `Optional[X]`) becomes X, nullable.
fn nullable_alternatives(map: &mut Map<String, Value>) {
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(alternatives)) = map.get_mut(key) else {
            continue;
        };
        let before = alternatives.len();
        alternatives.retain(|a| a.get("type").and_then(Value::as_str) != Some("null"));
        if alternatives.len() == before {
            continue;
        }
        if alternatives.len() == 1 {
            let only = alternatives.remove(0);
            map.remove(key);
            match only {
                Value::Object(inner) if !inner.contains_key("$ref") => {
                    for (k, v) in inner {
                        map.entry(k).or_insert(v);
                    }
                }
                other => push_all_of(map, other),
            }
        } else if alternatives.is_empty() {
            map.remove(key);
        }
        map.insert("nullable".to_string(), json!(true));
    }
}
