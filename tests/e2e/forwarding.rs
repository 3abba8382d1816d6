//! Forwarding: round-robin, health checks, retries, timeouts, body limits and streaming,
//! forwarded headers, request ids, and the log lines that go with them.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{
    client, eventually, get_json, raw_request, status_and_json, Gateway, GatewayConfig, Upstream,
};

/// One service `courses` at `/api/courses/` over `upstreams`; `service_extra` goes into the
/// routes file, `route_extra` into the route, `gateway_extra` into gateway.yaml.
fn courses(
    upstreams: &[&Upstream],
    service_extra: &str,
    route_extra: &str,
    gateway_extra: &str,
) -> GatewayConfig {
    let urls: Vec<String> = upstreams.iter().map(|u| u.url()).collect();
    GatewayConfig::new(&format!("include: [routes/*.yaml]\n{gateway_extra}")).file(
        "routes/courses.yaml",
        &format!(
            "service: courses\nupstreams: [{}]\n{service_extra}routes:\n  - path: /api/courses/\n    auth: none\n{route_extra}",
            urls.join(", ")
        ),
    )
}

async fn upstream_of(gateway: &Gateway, path: &str) -> String {
    let response = client().get(gateway.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    echo["upstream"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn requests_alternate_between_targets() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gateway = Gateway::start(courses(&[&a, &b], "", "", "")).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(upstream_of(&gateway, "/api/courses/").await);
    }
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "round-robin alternates: {seen:?}");
    }
    assert_eq!((a.hits(), b.hits()), (3, 3));
}

/// The health of target `index` of `courses` as `/readyz` reports it.
async fn target_healthy(gateway: &Gateway, index: usize) -> bool {
    let ready: Value = get_json(gateway.admin_url("/readyz")).await;
    ready["services"]["courses"]["targets"][index]["healthy"] == true
}

/// A health check every 200 ms; the timeout is generous so that the healthy target stays in
/// rotation on a loaded machine.
const FAST_HEALTH_CHECK: &str = "health_check: { path: /healthz, interval: 200ms, timeout: 2s }\n";

#[tokio::test]
async fn an_unhealthy_target_leaves_rotation_and_returns() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gateway = Gateway::start(courses(&[&a, &b], FAST_HEALTH_CHECK, "", "")).await;

    b.set_healthy(false);
    eventually("b out of rotation", || async {
        !target_healthy(&gateway, 1).await
    })
    .await;
    for _ in 0..6 {
        assert_eq!(upstream_of(&gateway, "/api/courses/").await, "a");
    }
    let ready: Value = get_json(gateway.admin_url("/readyz")).await;
    assert_eq!(ready["services"]["courses"]["healthy"], 1);
    gateway
        .wait_for_log(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("out of rotation"))
        })
        .await;

    b.set_healthy(true);
    eventually("b back in rotation", || async {
        target_healthy(&gateway, 1).await
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(upstream_of(&gateway, "/api/courses/").await);
    }
    assert_eq!(seen.iter().filter(|u| *u == "b").count(), 2, "{seen:?}");
}

#[tokio::test]
async fn a_target_that_stops_listening_leaves_rotation_and_returns_when_it_listens_again() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gateway = Gateway::start(courses(&[&a, &b], FAST_HEALTH_CHECK, "", "")).await;

    b.kill();
    eventually("b out of rotation", || async {
        !target_healthy(&gateway, 1).await
    })
    .await;
    let hits_before = a.hits();
    for _ in 0..4 {
        assert_eq!(upstream_of(&gateway, "/api/courses/").await, "a");
    }
    assert_eq!(a.hits() - hits_before, 4);

    b.revive().await;
    eventually("b back in rotation", || async {
        target_healthy(&gateway, 1).await
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(upstream_of(&gateway, "/api/courses/").await);
    }
    assert_eq!(seen.iter().filter(|u| *u == "b").count(), 2, "{seen:?}");
}

#[tokio::test]
async fn a_service_with_no_healthy_target_is_503_and_not_ready() {
    let a = Upstream::start("a").await;
    let health = "health_check: { path: /healthz, interval: 100ms }\n";
    let gateway = Gateway::start(courses(&[&a], health, "", "")).await;
    a.set_healthy(false);
    eventually("a out of rotation", || async {
        !target_healthy(&gateway, 0).await
    })
    .await;
    let response = client()
        .get(gateway.url("/api/courses/"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "service_unavailable");
    assert_eq!(
        body["detail"],
        "Service \"courses\" has no healthy upstream."
    );
    let ready = client()
        .get(gateway.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(ready).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "not_ready");
    assert!(body["detail"].as_str().unwrap().contains("courses"));

    // A probe shared by every replica leaves backends out: one dead service must not take
    // every replica out of the load balancer. The service is still reported.
    let ready = get_json(gateway.admin_url("/readyz?exclude=upstreams")).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["services"]["courses"]["ready"], false);
    let refused = client()
        .get(gateway.admin_url("/readyz?exclude=upstream"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(refused).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_query");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("exclude=upstreams"));
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn a_connect_failure_is_retried_on_another_target() {
    let alive = Upstream::start("alive").await;
    let dead = Upstream::start("dead").await;
    dead.kill();
    let gateway = Gateway::start(courses(&[&alive, &dead], "", "", "")).await;
    for _ in 0..6 {
        assert_eq!(upstream_of(&gateway, "/api/courses/").await, "alive");
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_json_with_an_error_log_line() {
    let dead = Upstream::start("dead").await;
    dead.kill();
    let gateway = Gateway::start(courses(&[&dead], "", "", "")).await;
    let response = client()
        .get(gateway.url("/api/courses/"))
        .header("x-request-id", "trace-502")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-502");
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 502);
    assert_eq!(body["code"], "bad_gateway");
    assert_eq!(body["request_id"], "trace-502");
    let line = gateway
        .wait_for_log(|l| l["target"] == "guichet::error" && l["request_id"] == "trace-502")
        .await;
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["status"], 502);
    assert!(
        line["cause"].as_str().is_some_and(|c| !c.is_empty()),
        "{line}"
    );
    assert_eq!(line["upstream"], dead.url());
}

#[tokio::test]
async fn upstream_errors_pass_through_as_the_upstream_wrote_them() {
    let failing = Upstream::start("failing").await;
    failing.fail_with(500);
    let gateway = Gateway::start(courses(&[&failing], "", "", "")).await;
    let response = client()
        .get(gateway.url("/api/courses/"))
        .header("x-request-id", "upstream-500")
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 500);
    assert_eq!(
        body["upstream"], "failing",
        "the upstream's own body, not a gateway error"
    );
    let access = gateway
        .wait_for_log(|l| l["target"] == "guichet::access" && l["request_id"] == "upstream-500")
        .await;
    assert_eq!(access["status"], 500);
    assert!(
        !gateway
            .logs()
            .iter()
            .any(|l| l["target"] == "guichet::error"),
        "an upstream's own 500 is not a gateway error"
    );
}

#[tokio::test]
async fn a_slow_upstream_is_504_json() {
    let slow = Upstream::start("slow").await;
    slow.set_delay(Duration::from_secs(3));
    let timeouts = "timeouts: { connect: 1s, read: 300ms }\n";
    let gateway = Gateway::start(courses(&[&slow], timeouts, "", "")).await;
    let started = Instant::now();
    let response = client()
        .get(gateway.url("/api/courses/"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 504);
    assert_eq!(body["code"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered before the upstream"
    );
}

#[tokio::test]
async fn a_target_that_never_accepts_is_504_after_the_connect_timeout() {
    // A listener with a full accept queue: the kernel drops further SYNs, so connects hang.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _listener = socket.listen(1).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let connect = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            fillers.push(stream);
        }
    }
    let config = GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/stuck.yaml",
        &format!(
            "service: stuck\nupstreams: [http://{addr}]\ntimeouts: {{ connect: 300ms }}\nroutes:\n  - path: /api/\n    auth: none\n"
        ),
    );
    let gateway = Gateway::start(config).await;
    let started = Instant::now();
    let response = client().get(gateway.url("/api/x")).send().await.unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 504);
    assert_eq!(body["code"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn bodies_over_max_body_are_413_whether_declared_or_streamed() {
    let a = Upstream::start("a").await;
    let gateway = Gateway::start(courses(&[&a], "", "    max_body: 1KiB\n", "")).await;

    let response = client()
        .post(gateway.url("/api/courses/"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 413);
    assert_eq!(body["code"], "payload_too_large");
    assert_eq!(
        a.hits(),
        0,
        "a declared oversized body never reaches the upstream"
    );

    // Chunked: no length up front, so the gateway counts as the body streams.
    let chunk = format!("{:x}\r\n{}\r\n", 600, "y".repeat(600));
    let body = format!("{chunk}{chunk}0\r\n\r\n");
    let response = raw_request(
        gateway.addr,
        "POST /api/courses/ HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked",
        body.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["code"], "payload_too_large");

    let response = client()
        .post(gateway.url("/api/courses/"))
        .body(vec![b'x'; 1024])
        .send()
        .await
        .unwrap();
    let (status, echo) = status_and_json(response).await;
    assert_eq!(status, 200);
    assert_eq!(echo["body_bytes"], 1024);
}

const FIFTY_MIB: u64 = 50 * 1024 * 1024;

#[tokio::test]
async fn fifty_mib_stream_through_both_ways_without_being_buffered() {
    let files = Upstream::start("files").await;
    let config = GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/files.yaml",
        &format!(
            "service: files\nupstreams: [{}]\nroutes:\n  - path: /download/\n    auth: none\n  - path: /upload/\n    auth: none\n",
            files.url()
        ),
    );
    let gateway = Gateway::start(config).await;
    let baseline = gateway.peak_rss_kib();

    // Download: count the bytes as they arrive.
    let mut response = client()
        .get(gateway.url(&format!("/download/{FIFTY_MIB}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        received += chunk.len() as u64;
    }
    assert_eq!(received, FIFTY_MIB);

    // Upload: write 64 KiB at a time with a declared length, never holding the whole body.
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /upload/ HTTP/1.1\r\nHost: example\r\nContent-Length: {FIFTY_MIB}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'z'; 65536];
    for _ in 0..FIFTY_MIB / 65536 {
        stream.write_all(&chunk).await.unwrap();
    }
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let echo: Value = serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(echo["body_bytes"], FIFTY_MIB);

    // Buffering either body whole would have grown the gateway by at least 50 MiB.
    let growth = gateway.peak_rss_kib().saturating_sub(baseline);
    assert!(growth < 20 * 1024, "the gateway grew by {growth} KiB");
}

/// The headers the upstream saw for a request claiming to come through `claimed_for`.
async fn forwarded_headers(trusted_proxies: &str, claimed_for: &str) -> (Value, Gateway) {
    let a = Upstream::start("a").await;
    let gateway_extra = format!("trusted_proxies: {trusted_proxies}\n");
    let gateway = Gateway::start(courses(&[&a], "", "", &gateway_extra)).await;
    let head = format!(
        "GET /api/courses/ HTTP/1.1\r\nHost: api.example\r\nX-Forwarded-For: {claimed_for}\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: public.example"
    );
    let response = raw_request(gateway.addr, &head, b"").await;
    let headers = response.json()["headers"].clone();
    assert_eq!(headers["host"][0], a.addr.to_string());
    (headers, gateway)
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_replaced() {
    let (headers, gateway) = forwarded_headers("[10.0.0.0/8]", "6.6.6.6").await;
    assert_eq!(headers["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"][0], "http");
    assert_eq!(headers["x-forwarded-host"][0], "api.example");
    let access = gateway
        .wait_for_log(|l| l["target"] == "guichet::access")
        .await;
    assert_eq!(access["client_ip"], "127.0.0.1");
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_proxy_are_appended_to() {
    let (headers, gateway) = forwarded_headers("[127.0.0.1/32]", "198.51.100.7").await;
    assert_eq!(headers["x-forwarded-for"][0], "198.51.100.7, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"][0], "https");
    assert_eq!(headers["x-forwarded-host"][0], "public.example");
    let access = gateway
        .wait_for_log(|l| l["target"] == "guichet::access")
        .await;
    assert_eq!(access["client_ip"], "198.51.100.7");
}

/// The headers the upstream saw for the request `head` (a GET of `/api/courses/`), and its address.
async fn headers_seen_upstream(head: &str) -> (Value, String) {
    let a = Upstream::start("a").await;
    let gateway = Gateway::start(courses(&[&a], "", "", "")).await;
    let response = raw_request(gateway.addr, head, b"").await;
    assert_eq!(response.status, 200);
    (response.json()["headers"].clone(), a.addr.to_string())
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_reach_the_upstream() {
    let (headers, _) = headers_seen_upstream(
        "GET /api/courses/ HTTP/1.1\r\nHost: example\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Private-Hop: secret\r\nX-Kept: yes\r\nConnection: X-Private-Hop, close",
    )
    .await;
    for name in ["keep-alive", "te", "proxy-connection", "x-private-hop"] {
        assert!(
            headers.get(name).is_none(),
            "{name} was forwarded: {headers}"
        );
    }
    assert_eq!(headers["x-kept"][0], "yes");
}

#[tokio::test]
async fn the_upstream_s_answer_reaches_the_client_whole_but_for_hop_by_hop_fields() {
    let a = Upstream::start("a").await;
    let gateway = Gateway::start(courses(&[&a], "", "", "")).await;
    let response = raw_request(
        gateway.addr,
        "GET /api/courses/teapot HTTP/1.1\r\nHost: example\r\nX-Request-Id: brew-1",
        b"",
    )
    .await;
    assert_eq!(
        (response.status, response.reason.as_str()),
        (418, "Short and Stout")
    );
    assert_eq!(response.headers["set-cookie"], "a=1, b=2");
    assert_eq!(response.headers["x-brewed-by"], "teapot");
    assert_eq!(response.headers["x-request-id"], "brew-1");
    for name in ["keep-alive", "proxy-connection"] {
        assert!(!response.headers.contains_key(name), "{name} was forwarded");
    }
    assert_eq!(response.body, b"tea");
}

#[tokio::test]
async fn the_client_s_own_headers_reach_the_upstream_repeated_ones_in_order() {
    let (headers, upstream) = headers_seen_upstream(
        "GET /api/courses/ HTTP/1.1\r\nHost: example\r\nX-Tag: first\r\nAccept: application/json\r\nX-Tag: second\r\nCookie: a=1; b=2\r\nX-Mixed-Case: Value With Spaces\r\nX-User-Role: admin",
    )
    .await;
    assert_eq!(headers["x-tag"], serde_json::json!(["first", "second"]));
    assert_eq!(headers["accept"][0], "application/json");
    assert_eq!(headers["cookie"][0], "a=1; b=2");
    assert_eq!(headers["x-mixed-case"][0], "Value With Spaces");
    // Set by the gateway, once, over what the client claimed.
    assert_eq!(headers["x-user-role"], Value::Null);
    assert_eq!(headers["x-auth-method"], serde_json::json!(["anonymous"]));
    assert_eq!(headers["host"], serde_json::json!([upstream]));
}

#[tokio::test]
async fn request_ids_are_kept_when_well_formed_and_made_otherwise() {
    let a = Upstream::start("a").await;
    let gateway = Gateway::start(courses(&[&a], "", "", "")).await;

    let response = client()
        .get(gateway.url("/api/courses/"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["headers"]["x-request-id"][0], "abc-123");

    let response = client()
        .get(gateway.url("/api/courses/"))
        .header("x-request-id", "not ok; <script>")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(id, "not ok; <script>");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["headers"]["x-request-id"][0], id.as_str());
    assert_eq!(echo["headers"]["x-request-id"].as_array().unwrap().len(), 1);

    let line = gateway
        .wait_for_log(|l| l["target"] == "guichet::access" && l["request_id"] == id.as_str())
        .await;
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/api/courses/");
    assert_eq!(line["route"], "courses:/api/courses/");
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream"], a.url());
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert!(line["duration_ms"].as_f64().is_some());
}

#[tokio::test]
async fn the_w3c_trace_is_continued_or_started_and_logged() {
    let a = Upstream::start("a").await;
    let gateway = Gateway::start(courses(&[&a], "", "", "")).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let echo: Value = client()
        .get(gateway.url("/api/courses/"))
        .header("traceparent", incoming)
        .header("tracestate", "vendor=opaque")
        .header("x-request-id", "traced")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sent = echo["headers"]["traceparent"][0].as_str().unwrap();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    );
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the gateway is the new parent"
    );
    assert_eq!(echo["headers"]["tracestate"][0], "vendor=opaque");
    let line = gateway.wait_for_log(|l| l["request_id"] == "traced").await;
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");

    let echo: Value = client()
        .get(gateway.url("/api/courses/"))
        .header("x-request-id", "untraced")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let started = echo["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_string();
    let trace_id = started.split('-').nth(1).unwrap().to_string();
    assert_eq!(trace_id.len(), 32);
    let line = gateway
        .wait_for_log(|l| l["request_id"] == "untraced")
        .await;
    assert_eq!(line["trace_id"], trace_id.as_str());
    assert!(line["upstream_ms"].as_f64().is_some(), "{line}");
}

/// Every kind of answer carries the fields every response gets (`respond::stamp`): an
/// upstream's, an error the gateway makes, a gateway endpoint's JSON, a page, a 304, a throttled
/// request (with the rate limit fields, as on the answers before it), and a head refused before
/// routing (with an id the gateway made).
#[tokio::test]
async fn every_kind_of_answer_carries_the_request_id() {
    let a = Upstream::start("a").await;
    let limits = format!(
        "{}rate_limits: {{ anonymous: 2/day }}\n",
        crate::auth::jwt_section()
    );
    let config = courses(&[&a], "", "", &limits)
        .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem());
    let gateway = Gateway::start(config).await;
    let send = |path: &str, id: &str| {
        client()
            .get(gateway.url(path))
            .header("x-request-id", id)
            .send()
    };
    let schema = send("/api/schema/", "schema").await.unwrap();
    let etag = schema.headers()["etag"].to_str().unwrap().to_string();
    let answers = [
        (send("/api/courses/", "proxied").await.unwrap(), 200),
        (send("/api/nowhere/", "error").await.unwrap(), 404),
        (send("/.well-known/jwks.json", "jwks").await.unwrap(), 200),
        (send("/api/docs/", "page").await.unwrap(), 200),
        (schema, 200),
        (
            client()
                .get(gateway.url("/api/schema/"))
                .header("x-request-id", "cached")
                .header("if-none-match", etag)
                .send()
                .await
                .unwrap(),
            304,
        ),
        (send("/api/courses/", "allowed").await.unwrap(), 200),
        (send("/api/courses/", "throttled").await.unwrap(), 429),
    ];
    for (response, status) in &answers {
        assert_eq!(response.status(), *status, "{}", response.url());
    }
    let ids: Vec<&str> = answers
        .iter()
        .map(|(response, _)| response.headers()["x-request-id"].to_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "proxied",
            "error",
            "jwks",
            "page",
            "schema",
            "cached",
            "allowed",
            "throttled"
        ]
    );
    for (response, _) in [&answers[0], &answers[6], &answers[7]] {
        assert!(response.headers().contains_key("ratelimit-policy"));
        assert!(response.headers().contains_key("ratelimit"));
    }

    let long = format!(
        "GET /api/courses/{} HTTP/1.1\r\nHost: a",
        "a".repeat(20_000)
    );
    let refused = raw_request(gateway.addr, &long, b"").await;
    assert_eq!(refused.status, 414);
    assert_eq!(
        refused.json()["request_id"],
        refused.headers["x-request-id"].as_str()
    );
    // pingora refuses CONNECT itself; the gateway's answer goes instead, with no `Allow`
    // (CONNECT is refused before any route is looked at).
    let connect = raw_request(gateway.addr, "CONNECT a:443 HTTP/1.1\r\nHost: a:443", b"").await;
    assert_eq!(connect.status, 405);
    assert_eq!(connect.json()["code"], "method_not_allowed");
    assert_eq!(
        connect.json()["request_id"],
        connect.headers["x-request-id"].as_str()
    );
    assert!(!connect.headers.contains_key("allow"));
}
