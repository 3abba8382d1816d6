//! Usage statistics after scripted traffic: exact counts per consumer and per route, in memory
//! and across two processes sharing Redis; only admins may read them.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth::{jwt_section, seed, DEMO_KEY, OPS_KEY};
use crate::common::{
    add_demo_user, client, eventually, get_text, status_and_json, Gateway, GatewayConfig,
    RedisServer, Upstream,
};
use crate::metrics::{parse, series};

fn config(upstream: &Upstream, store: &str) -> GatewayConfig {
    GatewayConfig::new(&format!(
        "include: [routes/*.yaml]\n{store}{}{}",
        jwt_section(),
        seed()
    ))
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
    .file(
        "routes/app.yaml",
        &format!(
            "service: app
upstreams: [{}]
routes:
  - path: /api/public/
    auth: none
    rate_limit: 2/hour
  - path: /api/courses/
  - path: /api/teach/
    roles: [instructor]
  - path: /api/grades/
    auth: api_key
",
            upstream.url()
        ),
    )
}

async fn get(gateway: &Gateway, path: &str, header: Option<(&str, &str)>) -> u16 {
    let mut request = client().get(gateway.url(path));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn login(gateway: &Gateway) -> String {
    let access = gateway.access_token("demo", "demo-password").await;
    format!("Bearer {access}")
}

/// The same traffic, request by request, on whichever gateway `pick` names.
async fn script(gateways: &[&Gateway]) -> Vec<u16> {
    let pick = |i: usize| gateways[i % gateways.len()];
    let bearer = login(pick(0)).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(get(pick(i), "/api/public/", None).await);
    }
    for i in 0..2 {
        statuses.push(get(pick(i), "/api/courses/", Some(("authorization", &bearer))).await);
    }
    statuses.push(get(pick(1), "/api/teach/", Some(("authorization", &bearer))).await);
    statuses.push(get(pick(0), "/api/courses/", None).await);
    for i in 0..2 {
        statuses.push(get(pick(i), "/api/grades/", Some(("x-api-key", DEMO_KEY))).await);
    }
    statuses
}

async fn report(gateway: &Gateway, query: &str) -> Value {
    let response = client()
        .get(gateway.url(&format!("/api/analytics/usage/{query}")))
        .header("x-api-key", OPS_KEY)
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn assert_counts(report: &Value) {
    let counts = |section: &str, name: &str| {
        let stats = &report[section][name];
        (
            stats["requests"].as_u64().unwrap_or(0),
            stats["errors_4xx"].as_u64().unwrap_or(0),
            stats["errors_5xx"].as_u64().unwrap_or(0),
            stats["throttled"].as_u64().unwrap_or(0),
        )
    };
    assert_eq!(
        counts("routes", "app:/api/public/"),
        (3, 1, 0, 1),
        "{report}"
    );
    assert_eq!(
        counts("routes", "app:/api/courses/"),
        (3, 1, 0, 0),
        "{report}"
    );
    assert_eq!(
        counts("routes", "app:/api/teach/"),
        (1, 1, 0, 0),
        "{report}"
    );
    assert_eq!(
        counts("routes", "app:/api/grades/"),
        (2, 0, 0, 0),
        "{report}"
    );
    assert_eq!(counts("routes", "guichet:token"), (1, 0, 0, 0), "{report}");
    assert_eq!(counts("consumers", "user:demo"), (3, 1, 0, 0), "{report}");
    assert_eq!(counts("consumers", "key:grading"), (2, 0, 0, 0), "{report}");
    assert_eq!(counts("consumers", "anonymous"), (5, 2, 0, 1), "{report}");
    assert!(report["routes"]["app:/api/courses/"]["p95_ms"]
        .as_f64()
        .is_some());
}

#[tokio::test]
async fn usage_in_memory_counts_every_request_exactly() {
    let upstream = Upstream::start("app").await;
    let gateway = Gateway::start(config(&upstream, "")).await;
    let statuses = script(&[&gateway]).await;
    assert_eq!(statuses, [200, 200, 429, 200, 200, 403, 401, 200, 200]);
    gateway
        .wait_for_log(|l| l["route"] == "app:/api/grades/" && l["status"] == 200)
        .await;
    // Each request is recorded in the logging phase, after its answer: the report is read once
    // all ten are.
    eventually("all ten requests recorded", || async {
        report(&gateway, "").await["total"]["requests"] == 10
    })
    .await;
    assert_counts(&report(&gateway, "").await);

    let one = report(&gateway, "?window=7d&consumer=key%3Agrading").await;
    assert_eq!(one["total"]["requests"], 2);
    assert_eq!(one["consumers"].as_object().unwrap().len(), 1);
    let response = client()
        .get(gateway.url("/api/analytics/usage/?window=1y"))
        .header("x-api-key", OPS_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn only_admins_read_usage() {
    let upstream = Upstream::start("app").await;
    let gateway = Gateway::start(config(&upstream, "")).await;
    let bearer = login(&gateway).await;
    assert_eq!(get(&gateway, "/api/analytics/usage/", None).await, 401);
    assert_eq!(
        get(
            &gateway,
            "/api/analytics/usage/",
            Some(("authorization", &bearer))
        )
        .await,
        403
    );
    assert_eq!(
        get(
            &gateway,
            "/api/analytics/usage/",
            Some(("x-api-key", DEMO_KEY))
        )
        .await,
        403
    );
    assert_eq!(
        get(
            &gateway,
            "/api/analytics/usage/",
            Some(("x-api-key", OPS_KEY))
        )
        .await,
        200
    );
}

/// A refused reader is a known caller: the 403 is recorded under their identity, not as
/// anonymous, in the metrics and the access log.
#[tokio::test]
async fn a_refused_reader_of_usage_is_recorded_under_their_identity() {
    let upstream = Upstream::start("app").await;
    let gateway = Gateway::start(config(&upstream, "")).await;
    let bearer = login(&gateway).await;
    let usage = "/api/analytics/usage/";
    assert_eq!(
        get(&gateway, usage, Some(("authorization", &bearer))).await,
        403
    );
    assert_eq!(
        get(&gateway, usage, Some(("x-api-key", DEMO_KEY))).await,
        403
    );
    assert_eq!(
        get(&gateway, usage, Some(("x-api-key", OPS_KEY))).await,
        200
    );

    let refused = |auth: &'static str, role: &'static str| {
        series(
            "guichet_http_requests_total",
            &[
                ("route", "guichet:usage"),
                ("method", "GET"),
                ("status", "403"),
                ("auth", auth),
                ("role", role),
            ],
        )
    };
    eventually("both refusals in the metrics", || async {
        let samples = parse(&get_text(gateway.admin_url("/metrics")).await);
        samples.get(&refused("jwt", "student")) == Some(&1.0)
            && samples.get(&refused("api_key", "instructor")) == Some(&1.0)
    })
    .await;
    let samples = parse(&get_text(gateway.admin_url("/metrics")).await);
    assert_eq!(samples.get(&refused("anonymous", "none")), None);

    let user = gateway
        .wait_for_log(|l| l["route"] == "guichet:usage" && l["auth"] == "jwt")
        .await;
    assert_eq!(
        (user["status"].clone(), user["user_id"].clone()),
        (json!(403), json!(1))
    );
    let key = gateway
        .wait_for_log(|l| l["route"] == "guichet:usage" && l["consumer"] == "grading")
        .await;
    assert_eq!(
        (key["status"].clone(), key["auth"].clone()),
        (json!(403), json!("api_key"))
    );
}

#[tokio::test]
async fn usage_across_two_processes_sharing_redis_is_cluster_wide_and_exact() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start("app").await;
    // Seed data is for the memory store; with Redis the keys come from the CLI instead.
    let store = format!("store: {{ backend: redis, url: \"{}\" }}\n", redis.url());
    let config = GatewayConfig::new(&format!("include: [routes/*.yaml]\n{store}{}", jwt_section()))
        .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
        .file(
            "routes/app.yaml",
            &format!(
                "service: app\nupstreams: [{}]\nroutes:\n  - path: /api/public/\n    auth: none\n    rate_limit: 2/hour\n  - path: /api/courses/\n  - path: /api/teach/\n    roles: [instructor]\n  - path: /api/grades/\n    auth: api_key\n",
                upstream.url()
            ),
        );
    let (_dir, path) = config.write();
    add_demo_user(&path);
    let key = |name: &str, role: &str| {
        let output = crate::common::cli(
            &["keys", "create", "--name", name, "--role", role],
            &path,
            "",
        );
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    let grading = key("grading", "instructor");
    let ops = key("ops", "admin");
    let first = Gateway::start_in(tempfile::tempdir().unwrap(), &path).await;
    let second = Gateway::start_in(tempfile::tempdir().unwrap(), &path).await;

    let bearer = login(&first).await;
    let mut statuses = Vec::new();
    for gateway in [&first, &second, &first] {
        statuses.push(get(gateway, "/api/public/", None).await);
    }
    for gateway in [&first, &second] {
        statuses.push(get(gateway, "/api/courses/", Some(("authorization", &bearer))).await);
    }
    statuses.push(get(&second, "/api/teach/", Some(("authorization", &bearer))).await);
    statuses.push(get(&first, "/api/courses/", None).await);
    for gateway in [&first, &second] {
        statuses.push(get(gateway, "/api/grades/", Some(("x-api-key", &grading))).await);
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 403, 401, 200, 200]);

    // Each process flushes about every second; read through either until both have.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = client()
            .get(second.url("/api/analytics/usage/?window=1h"))
            .header("x-api-key", &ops)
            .send()
            .await
            .unwrap();
        let (_, report) = status_and_json(response).await;
        let grades = report["routes"]["app:/api/grades/"]["requests"]
            .as_u64()
            .unwrap_or(0);
        let public = report["routes"]["app:/api/public/"]["requests"]
            .as_u64()
            .unwrap_or(0);
        if (grades, public) == (2, 3) {
            assert_counts(&report);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usage never became cluster-wide: {report}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let output = crate::common::cli(&["usage", "--window", "1h"], &path, "");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let grades = table
        .lines()
        .find(|l| l.starts_with("route") && l.contains("app:/api/grades/"))
        .unwrap_or_else(|| panic!("no grades row in\n{table}"));
    let numbers: Vec<&str> = grades.split_whitespace().skip(2).take(4).collect();
    assert_eq!(numbers, ["2", "0", "0", "0"], "{table}");
}
