//! Reloading the configuration while serving: SIGHUP and `POST /reload` pick up changed files,
//! a broken file changes nothing, requests in flight finish on the configuration they started
//! with, and what the gateway learned (target health, rate limit counts) carries over.

use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;

use crate::common::{
    client, eventually, get_json, get_text, status_and_json, Gateway, GatewayConfig, Upstream,
};

/// A routes file with public routes (the watch tests write them too).
pub(crate) fn service(name: &str, upstreams: &[String], extra: &str, paths: &[&str]) -> String {
    let routes: String = paths
        .iter()
        .map(|path| format!("  - path: {path}\n    auth: none\n"))
        .collect();
    format!(
        "service: {name}\nupstreams: [{}]\n{extra}routes:\n{routes}",
        upstreams.join(", ")
    )
}

pub(crate) async fn status(gateway: &Gateway, path: &str) -> u16 {
    let response = client().get(gateway.url(path)).send().await.unwrap();
    response.status().as_u16()
}

async fn reload(gateway: &Gateway) -> (u16, Value) {
    let response = client()
        .post(gateway.admin_url("/reload"))
        .send()
        .await
        .unwrap();
    status_and_json(response).await
}

fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn sighup_serves_a_route_added_to_the_files_and_counts_go_on() {
    let courses = Upstream::start("courses").await;
    let accounts = Upstream::start("accounts").await;
    let config = GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/courses.yaml",
        &service("courses", &[courses.url()], "", &["/api/courses/"]),
    );
    let gateway = Gateway::start(config).await;
    assert_eq!(status(&gateway, "/api/courses/").await, 200);
    assert_eq!(status(&gateway, "/api/accounts/").await, 404);

    gateway.write_config(
        "routes/accounts.yaml",
        &service("accounts", &[accounts.url()], "", &["/api/accounts/"]),
    );
    gateway.signal("HUP");
    let line = gateway
        .wait_for_log(|l| l["message"] == "configuration reloaded")
        .await;
    assert_eq!(line["trigger"], "SIGHUP");
    assert_eq!(line["routes"], 2);

    assert_eq!(status(&gateway, "/api/accounts/").await, 200);
    assert_eq!(accounts.hits(), 1, "the new route reaches its new service");
    assert_eq!(status(&gateway, "/api/courses/").await, 200);
    let ready = get_json(gateway.admin_url("/readyz")).await;
    assert_eq!(ready["config"]["generation"], 2);
    assert_eq!(
        ready["services"]["accounts"]["targets"][0]["url"],
        accounts.url()
    );

    let metrics = get_text(gateway.admin_url("/metrics")).await;
    assert_eq!(
        sample(&metrics, r#"guichet_config_reloads_total{result="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, r#"guichet_config_reloads_total{result="error"}"#),
        Some(0.0)
    );
    let courses_ok = r#"guichet_http_requests_total{auth="anonymous",method="GET",role="none",route="courses:/api/courses/",status="200"}"#;
    assert_eq!(
        sample(&metrics, courses_ok),
        Some(2.0),
        "one series across the reload:\n{metrics}"
    );
}

#[tokio::test]
async fn a_broken_file_is_reported_and_the_running_configuration_stays() {
    let courses = Upstream::start("courses").await;
    let good = service("courses", &[courses.url()], "", &["/api/courses/"]);
    let config =
        GatewayConfig::new("include: [routes/*.yaml]\n").file("routes/courses.yaml", &good);
    let gateway = Gateway::start(config).await;

    gateway.write_config(
        "routes/courses.yaml",
        &format!("{good}  - path: /api/lessons/\n    auth: sometimes\n"),
    );
    let (status_code, body) = reload(&gateway).await;
    assert_eq!(status_code, 422, "{body}");
    assert_eq!(body["code"], "config_invalid");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{body}");
    let error = errors[0].as_str().unwrap();
    assert!(
        error.contains("routes/courses.yaml:7:") && error.contains("auth"),
        "the error names file, line and field: {error}"
    );

    assert_eq!(status(&gateway, "/api/courses/").await, 200);
    assert_eq!(status(&gateway, "/api/lessons/").await, 404);
    let ready = get_json(gateway.admin_url("/readyz")).await;
    assert_eq!(
        ready["status"], "ready",
        "a failed reload does not make it unready"
    );
    assert_eq!(ready["config"]["generation"], 1);
    let last_error = ready["config"]["last_reload_error"].as_str().unwrap();
    assert!(
        last_error.contains("routes/courses.yaml:7:"),
        "{last_error}"
    );
    let line = gateway
        .wait_for_log(|l| l["level"] == "ERROR" && l["trigger"] == "POST /reload")
        .await;
    assert!(line["errors"]
        .as_str()
        .unwrap()
        .contains("routes/courses.yaml:7:"));
    let metrics = get_text(gateway.admin_url("/metrics")).await;
    assert_eq!(
        sample(&metrics, r#"guichet_config_reloads_total{result="error"}"#),
        Some(1.0)
    );

    gateway.write_config(
        "routes/courses.yaml",
        &format!("{good}  - path: /api/lessons/\n    auth: none\n"),
    );
    let (status_code, body) = reload(&gateway).await;
    assert_eq!(status_code, 200, "{body}");
    assert_eq!(body["status"], "reloaded");
    assert_eq!(body["routes"], 2);
    assert_eq!(body["restart_required"], serde_json::json!([]));
    assert_eq!(status(&gateway, "/api/lessons/").await, 200);
    let ready = get_json(gateway.admin_url("/readyz")).await;
    assert_eq!(ready["config"]["last_reload_error"], Value::Null);
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_configuration_it_started_with() {
    let slow = Upstream::start("slow").await;
    slow.set_delay(Duration::from_millis(1000));
    let other = Upstream::start("other").await;
    let config = GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/slow.yaml",
        &service("slow", &[slow.url()], "", &["/api/slow/"]),
    );
    let gateway = Gateway::start(config).await;

    let in_flight = tokio::spawn(client().get(gateway.url("/api/slow/")).send());
    eventually("the request at the upstream", || async { slow.hits() == 1 }).await;
    // The route and its service go away; another service takes the only file.
    gateway.write_config(
        "routes/slow.yaml",
        &service("other", &[other.url()], "", &["/api/other/"]),
    );
    let (status_code, body) = reload(&gateway).await;
    assert_eq!(status_code, 200, "{body}");
    assert_eq!(status(&gateway, "/api/slow/").await, 404);

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["upstream"], "slow");
    assert_eq!(slow.hits(), 1);
    assert_eq!(status(&gateway, "/api/other/").await, 200);
}

#[tokio::test]
async fn target_health_and_rate_limit_counts_survive_a_reload() {
    let live = Upstream::start("live").await;
    // Accepts connections and never answers: each health check takes its whole timeout to fail.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let health = "health_check: { path: /healthz, interval: 200ms, timeout: 2s }\n";
    let routes = |extra_route: &str| {
        format!(
            "service: app\nupstreams: [{}, {silent_url}]\n{health}routes:\n  - path: /api/limited/\n    auth: none\n    rate_limit: 2/hour\n{extra_route}",
            live.url()
        )
    };
    let config =
        GatewayConfig::new("include: [routes/*.yaml]\n").file("routes/app.yaml", &routes(""));
    let gateway = Gateway::start(config).await;
    eventually("the silent target out of rotation", || async {
        get_json(gateway.admin_url("/readyz")).await["services"]["app"]["targets"][1]["healthy"]
            == false
    })
    .await;
    assert_eq!(status(&gateway, "/api/limited/").await, 200);
    assert_eq!(status(&gateway, "/api/limited/").await, 200);

    gateway.write_config(
        "routes/app.yaml",
        &routes("  - path: /api/open/\n    auth: none\n"),
    );
    let (status_code, body) = reload(&gateway).await;
    assert_eq!(status_code, 200, "{body}");
    // The new configuration's first check of the silent target needs 2 s; until then what was
    // seen before the reload holds.
    let ready = get_json(gateway.admin_url("/readyz")).await;
    assert_eq!(ready["config"]["generation"], 2);
    assert_eq!(
        ready["services"]["app"]["targets"][1]["healthy"], false,
        "{ready}"
    );
    assert_eq!(ready["status"], "ready", "{ready}");
    for _ in 0..4 {
        assert_eq!(
            status(&gateway, "/api/open/").await,
            200,
            "never the silent target"
        );
    }
    assert_eq!(
        status(&gateway, "/api/limited/").await,
        429,
        "the limit's count carries over"
    );
    drop(silent);
}

#[tokio::test]
async fn settings_read_once_at_start_are_named_in_restart_required() {
    let app = Upstream::start("app").await;
    let routes = service("app", &[app.url()], "", &["/api/app/"]);
    let gateway = Gateway::start(
        GatewayConfig::new("include: [routes/*.yaml]\nthreads: 2\n")
            .file("routes/app.yaml", &routes),
    )
    .await;
    gateway.write_config(
        "gateway.yaml",
        "include: [routes/*.yaml]\nthreads: 3\nrate_limits: { max_tracked_keys: 1000 }\n",
    );
    let (status_code, body) = reload(&gateway).await;
    assert_eq!(status_code, 200, "{body}");
    assert_eq!(
        body["restart_required"],
        serde_json::json!(["threads", "rate_limits.max_tracked_keys"])
    );
}
