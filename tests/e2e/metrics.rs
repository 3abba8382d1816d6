//! `/metrics` after a scripted sequence of requests: exact counter values and histogram counts,
//! and an exposition that `promtool check metrics` accepts.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::auth::{jwt_section, seed};
use crate::common::{client, get_text, Gateway, GatewayConfig, Upstream};

/// `name{a="1",b="2"}` (labels sorted) → value.
pub fn parse(exposition: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let key = match series.split_once('{') {
            Some((name, labels)) => {
                let mut pairs: Vec<&str> = labels.trim_end_matches('}').split("\",").collect();
                for pair in &mut pairs {
                    *pair = pair.trim_end_matches('"');
                }
                pairs.sort_unstable();
                let labels: Vec<String> = pairs.iter().map(|p| format!("{p}\"")).collect();
                format!("{name}{{{}}}", labels.join(","))
            }
            None => series.to_string(),
        };
        samples.insert(key, value.parse().expect("a number"));
    }
    samples
}

/// The key [`parse`] gives the series `name` with `labels`.
pub fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    labels.sort_unstable();
    if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", labels.join(","))
    }
}

#[tokio::test]
async fn a_scripted_sequence_shows_exactly_in_the_metrics() {
    let app = Upstream::start("app").await;
    let dead = Upstream::start("dead").await;
    dead.kill();
    let config = GatewayConfig::new(&format!("include: [routes/*.yaml]\n{}{}", jwt_section(), seed()))
        .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
        .file(
            "routes/app.yaml",
            &format!(
                "service: app\nupstreams: [{}]\nroutes:\n  - path: /api/public/\n    auth: none\n    rate_limit: 2/hour\n  - path: /api/courses/\n  - path: /api/teach/\n    roles: [instructor]\n",
                app.url()
            ),
        )
        .file(
            "routes/dead.yaml",
            &format!("service: dead\nupstreams: [{}]\nroutes:\n  - path: /api/dead/\n    auth: none\n", dead.url()),
        );
    let gateway = Gateway::start(config).await;
    let get = |path: &str, bearer: Option<&str>| {
        let mut request = client().get(gateway.url(path));
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.send()
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get("/api/public/", None).await.unwrap().status().as_u16());
    }
    statuses.push(get("/api/courses/", None).await.unwrap().status().as_u16());
    let login = gateway
        .login_request("demo", "demo-password")
        .send()
        .await
        .unwrap();
    statuses.push(login.status().as_u16());
    let access = login.json::<serde_json::Value>().await.unwrap()["access"]
        .as_str()
        .unwrap()
        .to_string();
    statuses.push(
        get("/api/teach/", Some(&access))
            .await
            .unwrap()
            .status()
            .as_u16(),
    );
    statuses.push(get("/nope", None).await.unwrap().status().as_u16());
    statuses.push(get("/api/dead/", None).await.unwrap().status().as_u16());
    assert_eq!(statuses, [200, 200, 429, 401, 200, 403, 404, 502]);

    // Recording happens after each response is sent: scrape until the last one is in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (exposition, samples) = loop {
        let exposition = get_text(gateway.admin_url("/metrics")).await;
        let samples = parse(&exposition);
        let settled = samples.get("guichet_requests_in_flight") == Some(&0.0)
            && samples.get("guichet_request_size_bytes_count") == Some(&8.0);
        if settled || std::time::Instant::now() > deadline {
            break (exposition, samples);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let requests = |route: &str, method: &str, status: &str, auth: &str, role: &str| {
        let key = series(
            "guichet_http_requests_total",
            &[
                ("route", route),
                ("method", method),
                ("status", status),
                ("auth", auth),
                ("role", role),
            ],
        );
        samples
            .get(&key)
            .copied()
            .unwrap_or_else(|| panic!("no {key} in\n{exposition}"))
    };
    assert_eq!(
        requests("app:/api/public/", "GET", "200", "anonymous", "none"),
        2.0
    );
    assert_eq!(
        requests("app:/api/public/", "GET", "429", "anonymous", "none"),
        1.0
    );
    assert_eq!(
        requests("app:/api/courses/", "GET", "401", "anonymous", "none"),
        1.0
    );
    assert_eq!(
        requests("guichet:token", "POST", "200", "anonymous", "none"),
        1.0
    );
    assert_eq!(
        requests("app:/api/teach/", "GET", "403", "jwt", "student"),
        1.0
    );
    assert_eq!(
        requests("unmatched", "GET", "404", "anonymous", "none"),
        1.0
    );
    assert_eq!(
        requests("dead:/api/dead/", "GET", "502", "anonymous", "none"),
        1.0
    );
    let total: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("guichet_http_requests_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, 8.0, "no request counted twice or missed");

    let value = |name: &str, labels: &[(&str, &str)]| {
        let key = series(name, labels);
        samples
            .get(&key)
            .copied()
            .unwrap_or_else(|| panic!("no {key} in\n{exposition}"))
    };
    assert_eq!(
        value(
            "guichet_http_request_duration_seconds_count",
            &[("route", "app:/api/public/"), ("method", "GET")]
        ),
        3.0
    );
    assert_eq!(
        value(
            "guichet_upstream_duration_seconds_count",
            &[("service", "app")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "guichet_auth_failures_total",
            &[("reason", "missing_credentials")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "guichet_auth_failures_total",
            &[("reason", "permission_denied")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "guichet_rate_limited_total",
            &[("route", "app:/api/public/"), ("scope", "route")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "guichet_upstream_errors_total",
            &[("service", "dead"), ("kind", "connect")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "guichet_upstream_errors_total",
            &[("service", "dead"), ("kind", "broken")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "guichet_upstream_healthy",
            &[("service", "app"), ("target", &app.url())]
        ),
        1.0
    );
    assert_eq!(value("guichet_request_size_bytes_count", &[]), 8.0);
    assert_eq!(value("guichet_requests_in_flight", &[]), 0.0);
    assert_eq!(
        value(
            "guichet_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(samples
        .keys()
        .any(|k| k.starts_with("guichet_store_duration_seconds_count{op=\"user_by_login\"")));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn recording_can_be_switched_off_for_benchmarks() {
    let app = Upstream::start("app").await;
    let config = GatewayConfig::new(
        "include: [routes/*.yaml]\nobservability: { metrics: false, usage: false }\n",
    )
    .file(
        "routes/app.yaml",
        &format!(
            "service: app\nupstreams: [{}]\nroutes:\n  - path: /api/\n    auth: none\n",
            app.url()
        ),
    );
    let gateway = Gateway::start(config).await;
    assert_eq!(
        client()
            .get(gateway.url("/api/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gateway.wait_for_log(|l| l["route"] == "app:/api/").await;
    let exposition = get_text(gateway.admin_url("/metrics")).await;
    let samples = parse(&exposition);
    assert!(
        !samples
            .keys()
            .any(|k| k.starts_with("guichet_http_requests_total{")),
        "{exposition}"
    );
    assert_eq!(
        samples.get("guichet_build_info{version=\"0.1.0\"}"),
        Some(&1.0)
    );
}
