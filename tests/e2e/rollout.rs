//! A rollout at small scale, as `deploy/bench/rollout.sh` does it at volume: two replicas behind
//! a real HAProxy that follows their `/readyz` and never retries, clients sending all along; each
//! replica is replaced in turn (SIGTERM, exit, a new process on the same ports), then one is
//! upgraded in place (`serve --upgrade`, SIGQUIT). Not one request may fail.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::{Gateway, GatewayConfig, HaProxy, Load, Upstream};

fn replica_config(upstream: &Upstream) -> GatewayConfig {
    GatewayConfig::new("include: [routes/*.yaml]\nshutdown_delay: 2s\n").file(
        "routes/courses.yaml",
        &format!(
            "service: courses\nupstreams: [{}]\nroutes:\n  - path: /api/courses/\n    auth: none\n",
            upstream.url()
        ),
    )
}

/// SIGTERM `replica`, waits for its exit 0, and returns the process started in its place.
async fn replace(replica: &mut Gateway) -> Gateway {
    replica.signal("TERM");
    let status = replica
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the replica exits once drained");
    assert!(status.success(), "{status:?}");
    replica.replacement().await
}

#[tokio::test]
async fn replacing_and_upgrading_replicas_behind_a_load_balancer_fails_no_request() {
    let upstream = Upstream::start("courses").await;
    let mut a = Gateway::start(replica_config(&upstream)).await;
    let mut b = Gateway::start(replica_config(&upstream)).await;
    let haproxy = HaProxy::start(&[&a, &b]).await;
    let load = Load::start(haproxy.url("/api/courses/"), 8);
    load.wait_for(200).await;

    let mut answered = load.answered.load(Ordering::Relaxed);
    for (name, replica) in [("r0", &mut a), ("r1", &mut b)] {
        *replica = replace(replica).await;
        assert_eq!(
            haproxy.times_down(name).await,
            1,
            "HAProxy took the draining replica out"
        );
        haproxy.wait_until_up(name).await;
        load.wait_for(answered + 200).await;
        answered = load.answered.load(Ordering::Relaxed);
    }

    let mut old = a;
    let upgraded = old.upgrade().await;
    let status = old
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the upgraded process exits once drained");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        haproxy.times_down("r0").await,
        1,
        "an upgrade never takes the replica out"
    );
    load.wait_for(answered + 200).await;

    let (total, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        total + failures.len(),
        &failures[..failures.len().min(5)]
    );
    drop((upgraded, b));
}
