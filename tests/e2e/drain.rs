//! Stopping and replacing the gateway without a failed request: the drain a load balancer can
//! follow (SIGTERM), and the binary upgrade (`serve --upgrade`, then SIGQUIT).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::raw::RawConnection;
use crate::common::{
    check, client, eventually, free_port, get_json, raw_request, serve_to_exit, Gateway,
    GatewayConfig, Load, Upstream,
};

const GET_COURSES: &[u8] = b"GET /api/courses/ HTTP/1.1\r\nHost: gateway\r\n\r\n";

fn two_services(fast: &Upstream, slow: &Upstream, gateway_extra: &str) -> GatewayConfig {
    let service = |name: &str, upstream: &Upstream| {
        format!(
            "service: {name}\nupstreams: [{}]\nroutes:\n  - path: /api/{name}/\n    auth: none\n",
            upstream.url()
        )
    };
    GatewayConfig::new(&format!("include: [routes/*.yaml]\n{gateway_extra}"))
        .file("routes/courses.yaml", &service("courses", fast))
        .file("routes/slow.yaml", &service("slow", slow))
}

/// Keep-alive connections that have each been answered once.
async fn warm_connections(gateway: &Gateway, count: usize) -> Vec<RawConnection> {
    let mut connections = Vec::new();
    for _ in 0..count {
        let mut connection = RawConnection::open(gateway.addr).await;
        connection.send(GET_COURSES).await.expect("send");
        let response = connection.response().await.expect("answered");
        assert_eq!(response.status, 200);
        assert_eq!(response.headers["connection"], "keep-alive");
        connections.push(connection);
    }
    connections
}

#[tokio::test]
async fn sigterm_keeps_accepting_for_the_delay_and_closes_each_connection_after_its_answer() {
    let fast = Upstream::start("courses").await;
    let slow = Upstream::start("slow").await;
    slow.set_delay(Duration::from_secs(4));
    let delay = Duration::from_secs(3);
    let mut gateway = Gateway::start(two_services(
        &fast,
        &slow,
        "shutdown_delay: 3s\nshutdown_grace_period: 20s\n",
    ))
    .await;
    let mut busy = warm_connections(&gateway, 24).await;
    let mut idle = warm_connections(&gateway, 8).await;

    // Taken before the signal is sent, so that the gateway's delay cannot end before
    // `signalled + delay`.
    let signalled = Instant::now();
    gateway.signal("TERM");
    // The signal is handled on the gateway's own runtime, a moment after `kill` returns.
    let readyz = gateway.admin_url("/readyz");
    eventually("/readyz answers 503 after SIGTERM", || async {
        client().get(&readyz).send().await.unwrap().status() == 503
    })
    .await;
    let ready = get_json(readyz).await;
    assert_eq!(ready["code"], "draining");
    let health = client()
        .get(gateway.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the process is still alive");

    // Requests racing the signal on open keep-alive connections are answered, and each answer
    // closes its connection.
    for connection in &mut busy {
        connection.send(GET_COURSES).await.expect("still open");
        let response = connection.response().await.expect("answered");
        assert_eq!(response.status, 200);
        assert_eq!(response.headers["connection"], "close");
        assert!(connection.closed_within(Duration::from_secs(5)).await);
    }
    // New connections are still accepted during the delay.
    let fresh = raw_request(
        gateway.addr,
        "GET /api/courses/ HTTP/1.1\r\nHost: gateway",
        b"",
    )
    .await;
    assert_eq!(fresh.status, 200);
    let slow_url = gateway.url("/api/slow/");
    let in_flight = tokio::spawn(async move { client().get(slow_url).send().await });
    eventually("the slow request at its upstream", || async {
        slow.hits() == 1
    })
    .await;
    assert!(
        signalled.elapsed() < delay,
        "the checks above ran within the delay; the machine is too slow for this test"
    );

    // Idle connections are closed only once the delay is over, and then the listener stops.
    for connection in &mut idle {
        assert!(connection.closed_within(Duration::from_secs(10)).await);
        assert!(
            signalled.elapsed() >= delay,
            "closed before the delay ended"
        );
    }
    let addr = gateway.addr;
    eventually("the public listener closed", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(signalled.elapsed() >= delay);

    // The admin listener answers until the process exits.
    let ready = client()
        .get(gateway.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let health = client()
        .get(gateway.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    let status = gateway
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits once the in-flight request is answered");
    assert!(status.success(), "{status:?}");
    assert!(!gateway.pid_file().exists(), "the pid file is removed");
}

#[tokio::test]
async fn an_upgrade_hands_the_listeners_over_without_a_failed_request() {
    let fast = Upstream::start("courses").await;
    let slow = Upstream::start("slow").await;
    let mut old = Gateway::start(two_services(&fast, &slow, "")).await;
    let load = Load::start(old.url("/api/courses/"), 4);
    load.wait_for(200).await;

    let new = old.upgrade().await;
    old.wait_for_log(|line| {
        line["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("SIGQUIT: handing the listeners over"))
    })
    .await;
    let status = old
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the old process exits once drained");
    assert!(status.success(), "{status:?}");
    let answered_before = load.answered.load(Ordering::Relaxed);
    load.wait_for(answered_before + 200).await;
    let (answered, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(answered > answered_before, "the new process serves");

    let ready = client().get(new.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "the new process answers on the admin address"
    );
    assert_eq!(
        std::fs::read_to_string(new.pid_file()).unwrap().trim(),
        new.pid().to_string()
    );
}

#[tokio::test]
async fn sigquit_with_no_process_waiting_for_the_sockets_keeps_serving() {
    let fast = Upstream::start("courses").await;
    let slow = Upstream::start("slow").await;
    let gateway = Gateway::start(two_services(&fast, &slow, "")).await;
    gateway.signal("QUIT");
    let line = gateway
        .wait_for_log(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("SIGQUIT ignored"))
        })
        .await;
    assert!(line["message"].as_str().unwrap().contains("start it first"));
    let answer = client()
        .get(gateway.url("/api/courses/"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let ready = client()
        .get(gateway.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn an_upgrade_socket_that_other_users_could_replace_is_refused() {
    let fast = Upstream::start("courses").await;
    let slow = Upstream::start("slow").await;
    let config = two_services(&fast, &slow, "upgrade_socket: /tmp/guichet-upgrade.sock\n");
    let (_dir, path) = config.write();
    let (port, admin) = (free_port().to_string(), free_port().to_string());
    let output = serve_to_exit(&path, &["--listen", &port, "--admin-listen", &admin]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let checked = check(&path);
    assert!(
        !checked.status.success(),
        "check refuses what serve refuses"
    );
    assert!(
        String::from_utf8_lossy(&checked.stderr)
            .contains("upgrade_socket: /tmp/guichet-upgrade.sock: other users can write /tmp"),
        "{checked:?}"
    );
    assert!(
        stderr.contains("upgrade_socket: /tmp/guichet-upgrade.sock: other users can write /tmp"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_second_gateway_on_the_same_pid_file_is_refused_and_an_upgrade_needs_a_running_one() {
    let fast = Upstream::start("courses").await;
    let slow = Upstream::start("slow").await;
    let gateway = Gateway::start(two_services(&fast, &slow, "")).await;
    let config = two_services(&fast, &slow, "");
    let (_dir, path) = config.write();
    let pid_file = gateway.pid_file().to_str().unwrap().to_string();
    let (port, admin) = (free_port().to_string(), free_port().to_string());
    let other_ports = ["--listen", &port, "--admin-listen", &admin];

    let output = serve_to_exit(
        &path,
        &[&other_ports[..], &["--pid-file", &pid_file]].concat(),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "gateway {} is running with this pid file",
            gateway.pid()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(gateway.pid_file()).unwrap().trim(),
        gateway.pid().to_string(),
        "the running gateway's pid file is untouched"
    );

    let (_empty, empty_path) = config.write();
    let unused = empty_path.with_file_name("run/guichet.pid");
    let started = Instant::now();
    let output = serve_to_exit(
        &path,
        &[
            &other_ports[..],
            &["--upgrade", "--pid-file", unused.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("names no running process"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused before waiting for sockets nobody sends"
    );
}

#[tokio::test]
async fn sigint_while_draining_stops_at_once_and_the_grace_period_cuts_what_is_left() {
    let fast = Upstream::start("courses").await;
    let slow = Upstream::start("slow").await;
    slow.set_delay(Duration::from_secs(30));
    for interrupt in [true, false] {
        // SIGINT must be what ends the first, well before its grace period would.
        let grace = if interrupt { "20s" } else { "1s" };
        let extra = format!("shutdown_delay: 0s\nshutdown_grace_period: {grace}\n");
        let mut gateway = Gateway::start(two_services(&fast, &slow, &extra)).await;
        let slow_url = gateway.url("/api/slow/");
        let hits = slow.hits();
        let in_flight = tokio::spawn(async move { client().get(slow_url).send().await });
        eventually("the slow request at its upstream", || async {
            slow.hits() == hits + 1
        })
        .await;
        gateway.signal("TERM");
        gateway
            .wait_for_log(|line| {
                line["message"] == "shutdown delay over: no longer accepting connections"
            })
            .await;
        if interrupt {
            gateway.signal("TERM");
            gateway
                .wait_for_log(|line| {
                    line["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("SIGTERM ignored"))
                })
                .await;
            gateway.signal("INT");
        }
        let status = gateway
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("exits well before the request would end");
        assert!(status.success(), "{status:?}");
        let cut = in_flight.await.unwrap();
        assert!(
            cut.is_err() || cut.unwrap().status() != 200,
            "the request was cut"
        );
        let said = if interrupt {
            "SIGINT while stopping"
        } else {
            "grace period over"
        };
        assert!(
            gateway.logs().iter().any(|line| line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(said))),
            "no log line says {said:?}"
        );
        assert!(!gateway.pid_file().exists());
    }
}
