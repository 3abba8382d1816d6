//! A burst of logins through the real listener: past `jwt.max_pending_logins` a login is refused
//! with 503 `login_busy` and `Retry-After`, never 401; proxying goes on during the burst; the
//! refusals are counted in the metrics and not as failed logins; the key is checked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::auth::seed;
use crate::common::{check, client, get_text, Gateway, GatewayConfig, Upstream};

const BURST: usize = 30;

fn config(upstream: &Upstream, max_pending_logins: usize) -> GatewayConfig {
    GatewayConfig::new(&format!(
        "include: [routes/*.yaml]
jwt:
  algorithm: EdDSA
  signing_key_file: keys/jwt.pem
  max_pending_logins: {max_pending_logins}
rate_limits:
  login: 1/min
{}",
        seed()
    ))
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
    .file(
        "routes/app.yaml",
        &format!(
            "service: app\nupstreams: [{}]\nroutes:\n  - path: /api/public/\n    auth: none\n",
            upstream.url()
        ),
    )
}

/// One login's status, `Retry-After` and body.
async fn login(gateway: &Gateway, password: &str) -> (u16, Option<String>, Value) {
    let response = gateway
        .login_request("demo", password)
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        status,
        retry_after,
        response.json().await.expect("a JSON body"),
    )
}

/// The value of one series in the gateway's `/metrics`, 0 when absent.
async fn metric(gateway: &Gateway, series: &str) -> f64 {
    let exposition = get_text(gateway.admin_url("/metrics")).await;
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn past_the_bound_logins_get_login_busy_while_proxying_goes_on() {
    let upstream = Upstream::start("app").await;
    let gateway = Arc::new(Gateway::start(config(&upstream, 2)).await);

    let answered = Arc::new(AtomicUsize::new(0));
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        let (gateway, answered) = (gateway.clone(), answered.clone());
        logins.spawn(async move {
            let answer = login(&gateway, "demo-password").await;
            answered.fetch_add(1, Ordering::AcqRel);
            answer
        });
    }
    // Proxied requests keep being answered while the logins are pending.
    let mut proxied = 0;
    loop {
        let response = client()
            .get(gateway.url("/api/public/during-logins"))
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status().as_u16(), 200);
        proxied += 1;
        if answered.load(Ordering::Acquire) == BURST {
            break;
        }
        // Paced: back to back, the loop would keep the cores busy and the checks, which get
        // only the CPU time left over, would wait for it to stop.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(proxied >= 1);

    let (mut verified, mut busy) = (0, 0);
    while let Some(answer) = logins.join_next().await {
        let (status, retry_after, body) = answer.expect("no panic");
        match status {
            200 => {
                assert!(body["access"].is_string(), "{body}");
                verified += 1;
            }
            503 => {
                assert_eq!(body["code"], "login_busy", "{body}");
                assert!(body["detail"].is_string() && body["request_id"].is_string());
                let seconds: u64 = retry_after
                    .expect("a Retry-After header")
                    .parse()
                    .expect("Retry-After in seconds");
                assert!((1..=60).contains(&seconds), "Retry-After: {seconds}");
                busy += 1;
            }
            other => panic!("a right password answered {other}: {body}"),
        }
    }
    assert!(verified >= 1, "the first logins are checked");
    assert!(busy >= 1, "{BURST} logins at once do not fit in 2 places");

    // Counted in the metrics: each refusal once, as soon as its request is logged.
    let series = "guichet_auth_failures_total{reason=\"login_busy\"}";
    let mut counted = metric(&gateway, series).await;
    for _ in 0..50 {
        if counted == busy as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        counted = metric(&gateway, series).await;
    }
    assert_eq!(counted, busy as f64);

    // Not counted as failed logins: with `login: 1/min`, one counted refusal would have made
    // this wrong password a 429.
    let (status, _, body) = login(&gateway, "wrong").await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = login(&gateway, "wrong").await;
    assert_eq!(status, 429, "the failed-login limit is on: {body}");
}

#[tokio::test]
async fn logins_one_after_another_are_never_busy() {
    let upstream = Upstream::start("app").await;
    let gateway = Gateway::start(config(&upstream, 1)).await;
    for _ in 0..3 {
        let (status, _, body) = login(&gateway, "demo-password").await;
        assert_eq!(
            status, 200,
            "a freed place is free for the next login: {body}"
        );
    }
}

#[test]
fn max_pending_logins_is_checked_with_its_position() {
    let config = GatewayConfig::new(
        "jwt:
  algorithm: EdDSA
  signing_key_file: keys/jwt.pem
  max_pending_logins: 0
",
    )
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem());
    let (dir, path) = config.write();
    let output = check(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "{}:4:23: jwt.max_pending_logins: `0` is not a whole number from 1 to 100000 (write a whole number from 1 to 100000)",
        dir.path().join("gateway.yaml").display()
    );
    assert!(
        stderr.contains(&expected),
        "missing:\n{expected}\nin:\n{stderr}"
    );
}
