//! The merge, on configurations and fragments written here: public paths, exposure only,
//! renamed and shared components, unique operation ids, drift; and, as properties over
//! generated route tables, that nothing routed is lost, every `$ref` resolves and the output is
//! deterministic.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{merge, Drift, Fragment, Merged};
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

/// The courses service above and an accounts service with one route.
fn courses_and_accounts() -> Config {
    let accounts = "service: accounts
upstreams: [http://127.0.0.1:2]
routes:
  - { id: users, path: /api/users/, methods: [GET], auth: any }
";
    config_of(&[
        ("courses", COURSES.to_string()),
        ("accounts", accounts.to_string()),
    ])
    .expect("valid")
}

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
fn operations_appear_under_their_public_paths_with_route_parameters_added() {
    let config = config_of(&[("courses", COURSES.to_string())]).expect("valid");
    let (merged, doc) = merged(&config, vec![("courses", courses_fragment())]);
    assert!(op(&doc, "/api/courses/", "get").is_some(), "{doc:#}");
    assert!(op(&doc, "/api/courses/{id}", "get").is_some());
    let lesson = op(&doc, "/api/t/{tenant}/lessons/{lesson}/", "get")
        .expect("mapped through the tenant route");
    let names: BTreeSet<&str> = lesson["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    // The referenced path parameter is inlined (not declared twice), the query one stays a reference.
    assert_eq!(names, BTreeSet::from(["lesson", "tenant"]));
    assert!(lesson["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .any(|p| p["$ref"] == json!("#/components/parameters/Page")));
    assert_eq!(
        lesson["parameters"].as_array().expect("parameters").len(),
        3,
        "{lesson:#}"
    );
    assert_eq!(lesson["security"], json!([{"bearerAuth": []}]));
    assert!(lesson["responses"]["401"]["$ref"].is_string());
    assert_eq!(
        op(&doc, "/api/courses/", "get").expect("op")["security"],
        json!([])
    );
    assert_eq!(doc["servers"], json!([{"url": "http://gw.example"}]));
    let one = op(&doc, "/api/courses/{id}", "get").expect("op");
    assert_eq!(
        one["summary"],
        json!("One course"),
        "the path item's summary is kept"
    );
    assert!(
        one.get("servers").is_none(),
        "calls go through the gateway: {one}"
    );
    assert!(merged.problems.is_empty(), "{:?}", merged.problems);
}

#[test]
fn only_exposed_operations_are_kept_and_the_rest_is_reported_as_drift() {
    let config = config_of(&[("courses", COURSES.to_string())]).expect("valid");
    let (merged, doc) = merged(&config, vec![("courses", courses_fragment())]);
    // POST is not routed (the catalogue takes GET only), nor is /internal/stats.
    assert!(op(&doc, "/api/courses/", "post").is_none());
    assert!(!doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .any(|p| p.contains("internal")));
    let unrouted: Vec<String> = merged
        .drift
        .iter()
        .filter_map(|d| match d {
            Drift::Unrouted { method, path, .. } => Some(format!("{method} {path}")),
            Drift::Undocumented { .. } => None,
        })
        .collect();
    assert_eq!(unrouted, ["POST /courses/", "GET /internal/stats"]);
}

#[test]
fn paths_the_gateway_answers_itself_are_never_documented_as_a_service_s() {
    // A catch-all route, and a drf-spectacular fragment that lists its own schema view.
    let routes = "service: legacy
upstreams: [http://127.0.0.1:1]
routes:
  - { id: all, path: /api/, methods: [GET], auth: none }
";
    let config = config_of(&[("legacy", routes.to_string())]).expect("valid");
    let fragment = json!({
        "openapi": "3.0.3",
        "info": {"title": "Legacy", "version": "1"},
        "paths": {
            "/api/schema/": {"get": {"operationId": "schema", "responses": {"200": {"description": "its own"}}}},
            "/api/things/": {"get": {"operationId": "things", "responses": {"200": {"description": "ok"}}}}
        }
    });
    let (merged, doc) = merged(&config, vec![("legacy", fragment)]);
    assert_eq!(
        op(&doc, "/api/things/", "get").expect("routed")["x-guichet-route"],
        json!("all")
    );
    assert!(
        op(&doc, "/api/schema/", "get").is_none(),
        "the gateway serves /api/schema/ itself"
    );
    assert!(
        op(&doc, "/api/", "get").is_none(),
        "nor a placeholder where the root view is"
    );
    assert!(merged.drift.contains(&Drift::Unrouted {
        source: "specs/legacy.yaml".to_string(),
        method: "GET".to_string(),
        path: "/api/schema/".to_string(),
    }));
}

#[test]
fn a_route_no_fragment_documents_gets_a_placeholder_and_a_drift_report() {
    let routes = format!("{COURSES}  - {{ id: grades, path: /api/grades/, methods: [POST, DELETE], auth: api_key }}\n");
    let config = config_of(&[("courses", routes)]).expect("valid");
    let (merged, doc) = merged(&config, vec![("courses", courses_fragment())]);
    let placeholder = op(&doc, "/api/grades/", "post").expect("placeholder");
    assert_eq!(placeholder["x-guichet-undocumented"], json!(true));
    assert_eq!(placeholder["security"], json!([{"apiKeyAuth": []}]));
    let undocumented: Vec<String> = merged
        .drift
        .iter()
        .filter_map(|d| match d {
            Drift::Undocumented { route, method, .. } => Some(format!("{route} {method}")),
            Drift::Unrouted { .. } => None,
        })
        .collect();
    assert_eq!(undocumented, ["grades POST", "grades DELETE"]);
}

#[test]
fn colliding_components_are_renamed_per_service_and_identical_ones_shared() {
    let config = courses_and_accounts();
    let accounts_fragment = json!({
        "openapi": "3.0.3",
        "info": {"title": "Accounts", "version": "1"},
        "paths": {"/api/users/": {"get": {"operationId": "list", "responses": {"200": {"description": "ok",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}}}}}}},
        "components": {"schemas": {
            "User": {"type": "object", "properties": {"name": {"type": "string"}}},
            "Error": {"type": "object", "properties": {"message": {"type": "string"}}},
            "Page": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}}}
        }}
    });
    let (merged, doc) = merged(
        &config,
        vec![
            ("courses", courses_fragment()),
            ("accounts", accounts_fragment),
        ],
    );
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "courses.User",
        "accounts.User",
        "courses.Page",
        "accounts.Page",
        "Error",
    ] {
        assert!(
            schemas.contains_key(name),
            "{name} missing from {:?}",
            schemas.keys().collect::<Vec<_>>()
        );
    }
    assert!(!schemas.contains_key("User") && !schemas.contains_key("Page"));
    // Page referred to User; after the rename each Page refers to its own service's User.
    assert_eq!(
        schemas["accounts.Page"]["properties"]["items"]["items"]["$ref"],
        json!("#/components/schemas/accounts.User")
    );
    let users = op(&doc, "/api/users/", "get").expect("users");
    assert_eq!(
        users["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        json!("#/components/schemas/accounts.Page")
    );
    // Both fragments call their operation `list`: the second one is prefixed.
    let ids: BTreeSet<&str> = [
        op(&doc, "/api/courses/", "get"),
        op(&doc, "/api/users/", "get"),
    ]
    .into_iter()
    .map(|o| o.expect("op")["operationId"].as_str().expect("id"))
    .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains("list"));
    assert!(
        unresolved_refs(&doc).is_empty(),
        "{:?}",
        unresolved_refs(&doc)
    );
    assert!(merged.problems.is_empty(), "{:?}", merged.problems);
}

#[test]
fn an_operation_with_a_reference_that_does_not_resolve_is_left_out_and_reported() {
    let config = config_of(&[("courses", COURSES.to_string())]).expect("valid");
    let mut fragment = courses_fragment();
    fragment["paths"]["/courses/"]["get"]["responses"]["200"]["content"] =
        json!({"application/json": {"schema": {"$ref": "#/components/schemas/Missing"}}});
    fragment["paths"]["/courses/"]["get"]["responses"]["404"] =
        json!({"$ref": "other.yaml#/NotFound"});
    let (merged, doc) = merged(&config, vec![("courses", fragment)]);
    // The operation is out; the route stays documented by its other operation; nothing dangles.
    assert!(op(&doc, "/api/courses/", "get").is_none());
    assert!(op(&doc, "/api/courses/{id}", "get").is_some());
    assert!(unresolved_refs(&doc).is_empty());
    let problem = merged
        .problems
        .iter()
        .find(|p| p.pointer == "/paths/~1courses~1/get")
        .expect("reported");
    assert_eq!(problem.source, "specs/courses.yaml");
    assert!(problem.message.contains("does not resolve"), "{problem}");
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

#[test]
fn fields_openapi_3_0_does_not_define_are_reported_with_the_fragment_s_own_names() {
    let config = courses_and_accounts();
    let mut courses = courses_fragment();
    courses["paths"]["/courses/"]["get"]["x-kept"] = json!(true);
    courses["paths"]["/courses/"]["get"]["cacheFor"] = json!("1h");
    // `User` differs from accounts' and is renamed courses.User; the report names `User`.
    courses["components"]["schemas"]["User"]["colour"] = json!("blue");
    let accounts_fragment = json!({
        "openapi": "3.0.3",
        "info": {"title": "Accounts", "version": "1"},
        "paths": {},
        "components": {"schemas": {"User": {"type": "string"}}}
    });
    let (merged, doc) = merged(
        &config,
        vec![("courses", courses), ("accounts", accounts_fragment)],
    );
    assert_eq!(
        op(&doc, "/api/courses/", "get").expect("kept")["x-kept"],
        json!(true)
    );
    let pointers: Vec<&str> = merged.problems.iter().map(|p| p.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/components/schemas/User/colour",
            "/paths/~1courses~1/get/cacheFor"
        ],
        "{:?}",
        merged.problems
    );
    assert!(doc["components"]["schemas"]["courses.User"].is_object());
}
