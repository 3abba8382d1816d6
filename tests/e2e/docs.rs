//! The merged API document and its pages: `/api/schema/` in YAML and JSON with ETags, the
//! root view, fragments fetched from a live service (refreshed, last good copy kept), the
//! document checked by an independent validator (openapi-spec-validator), and Swagger UI and
//! ReDoc driven in headless Chromium with the network restricted to the gateway.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth::{jwt_section, seed};
use crate::common::{client, free_port, get_json, Gateway, GatewayConfig, Upstream};

const COURSES_SPEC: &str = include_str!("../../specs/courses.yaml");
const ACCOUNTS_SPEC: &str = include_str!("../../specs/accounts.yaml");

/// The demo's two services with their fragments as files, and `public_url` set to `addr`.
fn demo_config(
    courses: &Upstream,
    accounts: &Upstream,
    addr: std::net::SocketAddr,
) -> GatewayConfig {
    GatewayConfig::new(&format!(
        "include: [routes/*.yaml]\npublic_url: http://{addr}\ndocs: {{ title: Test API, version: 2.0.0 }}\n{}{}",
        jwt_section(),
        seed()
    ))
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
    .file("specs/courses.yaml", COURSES_SPEC)
    .file("specs/accounts.yaml", ACCOUNTS_SPEC)
    .file(
        "routes/courses.yaml",
        &format!(
            "service: courses
upstreams: [{}]
openapi: specs/courses.yaml
routes:
  - id: catalogue
    path: /api/courses/
    upstream_path: /courses/
    methods: [GET]
    auth: none
  - id: catalogue-edit
    path: /api/courses/
    upstream_path: /courses/
    methods: [POST, PUT, PATCH, DELETE]
    roles: [instructor]
  - id: lessons
    path: /api/courses/{{course_id}}/lessons/
    upstream_path: /courses/{{course_id}}/lessons/
    methods: [GET]
    rate_limit: 30/min
  - id: grades
    path: /api/courses/{{course_id}}/grades/
    upstream_path: /courses/{{course_id}}/grades/
    methods: [POST]
    auth: api_key
    scopes: [grades:write]
",
            courses.url()
        ),
    )
    .file(
        "routes/accounts.yaml",
        &format!(
            "service: accounts
upstreams: [{}]
openapi: specs/accounts.yaml
routes:
  - id: users
    path: /api/users/
    upstream_path: /users/
    methods: [GET, POST, PATCH]
    auth: any
",
            accounts.url()
        ),
    )
}

struct Demo {
    gateway: Gateway,
    _courses: Upstream,
    _accounts: Upstream,
}

async fn start_demo() -> Demo {
    let courses = Upstream::start("courses").await;
    let accounts = Upstream::start("accounts").await;
    let addr = free_port();
    let (dir, path) = demo_config(&courses, &accounts, addr).write();
    Demo {
        gateway: Gateway::start_on(dir, &path, addr).await,
        _courses: courses,
        _accounts: accounts,
    }
}

/// Runs openapi-spec-validator (PyPI) on `document`; panics with its report if it refuses it.
fn assert_valid_openapi(document: &Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(document).expect("json")).expect("write");
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("python3 runs (pip install openapi-spec-validator)");
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn get(url: String, accept: Option<&str>, if_none_match: Option<&str>) -> reqwest::Response {
    let mut request = client().get(url);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    request.send().await.expect("a response")
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_schema_is_yaml_by_default_json_on_request_and_revalidated_by_etag() {
    let demo = start_demo().await;
    let url = demo.gateway.url("/api/schema/");

    let yaml = get(url.clone(), None, None).await;
    assert_eq!(yaml.status(), 200);
    assert!(header(&yaml, "content-type").starts_with("application/vnd.oai.openapi"));
    let yaml_tag = header(&yaml, "etag");
    let from_yaml: Value = serde_yaml::from_str(&yaml.text().await.expect("body")).expect("YAML");

    let json = get(format!("{url}?format=json"), None, None).await;
    assert_eq!(
        header(&json, "content-type"),
        "application/vnd.oai.openapi+json"
    );
    let json_tag = header(&json, "etag");
    let document: Value = json.json().await.expect("JSON");
    assert_eq!(document, from_yaml, "both renderings are the same document");
    let negotiated = get(url.clone(), Some("application/vnd.oai.openapi+json"), None).await;
    assert_eq!(negotiated.json::<Value>().await.expect("JSON"), document);

    assert!(
        !yaml_tag.is_empty() && yaml_tag != json_tag,
        "{yaml_tag} {json_tag}"
    );
    let revalidated = get(url.clone(), None, Some(&yaml_tag)).await;
    assert_eq!(revalidated.status(), 304);
    assert!(revalidated.bytes().await.expect("body").is_empty());
    let weak = get(url.clone(), None, Some(&format!("W/{yaml_tag}"))).await;
    assert_eq!(weak.status(), 304, "If-None-Match compares weakly");
    assert_eq!(header(&weak, "vary"), "Accept");
    let other = get(url.clone(), Some("application/json"), Some(&yaml_tag)).await;
    assert_eq!(
        other.status(),
        200,
        "the YAML tag does not match the JSON rendering"
    );
    let head = client().head(url).send().await.expect("a response");
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "etag"), yaml_tag);

    // What the routes expose, under public paths, with what the gateway enforces.
    assert_eq!(document["info"]["title"], json!("Test API"));
    assert_eq!(
        document["servers"][0]["url"],
        json!(format!("http://{}", demo.gateway.addr))
    );
    let paths = &document["paths"];
    assert_eq!(
        paths["/api/courses/"]["get"]["operationId"],
        json!("listCourses")
    );
    assert_eq!(paths["/api/courses/"]["get"]["security"], json!([]));
    assert_eq!(
        paths["/api/courses/{id}"]["delete"]["security"],
        json!([{"bearerAuth": []}])
    );
    assert!(paths["/api/courses/{id}"]["delete"]["responses"]["403"].is_object());
    // What the gateway itself may answer is documented with the service's own answers.
    let one = &paths["/api/courses/{id}"]["get"]["responses"];
    for (status, component) in [
        ("400", "MalformedRequest"),
        ("502", "BadGateway"),
        ("503", "ServiceUnavailable"),
        ("504", "GatewayTimeout"),
    ] {
        assert_eq!(
            one[status]["$ref"],
            json!(format!("#/components/responses/{component}")),
            "{one}"
        );
    }
    assert!(one["200"].is_object() && one["404"].is_object(), "{one}");
    assert!(one.get("401").is_none(), "a public route: {one}");
    let login = &paths["/api/auth/token/"]["post"];
    assert!(login["responses"]["413"].is_object() && login["responses"]["503"].is_object());
    let request = &document["components"]["schemas"]["TokenObtainRequest"]["properties"];
    assert_eq!(request["username"]["minLength"], json!(1));
    assert_eq!(request["password"]["minLength"], json!(1));
    let lessons = &paths["/api/courses/{course_id}/lessons/"]["get"];
    assert_eq!(lessons["x-ratelimit"]["route"], json!(["30/minute"]));
    assert!(lessons["responses"]["429"].is_object());
    let grades = &paths["/api/courses/{course_id}/grades/"]["post"];
    assert_eq!(grades["security"], json!([{"apiKeyAuth": []}]));
    assert!(grades["description"]
        .as_str()
        .expect("text")
        .contains("`grades:write`"));
    assert_eq!(
        paths["/api/users/{id}/"]["patch"]["operationId"],
        json!("updateUser")
    );
    assert!(paths["/api/auth/token/"]["post"].is_object());
    assert!(paths["/api/analytics/usage/"]["get"].is_object());
    // Nothing a service documents but no route exposes: /courses/{id} PUT is routed (by the
    // catalogue-edit prefix), but nothing unrouted leaks in.
    assert!(paths
        .as_object()
        .expect("paths")
        .keys()
        .all(|p| p.starts_with("/api/") || p.starts_with("/.well-known/")));
    assert_valid_openapi(&document);
}

#[tokio::test]
async fn the_rendering_follows_format_and_accept_and_an_unknown_one_is_a_406() {
    let demo = start_demo().await;
    let url = demo.gateway.url("/api/schema/");
    for (query, accept, content_type) in [
        ("", Some("application/json"), "application/json"),
        (
            "",
            Some("application/vnd.oai.openapi+json"),
            "application/vnd.oai.openapi+json",
        ),
        ("?format=json", None, "application/vnd.oai.openapi+json"),
        ("?format=json", Some("application/json"), "application/json"),
        (
            "?format=yaml",
            Some("application/json"),
            "application/vnd.oai.openapi; charset=utf-8",
        ),
        (
            "",
            Some("application/yaml"),
            "application/yaml; charset=utf-8",
        ),
        (
            "",
            Some("text/html, */*;q=0.8"),
            "application/vnd.oai.openapi; charset=utf-8",
        ),
    ] {
        let response = get(format!("{url}{query}"), accept, None).await;
        assert_eq!(response.status(), 200, "{query} {accept:?}");
        assert_eq!(
            header(&response, "content-type"),
            content_type,
            "{query} {accept:?}"
        );
        let body = response.text().await.expect("body");
        let document: Value = if content_type.contains("json") {
            serde_json::from_str(&body).expect("JSON")
        } else {
            serde_yaml::from_str(&body).expect("YAML")
        };
        assert_eq!(document["openapi"], json!("3.0.3"));
    }
    for (query, accept) in [("?format=xml", None), ("", Some("application/xml"))] {
        let response = get(format!("{url}{query}"), accept, None).await;
        assert_eq!(response.status(), 406, "{query} {accept:?}");
        assert_eq!(header(&response, "content-type"), "application/json");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["code"], json!("not_acceptable"), "{body}");
        assert!(
            body["detail"]
                .as_str()
                .expect("detail")
                .contains("formats: json, yaml"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_root_view_lists_every_route_and_gateway_endpoint() {
    let demo = start_demo().await;
    let root = get_json(demo.gateway.url("/api/")).await;
    assert_eq!(root["schema"], json!("/api/schema/"));
    let routes = root["routes"].as_array().expect("routes");
    let ids: Vec<&str> = routes.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(
        ids,
        ["users", "catalogue", "catalogue-edit", "lessons", "grades"]
    );
    let edit = &routes[2];
    assert_eq!(edit["path"], json!("/api/courses/"));
    assert_eq!(edit["methods"], json!(["POST", "PUT", "PATCH", "DELETE"]));
    assert_eq!(edit["auth"], json!("jwt"));
    assert_eq!(edit["roles"], json!(["instructor", "admin"]));
    assert_eq!(edit["service"], json!("courses"));
    assert_eq!(
        edit["docs"],
        json!(format!("http://{}/api/docs/#/courses", demo.gateway.addr))
    );
    let endpoints: Vec<&str> = root["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    for path in [
        "/api/auth/token/",
        "/api/auth/token/refresh/",
        "/.well-known/jwks.json",
        "/api/analytics/usage/",
        "/api/schema/",
    ] {
        assert!(
            endpoints.contains(&path),
            "{path} missing from {endpoints:?}"
        );
    }
}

#[tokio::test]
async fn the_pages_and_their_assets_come_from_the_gateway_under_a_strict_policy() {
    let demo = start_demo().await;
    for page in ["/api/docs/", "/api/redoc/"] {
        let response = get(demo.gateway.url(page), None, None).await;
        assert_eq!(response.status(), 200);
        assert!(header(&response, "content-type").starts_with("text/html"));
        let policy = header(&response, "content-security-policy");
        assert!(
            policy.contains("script-src 'self'") && !policy.contains("http"),
            "{policy}"
        );
        let html = response.text().await.expect("html");
        assert!(html.contains("<title>Test API"), "{html}");
    }
    let asset = get(
        demo.gateway.url("/api/docs/assets/swagger-ui-bundle.js"),
        None,
        None,
    )
    .await;
    assert_eq!(asset.status(), 200);
    assert!(header(&asset, "content-type").starts_with("text/javascript"));
    assert!(asset.bytes().await.expect("body").len() > 100_000);
    let missing = get(demo.gateway.url("/api/docs/assets/nothing.js"), None, None).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.expect("JSON")["code"],
        json!("not_found")
    );
}

/// A FastAPI-style 3.1 fragment, as a service serves it at `/api/schema/`.
fn served_fragment(extra_path: bool) -> Value {
    let mut spec = json!({
        "openapi": "3.1.0",
        "info": {"title": "Quizzes", "version": "0.1.0"},
        "paths": {
            "/quizzes/{quiz_id}": {"get": {
                "operationId": "getQuiz",
                "parameters": [{"name": "quiz_id", "in": "path", "required": true, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "The quiz", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Quiz"}}}}}
            }}
        },
        "components": {"schemas": {"Quiz": {"type": "object", "properties": {
            "title": {"type": "string"},
            "deadline": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}
        }}}}
    });
    if extra_path {
        spec["paths"]["/quizzes/"] = json!({"get": {"operationId": "listQuizzes", "responses": {"200": {"description": "The quizzes"}}}});
    }
    spec
}

/// Polls the JSON document until `ready` holds.
async fn wait_for_document(gateway: &Gateway, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let document = get_json(gateway.url("/api/schema/?format=json")).await;
        if ready(&document) {
            return document;
        }
        assert!(
            Instant::now() < deadline,
            "the document never got there: {:#}",
            document["paths"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_fragment_served_by_its_service_is_fetched_refreshed_and_kept_when_the_service_fails() {
    let quizzes = Upstream::start("quizzes").await;
    quizzes.serve_spec(served_fragment(false));
    let config = GatewayConfig::new("include: [routes/*.yaml]\ndocs: { refresh: 200ms }\n").file(
        "routes/quizzes.yaml",
        &format!(
            "service: quizzes
upstreams: [{0}]
openapi: {0}/api/schema/
routes:
  - {{ path: /api/quizzes/, upstream_path: /quizzes/, methods: [GET], auth: none }}
",
            quizzes.url()
        ),
    );
    let gateway = Gateway::start(config).await;
    let document = wait_for_document(&gateway, |d| {
        d["paths"]["/api/quizzes/{quiz_id}"]["get"].is_object()
    })
    .await;
    let deadline = &document["components"]["schemas"]["Quiz"]["properties"]["deadline"];
    assert_eq!(
        deadline["nullable"],
        json!(true),
        "3.1 converted to 3.0.3: {deadline}"
    );
    assert_eq!(document["openapi"], json!("3.0.3"));
    assert_valid_openapi(&document);

    // The service documents one more operation: the next refresh publishes it.
    quizzes.serve_spec(served_fragment(true));
    wait_for_document(&gateway, |d| {
        d["paths"]["/api/quizzes/"]["get"]["operationId"] == json!("listQuizzes")
    })
    .await;

    // The service fails: the last good copy stays, and /readyz and the logs say why.
    quizzes.fail_with(500);
    let deadline = Instant::now() + Duration::from_secs(10);
    let fragment = loop {
        let ready = get_json(gateway.admin_url("/readyz")).await;
        let fragment = ready["docs"]["fragments"]["quizzes"].clone();
        if fragment["ok"] == json!(false) {
            break fragment;
        }
        assert!(
            Instant::now() < deadline,
            "the failure never showed: {ready:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        fragment["error"].as_str().expect("error").contains("500"),
        "{fragment}"
    );
    assert_eq!(fragment["have_copy"], json!(true));
    let kept = get_json(gateway.url("/api/schema/?format=json")).await;
    assert!(
        kept["paths"]["/api/quizzes/"]["get"].is_object(),
        "the last good copy is still served"
    );
    gateway
        .wait_for_log(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot load the OpenAPI fragment"))
        })
        .await;
}

#[tokio::test]
async fn the_demo_configuration_merges_into_a_valid_document_without_drift() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = crate::common::cli(
        &["schema", "--format", "json"],
        &root.join("gateway.yaml"),
        "",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_valid_openapi(&document);
    let check = crate::common::cli(&["check", "--strict"], &root.join("gateway.yaml"), "");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        stdout.contains("API document: 0 problems, 0 drift"),
        "{stdout}"
    );
}

/// Installs playwright-core from tests/browser's lockfile once.
pub(crate) async fn browser_driver() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").is_dir() {
        let status = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .status()
            .await
            .expect("npm runs (apt-get install nodejs npm)");
        assert!(status.success(), "npm ci in tests/browser failed");
    }
    dir.join("docs.mjs")
}

#[tokio::test]
async fn swagger_ui_and_redoc_render_both_services_and_try_it_out_reaches_the_backend() {
    let demo = start_demo().await;
    let script = browser_driver().await;
    let token = demo.gateway.access_token("demo", "demo-password").await;
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(demo.gateway.url(""))
        .arg(&token)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser checks finish within 2 minutes")
        .expect("node runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "browser checks failed:\n{report}");
    assert!(report.contains("Try it out"), "{report}");
}
