//! Live connections through the real listener: WebSockets with tokio-tungstenite as the client
//! and a tokio-tungstenite echo server as the upstream (authentication by header and by
//! `access_token`, large frames, the idle timeout, the close at the end of a drain), and
//! server-sent events read one by one.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::auth::{jwt_section, seed};
use crate::common::live::{EchoSocket, EventSource, SOON};
use crate::common::{check, client, get_text, status_and_json, Gateway, GatewayConfig, Upstream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A gateway with a WebSocket route `/ws/lab/` (JWT, 250 handshakes a minute), a WebSocket route with
/// `timeouts: { read: 1s, idle: 3s }` at `/ws/quiet/`, an ordinary route `/api/plain/`, and
/// `extra` added to gateway.yaml.
async fn gateway_with_sockets(extra: &str) -> (Gateway, EchoSocket, EchoSocket, Upstream) {
    let echo = EchoSocket::start().await;
    let quiet = EchoSocket::start().await;
    let plain = Upstream::start("plain").await;
    let config = GatewayConfig::new(&format!(
        "include: [routes/*.yaml]\n{extra}{}{}",
        jwt_section(),
        seed()
    ))
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
    .file(
        "routes/labs.yaml",
        &format!(
            "service: labs
upstreams: [{}]
routes:
  - path: /ws/lab/
    upstream_path: /terminal/
    websocket: true
    rate_limit: 250/min
",
            echo.url()
        ),
    )
    .file(
        "routes/quiet.yaml",
        &format!(
            "service: quiet
upstreams: [{}]
timeouts: {{ read: 1s, idle: 3s }}
routes:
  - path: /ws/quiet/
    auth: none
    websocket: true
",
            quiet.url()
        ),
    )
    .file(
        "routes/plain.yaml",
        &format!(
            "service: plain
upstreams: [{}]
routes:
  - path: /api/plain/
    auth: none
  - path: /ws/plain/
    auth: none
    websocket: true
",
            plain.url()
        ),
    );
    (Gateway::start(config).await, echo, quiet, plain)
}

fn ws_url(gateway: &Gateway, path: &str) -> String {
    gateway.url(path).replacen("http://", "ws://", 1)
}

async fn open(url: &str, token: Option<&str>) -> Result<Socket, WsError> {
    let mut request = url.into_client_request().expect("a WebSocket request");
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("a field value"),
        );
    }
    tokio::time::timeout(SOON, tokio_tungstenite::connect_async(request))
        .await
        .expect("the handshake ends in time")
        .map(|(socket, _)| socket)
}

/// The next data message, skipping pings.
async fn next_message(socket: &mut Socket) -> Message {
    loop {
        let message = tokio::time::timeout(SOON, socket.next())
            .await
            .expect("a message in time")
            .expect("the socket is open")
            .expect("a frame");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// The status of a handshake the gateway refused, and its JSON body.
fn refusal(result: Result<Socket, WsError>) -> (u16, serde_json::Value) {
    match result {
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).expect("a JSON body"),
            )
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the upgrade went through"),
    }
}

fn websocket_gauge(exposition: &str, route: &str) -> Option<f64> {
    let prefix = format!("guichet_websocket_connections{{route=\"{route}\"}} ");
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn text_and_a_mebibyte_binary_frame_are_echoed_with_the_identity_of_the_handshake() {
    let (gateway, echo, _quiet, _plain) = gateway_with_sockets("").await;
    let token = gateway.access_token("demo", "demo-password").await;
    let mut socket = open(&ws_url(&gateway, "/ws/lab/4?room=b"), Some(&token))
        .await
        .expect("upgraded");
    socket.send(Message::text("hello lab")).await.expect("sent");
    assert_eq!(next_message(&mut socket).await, Message::text("hello lab"));
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    socket
        .send(Message::binary(big.clone()))
        .await
        .expect("sent");
    match next_message(&mut socket).await {
        Message::Binary(echoed) => assert!(echoed == big, "the 1 MiB frame came back changed"),
        other => panic!("expected the binary frame, got {other:?}"),
    }

    let seen = echo.handshakes();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/terminal/4?room=b");
    assert_eq!(seen[0].header("x-user-id"), Some("1"));
    assert_eq!(seen[0].header("x-user-role"), Some("student"));
    assert_eq!(seen[0].header("x-auth-method"), Some("jwt"));
    assert!(
        seen[0].header("authorization").is_none(),
        "the token is the gateway's business"
    );
    let exposition = get_text(gateway.admin_url("/metrics")).await;
    assert_eq!(
        websocket_gauge(&exposition, "labs:/ws/lab/"),
        Some(1.0),
        "{exposition}"
    );

    socket.close(None).await.expect("closed");
    let line = gateway.wait_for_log(|line| line["status"] == 101).await;
    let fields = &line;
    assert_eq!(fields["route"], "labs:/ws/lab/");
    assert!(
        fields["bytes_in"].as_u64().unwrap_or(0) > 1024 * 1024,
        "{line}"
    );
    assert!(
        fields["bytes_out"].as_u64().unwrap_or(0) > 1024 * 1024,
        "{line}"
    );
    assert!(
        fields["duration_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "{line}"
    );
    let exposition = get_text(gateway.admin_url("/metrics")).await;
    assert_eq!(
        websocket_gauge(&exposition, "labs:/ws/lab/"),
        Some(0.0),
        "{exposition}"
    );
}

#[tokio::test]
async fn a_token_in_access_token_authenticates_and_reaches_neither_the_upstream_nor_the_logs() {
    let (gateway, echo, _quiet, _plain) = gateway_with_sockets("").await;
    let token = gateway.access_token("teacher", "teacher-password").await;
    let url = format!(
        "{}?room=7&access_token={token}",
        ws_url(&gateway, "/ws/lab/")
    );
    let mut socket = open(&url, None).await.expect("upgraded");
    socket.send(Message::text("ping")).await.expect("sent");
    assert_eq!(next_message(&mut socket).await, Message::text("ping"));
    socket.close(None).await.expect("closed");

    let seen = echo.handshakes();
    assert_eq!(seen[0].target, "/terminal/?room=7");
    assert_eq!(seen[0].header("x-user-id"), Some("2"));
    assert!(seen[0].header("authorization").is_none());
    assert!(seen
        .iter()
        .all(|h| h.headers.iter().all(|(_, v)| !v.contains(&token))));
    gateway.wait_for_log(|line| line["status"] == 101).await;
    let logs = gateway.logs();
    assert!(!logs.is_empty());
    for line in logs {
        assert!(
            !line.to_string().contains(&token),
            "the token was logged: {line}"
        );
    }
}

#[tokio::test]
async fn a_bad_or_missing_token_is_refused_with_401_before_the_upgrade() {
    let (gateway, echo, _quiet, _plain) = gateway_with_sockets("").await;
    let (status, body) = refusal(open(&ws_url(&gateway, "/ws/lab/"), None).await);
    assert_eq!(status, 401, "{body}");
    let (status, body) = refusal(
        open(
            &format!("{}?access_token=not.a.token", ws_url(&gateway, "/ws/lab/")),
            None,
        )
        .await,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_not_valid"))
    );
    let (status, _) = refusal(open(&ws_url(&gateway, "/ws/lab/"), Some("forged.token.x")).await);
    assert_eq!(status, 401);
    assert!(echo.handshakes().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn an_upgrade_on_a_route_without_websocket_is_refused_with_400() {
    let (gateway, _echo, _quiet, plain) = gateway_with_sockets("").await;
    let (status, body) = refusal(open(&ws_url(&gateway, "/api/plain/"), None).await);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("websocket_not_allowed"))
    );
    let (status, body) = refusal(open(&ws_url(&gateway, "/api/"), None).await);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("websocket_not_allowed"))
    );
    assert_eq!(plain.hits(), 0);
    // The route itself still serves ordinary requests.
    let (status, _) = status_and_json(
        client()
            .get(gateway.url("/api/plain/"))
            .send()
            .await
            .expect("answered"),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_socket_quiet_longer_than_the_read_timeout_lives_until_the_idle_timeout_closes_it() {
    let (gateway, _echo, quiet, _plain) = gateway_with_sockets("").await;
    let mut socket = open(&ws_url(&gateway, "/ws/quiet/"), None)
        .await
        .expect("upgraded");
    // Twice `timeouts.read` with nothing either way: still open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    socket
        .send(Message::text("still here"))
        .await
        .expect("sent");
    assert_eq!(next_message(&mut socket).await, Message::text("still here"));
    // Then `timeouts.idle` (3s) of silence closes it with 1001.
    let quiet_since = Instant::now();
    let closed = tokio::time::timeout(SOON, socket.next())
        .await
        .expect("closed before the test gives up");
    let waited = quiet_since.elapsed();
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_millis(2500),
        "closed after {waited:?}, before the idle timeout"
    );
    tokio::time::timeout(SOON, async {
        while !quiet.closes().contains(&1001) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the upstream got the close frame too");
}

#[tokio::test]
async fn sigterm_closes_open_sockets_with_1001_within_the_grace_period() {
    let (mut gateway, echo, _quiet, _plain) =
        gateway_with_sockets("shutdown_delay: 0s\nshutdown_grace_period: 3s\n").await;
    let token = gateway.access_token("demo", "demo-password").await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let mut socket = open(&ws_url(&gateway, "/ws/lab/"), Some(&token))
            .await
            .expect("upgraded");
        socket.send(Message::text("before")).await.expect("sent");
        assert_eq!(next_message(&mut socket).await, Message::text("before"));
        sockets.push(socket);
    }
    let signalled = Instant::now();
    gateway.signal("TERM");
    // The sockets keep working during the grace period.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sockets[0]
        .send(Message::text("during"))
        .await
        .expect("sent");
    assert_eq!(next_message(&mut sockets[0]).await, Message::text("during"));
    for socket in &mut sockets {
        match next_message(socket).await {
            Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    let closed_after = signalled.elapsed();
    assert!(
        closed_after < Duration::from_millis(3500),
        "closed {closed_after:?} after SIGTERM, past the grace period"
    );
    assert!(
        closed_after > Duration::from_millis(2000),
        "closed {closed_after:?} after SIGTERM, long before the grace period's end"
    );
    let status = gateway.wait_exit(Duration::from_secs(5)).await;
    assert!(
        status.is_some(),
        "the gateway exits once its sockets are closed"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "the sockets held the drain"
    );
    assert_eq!(
        echo.closes().iter().filter(|code| **code == 1001).count(),
        5
    );
}

#[tokio::test]
async fn server_sent_events_reach_the_client_one_by_one() {
    let events = EventSource::start(4).await;
    let config = GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/news.yaml",
        &format!(
            "service: news
upstreams: [{}]
timeouts: {{ read: 5s }}
routes:
  - path: /api/events/
    auth: none
",
            events.url()
        ),
    );
    let gateway = Gateway::start(config).await;
    let response = client()
        .get(gateway.url("/api/events/"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response;
    let mut received = String::new();
    for n in 1..=4 {
        // Event n arrives while the upstream holds back event n + 1.
        let expected = format!("data: event {n}\n\n");
        tokio::time::timeout(SOON, async {
            while !received.contains(&expected) {
                let chunk = body.chunk().await.expect("a chunk").expect("more");
                received.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("event {n} never arrived alone; received {received:?}"));
        assert!(
            !received.contains(&format!("data: event {}\n", n + 1)),
            "{received:?}"
        );
        events.release();
    }
}

#[tokio::test]
async fn a_long_poll_is_bounded_by_the_read_timeout_only() {
    let upstream = Upstream::start("poll").await;
    let config = GatewayConfig::new(
        "include: [routes/*.yaml]\nclient: { header_timeout: 1s, keepalive_timeout: 1s }\n",
    )
    .file(
        "routes/poll.yaml",
        &format!(
            "service: poll
upstreams: [{}]
timeouts: {{ read: 4s }}
routes:
  - path: /api/poll/
    auth: none
",
            upstream.url()
        ),
    );
    let gateway = Gateway::start(config).await;
    // Longer than the client's header and keep-alive timeouts, shorter than `timeouts.read`.
    upstream.set_delay(Duration::from_millis(2500));
    let response = client()
        .get(gateway.url("/api/poll/"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    upstream.set_delay(Duration::from_millis(5000));
    let (status, body) = status_and_json(
        client()
            .get(gateway.url("/api/poll/"))
            .send()
            .await
            .expect("answered"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (504, Some("upstream_timeout"))
    );
}

#[tokio::test]
async fn two_hundred_sockets_at_once_each_get_their_own_frames_back() {
    let (gateway, echo, _quiet, _plain) = gateway_with_sockets("").await;
    let token = gateway.access_token("demo", "demo-password").await;
    let url = ws_url(&gateway, "/ws/lab/");
    let mut sockets = Vec::new();
    for _ in 0..200 {
        sockets.push(open(&url, Some(&token)).await.expect("upgraded"));
    }
    let exposition = get_text(gateway.admin_url("/metrics")).await;
    assert_eq!(websocket_gauge(&exposition, "labs:/ws/lab/"), Some(200.0));
    let talks = sockets
        .into_iter()
        .enumerate()
        .map(|(n, mut socket)| async move {
            for m in 0..20 {
                let text = format!("socket {n} message {m}");
                socket
                    .send(Message::text(text.clone()))
                    .await
                    .expect("sent");
                assert_eq!(next_message(&mut socket).await, Message::text(text));
            }
            socket.close(None).await.expect("closed");
        });
    futures_util::future::join_all(talks).await;
    assert_eq!(echo.handshakes().len(), 200);
    crate::common::eventually("every socket is counted out", || async {
        let exposition = get_text(gateway.admin_url("/metrics")).await;
        websocket_gauge(&exposition, "labs:/ws/lab/") == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn the_handshake_counts_against_the_rate_limit_and_other_answers_pass_as_they_are() {
    let (gateway, echo, _quiet, plain) = gateway_with_sockets("").await;
    let token = gateway.access_token("demo", "demo-password").await;
    let url = ws_url(&gateway, "/ws/lab/");
    // 250 a minute with a burst of 250: the burst, and what refills while it is spent.
    let mut allowed = 0;
    let refused = loop {
        match open(&url, Some(&token)).await {
            Ok(mut socket) => {
                allowed += 1;
                socket.close(None).await.expect("closed");
            }
            Err(error) => break refusal(Err(error)),
        }
        assert!(allowed < 400, "the limit never refused a handshake");
    };
    assert_eq!(
        (refused.0, refused.1["code"].as_str()),
        (429, Some("throttled"))
    );
    assert!(allowed >= 250, "refused after {allowed}");
    assert_eq!(
        echo.handshakes().len(),
        allowed,
        "refused ones never reach the upstream"
    );

    // An upstream that does not upgrade: its answer reaches the client as it is.
    match open(&ws_url(&gateway, "/ws/plain/"), None).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 200);
            let body: serde_json::Value =
                serde_json::from_slice(&response.body().clone().unwrap_or_default())
                    .expect("the echo's JSON");
            assert_eq!(body["headers"]["upgrade"][0], "websocket");
            assert!(response.headers().contains_key("x-request-id"));
        }
        other => panic!("expected the upstream's 200, got {:?}", other.map(|_| ())),
    }
    assert_eq!(plain.hits(), 1);

    // An upstream that is gone: 502 in the gateway's shape.
    plain.kill();
    let (status, body) = refusal(open(&ws_url(&gateway, "/ws/plain/"), None).await);
    assert_eq!((status, body["code"].as_str()), (502, Some("bad_gateway")));
}

#[tokio::test]
async fn where_cors_is_on_a_handshake_from_a_foreign_page_is_refused() {
    let (gateway, echo, _quiet, _plain) =
        gateway_with_sockets("cors: { allow_origins: [\"https://app.example\"] }\n").await;
    let token = gateway.access_token("demo", "demo-password").await;
    let from = |origin: &str| {
        let mut request = ws_url(&gateway, "/ws/lab/")
            .into_client_request()
            .expect("a request");
        let headers = request.headers_mut();
        headers.insert("origin", origin.parse().expect("a value"));
        headers.insert(
            "authorization",
            format!("Bearer {token}").parse().expect("a value"),
        );
        request
    };
    let foreign = tokio_tungstenite::connect_async(from("https://evil.example"))
        .await
        .map(|(socket, _)| socket);
    let (status, body) = refusal(foreign);
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("cors_rejected"))
    );
    assert!(echo.handshakes().is_empty());
    let (mut socket, _) = tokio_tungstenite::connect_async(from("https://app.example"))
        .await
        .expect("the allowed page connects");
    socket.send(Message::text("hi")).await.expect("sent");
    assert_eq!(next_message(&mut socket).await, Message::text("hi"));
    // A client that is not a browser sends no Origin and is let in as before.
    open(&ws_url(&gateway, "/ws/lab/"), Some(&token))
        .await
        .expect("upgraded");
}

#[test]
fn check_refuses_a_websocket_route_without_get() {
    let config = GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/labs.yaml",
        "service: labs\nupstreams: [http://127.0.0.1:1]\nroutes:\n  - path: /ws/\n    auth: none\n    methods: [POST]\n    websocket: true\n",
    );
    let (_dir, path) = config.write();
    let output = check(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("routes/labs.yaml:4:")
            && stderr.contains("a WebSocket handshake is a GET")
            && stderr.contains("add GET to `methods`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_client_sending_while_it_reads_never_deadlocks_the_relay() {
    let (gateway, _echo, _quiet, _plain) = gateway_with_sockets("").await;
    let token = gateway.access_token("demo", "demo-password").await;
    let socket = open(&ws_url(&gateway, "/ws/lab/"), Some(&token))
        .await
        .expect("upgraded");
    // 64 MiB each way, far more than the sockets' buffers: the echo server writes each echo
    // before it reads on, so a relay that stops reading one side while it writes the other
    // would hang here.
    let (mut sink, mut stream) = socket.split();
    let frame: Vec<u8> = (0..1024 * 1024).map(|i| (i % 253) as u8).collect();
    let expected = frame.clone();
    let sender = tokio::spawn(async move {
        for _ in 0..64 {
            sink.send(Message::binary(frame.clone()))
                .await
                .expect("sent");
        }
        sink
    });
    let received = tokio::time::timeout(Duration::from_secs(60), async {
        let mut echoes = 0;
        while echoes < 64 {
            match stream.next().await {
                Some(Ok(Message::Binary(echo))) => {
                    assert!(echo == expected, "an echo came back changed");
                    echoes += 1;
                }
                Some(Ok(_)) => {}
                other => panic!("the socket ended after {echoes} echoes: {other:?}"),
            }
        }
        echoes
    })
    .await
    .expect("64 MiB each way pass within a minute");
    assert_eq!(received, 64);
    let mut sink = sender.await.expect("the sender finished");
    sink.close().await.expect("closed");
}
