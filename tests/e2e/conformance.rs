//! schemathesis (PyPI) against the demo: the repository's gateway.yaml, routes and fragments and
//! the demo's sample backends, on ephemeral ports, with `--checks all`. Whatever it finds is a
//! place where the merged document and the answers disagree: the gateway's own answers, or the
//! samples' (which answer exactly as their fragments say).

use std::path::Path;
use std::time::Duration;

use crate::common::{free_port, Gateway, GatewayConfig};

#[path = "../../examples/demo/samples.rs"]
mod samples;

/// The demo's credentials (gateway.yaml's seed): an instructor, who may edit the catalogue, and
/// the grading service's key, which may record grades.
const TEACHER: (&str, &str) = ("teacher", "teacher-password");
const GRADING_KEY: &str = "gk_demo.demo-secret-not-for-production";
/// The admin dashboard's key, which may read the usage statistics.
const OPS_KEY: &str = "gk_ops.ops-demo-secret-not-for-production";

/// The sample backends on ephemeral ports, as the demo runs them: two courses targets and one
/// accounts target, sharing their data. Returns the base URL of each.
async fn start_samples() -> Vec<String> {
    let data = samples::Data::seeded();
    let mut urls = Vec::new();
    for service in [
        samples::Service::Courses,
        samples::Service::Courses,
        samples::Service::Accounts,
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("an ephemeral port");
        urls.push(format!(
            "http://{}",
            listener.local_addr().expect("address")
        ));
        tokio::spawn(samples::serve(service, data.clone(), listener));
    }
    urls
}

/// The repository's configuration with the demo's fixed addresses replaced by `backends` and
/// the gateway's own `addr`.
fn demo_config(backends: &[String], addr: std::net::SocketAddr) -> GatewayConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |file: &str| {
        std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("read {file}: {e}"))
            .replace("http://127.0.0.1:8001", &backends[0])
            .replace("http://127.0.0.1:8002", &backends[1])
            .replace("http://127.0.0.1:8003", &backends[2])
    };
    let gateway = read("gateway.yaml").replace(
        "public_url: http://localhost:8080",
        &format!("public_url: http://{addr}"),
    );
    let mut config = GatewayConfig::new(&gateway);
    for file in [
        "routes/courses.yaml",
        "routes/accounts.yaml",
        "specs/courses.yaml",
        "specs/accounts.yaml",
    ] {
        config = config.file(file, &read(file));
    }
    config
}

async fn access_token(gateway: &Gateway) -> String {
    let (username, password) = TEACHER;
    gateway.access_token(username, password).await
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_mismatch_between_the_demo_s_document_and_its_answers() {
    let backends = start_samples().await;
    let addr = free_port();
    let (dir, path) = demo_config(&backends, addr).write();
    let gateway = Gateway::start_on(dir, &path, addr).await;
    let token = access_token(&gateway).await;

    let work = tempfile::tempdir().expect("tempdir");
    let settings = work.path().join("schemathesis.toml");
    std::fs::write(
        &settings,
        format!(
            "[auth.openapi.bearerAuth]\nbearer = \"{token}\"\n\n\
             [auth.openapi.apiKeyAuth]\napi_key = \"{GRADING_KEY}\"\n\n\
             [[operations]]\ninclude-path = \"/api/analytics/usage/\"\n\
             headers = {{ Authorization = \"Api-Key {OPS_KEY}\" }}\n"
        ),
    )
    .expect("write schemathesis.toml");
    let run = tokio::process::Command::new("schemathesis")
        .arg("--config-file")
        .arg(&settings)
        .args(["--no-color", "run", &gateway.url("/api/schema/")])
        .args(["--checks", "all"])
        // `Allow` in the gateway's 405 to OPTIONS lists what its routes take on the path, and a
        // route is a prefix: `/api/courses/` forwards POST for `/api/courses/1` too (the sample
        // then answers 405 itself). The document lists what the service does on each path, so
        // the two differ wherever a prefix route spans paths with different methods.
        .args(["--exclude-checks", "allow_header_conformance"])
        .args(["--max-examples", "200", "--seed", "1", "--workers", "1"])
        .args(["--generation-database", "none"])
        .current_dir(work.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("schemathesis finishes within 5 minutes")
        .expect("schemathesis runs (pip install schemathesis==4.32.5)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found mismatches:\n{report}"
    );
    // Shown with `--nocapture`: what was run and found.
    println!("{report}");
}
