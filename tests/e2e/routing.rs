//! Routing through the real listener: longest prefix, parameters, methods, normalisation, and
//! the JSON bodies of 400, 404 and 405.

use serde_json::Value;

use crate::common::{client, raw_request, status_and_json, Gateway, GatewayConfig, Upstream};

/// Two services: `public` owns `/api/` and `/api/public/`, `admin` owns `/api/admin/`.
async fn two_services() -> (Gateway, Upstream, Upstream) {
    let public = Upstream::start("public").await;
    let admin = Upstream::start("admin").await;
    let config = GatewayConfig::new("include: [routes/*.yaml]\n")
        .file(
            "routes/public.yaml",
            &format!(
                "service: public
upstreams: [{}]
routes:
  - path: /api/
    auth: none
  - path: /api/public/
    auth: none
    upstream_path: /v1/
  - path: /api/users/{{user_id}}/courses/
    auth: none
    upstream_path: /members/{{user_id}}/enrolments/
    methods: [GET]
  - id: course-write
    path: /api/courses/
    auth: none
    methods: [POST]
",
                public.url()
            ),
        )
        .file(
            "routes/admin.yaml",
            &format!(
                "service: admin
upstreams: [{}]
routes:
  - path: /api/admin/
    auth: none
  - path: /api/courses/
    auth: none
    methods: [GET]
",
                admin.url()
            ),
        );
    (Gateway::start(config).await, public, admin)
}

async fn get_status_and_json(url: &str) -> (u16, Value) {
    status_and_json(client().get(url).send().await.expect("request")).await
}

#[tokio::test]
async fn the_longest_matching_prefix_wins_and_upstream_path_replaces_it() {
    let (gateway, _public, _admin) = two_services().await;
    let (status, echo) = get_status_and_json(&gateway.url("/api/public/lessons/3")).await;
    assert_eq!(status, 200);
    assert_eq!(echo["upstream"], "public");
    assert_eq!(echo["target"], "/v1/lessons/3");

    let (_, echo) = get_status_and_json(&gateway.url("/api/admin/stats")).await;
    assert_eq!(echo["upstream"], "admin");
    assert_eq!(echo["target"], "/api/admin/stats");

    let (_, echo) = get_status_and_json(&gateway.url("/api/other")).await;
    assert_eq!(echo["upstream"], "public");
    assert_eq!(echo["target"], "/api/other");
}

#[tokio::test]
async fn parameters_are_captured_and_placed_in_the_upstream_path() {
    let (gateway, _public, _admin) = two_services().await;
    let (status, echo) = get_status_and_json(&gateway.url("/api/users/42/courses/7?page=2")).await;
    assert_eq!(status, 200);
    assert_eq!(echo["target"], "/members/42/enrolments/7?page=2");
}

#[tokio::test]
async fn the_method_picks_between_routes_sharing_a_path() {
    let (gateway, _public, _admin) = two_services().await;
    let (_, echo) = get_status_and_json(&gateway.url("/api/courses/1")).await;
    assert_eq!(echo["upstream"], "admin");
    let response = client()
        .post(gateway.url("/api/courses/"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["upstream"], "public");
    assert_eq!(echo["method"], "POST");
}

#[tokio::test]
async fn a_method_no_route_accepts_is_405_with_allow() {
    let public = Upstream::start("public").await;
    let config = GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/courses.yaml",
        &format!(
            "service: courses\nupstreams: [{}]\nroutes:\n  - path: /api/courses/\n    methods: [GET, POST]\n    auth: none\n",
            public.url()
        ),
    );
    let gateway = Gateway::start(config).await;
    let response = client()
        .delete(gateway.url("/api/courses/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD, POST");
    assert_eq!(response.headers()["content-type"], "application/json");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    assert_eq!(body["detail"], "Method \"DELETE\" not allowed.");
    assert_eq!(body["request_id"], request_id.as_str());
    assert_eq!(
        public.hits(),
        0,
        "a refused request never reaches the upstream"
    );
}

#[tokio::test]
async fn an_unrouted_path_is_404_json() {
    let (gateway, public, admin) = two_services().await;
    let (status, body) = get_status_and_json(&gateway.url("/static/app.js")).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["detail"], "Not found.");
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    // `/apix` is not under `/api/`: prefixes end on segment boundaries.
    let (status, _) = get_status_and_json(&gateway.url("/apix/admin/")).await;
    assert_eq!(status, 404);
    assert_eq!(public.hits() + admin.hits(), 0);
}

#[tokio::test]
async fn the_query_string_is_forwarded_byte_for_byte() {
    let (gateway, _public, _admin) = two_services().await;
    let query = "b=2&a=%20x+y&&c&d=%2F%2e&e=caf%C3%A9&f=a=b";
    let response = raw_request(
        gateway.addr,
        &format!("GET /api/public/search?{query} HTTP/1.1\r\nHost: example"),
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json()["target"],
        format!("/v1/search?{query}").as_str()
    );
}

#[tokio::test]
async fn paths_are_normalised_before_matching_and_forwarded_normalised() {
    let (gateway, _public, _admin) = two_services().await;
    let cases = [
        // A dot-segment cannot smuggle a request past the route it appears to target.
        ("/api/public/../admin/secret", "admin", "/api/admin/secret"),
        (
            "/api/public/%2e%2e/admin/secret",
            "admin",
            "/api/admin/secret",
        ),
        (
            "/api/public/%2E%2E/%2E%2E/api/admin/x",
            "admin",
            "/api/admin/x",
        ),
        ("//api///public//x/./y", "public", "/v1/x/y"),
        ("/api/admin/../../../../api/public/z", "public", "/v1/z"),
        ("/api/%70ublic/%7Euser", "public", "/v1/~user"),
    ];
    for (path, upstream, target) in cases {
        let response = raw_request(
            gateway.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: example"),
            b"",
        )
        .await;
        assert_eq!(response.status, 200, "{path}");
        let echo = response.json();
        assert_eq!(echo["upstream"], upstream, "{path}");
        assert_eq!(echo["target"], target, "{path}");
    }
}

#[tokio::test]
async fn malformed_paths_are_400_json() {
    let (gateway, public, admin) = two_services().await;
    for path in ["/api/public/%zz", "/api/public/a%00b"] {
        let response = raw_request(
            gateway.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: example"),
            b"",
        )
        .await;
        assert_eq!(response.status, 400, "{path}");
        assert_eq!(response.headers["content-type"], "application/json");
        let body = response.json();
        assert_eq!(body["code"], "bad_request");
        assert_eq!(
            body["request_id"],
            response.headers["x-request-id"].as_str()
        );
    }
    assert_eq!(public.hits() + admin.hits(), 0);
}
