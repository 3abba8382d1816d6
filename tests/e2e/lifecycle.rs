//! Starting, serving the admin endpoints apart from traffic, refusing bad starts, and draining
//! on SIGTERM.

use std::time::Duration;

use serde_json::Value;

use crate::common::{
    client, eventually, free_port, serve_refused, Gateway, GatewayConfig, Upstream,
};

fn courses(upstream: &Upstream, gateway_extra: &str) -> GatewayConfig {
    GatewayConfig::new(&format!("include: [routes/*.yaml]\n{gateway_extra}")).file(
        "routes/courses.yaml",
        &format!(
            "service: courses\nupstreams: [{}]\nroutes:\n  - path: /api/courses/\n    auth: none\n",
            upstream.url()
        ),
    )
}

#[tokio::test]
async fn health_and_readiness_are_on_the_admin_listener_only() {
    let a = Upstream::start("a").await;
    let gateway = Gateway::start(courses(&a, "")).await;
    let health = client()
        .get(gateway.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client()
        .get(gateway.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["services"]["courses"]["targets"][0]["url"], a.url());
    assert_eq!(ready["store"]["ok"], true, "{ready}");

    let public = client().get(gateway.url("/readyz")).send().await.unwrap();
    assert_eq!(
        public.status(),
        404,
        "admin endpoints are not on the public listener"
    );
    let unknown = client()
        .get(gateway.admin_url("/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let slow = Upstream::start("slow").await;
    slow.set_delay(Duration::from_millis(1500));
    let mut gateway = Gateway::start(courses(
        &slow,
        "shutdown_delay: 0s\nshutdown_grace_period: 10s\n",
    ))
    .await;
    let url = gateway.url("/api/courses/");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    eventually("the request at the upstream", || async { slow.hits() == 1 }).await;
    gateway.signal("TERM");

    let addr = gateway.addr;
    eventually("the listener closed", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    let ready = client().get(gateway.admin_url("/readyz")).send().await;
    if let Ok(ready) = ready {
        assert_eq!(ready.status(), 503, "draining is not ready");
    }

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["upstream"], "slow");

    let status = gateway
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits well before the 10 s grace period");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn sigterm_with_nothing_in_flight_exits_at_once() {
    let a = Upstream::start("a").await;
    let mut gateway = Gateway::start(courses(
        &a,
        "shutdown_delay: 0s\nshutdown_grace_period: 60s\n",
    ))
    .await;
    gateway.signal("TERM");
    let status = gateway
        .wait_exit(Duration::from_secs(3))
        .await
        .expect("exits");
    assert!(status.success());
}

#[tokio::test]
async fn serve_refuses_an_invalid_config_with_the_check_messages() {
    let (_dir, path) = GatewayConfig::new("include: [routes/*.yaml]\nlisten: nowhere\n").write();
    let output = serve_refused(&path);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2:9: listen: `nowhere` is not an IP address and port",
            path.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("include[0]: `routes/*.yaml` matches no file"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_names_the_setting_whose_address_is_in_use() {
    let a = Upstream::start("a").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let admin = free_port();
    let (_dir, path) = courses(
        &a,
        &format!("listen: {taken_addr}\nadmin_listen: {admin}\n"),
    )
    .write();
    let output = serve_refused(&path);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2:9: listen: {taken_addr} is already in use",
            path.display()
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_missing_demo_key_is_generated_by_serve_only_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let a = Upstream::start("a").await;
    let config = courses(
        &a,
        "jwt: { signing_key_file: keys/generated.pem, generate_key_if_missing: true }\n",
    );
    let (dir, path) = config.write();
    let key = dir.path().join("keys/generated.pem");
    let checked = crate::common::check(&path);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(!key.exists(), "check writes nothing");
    let _gateway = Gateway::start_in(dir, &path).await;
    let mode = std::fs::metadata(&key)
        .expect("serve created the key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
}
