//! Retries: a request whose upstream connection could not be made or broke before the answer
//! began goes to another healthy target it has not failed on, when sending it again is safe; a
//! target killed under load costs no GET; POST is never sent twice. And the pooled connections
//! that the gateway closes before an upstream's keep-alive timeout can.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{client, get_text, status_and_json, Gateway, GatewayConfig, Upstream};

/// One service `courses` over `upstreams` at `/api/courses/`, with no health check: a dead
/// target stays in rotation, so every request that picks it needs the retry. `gateway_extra`
/// goes into gateway.yaml.
fn courses(upstreams: &[&Upstream], gateway_extra: &str) -> GatewayConfig {
    let urls: Vec<String> = upstreams.iter().map(|u| u.url()).collect();
    GatewayConfig::new(&format!("include: [routes/*.yaml]\n{gateway_extra}")).file(
        "routes/courses.yaml",
        &format!(
            "service: courses\nupstreams: [{}]\nroutes:\n  - path: /api/courses/\n    auth: none\n",
            urls.join(", ")
        ),
    )
}

/// Status and echo of one request with `body`.
async fn send(gateway: &Gateway, method: reqwest::Method, body: &str) -> (u16, Value) {
    let response = client()
        .request(method, gateway.url("/api/courses/"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// One GET to each target, so that each has a keep-alive connection from the gateway in its
/// pool (closed after a second idle).
async fn warm(gateway: &Gateway, a: &Upstream, b: &Upstream) {
    for _ in 0..2 {
        assert_eq!(send(gateway, reqwest::Method::GET, "").await.0, 200);
    }
    assert_eq!((a.connections(), b.connections()), (1, 1));
}

/// The sum of a counter's samples whose labels contain `labels`, in `/metrics`.
async fn counter(gateway: &Gateway, family: &str, labels: &str) -> f64 {
    get_text(gateway.admin_url("/metrics"))
        .await
        .lines()
        .filter(|line| line.starts_with(family) && line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn killing_an_upstream_closes_its_open_connections_as_a_crash_would() {
    let upstream = Upstream::start("a").await;
    let mut idle = tokio::net::TcpStream::connect(upstream.addr).await.unwrap();
    idle.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0; 4096];
    assert!(idle.read(&mut answer).await.unwrap() > 0);

    upstream.kill();
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the idle keep-alive connection is closed: {read:?}"
    );
    assert!(tokio::net::TcpStream::connect(upstream.addr).await.is_err());
}

#[tokio::test]
async fn every_get_answers_200_when_one_of_two_targets_is_killed_under_load() {
    const CLIENTS: usize = 32;
    const EACH: usize = 100;
    let survivor = Upstream::start("survivor").await;
    let victim = Upstream::start("victim").await;
    // Requests take a moment upstream, so some are under way on the victim when it dies.
    survivor.set_delay(Duration::from_millis(2));
    victim.set_delay(Duration::from_millis(2));
    let gateway = Gateway::start(courses(&[&survivor, &victim], "")).await;

    let done = Arc::new(AtomicUsize::new(0));
    let http = client();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (http, url, done) = (http.clone(), gateway.url("/api/courses/"), done.clone());
        tasks.spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..EACH {
                match http.get(&url).send().await {
                    Ok(response) if response.status() == 200 => {}
                    Ok(response) => failures.push(format!("{}", response.status())),
                    Err(e) => failures.push(e.to_string()),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        });
    }
    while done.load(Ordering::SeqCst) < CLIENTS * EACH / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let hits_before_the_kill = victim.hits();
    victim.kill();

    let mut failures = Vec::new();
    while let Some(task) = tasks.join_next().await {
        failures.extend(task.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(
        hits_before_the_kill > 0,
        "the victim took its share before it died"
    );
    assert!(
        survivor.hits() + victim.hits() >= CLIENTS * EACH,
        "every GET reached a target"
    );
    let counted = counter(
        &gateway,
        "guichet_upstream_errors_total",
        "kind=\"connect\"",
    )
    .await;
    assert!(counted > 0.0, "the failed connections are counted");
    let logs = gateway.logs();
    assert!(
        logs.iter()
            .any(|l| l["message"] == "upstream attempt failed; retried on another target"),
        "the retries are logged"
    );
    assert!(
        !logs.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Fail to proxy"))),
        "pingora's own line for each retry is left out"
    );
}

#[tokio::test]
async fn a_post_whose_connection_breaks_is_not_sent_again() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    // One worker thread: the POST that goes to `a` takes the keep-alive connection the GET
    // left, the case pingora would retry for an idempotent method.
    let gateway = Gateway::start(courses(&[&a, &b], "threads: 1\n")).await;
    warm(&gateway, &a, &b).await;
    a.hang_up(true);

    let mut statuses = Vec::new();
    for _ in 0..2 {
        let (status, body) = send(&gateway, reqwest::Method::POST, "{\"title\": \"x\"}").await;
        if status == 502 {
            assert_eq!(body["code"], "bad_gateway");
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 502]);
    assert_eq!(
        a.hits() + b.hits(),
        2 + 2,
        "each POST reached one upstream once"
    );
}

#[tokio::test]
async fn a_put_whose_connection_breaks_is_sent_again_whole_to_the_other_target() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gateway = Gateway::start(courses(&[&a, &b], "threads: 1\n")).await;
    warm(&gateway, &a, &b).await;
    a.hang_up(true);

    let body = "{\"title\": \"Intro to web security\", \"level\": \"beginner\"}";
    for _ in 0..2 {
        let (status, echo) = send(&gateway, reqwest::Method::PUT, body).await;
        assert_eq!(status, 200, "{echo}");
        assert_eq!(echo["upstream"], "b");
        assert_eq!(echo["method"], "PUT");
        assert_eq!(echo["body"], body);
        assert_eq!(echo["body_bytes"], body.len());
    }
    assert!(
        a.hits() >= 2,
        "the GET, then at least one PUT that broke on `a` first"
    );
    assert_eq!(b.hits(), 1 + 2);
}

#[tokio::test]
async fn a_put_too_large_to_send_again_is_not_retried() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gateway = Gateway::start(courses(&[&a, &b], "threads: 1\n")).await;
    a.hang_up(true);

    // Over pingora's 64 KiB retry buffer: what was sent cannot be sent again.
    let body = "x".repeat(100 * 1024);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(send(&gateway, reqwest::Method::PUT, &body).await.0);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 502]);
    assert_eq!((a.hits(), b.hits()), (1, 1));
}

#[tokio::test]
async fn a_get_is_tried_once_on_each_target_then_answered_502() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let gateway = Gateway::start(courses(&[&a, &b, &c], "")).await;
    for upstream in [&a, &b, &c] {
        upstream.hang_up(true);
    }
    let response = client()
        .get(gateway.url("/api/courses/"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 502);
    assert_eq!(body["code"], "bad_gateway");
    assert_eq!((a.hits(), b.hits(), c.hits()), (1, 1, 1));
    let broken = counter(&gateway, "guichet_upstream_errors_total", "kind=\"broken\"").await;
    assert_eq!(broken, 3.0, "each broken attempt is counted once");
}

#[tokio::test]
async fn a_post_that_could_not_connect_goes_to_another_target() {
    let alive = Upstream::start("alive").await;
    let dead = Upstream::start("dead").await;
    dead.kill();
    let gateway = Gateway::start(courses(&[&alive, &dead], "")).await;
    for _ in 0..4 {
        let (status, echo) = send(&gateway, reqwest::Method::POST, "{}").await;
        assert_eq!(status, 200);
        assert_eq!(echo["upstream"], "alive");
    }
    assert_eq!(alive.hits(), 4, "sent once each");
    let connect = counter(
        &gateway,
        "guichet_upstream_errors_total",
        "kind=\"connect\"",
    )
    .await;
    assert!(connect > 0.0, "the failed connections are counted");
}

#[tokio::test]
async fn the_gateway_closes_an_upstream_connection_idle_for_a_second_before_the_upstream_does() {
    let a = Upstream::start("a").await;
    let gateway = Gateway::start(courses(&[&a], "threads: 1\n")).await;
    assert_eq!(send(&gateway, reqwest::Method::GET, "").await.0, 200);
    assert_eq!(send(&gateway, reqwest::Method::GET, "").await.0, 200);
    assert_eq!(
        a.connections(),
        1,
        "kept alive between requests close together"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(send(&gateway, reqwest::Method::GET, "").await.0, 200);
    assert_eq!(
        a.connections(),
        2,
        "a new connection after a second and a half idle"
    );
}
