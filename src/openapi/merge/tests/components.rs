//! Components through the merge: colliding ones renamed per service and identical ones shared,
//! every `$ref` following, operations whose references do not resolve left out, fields OpenAPI
//! 3.0 does not define reported; and operation ids made unique.

use std::collections::BTreeSet;

use serde_json::json;

use super::{config_of, courses_fragment, merged, op, unresolved_refs, COURSES};
use crate::config::Config;

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
