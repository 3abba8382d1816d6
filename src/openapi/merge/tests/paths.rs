//! Operations under their public paths: mapped back through the routes, only the exposed ones
//! kept, none where the gateway answers itself, and the drift either way reported.

use std::collections::BTreeSet;

use serde_json::json;

use super::{config_of, courses_fragment, merged, op, COURSES};
use crate::openapi::merge::Drift;

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
