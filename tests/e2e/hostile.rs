//! Client input the gateway must refuse or survive, sent as an attacker or a broken client
//! would: slow and idle connections, oversized heads, pipelined requests, odd versions, heads
//! pingora's parser refuses, invalid `Host`, repeated credentials, transfer codings it cannot
//! frame, encoded slashes. Every refusal is JSON, logged and counted.

use std::time::{Duration, Instant};

use crate::common::raw::RawConnection;
use crate::common::{check, get_text, raw_request, Gateway, GatewayConfig, Upstream};

/// A gateway with one public route (`/api/public/` → `/v1/`) and `extra` in gateway.yaml.
async fn public_gateway(extra: &str, route_extra: &str) -> (Gateway, Upstream) {
    let upstream = Upstream::start("public").await;
    let config = GatewayConfig::new(&format!("include: [routes/*.yaml]\n{extra}")).file(
        "routes/public.yaml",
        &format!(
            "service: public
upstreams: [{}]
routes:
  - path: /api/public/
    auth: none
    upstream_path: /v1/
{route_extra}",
            upstream.url()
        ),
    );
    (Gateway::start(config).await, upstream)
}

/// `guichet_http_requests_total` summed over the series with all of `labels`.
async fn requests_counted(gateway: &Gateway, labels: &[&str]) -> f64 {
    get_text(gateway.admin_url("/metrics"))
        .await
        .lines()
        .filter(|line| line.starts_with("guichet_http_requests_total{"))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_at_the_header_timeout_with_408() {
    let (gateway, upstream) = public_gateway("client: { header_timeout: 1s }\n", "").await;
    let started = Instant::now();
    let mut slow = RawConnection::open(gateway.addr).await;
    slow.send(b"GET /api/public/x HTTP/1.1\r\n").await.unwrap();
    for byte in b"Host: a\r\nX-Slow: 1234567890" {
        if slow.send(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = slow.response().await.expect("a 408 before the close");
    assert_eq!(response.status, 408);
    assert_eq!(response.json()["code"], "request_timeout");
    assert_eq!(response.headers["connection"], "close");
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(slow.closed_within(Duration::from_secs(5)).await);
    assert_eq!(upstream.hits(), 0);
    let line = gateway
        .wait_for_log(|l| l["target"] == "guichet::access" && l["status"] == 408)
        .await;
    assert_eq!(line["code"], "request_timeout");
    assert_eq!(line["path"], "/api/public/x");
    assert_eq!(
        requests_counted(&gateway, &["route=\"unmatched\"", "status=\"408\""]).await,
        1.0
    );
}

#[tokio::test]
async fn many_slow_clients_are_all_cut_while_other_clients_are_served() {
    let (gateway, upstream) = public_gateway("client: { header_timeout: 2s }\n", "").await;
    let slow: Vec<_> = (0..200)
        .map(|_| {
            let addr = gateway.addr;
            tokio::spawn(async move {
                let mut connection = RawConnection::open(addr).await;
                let _ = connection.send(b"GET /api/public/ HTTP/1.1\r\nHo").await;
                connection.response().await.map(|r| r.status)
            })
        })
        .collect();
    for _ in 0..20 {
        let response =
            raw_request(gateway.addr, "GET /api/public/ok HTTP/1.1\r\nHost: a", b"").await;
        assert_eq!(response.status, 200);
    }
    for client in slow {
        assert_eq!(client.await.unwrap(), Some(408));
    }
    assert_eq!(upstream.hits(), 20);
}

#[tokio::test]
async fn idle_connections_are_closed_silently() {
    let (gateway, _upstream) = public_gateway(
        "client: { header_timeout: 1s, keepalive_timeout: 2s }\n",
        "",
    )
    .await;
    // Kept alive after a request, then closed after the keep-alive timeout, with no answer.
    let mut kept = RawConnection::open(gateway.addr).await;
    kept.send(b"GET /api/public/a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(kept.response().await.unwrap().status, 200);
    assert!(!kept.closed_within(Duration::from_millis(1200)).await);
    assert!(kept.closed_within(Duration::from_secs(3)).await);
    // A connection that never sends a byte is closed after the header timeout.
    let mut silent = RawConnection::open(gateway.addr).await;
    assert!(silent.closed_within(Duration::from_secs(3)).await);
    // Neither is a request: no access line, no count.
    assert_eq!(
        requests_counted(&gateway, &["route=\"unmatched\""]).await,
        0.0
    );
}

#[tokio::test]
async fn heads_over_the_limits_are_431_and_414_in_json() {
    let (gateway, upstream) = public_gateway(
        "client: { max_header_size: 8KiB, max_headers: 20, max_request_line: 1KiB }\n",
        "",
    )
    .await;
    let big = format!(
        "GET /api/public/ HTTP/1.1\r\nHost: a\r\nX-Big: {}",
        "a".repeat(100 * 1024)
    );
    let many = format!(
        "GET /api/public/ HTTP/1.1\r\nHost: a{}",
        (0..25).map(|i| format!("\r\nX-{i}: v")).collect::<String>()
    );
    let long = format!("GET /api/public/{} HTTP/1.1\r\nHost: a", "a".repeat(2000));
    for (head, status, code) in [
        (big, 431, "request_header_fields_too_large"),
        (many, 431, "request_header_fields_too_large"),
        (long, 414, "uri_too_long"),
    ] {
        let response = raw_request(gateway.addr, &head, b"").await;
        assert_eq!(response.status, status);
        let body = response.json();
        assert_eq!(body["code"], code);
        assert_eq!(
            body["request_id"],
            response.headers["x-request-id"].as_str()
        );
    }
    assert_eq!(upstream.hits(), 0);
    assert_eq!(
        requests_counted(&gateway, &["route=\"unmatched\"", "status=\"431\""]).await,
        2.0
    );
    // Within the limits, the same kinds of head pass.
    let fits = format!(
        "GET /api/public/{} HTTP/1.1\r\nHost: a\r\nX-Big: {}",
        "a".repeat(900),
        "b".repeat(6000)
    );
    assert_eq!(raw_request(gateway.addr, &fits, b"").await.status, 200);
}

#[tokio::test]
async fn pipelined_requests_sent_in_one_write_are_all_answered_in_order() {
    let (gateway, upstream) = public_gateway("", "").await;
    let mut connection = RawConnection::open(gateway.addr).await;
    let pipelined = b"GET /api/public/1 HTTP/1.1\r\nHost: a\r\n\r\n\
POST /api/public/2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n\
GET /api/public/4 HTTP/1.1\r\nHost: a\r\n\r\n";
    connection.send(pipelined).await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..4 {
        let response = connection
            .response()
            .await
            .expect("an answer to each request");
        answers.push((response.status, response.json()["target"].clone()));
    }
    assert_eq!(answers[0], (200, "/v1/1".into()));
    assert_eq!(answers[1], (200, "/v1/2".into()));
    assert_eq!(answers[2].0, 404);
    assert_eq!(answers[3], (200, "/v1/4".into()));
    assert_eq!(upstream.hits(), 3);
}

#[tokio::test]
async fn http_1_2_is_served_as_http_1_1_and_another_major_version_is_505() {
    let (gateway, _upstream) = public_gateway("", "").await;
    let response = raw_request(gateway.addr, "GET /api/public/v HTTP/1.2\r\nHost: a", b"").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["target"], "/v1/v");
    let response = raw_request(gateway.addr, "GET /api/public/v HTTP/2.0\r\nHost: a", b"").await;
    assert_eq!(response.status, 505);
    assert_eq!(response.json()["code"], "http_version_not_supported");
}

#[tokio::test]
async fn heads_the_parser_refuses_are_answered_in_json_logged_and_counted() {
    let (gateway, upstream) = public_gateway("", "").await;
    let refused = [
        "POST /api/public/ HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2",
        "GET /api/public/ HTTP/1.1\r\nHost: a\r\nBad Header: x",
        "GET /api/public/ HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b",
    ];
    for head in refused {
        let response = raw_request(gateway.addr, head, b"ab").await;
        assert_eq!(response.status, 400, "{head:?}");
        let body = response.json();
        assert_eq!(body["code"], "bad_request");
        assert_eq!(
            body["request_id"],
            response.headers["x-request-id"].as_str()
        );
    }
    assert_eq!(upstream.hits(), 0);
    gateway
        .wait_for_log(|l| {
            l["target"] == "guichet::access"
                && l["status"] == 400
                && l["method"] == "POST"
                && l["route"] == "unmatched"
        })
        .await;
    assert_eq!(
        requests_counted(&gateway, &["route=\"unmatched\"", "status=\"400\""]).await,
        3.0
    );
    // Bad chunking in the body of a routed request: a JSON 400 with its access line.
    let response = raw_request(
        gateway.addr,
        "POST /api/public/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked",
        b"zz\r\nab\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["code"], "bad_request");
    gateway
        .wait_for_log(|l| {
            l["target"] == "guichet::access" && l["path"] == "/api/public/c" && l["status"] == 400
        })
        .await;
}

#[tokio::test]
async fn the_host_header_must_name_a_host() {
    let (gateway, upstream) = public_gateway("", "").await;
    for head in [
        "GET /api/public/ HTTP/1.1",
        "GET /api/public/ HTTP/1.1\r\nHost: ",
        "GET /api/public/ HTTP/1.1\r\nHost: x/api/private",
        "GET /api/public/ HTTP/1.1\r\nHost: a b",
        "GET /api/public/ HTTP/1.1\r\nHost: a\r\nHost: b",
    ] {
        let response = raw_request(gateway.addr, head, b"").await;
        assert_eq!(response.status, 400, "{head:?}");
        assert_eq!(response.json()["code"], "bad_request");
    }
    assert_eq!(upstream.hits(), 0);
    let response = raw_request(gateway.addr, "GET /api/public/ HTTP/1.0", b"").await;
    assert_eq!(response.status, 200, "HTTP/1.0 needs no Host");
    let response = raw_request(
        gateway.addr,
        "GET /api/public/ HTTP/1.1\r\nHost: api.hackitech.example:8443",
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json()["headers"]["x-forwarded-host"][0],
        "api.hackitech.example:8443"
    );
}

#[tokio::test]
async fn repeated_credentials_and_unframeable_bodies_are_refused() {
    let (gateway, upstream) = public_gateway("", "").await;
    let response = raw_request(
        gateway.addr,
        "GET /api/public/ HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\nAuthorization: Bearer y",
        b"",
    )
    .await;
    assert_eq!(response.status, 400);
    let response = raw_request(
        gateway.addr,
        "POST /api/public/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked",
        b"2\r\nab\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 501);
    assert_eq!(response.json()["code"], "not_implemented");
    assert_eq!(upstream.hits(), 0);
    // A chunked body alone is forwarded.
    let response = raw_request(
        gateway.addr,
        "POST /api/public/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked",
        b"2\r\nab\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["body_bytes"], 2);
}

#[tokio::test]
async fn connection_naming_forwarded_headers_is_served_and_they_still_reach_the_upstream() {
    let (gateway, _upstream) = public_gateway("", "").await;
    let response = raw_request(
        gateway.addr,
        "GET /api/public/ HTTP/1.1\r\nHost: a\r\nConnection: close, X-Forwarded-For, X-Forwarded-Host",
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    let headers = &response.json()["headers"];
    assert_eq!(headers["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(headers["x-forwarded-host"][0], "a");
}

#[tokio::test]
async fn encoded_slashes_are_refused_unless_the_route_keeps_them() {
    let (gateway, upstream) = public_gateway(
        "",
        "  - path: /api/files/
    auth: none
    upstream_path: /files/
    encoded_slashes: keep
",
    )
    .await;
    for path in [
        "/api/public/..%2Fprivate/x",
        "/api/public/a%2fb",
        "/api/public/a%5Cb",
        "/api/public/a\\b",
        "/nowhere/a%2Fb",
    ] {
        let response = raw_request(
            gateway.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: a"),
            b"",
        )
        .await;
        assert_eq!(response.status, 400, "{path}");
        assert_eq!(response.json()["code"], "bad_request");
    }
    assert_eq!(upstream.hits(), 0);
    let response = raw_request(
        gateway.addr,
        "GET /api/files/a%2fb HTTP/1.1\r\nHost: a",
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["target"], "/files/a%2Fb");
    // gateway.yaml can keep them everywhere.
    let (gateway, _upstream) = public_gateway("encoded_slashes: keep\n", "").await;
    let response = raw_request(
        gateway.addr,
        "GET /api/public/a%2Fb HTTP/1.1\r\nHost: a",
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["target"], "/v1/a%2Fb");
}

#[test]
fn client_limits_and_encoded_slashes_are_checked_with_their_position() {
    let config = GatewayConfig::new(
        "include: [routes/*.yaml]
client:
  header_timeout: 0s
  max_headers: 1000
  max_header_size: 4KiB
  max_request_line: 8KiB
  keepalive: 5s
encoded_slashes: decode
",
    )
    .file(
        "routes/a.yaml",
        "service: a\nupstreams: [http://127.0.0.1:1]\nroutes:\n  - path: /a/\n    auth: none\n    encoded_slashes: maybe\n",
    );
    let (_dir, path) = config.write();
    let output = check(&path);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "gateway.yaml:3:19: client.header_timeout: `0s` is zero",
        "gateway.yaml:4:16: client.max_headers: `1000` is not a whole number from 1 to 256",
        "gateway.yaml:6:21: client.max_request_line: the request line limit (8192 bytes) is larger than the whole head's (4096 bytes)",
        "gateway.yaml:7:3: client.keepalive: unknown key `keepalive`",
        "gateway.yaml:8:18: encoded_slashes: `decode` is not reject or keep",
        "routes/a.yaml:6:22: routes[0].encoded_slashes: `maybe` is not reject or keep",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
}

#[tokio::test]
async fn an_upstream_down_under_load_gets_one_error_line_not_one_per_request() {
    let config = GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/down.yaml",
        "service: down\nupstreams: [http://127.0.0.1:1]\nroutes:\n  - path: /api/down/\n    auth: none\n",
    );
    let gateway = Gateway::start(config).await;
    for _ in 0..100 {
        let response = raw_request(gateway.addr, "GET /api/down/ HTTP/1.1\r\nHost: a", b"").await;
        assert_eq!(response.status, 502);
    }
    let is_access = |l: &serde_json::Value| l["target"] == "guichet::access" && l["status"] == 502;
    let deadline = Instant::now() + Duration::from_secs(5);
    while gateway.logs().iter().filter(|l| is_access(l)).count() < 100 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = gateway.logs();
    let access = logs.iter().filter(|l| is_access(l)).count();
    let errors = logs
        .iter()
        .filter(|l| l["target"] == "guichet::error")
        .count();
    assert_eq!(access, 100, "every request keeps its access line");
    assert_eq!(
        errors, 1,
        "one error line per route and code every ten seconds"
    );
    let warnings = logs.iter().filter(|l| l["level"] == "WARN").count();
    assert!(
        warnings <= 2,
        "{warnings} warnings for one failing upstream"
    );
}

#[tokio::test]
async fn a_low_descriptor_limit_is_raised_so_idle_clients_cannot_exhaust_it() {
    let upstream = Upstream::start("public").await;
    let config = GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/public.yaml",
        &format!(
            "service: public\nupstreams: [{}]\nroutes:\n  - path: /api/public/\n    auth: none\n",
            upstream.url()
        ),
    );
    let gateway = Gateway::start_with_open_files(config, 256).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", gateway.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3], open_files[4],
        "soft limit raised to the hard one: {limits}"
    );
    // More idle clients than the limit it was given, and still room for one that asks.
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(tokio::net::TcpStream::connect(gateway.addr).await.unwrap());
    }
    let response = raw_request(gateway.addr, "GET /api/public/ HTTP/1.1\r\nHost: a", b"").await;
    assert_eq!(response.status, 200);
}
