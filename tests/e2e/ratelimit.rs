//! Rate limits through the real listener: tiers per identity class, role tiers, route limits,
//! the RateLimit fields, failed logins, IPv6 clients per network, the cap on tracked keys, Redis
//! going away, and replicas sharing one limit.

use std::collections::HashMap;

use serde_json::Value;

use crate::auth::{jwt_section, seed, DEMO_KEY};
use crate::common::{
    add_demo_user, client, get_text, status_and_json, Gateway, GatewayConfig, RedisCluster,
    RedisServer, Upstream,
};

fn routes(upstream: &Upstream) -> String {
    format!(
        "service: app
upstreams: [{}]
routes:
  - path: /api/public/
    auth: none
  - path: /api/any/
    auth: any
  - path: /api/limited/
    rate_limit: 2/hour
  - path: /api/counted/
    auth: none
    rate_limit: 2/hour
",
        upstream.url()
    )
}

const LIMITS: &str = "rate_limits:
  anonymous: 3/hour
  user: 5/hour
  api_key: 4/hour
  roles: { instructor: 7/hour }
  login: 3/min
";

fn config(upstream: &Upstream, store: &str, limits: &str) -> GatewayConfig {
    GatewayConfig::new(&format!(
        "include: [routes/*.yaml]\ntrusted_proxies: [127.0.0.1/32]\n{store}{}{}{limits}",
        jwt_section(),
        if store.is_empty() {
            seed()
        } else {
            String::new()
        },
    ))
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
    .file("routes/app.yaml", &routes(upstream))
}

/// Sends `n` GETs with `headers` and returns the statuses.
async fn hammer(gateway: &Gateway, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        let mut request = client().get(gateway.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        statuses.push(request.send().await.unwrap().status().as_u16());
    }
    statuses
}

fn passed(statuses: &[u16]) -> usize {
    statuses.iter().filter(|s| **s == 200).count()
}

#[tokio::test]
async fn each_identity_class_has_its_own_limit_and_a_role_tier_replaces_the_user_tier() {
    let upstream = Upstream::start("app").await;
    let gateway = Gateway::start(config(&upstream, "", LIMITS)).await;
    let student = format!(
        "Bearer {}",
        gateway.access_token("demo", "demo-password").await
    );
    let teacher = format!(
        "Bearer {}",
        gateway.access_token("teacher", "teacher-password").await
    );

    let anonymous = hammer(&gateway, "/api/public/", &[], 10).await;
    assert_eq!(passed(&anonymous), 3);
    assert!(anonymous[3..].iter().all(|s| *s == 429));
    // Another client address (through the trusted proxy) has its own anonymous quota.
    let elsewhere = hammer(
        &gateway,
        "/api/public/",
        &[("x-forwarded-for", "203.0.113.9")],
        10,
    )
    .await;
    assert_eq!(passed(&elsewhere), 3);

    assert_eq!(
        passed(&hammer(&gateway, "/api/any/", &[("authorization", &student)], 10).await),
        5
    );
    assert_eq!(
        passed(&hammer(&gateway, "/api/any/", &[("authorization", &teacher)], 10).await),
        7
    );
    assert_eq!(
        passed(&hammer(&gateway, "/api/any/", &[("x-api-key", DEMO_KEY)], 10).await),
        4
    );
}

#[tokio::test]
async fn a_route_limit_adds_to_the_tier_and_the_fields_count_down() {
    let upstream = Upstream::start("app").await;
    let gateway = Gateway::start(config(&upstream, "", LIMITS)).await;
    let student = format!(
        "Bearer {}",
        gateway.access_token("demo", "demo-password").await
    );
    let get = |path: &'static str| {
        client()
            .get(gateway.url(path))
            .header("authorization", student.as_str())
            .send()
    };
    for remaining in [1, 0] {
        let response = get("/api/limited/").await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"user\";q=5;w=3600, \"route\";q=2;w=3600"
        );
        let current = response.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .to_string();
        let user_left = 3 + remaining;
        assert!(
            current.starts_with(&format!("\"user\";r={user_left};t="))
                && current.contains(&format!("\"route\";r={remaining};t=")),
            "{current}"
        );
    }
    let response = get("/api/limited/").await.unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(response.headers()["ratelimit"]
        .to_str()
        .unwrap()
        .contains("\"route\";r=0"));
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], "throttled");
    assert_eq!(
        body["detail"],
        format!("Request was throttled. Expected available in {retry_after} seconds.").as_str()
    );
    assert!((1..=1800).contains(&retry_after), "{retry_after}");
    // The refused request used none of the user tier: 3 of 5 are left elsewhere.
    let statuses = hammer(&gateway, "/api/any/", &[("authorization", &student)], 5).await;
    assert_eq!(passed(&statuses), 3);
    // Unlimited routes carry no fields.
    let response = client()
        .get(gateway.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("ratelimit").is_none());
}

async fn login_status(gateway: &Gateway, username: &str, password: &str, from: &str) -> u16 {
    gateway
        .login_request(username, password)
        .header("x-forwarded-for", from)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn failed_logins_are_limited_per_address_and_per_username_from_it() {
    let upstream = Upstream::start("app").await;
    let gateway = Gateway::start(config(&upstream, "", LIMITS)).await;
    let attacker = "198.51.100.66";
    for _ in 0..3 {
        assert_eq!(login_status(&gateway, "demo", "guess", attacker).await, 401);
    }
    assert_eq!(login_status(&gateway, "demo", "guess", attacker).await, 429);
    assert_eq!(
        login_status(&gateway, "demo", "demo-password", attacker).await,
        429,
        "not even the right password from the attacking address"
    );
    assert_eq!(
        login_status(&gateway, "teacher", "guess", attacker).await,
        429,
        "the address is out of failed attempts for every username"
    );
    assert_eq!(
        login_status(&gateway, "demo", "demo-password", "192.0.2.10").await,
        200,
        "the real user, from their own address, still logs in"
    );
    // Successful logins are not counted.
    for _ in 0..5 {
        assert_eq!(
            login_status(&gateway, "teacher", "teacher-password", "192.0.2.11").await,
            200
        );
    }
}

#[tokio::test]
async fn ipv6_clients_are_limited_per_64_network_unless_told_otherwise() {
    let upstream = Upstream::start("app").await;
    let gateway = Gateway::start(config(&upstream, "", LIMITS)).await;
    let from = |address: &'static str| [("x-forwarded-for", address)];
    // Three addresses of one /64 share its anonymous quota of 3.
    let mut statuses = Vec::new();
    for address in ["2001:db8:7:1::1", "2001:db8:7:1::2", "2001:db8:7:1:ffff::9"] {
        statuses.extend(hammer(&gateway, "/api/public/", &from(address), 2).await);
    }
    assert_eq!(passed(&statuses), 3, "{statuses:?}");
    // The next /64 is another client.
    let next = hammer(&gateway, "/api/public/", &from("2001:db8:7:2::1"), 5).await;
    assert_eq!(passed(&next), 3);
    // Failed logins too: a new address of the same /64 gets no new attempts.
    for _ in 0..3 {
        assert_eq!(
            login_status(&gateway, "demo", "guess", "2001:db8:66:1::1").await,
            401
        );
    }
    assert_eq!(
        login_status(&gateway, "demo", "guess", "2001:db8:66:1::2").await,
        429
    );
    assert_eq!(
        login_status(&gateway, "demo", "guess", "2001:db8:66:2::1").await,
        401
    );

    let per_address = format!("{LIMITS}  ipv6_prefix: 128\n");
    let gateway = Gateway::start(config(&upstream, "", &per_address)).await;
    for address in ["2001:db8:7:1::1", "2001:db8:7:1::2"] {
        assert_eq!(
            passed(&hammer(&gateway, "/api/public/", &from(address), 5).await),
            3
        );
    }
}

/// Requests that pass out of `n` sent to the public route from client `10.9.x.y` number `client`.
async fn passes_from(gateway: &Gateway, client: usize, n: usize) -> usize {
    let address = format!("10.9.{}.{}", client / 256, client % 256);
    passed(&hammer(gateway, "/api/public/", &[("x-forwarded-for", &address)], n).await)
}

#[tokio::test]
async fn past_max_tracked_keys_no_client_gets_more_than_its_limit() {
    let upstream = Upstream::start("app").await;
    let limits = "rate_limits: { anonymous: 2/day, max_tracked_keys: 32 }\n";
    let gateway = Gateway::start(config(&upstream, "", limits)).await;
    let mut passes: HashMap<usize, usize> = HashMap::new();
    // An early client uses its quota while the table has room.
    *passes.entry(0).or_default() += passes_from(&gateway, 0, 3).await;
    // 400 more clients: the table holds 32 keys, the rest are counted in shared cells.
    for client in 1..400 {
        *passes.entry(client).or_default() += passes_from(&gateway, client, 1).await;
    }
    gateway
        .wait_for_log(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("tracks as many keys as it may"))
        })
        .await;
    // Clients counted in cells are limited too.
    for client in (0..10).chain(390..400) {
        *passes.entry(client).or_default() += passes_from(&gateway, client, 3).await;
    }
    for client in 400..700 {
        *passes.entry(client).or_default() += passes_from(&gateway, client, 1).await;
    }
    // The early client is still throttled after all of them.
    *passes.entry(0).or_default() += passes_from(&gateway, 0, 2).await;
    for (client, passed) in &passes {
        assert!(
            *passed <= 2,
            "client {client} got {passed} requests through a limit of 2"
        );
    }
    assert_eq!(passes[&0], 2);
    // Sharing a cell only ever takes from a quota; almost every newcomer is still served.
    let served = (400..700).filter(|c| passes[c] == 1).count();
    assert!(served >= 290, "only {served} of 300 newcomers served");
}

fn redis_store(redis: &RedisServer) -> String {
    format!("store: {{ backend: redis, url: \"{}\" }}\n", redis.url())
}

/// 120 requests at once, 40 through each of three replicas, all from one client address: as
/// many pass as the limit allows, not one more, and each one that passes is told a different
/// number of requests left, counting down to 0, as if they had come one by one. On
/// `/api/counted/` each check carries two limits (the tier and the route's), so on a cluster
/// both keys must share a node.
async fn three_replicas_let_through_exactly_the_limit(store: &str) {
    let upstream = Upstream::start("app").await;
    let limits = "rate_limits: { anonymous: 40/hour }\n";
    let (_dir, path) = config(&upstream, store, limits).write();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Gateway::start_in(tempfile::tempdir().unwrap(), &path).await);
    }
    for (path, client_address, limit) in [
        ("/api/public/", "192.0.2.1", 40),
        ("/api/counted/", "192.0.2.2", 2),
    ] {
        let mut tasks = Vec::new();
        for replica in &replicas {
            for _ in 0..40 {
                let url = replica.url(path);
                tasks.push(tokio::spawn(async move {
                    let request = client().get(url).header("x-forwarded-for", client_address);
                    let response = request.send().await.unwrap();
                    let fields = response.headers()["ratelimit"]
                        .to_str()
                        .unwrap()
                        .to_string();
                    (response.status().as_u16(), fields)
                }));
            }
        }
        let mut statuses = Vec::new();
        let mut left = Vec::new();
        for task in tasks {
            let (status, fields) = task.await.unwrap();
            if status == 200 {
                left.push(remaining_of_last_policy(&fields));
            }
            statuses.push(status);
        }
        // Exact: the checks are decided one after the other, and the refill (one request every
        // 90 s) is far slower than the test.
        assert_eq!(passed(&statuses), limit, "{path}: {statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 120 - limit);
        left.sort_unstable();
        assert_eq!(left, (0..limit as u64).collect::<Vec<_>>(), "{path}");
    }
}

/// `r` of the last policy in a `RateLimit` field value: `"user";r=3;t=60, "route";r=1;t=90`.
fn remaining_of_last_policy(fields: &str) -> u64 {
    let last = fields.rsplit(", ").next().unwrap();
    let r = last.split(';').find_map(|part| part.strip_prefix("r="));
    r.unwrap_or_else(|| panic!("no r in {fields}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn three_replicas_sharing_redis_let_through_exactly_the_limit() {
    let redis = RedisServer::start().await;
    three_replicas_let_through_exactly_the_limit(&redis_store(&redis)).await;
    // Checks that arrive together share a script call.
    let calls = redis.calls("evalsha").await + redis.calls("eval").await;
    assert!(calls < 240, "{calls} script calls for 240 checks");
    eprintln!("{calls} script calls for 240 checks");
}

#[tokio::test]
async fn three_replicas_on_a_redis_cluster_let_through_exactly_the_limit() {
    let cluster = RedisCluster::start(0).await;
    three_replicas_let_through_exactly_the_limit(&cluster.store_yaml("")).await;
}

#[tokio::test]
async fn with_on_store_error_allow_a_redis_outage_falls_back_to_local_limits_and_recovers() {
    let mut redis = RedisServer::start().await;
    let upstream = Upstream::start("app").await;
    let limits = "rate_limits: { anonymous: 3/hour, on_store_error: allow }\n";
    let (_dir, path) = config(&upstream, &redis_store(&redis), limits).write();
    let first = Gateway::start_in(tempfile::tempdir().unwrap(), &path).await;
    let second = Gateway::start_in(tempfile::tempdir().unwrap(), &path).await;
    assert_eq!(passed(&hammer(&first, "/api/public/", &[], 2).await), 2);
    assert_eq!(
        passed(&hammer(&second, "/api/public/", &[], 5).await),
        1,
        "shared"
    );

    redis.stop();
    // Each process now limits on its own, with a fresh local count.
    assert_eq!(passed(&hammer(&first, "/api/public/", &[], 5).await), 3);
    assert_eq!(passed(&hammer(&second, "/api/public/", &[], 5).await), 3);
    first
        .wait_for_log(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("rate limiter is unavailable"))
        })
        .await;
    let exposition = get_text(first.admin_url("/metrics")).await;
    assert!(
        exposition.lines().any(
            |l| l.starts_with("guichet_store_errors_total{op=\"rate_limit\"} ")
                && !l.ends_with(" 0")
        ),
        "the outage shows in the metrics:\n{exposition}"
    );

    redis.resume().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Back on the (empty) shared Redis: the replicas count together again. Each attempt is a
    // new client, so an attempt made while only one replica had reconnected spoils no other.
    for attempt in 1.. {
        let client = format!("192.0.2.{attempt}");
        let client = [("x-forwarded-for", client.as_str())];
        let a = passed(&hammer(&first, "/api/public/", &client, 2).await);
        let b = passed(&hammer(&second, "/api/public/", &client, 2).await);
        if (a, b) == (2, 1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shared limiting did not resume ({a}, {b})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn with_on_store_error_deny_a_redis_outage_is_503() {
    let mut redis = RedisServer::start().await;
    let upstream = Upstream::start("app").await;
    let limits = "rate_limits: { user: 100/hour, on_store_error: deny }\n";
    let (_dir, path) = config(&upstream, &redis_store(&redis), limits).write();
    add_demo_user(&path);
    let gateway = Gateway::start_in(tempfile::tempdir().unwrap(), &path).await;
    let bearer = format!(
        "Bearer {}",
        gateway.access_token("demo", "demo-password").await
    );
    assert_eq!(
        passed(&hammer(&gateway, "/api/any/", &[("authorization", &bearer)], 2).await),
        2
    );
    redis.stop();
    let response = client()
        .get(gateway.url("/api/any/"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    let (status, body): (u16, Value) = status_and_json(response).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "rate_limiter_unavailable");
    // A route without limits does not need the limiter.
    let response = client()
        .get(gateway.url("/api/public/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
