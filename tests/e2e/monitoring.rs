//! `deploy/monitoring/`: promtool accepts the alerting rules, their unit tests and the example
//! scrape config; the Grafana dashboard is well formed; and a real Prometheus, scraping a real
//! gateway that has served real traffic, answers every dashboard query and every alert
//! expression with at least one series, so no panel or alert silently watches nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth::{jwt_section, seed};
use crate::common::{client, free_port, Gateway, GatewayConfig, Upstream};

/// The alerts the rules must hold (issue 16).
const ALERTS: [&str; 8] = [
    "GuichetDown",
    "GuichetHigh5xxRatio",
    "GuichetHighLatencyP99",
    "GuichetUpstreamTargetUnhealthy",
    "GuichetServiceNoHealthyTarget",
    "GuichetStoreErrors",
    "GuichetThrottlingSurge",
    "GuichetConfigReloadFailed",
];

/// The panels the dashboard must hold.
const PANELS: [&str; 8] = [
    "Requests by route and status",
    "Latency percentiles",
    "Auth failures by reason",
    "Throttled requests (429)",
    "Upstream target health",
    "In-flight requests",
    "Store errors by operation",
    "Config reloads",
];

/// What Grafana puts in place of its own variables when the test runs a panel's query.
const GRAFANA_VARIABLES: [(&str, &str); 3] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "5m"),
];

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

/// `program` (from Debian's prometheus package), or a failure that says how to install it: a
/// missing tool must fail the test, never skip it.
fn tool(program: &str) -> Command {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "`{program}` is not installed: run `bash deploy/setup.sh` (it installs Debian's \
         prometheus package, which brings `prometheus` and `promtool`)"
    );
    Command::new(program)
}

fn promtool(args: &[&str]) -> Output {
    let output = tool("promtool")
        .args(args)
        .current_dir(monitoring_dir())
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn promtool_accepts_the_rules_their_unit_tests_and_the_scrape_config() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts_test.yml"]);
    promtool(&["check", "config", "prometheus.yml"]);
}

fn rules() -> Vec<Value> {
    let text = std::fs::read_to_string(monitoring_dir().join("alerts.yml")).expect("alerts.yml");
    let file: Value = serde_yaml::from_str(&text).expect("alerts.yml is YAML");
    file["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .collect()
}

#[test]
fn every_alert_is_there_with_a_delay_a_severity_and_its_words() {
    let rules = rules();
    let names: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for alert in ALERTS {
        assert!(names.contains(alert), "no {alert} in alerts.yml");
    }
    for rule in &rules {
        let name = &rule["alert"];
        assert!(rule["for"].is_string(), "{name} has no `for:`");
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("critical" | "warning")
            ),
            "{name}: severity is critical or warning"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation].is_string(),
                "{name} has no {annotation}"
            );
        }
        without_threshold(rule["expr"].as_str().expect("expr"));
    }
}

/// An alert's expression without its final `<op> <number>`: what it compares, which must exist
/// even while the alert does not fire.
fn without_threshold(expr: &str) -> String {
    let split = |text: &str| {
        text.trim_end()
            .rsplit_once(char::is_whitespace)
            .map(|(rest, last)| (rest.to_string(), last.to_string()))
    };
    let (rest, number) = split(expr).unwrap_or_default();
    let (base, op) = split(&rest).unwrap_or_default();
    assert!(
        number.parse::<f64>().is_ok() && ["==", "!=", ">", "<", ">=", "<="].contains(&op.as_str()),
        "the expression does not end in `<comparison> <number>`: {expr}"
    );
    base.trim().to_string()
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(monitoring_dir().join("grafana-dashboard.json"))
        .expect("grafana-dashboard.json");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// The dashboard's own variables (job, instance, route; the data source aside).
fn query_variables(dashboard: &Value) -> Vec<Value> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .cloned()
        .collect()
}

/// A panel query as Prometheus must take it: Grafana's variables given values, the dashboard's
/// own ones matching everything, as "All" does.
fn substitute(expr: &str, variables: &[Value]) -> String {
    let mut expr = expr.to_string();
    for (name, value) in GRAFANA_VARIABLES {
        expr = expr.replace(name, value);
    }
    for variable in variables {
        let name = variable["name"].as_str().expect("a variable's name");
        expr = expr
            .replace(&format!("${{{name}}}"), ".*")
            .replace(&format!("${name}"), ".*");
    }
    assert!(
        !expr.contains('$'),
        "a variable the dashboard does not define: {expr}"
    );
    expr
}

/// Every (panel title, query) of the dashboard, checking its structure on the way.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    assert!(dashboard["uid"].as_str().is_some_and(|uid| !uid.is_empty()));
    let data_source = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(data_source["query"], "prometheus");
    let uid = format!("${{{}}}", data_source["name"].as_str().expect("its name"));
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"]
            .as_str()
            .expect("a panel's title")
            .to_string();
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "{title}: id taken"
        );
        assert!(panel["gridPos"]["w"].is_u64(), "{title}: no gridPos");
        assert_eq!(panel["datasource"]["uid"], uid.as_str(), "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no targets");
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: a target without expr");
            assert!(ref_ids.insert(target["refId"].as_str().expect("a refId")));
            assert_eq!(target["datasource"]["uid"], uid.as_str(), "{title}");
            queries.push((title.clone(), expr.to_string()));
        }
    }
    for title in PANELS {
        assert!(
            panels.iter().any(|p| p["title"] == title),
            "no panel {title:?}"
        );
    }
    let latency = panels
        .iter()
        .find(|p| p["title"] == "Latency percentiles")
        .expect("latency panel");
    for quantile in ["0.5", "0.9", "0.99"] {
        assert!(
            latency["targets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["expr"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("histogram_quantile({quantile}, "))),
            "no p{quantile} in the latency panel"
        );
    }
    queries
}

#[test]
fn the_dashboard_is_well_formed() {
    let dashboard = dashboard();
    let variables = query_variables(&dashboard);
    for (_, expr) in dashboard_queries(&dashboard) {
        substitute(&expr, &variables);
    }
}

/// A Prometheus server of its own: temporary storage, a free port, stopped on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Runs Prometheus on the example `prometheus.yml`, scraping `admin` every second and
    /// evaluating the rules every second.
    async fn start(admin: SocketAddr) -> Prometheus {
        let text = std::fs::read_to_string(monitoring_dir().join("prometheus.yml"))
            .expect("prometheus.yml");
        let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
        config["global"]["scrape_interval"] = "1s".into();
        config["global"]["evaluation_interval"] = "1s".into();
        let rules = monitoring_dir().join("alerts.yml");
        config["rule_files"] = serde_yaml::to_value([rules]).unwrap();
        let job = &mut config["scrape_configs"][0];
        assert_eq!(job["job_name"], "guichet");
        job["static_configs"] =
            serde_yaml::to_value(json!([{"targets": [admin.to_string()]}])).expect("targets");
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let addr = free_port();
        let child = tool("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = client()
                .get(format!("http://{addr}/-/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return prometheus;
            }
            let exited = prometheus.child.try_wait().expect("try_wait");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "Prometheus is not ready ({}); its log:\n{}",
                exited.map_or("after 15 s".to_string(), |status| format!(
                    "exited {status}"
                )),
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `/api/v1/<path>` with `params`; the JSON answer whatever its status.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url =
            reqwest::Url::parse_with_params(&format!("http://{}/api/v1/{path}", self.addr), params)
                .expect("a URL");
        client()
            .get(url)
            .send()
            .await
            .expect("Prometheus answers")
            .json()
            .await
            .expect("a JSON answer")
    }

    /// An instant query's series, or why the query failed.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let answer = self.api("query", &[("query", expr)]).await;
        if answer["status"] != "success" {
            return Err(format!("{}: {}", answer["errorType"], answer["error"]));
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway that has answered 2xx, 401, 404, 429 and 502, with a login and a failed one.
async fn gateway_with_traffic(app: &Upstream, dead: &Upstream) -> Gateway {
    let config = GatewayConfig::new(&format!(
        "include: [routes/*.yaml]\n{}{}",
        jwt_section(),
        seed()
    ))
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
    .file(
        "routes/app.yaml",
        &format!(
            "service: app\nupstreams: [{}]\nroutes:\n  - path: /api/public/\n    auth: none\n    rate_limit: 3/hour\n  - path: /api/courses/\n",
            app.url()
        ),
    )
    .file(
        "routes/dead.yaml",
        &format!(
            "service: dead\nupstreams: [{}]\nroutes:\n  - path: /api/dead/\n    auth: none\n",
            dead.url()
        ),
    );
    let gateway = Gateway::start(config).await;
    let mut statuses = Vec::new();
    for path in [
        "/api/public/",
        "/api/public/",
        "/api/public/",
        "/api/public/",
        "/api/courses/",
        "/nowhere",
        "/api/dead/",
    ] {
        let response = client().get(gateway.url(path)).send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    for password in ["demo-password", "wrong"] {
        let response = gateway
            .login_request("demo", password)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 401, 404, 502, 200, 401]);
    gateway
}

#[tokio::test]
async fn a_real_prometheus_answers_every_dashboard_query_and_alert_expression() {
    let started = Instant::now();
    let app = Upstream::start("app").await;
    let dead = Upstream::start("dead").await;
    dead.kill();
    let gateway = gateway_with_traffic(&app, &dead).await;
    let prometheus = Prometheus::start(gateway.admin).await;

    // What must answer: each panel's query, each dashboard variable's series, each alert's
    // expression (parsed; it fires or not) and what it compares (at least one series).
    let dashboard = dashboard();
    let variables = query_variables(&dashboard);
    // Query → whose it is, and the label its series must carry (a variable's).
    let mut must_have_series: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    for (title, expr) in dashboard_queries(&dashboard) {
        let whose = format!("panel {title:?}");
        must_have_series.insert(substitute(&expr, &variables), (whose, None));
    }
    for variable in &variables {
        let query = variable["query"].as_str().expect("a variable's query");
        let (selector, label) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .expect("label_values(<selector>, <label>)");
        let label = label.trim().to_string();
        let expr = format!("count by ({label}) ({selector})");
        let whose = format!("variable {}", variable["name"]);
        must_have_series.insert(substitute(&expr, &variables), (whose, Some(label)));
    }
    let rules = rules();
    for rule in &rules {
        let expr = rule["expr"].as_str().unwrap();
        let whose = format!("alert {}", rule["alert"]);
        must_have_series.insert(without_threshold(expr), (whose, None));
    }

    // Counters need two scrapes for rate(); ask until every query has its series.
    let deadline = Instant::now() + Duration::from_secs(15);
    let empty = loop {
        let mut failures = Vec::new();
        for rule in &rules {
            let expr = rule["expr"].as_str().unwrap();
            if let Err(error) = prometheus.query(expr).await {
                failures.push(format!("alert {}: {expr}: {error}", rule["alert"]));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        let mut empty = Vec::new();
        for (expr, (whose, label)) in &must_have_series {
            match prometheus.query(expr).await {
                Ok(series) if !series.is_empty() => {
                    if let Some(label) = label {
                        assert!(
                            series.iter().all(|s| s["metric"][label].is_string()),
                            "{whose}: series without {label}: {series:?}"
                        );
                    }
                }
                Ok(_) => empty.push(format!("{whose}: no series for {expr}")),
                Err(error) => panic!("{whose}: {expr}: {error}"),
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break empty;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        empty.is_empty(),
        "{}\nthe gateway's /metrics:\n{}",
        empty.join("\n"),
        crate::common::get_text(gateway.admin_url("/metrics")).await
    );

    // Prometheus evaluates every rule on the real series without an error.
    let deadline = Instant::now() + Duration::from_secs(5);
    let evaluated = loop {
        let answer = prometheus.api("rules", &[("type", "alert")]).await;
        let rules: Vec<Value> = answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let done = rules.len() == ALERTS.len() && rules.iter().all(|r| r["health"] != "unknown");
        if done || Instant::now() > deadline {
            break rules;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(evaluated.len(), ALERTS.len(), "{evaluated:#?}");
    for rule in &evaluated {
        assert_eq!(
            rule["health"], "ok",
            "{}: {}",
            rule["name"], rule["lastError"]
        );
    }
    eprintln!("monitoring: checked in {:?}", started.elapsed());
}
