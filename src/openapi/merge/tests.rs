//! The merge, on configurations and fragments written here: fragments converted to 3.0 or
//! refused, and, as properties over generated route tables, that nothing routed is lost, every
//! `$ref` resolves and the output is deterministic. The fixtures here are shared with the tests
//! by concern: public paths, exposure and drift (`paths`); renamed and shared components and
//! unique operation ids (`components`).

mod components;
mod paths;

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{merge, Fragment, Merged};
use crate::config::{self, Config};
use crate::router::Router;

/// Loads a configuration made of gateway.yaml and the given routes files.
fn config_of(routes: &[(&str, String)]) -> Result<Config, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::create_dir(dir.path().join("routes")).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.path().join("key.pem"),
        crate::auth::jwt::generate_ed25519_pem(),
    )
    .map_err(|e| e.to_string())?;
    let gateway = "include: [routes/*.yaml]
public_url: http://gw.example
jwt: { algorithm: EdDSA, signing_key_file: key.pem }
";
    std::fs::write(dir.path().join("gateway.yaml"), gateway).map_err(|e| e.to_string())?;
    for (name, text) in routes {
        std::fs::write(dir.path().join(format!("routes/{name}.yaml")), text)
            .map_err(|e| e.to_string())?;
    }
    config::load(&dir.path().join("gateway.yaml")).map_err(|e| e.to_string())
}

/// Merges the fragments given by service name.
fn merged(config: &Config, fragments: Vec<(&str, Value)>) -> (Merged, Value) {
    let router = Router::new(&config.routes);
    let fragments = fragments
        .into_iter()
        .map(|(name, document)| Fragment {
            service: config
                .services
                .iter()
                .position(|s| s.name == name)
                .expect("a configured service"),
            source: format!("specs/{name}.yaml"),
            document,
        })
        .collect();
    let merged = merge(config, &router, fragments);
    let value = serde_json::to_value(&merged.document).expect("the document serialises");
    (merged, value)
}

fn op<'a>(document: &'a Value, path: &str, method: &str) -> Option<&'a Value> {
    document.get("paths")?.get(path)?.get(method)
}

/// Every `$ref` in the document points at a component it defines.
fn unresolved_refs(document: &Value) -> Vec<String> {
    fn walk(value: &Value, root: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    let found = r.strip_prefix('#').and_then(|p| root.pointer(p)).is_some();
                    if !found {
                        out.push(r.clone());
                    }
                }
                map.values().for_each(|v| walk(v, root, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, root, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(document, document, &mut out);
    out
}

const COURSES: &str = "service: courses
upstreams: [http://127.0.0.1:1]
routes:
  - id: catalogue
    path: /api/courses/
    upstream_path: /courses/
    methods: [GET]
    auth: none
  - id: tenant-lessons
    path: /api/t/{tenant}/lessons/
    upstream_path: /lessons/
    methods: [GET]
";

fn courses_fragment() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Courses", "version": "1"},
        "paths": {
            "/courses/": {"get": {"operationId": "list", "responses": {"200": {"description": "ok"}}},
                          "post": {"operationId": "create", "responses": {"201": {"description": "ok"}}}},
            "/courses/{id}": {"summary": "One course", "get": {"operationId": "get", "servers": [{"url": "http://courses.internal:8001"}], "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
                                      "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/User"}}}}}}},
            "/lessons/{lesson}/": {"get": {"operationId": "lesson", "parameters": [{"$ref": "#/components/parameters/Lesson"}, {"$ref": "#/components/parameters/Page"}],
                                           "responses": {"200": {"description": "ok"}}}},
            "/internal/stats": {"get": {"responses": {"200": {"description": "ok"}}}}
        },
        "components": {"parameters": {
            "Lesson": {"name": "lesson", "in": "path", "required": true, "schema": {"type": "string"}},
            "Page": {"name": "page", "in": "query", "schema": {"type": "integer"}}
        }, "schemas": {
            "User": {"type": "object", "properties": {"id": {"type": "integer"}}},
            "Error": {"type": "object", "properties": {"message": {"type": "string"}}},
            "Page": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}}}
        }}
    })
}

#[test]
fn a_3_1_fragment_is_converted_and_what_3_0_cannot_say_is_reported() {
    let config = config_of(&[("courses", COURSES.to_string())]).expect("valid");
    let fragment = json!({
        "openapi": "3.1.0",
        "info": {"title": "Courses", "version": "1", "summary": "FastAPI"},
        "webhooks": {"newCourse": {}},
        "paths": {"/courses/": {"get": {"operationId": "list", "responses": {"200": {"description": "ok",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Course"}}}}}}}},
        "components": {"schemas": {"Course": {"type": "object", "properties": {
            "title": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Title"},
            "level": {"const": "beginner"},
            "score": {"type": ["number", "null"], "exclusiveMinimum": 0, "examples": [12.5]},
            "owner": {"$ref": "#/components/schemas/Owner", "description": "Who teaches it"},
            "tags": {"type": "array", "prefixItems": [{"type": "string"}]}
        }}, "Owner": {"type": "object"}}}
    });
    let (merged, doc) = merged(&config, vec![("courses", fragment)]);
    let course = &doc["components"]["schemas"]["Course"]["properties"];
    assert_eq!(
        course["title"],
        json!({"type": "string", "nullable": true, "title": "Title"})
    );
    assert_eq!(course["level"]["enum"], json!(["beginner"]));
    assert_eq!(course["score"]["type"], json!("number"));
    assert_eq!(course["score"]["nullable"], json!(true));
    assert_eq!(course["score"]["minimum"], json!(0.0));
    assert_eq!(course["score"]["exclusiveMinimum"], json!(true));
    assert_eq!(course["score"]["example"], json!(12.5));
    assert_eq!(
        course["owner"]["allOf"],
        json!([{"$ref": "#/components/schemas/Owner"}])
    );
    assert_eq!(course["owner"]["description"], json!("Who teaches it"));
    let pointers: Vec<&str> = merged.problems.iter().map(|p| p.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/components/schemas/Course/properties/tags/prefixItems",
            "/info/summary",
            "/webhooks"
        ]
    );
    assert!(op(&doc, "/api/courses/", "get").is_some());
}

#[test]
fn a_fragment_that_is_not_openapi_3_is_reported_and_its_routes_keep_placeholders() {
    let config = config_of(&[("courses", COURSES.to_string())]).expect("valid");
    let (merged, doc) = merged(
        &config,
        vec![("courses", json!({"swagger": "2.0", "paths": {}}))],
    );
    assert!(
        merged.problems[0].message.contains("Swagger 2.0"),
        "{:?}",
        merged.problems
    );
    assert!(op(&doc, "/api/courses/", "get").is_some());
}

/// A generated route table: a few services, each with routes whose paths and upstream paths
/// come from a small alphabet so that prefixes, parameters and rewrites interact.
type RouteTable = Vec<Vec<(String, Option<&'static str>, Vec<&'static str>)>>;

fn route_tables() -> impl Strategy<Value = RouteTable> {
    let segment = prop::sample::select(vec!["a", "b", "c", "{x}", "{y}"]);
    let path = prop::collection::vec(segment, 1..4).prop_map(|s| {
        let mut seen = BTreeSet::new();
        let parts: Vec<&str> = s
            .into_iter()
            .filter(|p| !p.starts_with('{') || seen.insert(*p))
            .collect();
        format!("/{}/", parts.join("/"))
    });
    let upstream = prop::option::of(prop::sample::select(vec!["/up/", "/v2/{x}/", "/"]));
    let methods = prop::sample::subsequence(vec!["GET", "POST", "DELETE"], 1..=3);
    let route = (path, upstream, methods);
    let service = prop::collection::vec(route, 1..4);
    prop::collection::vec(service, 1..3)
}

fn tables_to_config(tables: &RouteTable) -> Result<Config, String> {
    let mut files = Vec::new();
    for (s, routes) in tables.iter().enumerate() {
        let mut text = format!(
            "service: s{s}\nupstreams: [http://127.0.0.1:{}]\nroutes:\n",
            s + 1
        );
        for (path, upstream, methods) in routes {
            text.push_str(&format!(
                "  - path: {path}\n    methods: [{}]\n",
                methods.join(", ")
            ));
            if let Some(upstream) = upstream {
                text.push_str(&format!("    upstream_path: {upstream}\n"));
            }
        }
        files.push((format!("s{s}"), text));
    }
    let files: Vec<(&str, String)> = files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    config_of(&files)
}

/// Each service documents the upstream path of each of its routes (with a suffix sometimes),
/// with every method, and a schema whose name every service shares.
fn fragments_for(config: &Config, suffix: bool) -> Vec<(&str, Value)> {
    config
        .services
        .iter()
        .enumerate()
        .map(|(index, service)| {
            let mut paths = serde_json::Map::new();
            let mut shapes = BTreeSet::new();
            for route in config.routes.iter().filter(|r| r.service == index) {
                let base = route.upstream_path.as_ref().map_or(route.pattern.segments(), |t| t.segments());
                let mut text = String::new();
                for segment in base {
                    match segment {
                        crate::router::Segment::Static(s) => text.push_str(&format!("/{s}")),
                        crate::router::Segment::Param(p) => text.push_str(&format!("/{{{p}}}")),
                    }
                }
                if suffix {
                    text.push_str("/more");
                }
                text.push('/');
                let shape = text.split('/').map(|s| if s.starts_with('{') { "{}" } else { s }).collect::<Vec<_>>().join("/");
                if !shapes.insert(shape) {
                    // Already documented under other parameter names: one fragment cannot say both.
                    continue;
                }
                let params: Vec<Value> = text
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                    .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
                    .collect();
                let operation = json!({"parameters": params, "responses": {"200": {"description": "ok",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}}}});
                let item = json!({"get": operation, "post": operation, "delete": operation});
                paths.insert(text, item);
            }
            let document = json!({
                "openapi": "3.0.3",
                "info": {"title": service.name, "version": "1"},
                "paths": paths,
                "components": {"schemas": {"Thing": {"type": "object", "title": service.name}}}
            });
            (service.name.as_str(), document)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn nothing_routed_is_lost_every_ref_resolves_and_merging_is_deterministic(
        tables in route_tables(),
        suffix in any::<bool>(),
    ) {
        let config = tables_to_config(&tables);
        // Shadowed or duplicate routes: the configuration itself is refused.
        prop_assume!(config.is_ok());
        let config = config.expect("checked");
        let (merged_once, doc) = merged(&config, fragments_for(&config, suffix));
        let (_, again) = merged(&config, fragments_for(&config, suffix));
        let bytes = serde_json::to_vec(&doc).expect("serialises");
        prop_assert_eq!(&bytes, &serde_json::to_vec(&again).expect("serialises"));
        prop_assert!(unresolved_refs(&doc).is_empty(), "{:?}", unresolved_refs(&doc));
        prop_assert!(merged_once.problems.is_empty(), "{:?}", merged_once.problems);
        // Every method of every route is in the document, attributed to that route.
        let paths = doc["paths"].as_object().expect("paths");
        for route in &config.routes {
            for method in route.methods.names().filter(|m| *m != "HEAD") {
                let method = method.to_lowercase();
                let found = paths.values().any(|item| {
                    item.get(&method).is_some_and(|op| op["x-guichet-route"] == json!(route.id))
                });
                prop_assert!(found, "{} {} of route {} lost in {:#}", method, route.pattern.as_str(), route.id, doc["paths"]);
            }
        }
        // Each service's schema kept its own title under its own name.
        for service in &config.services {
            let name = if config.services.len() > 1 { format!("{}.Thing", service.name) } else { "Thing".to_string() };
            prop_assert_eq!(&doc["components"]["schemas"][&name]["title"], &json!(service.name));
        }
    }
}
