//! `watch: true`: the gateway reloads by itself when its files change — edited in place, or
//! swapped the way Kubernetes updates a ConfigMap volume — once they have settled, with the
//! same checks as SIGHUP; without it, only a signal or `POST /reload` reloads.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::{eventually, get_text, Gateway, GatewayConfig, Upstream};
use crate::reload::{service, status};

const WATCHED: &str = "watch: true\ninclude: [routes/*.yaml]\n";

/// `guichet_config_reloads_total` for `result` (`ok` or `error`).
async fn reloads(gateway: &Gateway, result: &str) -> f64 {
    let series = format!(r#"guichet_config_reloads_total{{result="{result}"}} "#);
    get_text(gateway.admin_url("/metrics"))
        .await
        .lines()
        .find_map(|line| line.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits for a reload that took effect, and checks that the watcher made it.
async fn reloaded_by_watch(gateway: &Gateway) -> Value {
    let line = gateway
        .wait_for_log(|l| l["message"] == "configuration reloaded")
        .await;
    assert_eq!(line["trigger"], "watch", "{line}");
    line
}

fn reloaded_lines(gateway: &Gateway) -> usize {
    gateway
        .logs()
        .iter()
        .filter(|l| l["message"] == "configuration reloaded")
        .count()
}

/// Writes `files` the way the kubelet updates a ConfigMap volume: into a new timestamped
/// folder, then `..data` renamed over to point at it; the top-level names are links through
/// `..data`, and the previous folder is removed.
fn configmap_update(dir: &Path, generation: u32, files: &[(&str, &str)]) {
    let version = format!("..2026_12_06_19_00_00.{generation}");
    for (name, text) in files {
        let path = dir.join(&version).join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let previous = std::fs::read_link(dir.join("..data")).ok();
    symlink(&version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (name, _) in files {
        let top = Path::new(name).components().next().unwrap().as_os_str();
        if dir.join(top).symlink_metadata().is_err() {
            symlink(Path::new("..data").join(top), dir.join(top)).unwrap();
        }
    }
    if let Some(previous) = previous {
        std::fs::remove_dir_all(dir.join(previous)).unwrap();
    }
}

#[tokio::test]
async fn an_edited_routes_file_is_served_without_a_signal() {
    let courses = Upstream::start("courses").await;
    let gateway = Gateway::start(GatewayConfig::new(WATCHED).file(
        "routes/courses.yaml",
        &service("courses", &[courses.url()], "", &["/api/courses/"]),
    ))
    .await;
    assert_eq!(status(&gateway, "/api/lessons/").await, 404);

    gateway.write_config(
        "routes/courses.yaml",
        &service(
            "courses",
            &[courses.url()],
            "",
            &["/api/courses/", "/api/lessons/"],
        ),
    );
    let line = reloaded_by_watch(&gateway).await;
    assert_eq!(line["routes"], 2);
    assert_eq!(status(&gateway, "/api/lessons/").await, 200);
    assert_eq!(courses.hits(), 1, "the new route reaches the upstream");
    assert_eq!(reloads(&gateway, "ok").await, 1.0);
}

#[tokio::test]
async fn a_configmap_update_is_picked_up() {
    let courses = Upstream::start("courses").await;
    let accounts = Upstream::start("accounts").await;
    let dir = tempfile::tempdir().unwrap();
    let courses_file = service("courses", &[courses.url()], "", &["/api/courses/"]);
    configmap_update(
        dir.path(),
        1,
        &[
            ("gateway.yaml", WATCHED),
            ("routes/courses.yaml", &courses_file),
        ],
    );
    let path = dir.path().join("gateway.yaml");
    let gateway = Gateway::start_in(dir, &path).await;
    assert_eq!(status(&gateway, "/api/courses/").await, 200);
    assert_eq!(status(&gateway, "/api/accounts/").await, 404);

    // The whole volume at once: a new routes file, and gateway.yaml and courses.yaml unchanged
    // in text but new files behind the links.
    let config_dir = path.parent().unwrap();
    configmap_update(
        config_dir,
        2,
        &[
            ("gateway.yaml", WATCHED),
            ("routes/courses.yaml", &courses_file),
            (
                "routes/accounts.yaml",
                &service("accounts", &[accounts.url()], "", &["/api/accounts/"]),
            ),
        ],
    );
    reloaded_by_watch(&gateway).await;
    assert_eq!(status(&gateway, "/api/accounts/").await, 200);
    assert_eq!(accounts.hits(), 1);
    assert_eq!(status(&gateway, "/api/courses/").await, 200);
    assert_eq!(
        reloads(&gateway, "ok").await,
        1.0,
        "one reload for the swap"
    );
}

#[tokio::test]
async fn an_invalid_change_is_refused_and_the_fix_is_applied() {
    let courses = Upstream::start("courses").await;
    let good = service("courses", &[courses.url()], "", &["/api/courses/"]);
    let gateway =
        Gateway::start(GatewayConfig::new(WATCHED).file("routes/courses.yaml", &good)).await;

    gateway.write_config(
        "routes/courses.yaml",
        &format!("{good}  - path: /api/lessons/\n    auth: sometimes\n"),
    );
    let line = gateway
        .wait_for_log(|l| l["level"] == "ERROR" && l["trigger"] == "watch")
        .await;
    assert!(
        line["errors"]
            .as_str()
            .unwrap()
            .contains("routes/courses.yaml:7:"),
        "{line}"
    );
    assert_eq!(reloads(&gateway, "error").await, 1.0);
    assert_eq!(status(&gateway, "/api/courses/").await, 200, "still served");
    assert_eq!(status(&gateway, "/api/lessons/").await, 404);

    gateway.write_config(
        "routes/courses.yaml",
        &format!("{good}  - path: /api/lessons/\n    auth: none\n"),
    );
    reloaded_by_watch(&gateway).await;
    assert_eq!(status(&gateway, "/api/lessons/").await, 200);
    assert_eq!(reloads(&gateway, "ok").await, 1.0);
    assert_eq!(
        reloads(&gateway, "error").await,
        1.0,
        "the broken file was read once"
    );
}

#[tokio::test]
async fn without_watch_an_edit_waits_for_sighup_and_turning_it_on_needs_a_restart() {
    let courses = Upstream::start("courses").await;
    let gateway = Gateway::start(GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/courses.yaml",
        &service("courses", &[courses.url()], "", &["/api/courses/"]),
    ))
    .await;
    gateway.write_config(
        "routes/courses.yaml",
        &service(
            "courses",
            &[courses.url()],
            "",
            &["/api/courses/", "/api/lessons/"],
        ),
    );
    // Longer than a watcher's poll and settling time together.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status(&gateway, "/api/lessons/").await, 404);
    assert_eq!(reloaded_lines(&gateway), 0);

    gateway.signal("HUP");
    let line = gateway
        .wait_for_log(|l| l["message"] == "configuration reloaded")
        .await;
    assert_eq!(line["trigger"], "SIGHUP");
    assert_eq!(status(&gateway, "/api/lessons/").await, 200);

    // Turned on in the file, watching waits for a restart, like the other start-only settings.
    gateway.write_config("gateway.yaml", WATCHED);
    gateway.signal("HUP");
    let line = gateway
        .wait_for_log(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("only on restart"))
        })
        .await;
    assert_eq!(line["settings"], r#"["watch"]"#);
}

#[tokio::test]
async fn a_burst_of_writes_gives_one_reload() {
    let courses = Upstream::start("courses").await;
    let gateway = Gateway::start(GatewayConfig::new(WATCHED).file(
        "routes/courses.yaml",
        &service("courses", &[courses.url()], "", &["/api/courses/"]),
    ))
    .await;

    // Ten saves 50 ms apart, each a route more (and each in turn truncates the file first).
    let mut paths = vec!["/api/courses/".to_string()];
    for step in 0..10 {
        paths.push(format!("/api/step{step}/"));
        let written: Vec<&str> = paths.iter().map(String::as_str).collect();
        gateway.write_config(
            "routes/courses.yaml",
            &service("courses", &[courses.url()], "", &written),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("the last route served", || async {
        status(&gateway, "/api/step9/").await == 200
    })
    .await;
    // Another poll and settling time, for a second reload that must not come.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(reloads(&gateway, "ok").await, 1.0);
    assert_eq!(reloads(&gateway, "error").await, 0.0);
    assert_eq!(reloaded_lines(&gateway), 1);
}
