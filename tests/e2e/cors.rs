//! CORS through the real listener, as a browser relies on it: preflights answered by the gateway
//! before authentication and limits, the CORS fields on every answer to an allowed origin (the
//! gateway's own errors included) and on none to another, an upstream's own fields replaced,
//! credentials, wildcard origins, `cors: off` and a route's own policy, the login endpoint,
//! `guichet check`'s errors, the root view, and a page in headless Chromium calling the gateway
//! from another origin.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::auth::{jwt_section, seed};
use crate::common::{
    check, client, eventually, get_json, raw_request, status_and_json, Gateway, GatewayConfig,
    Upstream,
};

const APP: &str = "https://app.hackitech.example";
/// Allowed through `https://*.hackitech.example`.
const ADMIN: &str = "https://admin.hackitech.example";
const EVIL: &str = "https://evil.example";
const PARTNER: &str = "https://partner.example";

const CORS: &str = "cors:
  allow_origins: [https://app.hackitech.example, \"https://*.hackitech.example\"]
  allow_methods: [GET, POST, PUT, PATCH, DELETE]
";

/// `expose_headers`' default, as the gateway writes it.
const EXPOSED: &str = "X-Request-Id, RateLimit, RateLimit-Policy, Retry-After";

/// A gateway with JWT, the seeded users and `cors` in gateway.yaml, and `routes/app.yaml`.
fn config(cors: &str, routes: &str) -> GatewayConfig {
    GatewayConfig::new(&format!(
        "include: [routes/*.yaml]\n{}{}{cors}",
        jwt_section(),
        seed()
    ))
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
    .file("routes/app.yaml", routes)
}

/// JWT routes (one for instructors, one limited), public ones, one with `max_body`, one with
/// its own `cors:` (any request field, `max_age: 90s`); the services `dead` (its only target
/// refuses connections) and `sick` (its only target fails its health check).
struct Fixture {
    gateway: Gateway,
    app: Upstream,
    sick: Upstream,
    _dead: Upstream,
    student: String,
}

impl Fixture {
    async fn start() -> Fixture {
        let app = Upstream::start("app").await;
        let dead = Upstream::start("dead").await;
        dead.kill();
        let sick = Upstream::start("sick").await;
        let routes = format!(
            "service: app
upstreams: [{}]
routes:
  - path: /api/courses/
  - path: /api/teach/
    roles: [instructor]
  - path: /api/limited/
    rate_limit: 2/hour
  - path: /api/public/
    auth: none
    methods: [GET, POST]
  - path: /api/upload/
    auth: none
    max_body: 1KiB
  - path: /api/custom/
    auth: none
    methods: [GET, PUT]
    cors: {{ allow_origins: [https://app.hackitech.example], allow_headers: [\"*\"], max_age: 90s }}
",
            app.url()
        );
        let gateway = Gateway::start(
            config(CORS, &routes)
                .file(
                    "routes/dead.yaml",
                    &format!(
                        "service: dead\nupstreams: [{}]\nroutes:\n  - path: /api/dead/\n    auth: none\n",
                        dead.url()
                    ),
                )
                .file(
                    "routes/sick.yaml",
                    &format!(
                        "service: sick\nupstreams: [{}]\nhealth_check: {{ path: /healthz, interval: 100ms }}\nroutes:\n  - path: /api/sick/\n    auth: none\n",
                        sick.url()
                    ),
                ),
        )
        .await;
        let student = format!(
            "Bearer {}",
            gateway.access_token("demo", "demo-password").await
        );
        Fixture {
            gateway,
            app,
            sick,
            _dead: dead,
            student,
        }
    }
}

/// `OPTIONS path` as a browser sends it before a request it may not send unasked.
async fn preflight(
    gateway: &Gateway,
    path: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> Response {
    let mut request = client()
        .request(Method::OPTIONS, gateway.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method);
    if let Some(headers) = headers {
        request = request.header("access-control-request-headers", headers);
    }
    request.send().await.expect("a preflight answer")
}

/// Every value of the field `name`, in order.
fn all(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("a visible field").to_string())
        .collect()
}

/// The single value of `name`, or `None`; a field sent twice fails the test.
fn one(headers: &HeaderMap, name: &str) -> Option<String> {
    let values = all(headers, name);
    assert!(
        values.len() <= 1,
        "{name} sent {} times: {values:?}",
        values.len()
    );
    values.into_iter().next()
}

/// The names of the `Access-Control-*` fields of an answer.
fn cors_fields(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|name| name.as_str().to_string())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

/// Whether `Vary` (in any of its fields) names `Origin`.
fn varies_on_origin(headers: &HeaderMap) -> bool {
    all(headers, "vary")
        .iter()
        .flat_map(|field| field.split(',').map(|item| item.trim().to_string()))
        .any(|item| item.eq_ignore_ascii_case("origin"))
}

/// What an answer to an allowed origin carries: the origin itself, the exposed fields and
/// `Vary: Origin`; no credentials unless configured.
fn assert_allowed(headers: &HeaderMap, origin: &str, what: &str) {
    assert_eq!(
        all(headers, "access-control-allow-origin"),
        [origin],
        "{what}: {headers:?}"
    );
    assert_eq!(
        one(headers, "access-control-expose-headers").as_deref(),
        Some(EXPOSED),
        "{what}"
    );
    assert!(varies_on_origin(headers), "{what}: {headers:?}");
    assert_eq!(
        one(headers, "access-control-allow-credentials"),
        None,
        "{what}"
    );
}

/// A preflight answered 204 with `allow_origin` as its `Access-Control-Allow-Origin`.
fn assert_preflight_answered(response: &Response, allow_origin: &str) {
    assert_eq!(response.status(), 204, "{:?}", response.headers());
    assert_eq!(
        all(response.headers(), "access-control-allow-origin"),
        [allow_origin]
    );
}

/// What an answer to another origin carries: no `Access-Control-*` field, but `Vary: Origin`
/// (a cache must not give it to an allowed origin, nor the allowed origin's to it).
fn assert_refused(headers: &HeaderMap, what: &str) {
    assert_eq!(cors_fields(headers), Vec::<String>::new(), "{what}");
    assert!(varies_on_origin(headers), "{what}: {headers:?}");
}

/// A 403 `cors_rejected` whose detail mentions `mentions`, without `Access-Control-Allow-Origin`.
async fn assert_rejected(response: Response, mentions: &str, what: &str) {
    let headers = response.headers().clone();
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 403, "{what}: {body}");
    assert_eq!(body["code"], "cors_rejected", "{what}: {body}");
    let detail = body["detail"].as_str().expect("a detail");
    assert!(detail.contains(mentions), "{what}: {detail}");
    assert_eq!(
        body["request_id"].as_str(),
        one(&headers, "x-request-id").as_deref(),
        "{what}"
    );
    assert_eq!(
        one(&headers, "access-control-allow-origin"),
        None,
        "{what}: a refused preflight allows no origin"
    );
    assert_eq!(
        one(&headers, "access-control-allow-methods"),
        None,
        "{what}"
    );
}

#[tokio::test]
async fn a_preflight_needs_no_token_never_reaches_the_upstream_and_leaves_the_limit_alone() {
    let f = Fixture::start().await;
    for origin in [APP, ADMIN] {
        let response = preflight(
            &f.gateway,
            "/api/courses/42/",
            origin,
            "PATCH",
            Some("Authorization, Content-Type, X-Request-Id"),
        )
        .await;
        assert_eq!(response.status(), 204, "preflight from {origin}");
        let headers = response.headers();
        assert_eq!(all(headers, "access-control-allow-origin"), [origin]);
        assert!(varies_on_origin(headers), "{headers:?}");
        assert!(one(headers, "x-request-id").is_some_and(|id| !id.is_empty()));
        assert_eq!(one(headers, "access-control-allow-credentials"), None);
        assert!(response.bytes().await.expect("a body").is_empty());
    }

    // Many preflights, on a limited route too: none reaches the upstream or uses the limit.
    for _ in 0..20 {
        for path in ["/api/courses/", "/api/limited/", "/api/public/"] {
            let response = preflight(&f.gateway, path, APP, "GET", Some("authorization")).await;
            assert_eq!(response.status(), 204, "{path}");
        }
    }
    assert_eq!(f.app.hits(), 0, "a preflight is never forwarded");
    let get = || {
        client()
            .get(f.gateway.url("/api/limited/"))
            .header("origin", APP)
            .header("authorization", f.student.as_str())
            .send()
    };
    for remaining in [1, 0] {
        let response = get().await.expect("an answer");
        assert_eq!(response.status(), 200, "the limit is intact");
        let current = one(response.headers(), "ratelimit").expect("RateLimit");
        assert!(
            current.contains(&format!("\"route\";r={remaining};")),
            "{current}"
        );
    }
    assert_eq!(get().await.expect("an answer").status(), 429);
    assert_eq!(f.app.hits(), 2);
}

#[tokio::test]
async fn a_preflight_answer_lists_the_allowed_methods_and_headers_and_its_max_age() {
    let f = Fixture::start().await;
    // (path, method asked, fields asked, Allow-Methods, Allow-Headers, Max-Age)
    let cases = [
        (
            "/api/courses/42/",
            "PATCH",
            "Authorization, Content-Type, X-Request-Id",
            "GET, HEAD, POST, PUT, PATCH, DELETE",
            "authorization, content-type, x-api-key, x-request-id",
            "600",
        ),
        (
            "/api/public/",
            "POST",
            "content-type",
            "GET, HEAD, POST",
            "authorization, content-type, x-api-key, x-request-id",
            "600",
        ),
        (
            "/api/auth/token/",
            "POST",
            "content-type",
            "POST",
            "authorization, content-type, x-api-key, x-request-id",
            "600",
        ),
        (
            "/api/custom/",
            "PUT",
            "X-Debug, authorization",
            "GET, HEAD, PUT",
            "x-debug, authorization",
            "90",
        ),
    ];
    for (path, method, asked, methods, headers, max_age) in cases {
        let response = preflight(&f.gateway, path, APP, method, Some(asked)).await;
        assert_eq!(response.status(), 204, "{path}");
        let fields = response.headers();
        let what = format!("the preflight for {method} {path}: {fields:?}");
        assert_eq!(all(fields, "access-control-allow-origin"), [APP], "{what}");
        assert_eq!(
            one(fields, "access-control-allow-methods").as_deref(),
            Some(methods),
            "{what}"
        );
        assert_eq!(
            one(fields, "access-control-allow-headers").as_deref(),
            Some(headers),
            "{what}"
        );
        assert_eq!(
            one(fields, "access-control-max-age").as_deref(),
            Some(max_age),
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_preflight_for_an_origin_method_or_field_not_allowed_is_403_cors_rejected() {
    let f = Fixture::start().await;
    let refused = preflight(&f.gateway, "/api/courses/", EVIL, "GET", None).await;
    assert_rejected(refused, EVIL, "an origin not allowed").await;
    let parent = "https://hackitech.example";
    let refused = preflight(&f.gateway, "/api/courses/", parent, "GET", None).await;
    assert_rejected(refused, parent, "the wildcard's parent").await;
    let refused = preflight(&f.gateway, "/api/auth/token/", EVIL, "POST", None).await;
    assert_rejected(refused, EVIL, "login from another origin").await;

    let refused = preflight(&f.gateway, "/api/courses/", APP, "TRACE", None).await;
    assert_rejected(refused, "TRACE", "a method outside allow_methods").await;
    let refused = preflight(&f.gateway, "/api/public/", APP, "DELETE", None).await;
    assert_rejected(refused, "DELETE", "a method the route does not take").await;
    let refused = preflight(&f.gateway, "/api/auth/token/", APP, "DELETE", None).await;
    assert_rejected(
        refused,
        "DELETE",
        "a method the login endpoint does not take",
    )
    .await;
    let refused = preflight(
        &f.gateway,
        "/api/courses/",
        APP,
        "GET",
        Some("authorization, x-debug"),
    )
    .await;
    assert_rejected(refused, "x-debug", "a request field not allowed").await;
    assert_eq!(f.app.hits(), 0, "refused preflights are not forwarded");
}

/// One request of [`every_answer_to_an_allowed_origin_carries_the_cors_fields_and_others_get_none`]
/// and what it must get.
struct Case<'a> {
    what: &'static str,
    method: Method,
    path: &'static str,
    authorization: Option<&'a str>,
    /// Bytes of body to send.
    body: usize,
    status: u16,
    /// The error's `code`, for the gateway's own answers.
    code: Option<&'static str>,
}

impl<'a> Case<'a> {
    fn new(
        what: &'static str,
        method: Method,
        path: &'static str,
        authorization: Option<&'a str>,
        status: u16,
    ) -> Case<'a> {
        Case {
            what,
            method,
            path,
            authorization,
            body: 0,
            status,
            code: None,
        }
    }

    fn body(self, bytes: usize) -> Case<'a> {
        Case {
            body: bytes,
            ..self
        }
    }

    fn code(self, code: &'static str) -> Case<'a> {
        Case {
            code: Some(code),
            ..self
        }
    }
}

#[tokio::test]
async fn every_answer_to_an_allowed_origin_carries_the_cors_fields_and_others_get_none() {
    let f = Fixture::start().await;
    f.sick.set_healthy(false);
    eventually("the sick service is out of rotation", || async {
        client()
            .get(f.gateway.url("/api/sick/"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    let token = Some(f.student.as_str());
    let cases = [
        Case::new("a proxied 200", Method::GET, "/api/courses/", token, 200),
        Case::new("a proxied POST", Method::POST, "/api/public/", None, 200).body(10),
        Case::new(
            "401 without a token",
            Method::GET,
            "/api/courses/",
            None,
            401,
        )
        .code("not_authenticated"),
        Case::new("403 for the role", Method::GET, "/api/teach/", token, 403)
            .code("permission_denied"),
        Case::new("404 on no route", Method::GET, "/nowhere/", None, 404).code("not_found"),
        Case::new(
            "405 for the method",
            Method::DELETE,
            "/api/public/",
            None,
            405,
        )
        .code("method_not_allowed"),
        Case::new("413 over max_body", Method::POST, "/api/upload/", None, 413)
            .body(2048)
            .code("payload_too_large"),
        Case::new(
            "502 from a dead upstream",
            Method::GET,
            "/api/dead/",
            None,
            502,
        )
        .code("bad_gateway"),
        Case::new(
            "503 without a healthy upstream",
            Method::GET,
            "/api/sick/",
            None,
            503,
        )
        .code("service_unavailable"),
    ];
    for origin in [APP, ADMIN, EVIL] {
        for case in &cases {
            let mut request = client()
                .request(case.method.clone(), f.gateway.url(case.path))
                .header("origin", origin);
            if let Some(authorization) = case.authorization {
                request = request.header("authorization", authorization);
            }
            if case.body > 0 {
                request = request.body(vec![b'x'; case.body]);
            }
            let response = request.send().await.expect("an answer");
            let headers = response.headers().clone();
            let what = format!("{} to {origin}", case.what);
            let (got, json) = status_and_json(response).await;
            assert_eq!(got, case.status, "{what}: {json}");
            if let Some(code) = case.code {
                assert_eq!(json["code"], code, "{what}: {json}");
            }
            if origin == EVIL {
                assert_refused(&headers, &what);
            } else {
                assert_allowed(&headers, origin, &what);
            }
        }
    }

    // A chunked body, stopped at max_body as it streams: the 413 is made after the request
    // left for the upstream, and carries the fields all the same.
    let chunk = format!("{:x}\r\n{}\r\n", 600, "y".repeat(600));
    let body = format!("{chunk}{chunk}0\r\n\r\n");
    for origin in [APP, EVIL] {
        let response = raw_request(
            f.gateway.addr,
            &format!("POST /api/upload/ HTTP/1.1\r\nHost: example\r\nOrigin: {origin}\r\nTransfer-Encoding: chunked"),
            body.as_bytes(),
        )
        .await;
        assert_eq!(response.status, 413, "a streamed body to {origin}");
        let allowed = response.headers.get("access-control-allow-origin");
        if origin == EVIL {
            assert_eq!(allowed, None, "a streamed 413 to {origin}");
        } else {
            assert_eq!(allowed.map(String::as_str), Some(APP), "a streamed 413");
            assert_eq!(
                response
                    .headers
                    .get("access-control-expose-headers")
                    .map(String::as_str),
                Some(EXPOSED)
            );
        }
        assert!(response
            .headers
            .get("vary")
            .is_some_and(|v| v.contains("Origin")));
    }

    // 429, with Retry-After and the RateLimit fields readable by the page.
    let limited = |origin: &'static str| {
        client()
            .get(f.gateway.url("/api/limited/"))
            .header("origin", origin)
            .header("authorization", f.student.as_str())
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = limited(APP).await.expect("an answer");
        statuses.push(response.status().as_u16());
        assert_allowed(response.headers(), APP, "the limited route");
        if response.status() == 429 {
            let headers = response.headers();
            let retry_after: u64 = one(headers, "retry-after")
                .expect("Retry-After")
                .parse()
                .expect("seconds");
            assert!(retry_after > 0);
            assert!(one(headers, "ratelimit").is_some());
            let exposed = one(headers, "access-control-expose-headers").unwrap_or_default();
            for field in ["Retry-After", "RateLimit", "X-Request-Id"] {
                assert!(exposed.contains(field), "{field} exposed: {exposed}");
            }
        }
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    let response = limited(EVIL).await.expect("an answer");
    assert_eq!(response.status(), 429);
    assert_refused(response.headers(), "429 to another origin");
    assert!(one(response.headers(), "retry-after").is_some());

    // Without Origin (not a browser's cross-origin call): no CORS field, but the answer varies.
    let response = client()
        .get(f.gateway.url("/api/public/"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    assert_refused(response.headers(), "a request without Origin");
}

#[tokio::test]
async fn an_upstreams_own_cors_fields_are_replaced_by_the_gateways() {
    let upstream = Upstream::start("app").await;
    upstream.add_field("Access-Control-Allow-Origin", "*");
    upstream.add_field("Access-Control-Allow-Origin", "https://upstream.example");
    upstream.add_field("Access-Control-Allow-Credentials", "true");
    upstream.add_field("Access-Control-Expose-Headers", "X-Upstream-Secret");
    upstream.add_field("Access-Control-Allow-Methods", "GET, PURGE");
    upstream.add_field("Access-Control-Max-Age", "86400");
    upstream.add_field("Vary", "Accept-Encoding");
    let routes = format!(
        "service: app
upstreams: [{}]
routes:
  - path: /api/public/
    auth: none
  - path: /api/raw/
    auth: none
    cors: off
",
        upstream.url()
    );
    let gateway = Gateway::start(config(CORS, &routes)).await;
    let get = |path: &str, origin: &'static str| {
        client()
            .get(gateway.url(path))
            .header("origin", origin)
            .send()
    };
    for _ in 0..5 {
        let response = get("/api/public/", APP).await.expect("an answer");
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_allowed(headers, APP, "an upstream with its own CORS fields");
        assert_eq!(one(headers, "access-control-allow-methods"), None);
        assert_eq!(one(headers, "access-control-max-age"), None);
        assert!(all(headers, "vary")
            .iter()
            .any(|v| v.contains("Accept-Encoding")));

        let response = get("/api/public/", EVIL).await.expect("an answer");
        assert_refused(
            response.headers(),
            "the upstream's fields to another origin",
        );
    }
    // Where CORS is off, the gateway leaves the upstream's answer alone.
    let response = get("/api/raw/", APP).await.expect("an answer");
    assert_eq!(
        all(response.headers(), "access-control-allow-origin"),
        ["*", "https://upstream.example"]
    );
    assert_eq!(
        one(response.headers(), "access-control-expose-headers").as_deref(),
        Some("X-Upstream-Secret")
    );
}

#[tokio::test]
async fn credentials_echo_the_origin_and_a_star_is_only_for_any_origin_without_them() {
    let upstream = Upstream::start("app").await;
    let routes = format!(
        "service: app
upstreams: [{}]
routes:
  - path: /api/courses/
  - path: /api/open/
    auth: none
    cors: {{ allow_origins: [\"*\"] }}
",
        upstream.url()
    );
    let gateway = Gateway::start(config(
        "cors:\n  allow_origins: [https://app.hackitech.example]\n  allow_credentials: true\n",
        &routes,
    ))
    .await;
    let token = format!(
        "Bearer {}",
        gateway.access_token("demo", "demo-password").await
    );
    let credentialed = |headers: &HeaderMap, what: &str| {
        assert_eq!(
            all(headers, "access-control-allow-origin"),
            [APP],
            "{what}: the origin itself, never *"
        );
        assert_eq!(
            one(headers, "access-control-allow-credentials").as_deref(),
            Some("true"),
            "{what}"
        );
        assert!(varies_on_origin(headers), "{what}");
    };
    let response = preflight(&gateway, "/api/courses/", APP, "GET", Some("authorization")).await;
    assert_eq!(response.status(), 204);
    credentialed(response.headers(), "the preflight");
    for (authorization, status) in [(Some(token.as_str()), 200), (None, 401)] {
        let mut request = client()
            .get(gateway.url("/api/courses/"))
            .header("origin", APP);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = request.send().await.expect("an answer");
        assert_eq!(response.status(), status);
        credentialed(response.headers(), &format!("a {status}"));
    }
    let response = client()
        .get(gateway.url("/api/courses/"))
        .header("origin", EVIL)
        .header("authorization", token.as_str())
        .send()
        .await
        .expect("an answer");
    assert_refused(response.headers(), "credentials for another origin");

    // `allow_origins: ["*"]` without credentials: `*`, whatever the origin.
    for origin in [APP, EVIL, "http://localhost:5173"] {
        let response = client()
            .get(gateway.url("/api/open/"))
            .header("origin", origin)
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(all(headers, "access-control-allow-origin"), ["*"]);
        assert_eq!(one(headers, "access-control-allow-credentials"), None);
        assert_eq!(
            one(headers, "access-control-expose-headers").as_deref(),
            Some(EXPOSED)
        );
        let response = preflight(&gateway, "/api/open/", origin, "PUT", Some("content-type")).await;
        assert_preflight_answered(&response, "*");
        assert_eq!(
            one(response.headers(), "access-control-allow-credentials"),
            None
        );
    }
}

#[tokio::test]
async fn a_wildcard_origin_allows_subdomains_only() {
    let upstream = Upstream::start("app").await;
    let routes = format!(
        "service: app\nupstreams: [{}]\nroutes:\n  - path: /api/public/\n    auth: none\n",
        upstream.url()
    );
    let gateway = Gateway::start(config(
        "cors: { allow_origins: [\"https://*.example.test\"] }\n",
        &routes,
    ))
    .await;
    for origin in ["https://a.example.test", "https://a.b.example.test"] {
        let response = client()
            .get(gateway.url("/api/public/"))
            .header("origin", origin)
            .send()
            .await
            .expect("an answer");
        assert_allowed(response.headers(), origin, origin);
        let response = preflight(&gateway, "/api/public/", origin, "POST", None).await;
        assert_eq!(response.status(), 204, "{origin}");
        assert_eq!(
            all(response.headers(), "access-control-allow-origin"),
            [origin]
        );
    }
    for origin in [
        "https://example.test",
        "https://evil.test",
        "http://a.example.test",
        "https://a.example.test.evil.test",
        "https://evilexample.test",
    ] {
        let response = client()
            .get(gateway.url("/api/public/"))
            .header("origin", origin)
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 200);
        assert_refused(response.headers(), origin);
        let response = preflight(&gateway, "/api/public/", origin, "POST", None).await;
        assert_rejected(response, origin, origin).await;
    }
}

/// gateway.yaml's CORS, and routes that turn it off or have their own.
async fn off_and_own() -> (Gateway, Upstream) {
    let upstream = Upstream::start("app").await;
    let routes = format!(
        "service: app
upstreams: [{}]
routes:
  - id: inherits
    path: /api/public/
    auth: none
  - id: off
    path: /api/off/
    auth: none
    cors: off
  - id: off-get
    path: /api/off-get/
    auth: none
    methods: [GET]
    cors: off
  - id: partner
    path: /api/partner/
    auth: none
    methods: [GET]
    cors:
      allow_origins: [https://partner.example]
      expose_headers: [X-Request-Id]
",
        upstream.url()
    );
    (Gateway::start(config(CORS, &routes)).await, upstream)
}

#[tokio::test]
async fn a_route_with_cors_off_gets_no_cors_fields_and_its_preflight_is_forwarded() {
    let (gateway, upstream) = off_and_own().await;
    let response = client()
        .get(gateway.url("/api/off/"))
        .header("origin", APP)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    assert_eq!(cors_fields(response.headers()), Vec::<String>::new());
    assert!(!varies_on_origin(response.headers()));

    // The preflight is an ordinary OPTIONS request, which this route takes: forwarded.
    let response = preflight(&gateway, "/api/off/", APP, "GET", Some("authorization")).await;
    assert_eq!(cors_fields(response.headers()), Vec::<String>::new());
    let (status, echo) = status_and_json(response).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["method"], "OPTIONS");
    assert_eq!(
        echo["headers"]["access-control-request-method"],
        json!(["GET"])
    );
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn a_route_with_its_own_cors_answers_its_own_origins_only() {
    let (gateway, upstream) = off_and_own().await;
    let get = |path: &str, origin: &'static str| {
        client()
            .get(gateway.url(path))
            .header("origin", origin)
            .send()
    };
    let response = get("/api/partner/", PARTNER).await.expect("an answer");
    assert_eq!(response.status(), 200);
    assert_eq!(
        all(response.headers(), "access-control-allow-origin"),
        [PARTNER]
    );
    assert_eq!(
        one(response.headers(), "access-control-expose-headers").as_deref(),
        Some("X-Request-Id"),
        "the route's own expose_headers"
    );
    let response = get("/api/partner/", APP).await.expect("an answer");
    assert_refused(
        response.headers(),
        "gateway.yaml's origin on the partner route",
    );
    let response = get("/api/public/", PARTNER).await.expect("an answer");
    assert_refused(response.headers(), "the partner on a route that inherits");
    let response = get("/api/public/", APP).await.expect("an answer");
    assert_allowed(
        response.headers(),
        APP,
        "gateway.yaml's origin where inherited",
    );

    let response = preflight(
        &gateway,
        "/api/partner/",
        PARTNER,
        "GET",
        Some("authorization"),
    )
    .await;
    assert_preflight_answered(&response, PARTNER);
    let refused = preflight(&gateway, "/api/partner/", APP, "GET", None).await;
    assert_rejected(refused, APP, "gateway.yaml's origin on the partner route").await;
    assert_eq!(upstream.hits(), 4);
}

#[tokio::test]
async fn a_405_on_a_route_with_cors_off_carries_no_cors_field() {
    let (gateway, upstream) = off_and_own().await;
    // A preflight for a route that takes GET only is an ordinary OPTIONS there: 405, and the
    // gateway adds no CORS field, gateway.yaml's included.
    for origin in [APP, EVIL] {
        let response = preflight(&gateway, "/api/off-get/", origin, "GET", None).await;
        let headers = response.headers().clone();
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, 405, "{body}");
        assert_eq!(body["code"], "method_not_allowed");
        assert_eq!(
            cors_fields(&headers),
            Vec::<String>::new(),
            "a 405 to {origin} on a route with cors: off"
        );
    }
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn a_405_and_a_preflight_for_another_method_use_the_routes_own_cors() {
    let (gateway, upstream) = off_and_own().await;
    // The partner's page can read the 405 of a simple POST to its route.
    let response = client()
        .post(gateway.url("/api/partner/"))
        .header("origin", PARTNER)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 405);
    assert_eq!(
        all(response.headers(), "access-control-allow-origin"),
        [PARTNER],
        "a 405 on a route with its own cors: {:?}",
        response.headers()
    );
    // A preflight for a method the route does not take is refused for the method, not for the
    // origin, which the route allows.
    let refused = preflight(&gateway, "/api/partner/", PARTNER, "DELETE", None).await;
    assert_rejected(
        refused,
        "DELETE",
        "a method the partner route does not take",
    )
    .await;
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn the_login_endpoint_answers_preflights_and_its_answers_carry_cors_fields() {
    let f = Fixture::start().await;
    let response = preflight(
        &f.gateway,
        "/api/auth/token/",
        APP,
        "POST",
        Some("content-type"),
    )
    .await;
    assert_preflight_answered(&response, APP);
    assert!(varies_on_origin(response.headers()));

    for origin in [APP, ADMIN, EVIL] {
        for (password, status) in [("demo-password", 200), ("wrong", 401)] {
            let response = f
                .gateway
                .login_request("demo", password)
                .header("origin", origin)
                .send()
                .await
                .expect("a login answer");
            let headers = response.headers().clone();
            let (got, body) = status_and_json(response).await;
            assert_eq!(got, status, "{body}");
            if status == 401 {
                assert_eq!(body["code"], "no_active_account");
            } else {
                assert!(body["access"].is_string());
            }
            let what = format!("login {status} to {origin}");
            if origin == EVIL {
                assert_refused(&headers, &what);
            } else {
                assert_allowed(&headers, origin, &what);
            }
        }
    }
}

#[test]
fn check_refuses_star_with_credentials_and_origins_that_are_not_origins() {
    let config = GatewayConfig::new(
        "include: [routes/*.yaml]
cors:
  allow_origins: [\"*\"]
  allow_credentials: true
",
    )
    .file(
        "routes/app.yaml",
        "service: app
upstreams: [http://127.0.0.1:1]
routes:
  - path: /api/a/
    auth: none
    cors: { allow_origins: [https://app.hackitech.example/] }
  - path: /api/b/
    auth: none
    cors: { allow_origins: [https://app.hackitech.example/login] }
  - path: /api/c/
    auth: none
    cors:
      allow_origins: [app.hackitech.example]
  - path: /api/d/
    auth: none
    cors: { allow_origins: [] }
  - path: /api/e/
    auth: none
    cors: { max_age: 1m }
",
    );
    let (dir, path) = config.write();
    let output = check(&path);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let at = |file: &str| dir.path().join(file).display().to_string();
    let expected = [
        format!(
            "{}:4:22: cors.allow_credentials: `allow_origins: [\"*\"]` with credentials would let every site act with the user's cookies (list the origins allowed, or set `allow_credentials: false`)",
            at("gateway.yaml")
        ),
        format!(
            "{}:6:29: routes[0].cors.allow_origins[0]: `https://app.hackitech.example/` ends with a slash, which an origin never does (write `https://app.hackitech.example`)",
            at("routes/app.yaml")
        ),
        format!(
            "{}:9:29: routes[1].cors.allow_origins[0]: `https://app.hackitech.example/login` has a path: an origin is scheme, host and port only (write `https://app.hackitech.example`)",
            at("routes/app.yaml")
        ),
        format!(
            "{}:13:23: routes[2].cors.allow_origins[0]: `app.hackitech.example` has no scheme: an origin is scheme, host and port (write `https://app.hackitech.example`)",
            at("routes/app.yaml")
        ),
        format!(
            "{}:16:28: routes[3].cors.allow_origins: the list is empty",
            at("routes/app.yaml")
        ),
        format!(
            "{}:19:11: routes[4].cors.allow_origins: missing: CORS needs the origins it allows (add `allow_origins: [https://app.hackitech.example]`)",
            at("routes/app.yaml")
        ),
    ];
    for line in &expected {
        assert!(
            stderr.contains(line.as_str()),
            "missing:\n{line}\nin:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn the_root_view_lists_each_routes_cors_origins() {
    let (gateway, _upstream) = off_and_own().await;
    let root = get_json(gateway.url("/api/")).await;
    let origins = |id: &str| {
        root["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .find(|route| route["id"] == id)
            .unwrap_or_else(|| panic!("route {id} in {root}"))["cors_origins"]
            .clone()
    };
    let inherited = json!([
        "https://app.hackitech.example",
        "https://*.hackitech.example"
    ]);
    assert_eq!(origins("inherits"), inherited);
    assert_eq!(origins("off"), Value::Null);
    assert_eq!(origins("off-get"), Value::Null);
    assert_eq!(origins("partner"), json!(["https://partner.example"]));
    let endpoints = root["endpoints"].as_array().expect("endpoints");
    let login = endpoints
        .iter()
        .find(|e| e["path"] == "/api/auth/token/")
        .expect("the login endpoint");
    assert_eq!(login["cors_origins"], inherited);

    // Without a cors section, CORS is off everywhere.
    let upstream = Upstream::start("app").await;
    let routes = format!(
        "service: app\nupstreams: [{}]\nroutes:\n  - id: plain\n    path: /api/plain/\n    auth: none\n",
        upstream.url()
    );
    let plain = Gateway::start(config("", &routes)).await;
    let root = get_json(plain.url("/api/")).await;
    assert_eq!(root["routes"][0]["cors_origins"], Value::Null);
    let response = client()
        .get(plain.url("/api/plain/"))
        .header("origin", APP)
        .send()
        .await
        .expect("an answer");
    assert_eq!(cors_fields(response.headers()), Vec::<String>::new());
}

/// A tiny static server: every request gets the same small HTML page, so that a page opened
/// from it has `http://127.0.0.1:<port>` as its origin.
async fn static_page(title: &str) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("local addr"));
    let page = format!("<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let page = page.clone();
            tokio::spawn(async move {
                // One request per connection: read the head, answer, close.
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (origin, task)
}

#[tokio::test]
async fn a_page_from_another_origin_in_chromium_reads_the_exposed_fields_and_is_blocked_when_not_allowed(
) {
    let (page, page_server) = static_page("allowed app").await;
    let (other, other_server) = static_page("other site").await;
    let upstream = Upstream::start("app").await;
    let routes = format!(
        "service: app
upstreams: [{}]
routes:
  - path: /api/courses/
    rate_limit: 3/hour
",
        upstream.url()
    );
    let gateway = Gateway::start(config(
        &format!("cors:\n  allow_origins: [{page}]\n"),
        &routes,
    ))
    .await;
    let token = gateway.access_token("demo", "demo-password").await;
    let script = crate::docs::browser_driver()
        .await
        .with_file_name("cors.mjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&page)
        .arg(&other)
        .arg(gateway.url(""))
        .arg(&token)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser checks finish within 2 minutes")
        .expect("node runs");
    page_server.abort();
    other_server.abort();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "browser checks failed:\n{report}");
    assert!(report.contains("all CORS checks passed"), "{report}");
    // The three requests the limit let through, and nothing from the other origin.
    assert_eq!(upstream.hits(), 3, "{report}");
}
