//! The container image (deploy/container/): built by `deploy/container/build.sh` around the binary
//! these tests run, started with podman on the host's network with the configuration baked into
//! it and a signing key mounted, confined as Kubernetes runs it (read-only root, no capabilities),
//! it proxies to an upstream of the test, signs logins, runs as a user other than root and stops
//! cleanly on `podman stop`.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use serde_json::Value;

use crate::common::gateway::BINARY;
use crate::common::{client, eventually, free_port, get_json, Upstream};

const IMAGE: &str = "localhost/guichet:e2e";

/// Runs podman with the settings of `deploy/podman.sh` (runc, no default ulimits).
async fn podman(args: &[&str]) -> Output {
    tokio::process::Command::new("bash")
        .args(["-c", ". deploy/podman.sh && podman \"$@\"", "podman"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("run bash")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

fn require_podman() {
    let found = std::process::Command::new("sh")
        .args([
            "-c",
            "command -v podman && command -v runc && command -v mmdebstrap",
        ])
        .output()
        .expect("run sh");
    assert!(
        found.status.success(),
        "podman, runc and mmdebstrap are needed for the container test: run `bash deploy/setup.sh` \
         (as root) first"
    );
}

/// Removes the container however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .args(["-c", ". deploy/podman.sh && podman rm -f \"$1\"", "podman"])
            .arg(&self.0)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output();
    }
}

/// A folder readable by the container's user: `routes/courses.yaml`, sending `/api/courses/` to
/// `upstream`, and `jwt.pem`, a signing key only that user may read (as a Secret is mounted).
fn mounts_for(upstream: &Upstream) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let key = dir.path().join("jwt.pem");
    let openssl = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(openssl.status.success(), "openssl genpkey failed");
    std::os::unix::fs::chown(&key, Some(10001), Some(10001)).expect("chown the key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    let routes = dir.path().join("routes");
    std::fs::create_dir(&routes).expect("mkdir");
    let text = format!(
        "service: courses\nupstreams: [{}]\nhealth_check: {{ path: /healthz, interval: 1s }}\n\
         routes:\n  - path: /api/courses/\n    upstream_path: /courses/\n    auth: none\n",
        upstream.url()
    );
    std::fs::write(routes.join("courses.yaml"), text).expect("write routes");
    for (path, mode) in [(&routes, 0o755), (&routes.join("courses.yaml"), 0o644)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    dir
}

#[tokio::test]
async fn the_image_proxies_runs_as_non_root_and_stops_cleanly_on_sigterm() {
    require_podman();
    let build = tokio::process::Command::new("bash")
        .arg("deploy/container/build.sh")
        .env("GUICHET_BINARY", BINARY)
        .env("IMAGE", IMAGE)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("run build.sh");
    assert!(
        build.status.success(),
        "deploy/container/build.sh failed:\n{}",
        text(&build.stderr)
    );

    let upstream = Upstream::start("courses").await;
    let mounts = mounts_for(&upstream);
    let (public, admin) = (free_port(), free_port());
    let name = format!("guichet-e2e-{}-{}", std::process::id(), public.port());
    let routes = format!("{}/routes:/etc/guichet/routes:ro", mounts.path().display());
    let key = format!(
        "{}/jwt.pem:/etc/guichet/keys/jwt-ed25519.pem:ro",
        mounts.path().display()
    );
    // The image's own gateway.yaml (the repo's) with the test's routes mounted over routes/ and
    // the key where it names it, on ports the test chose (the command line overrides the CMD);
    // confined as deploy/kubernetes runs it.
    let run = podman(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--volume",
        &routes,
        "--volume",
        &key,
        IMAGE,
        "serve",
        "--config",
        "/etc/guichet/gateway.yaml",
        "--listen",
        &public.to_string(),
        "--admin-listen",
        &admin.to_string(),
    ])
    .await;
    assert!(run.status.success(), "podman run: {}", text(&run.stderr));
    let container = Container(name);

    let healthz = format!("http://{admin}/healthz");
    eventually("the container's /healthz", || async {
        matches!(client().get(&healthz).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert_eq!(get_json(healthz.clone()).await["status"], "ok");
    let readyz = format!("http://{admin}/readyz");
    eventually("the container's /readyz", || async {
        matches!(client().get(&readyz).send().await, Ok(r) if r.status() == 200)
    })
    .await;

    let echo: Value = get_json(format!("http://{public}/api/courses/7?q=1")).await;
    assert_eq!(echo["upstream"], "courses", "{echo}");
    assert_eq!(echo["target"], "/courses/7?q=1", "{echo}");
    assert!(upstream.hits() >= 1);

    // The demo user of the image's gateway.yaml logs in, with a token signed by the mounted key.
    let login = client()
        .post(format!("http://{public}/api/auth/token/"))
        .json(&serde_json::json!({"username": "demo", "password": "demo-password"}))
        .send()
        .await
        .expect("a login answer");
    assert_eq!(login.status(), 200);
    let login: Value = login.json().await.expect("a JSON body");
    assert!(
        login["access"].as_str().is_some_and(|t| t.len() > 100),
        "{login}"
    );

    // The gateway (PID 1), not only a command run beside it, runs as the image's user.
    let status = podman(&["exec", &container.0, "cat", "/proc/1/status"]).await;
    let status = text(&status.stdout);
    let uids = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .unwrap_or_else(|| panic!("no Uid: line in /proc/1/status:\n{status}"));
    assert!(
        uids.split_whitespace().all(|uid| uid == "10001"),
        "the gateway runs as uids {uids}"
    );

    // SIGTERM: the gateway drains and exits 0. `--time` leaves it far more than the default
    // shutdown delay and grace period need before podman would send SIGKILL.
    let stop = podman(&["stop", "--time", "60", &container.0]).await;
    assert!(stop.status.success(), "podman stop: {}", text(&stop.stderr));
    let exit = podman(&["inspect", "--format", "{{.State.ExitCode}}", &container.0]).await;
    let logs = podman(&["logs", &container.0]).await;
    assert_eq!(
        text(&exit.stdout),
        "0",
        "the gateway's exit code after podman stop; its log:\n{}{}",
        text(&logs.stdout),
        text(&logs.stderr)
    );
}
