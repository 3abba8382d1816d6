//! Redis failing over under load: the sentinels' master killed, and a cluster master killed,
//! while two gateways serve a JWT route, a cached API key, keys they have never seen, and a
//! shared limit. JWT routes and the cached key never fail; unseen keys get 503
//! `auth_store_unavailable` only while the switch lasts; the limit is shared again after it;
//! and the outage costs a handful of warnings, not one per request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guichet::store::{ApiKey, RedisStore, RedisTarget, Store};
use serde_json::Value;

use crate::auth::{jwt_section, routes};
use crate::common::{
    add_demo_user, cli_with_env, client, Gateway, GatewayConfig, RedisCluster, RedisSentinels,
    RedisTls, SentinelAuth, Upstream,
};

/// Keys the gateways have never been asked for: one per request while the load runs.
const UNSEEN_KEYS: usize = 400;

/// A pause between the requests of each kind, so the load lasts through the switch.
const PACE: Duration = Duration::from_millis(20);

fn config(store: &str, upstream: &Upstream) -> GatewayConfig {
    let counted = format!(
        "{}  - path: /api/counted/\n    auth: none\n    rate_limit: 1/hour\n",
        routes(upstream)
    );
    GatewayConfig::new(&format!(
        "include: [routes/*.yaml]\ntrusted_proxies: [127.0.0.1/32]\n{store}{}\
         rate_limits: {{ user: 100000/hour, api_key: 100000/hour, on_store_error: allow }}\n",
        jwt_section()
    ))
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
    .file("routes/app.yaml", &counted)
}

/// Stores a key for the grades route directly and returns the whole key.
async fn add_key(store: &RedisStore, n: usize) -> (String, String) {
    let (whole, prefix, hash) = guichet::auth::api_key::generate();
    let key = ApiKey {
        prefix: prefix.clone(),
        name: format!("integration-{n}"),
        secret_hash: hash,
        role: "instructor".to_string(),
        scopes: vec!["grades:write".to_string()],
        created: 1_700_000_000,
        expires: None,
        revoked: false,
    };
    store.add_api_key(&key).await.unwrap();
    (whole, prefix)
}

/// One answer: when its request was sent and when the answer came, its status and its code.
#[derive(Clone, Debug, PartialEq)]
struct Answer {
    sent: Instant,
    answered: Instant,
    status: u16,
    code: String,
}

/// What one kind of request saw. Both times count: a request on its way when the master dies
/// may fail although it was sent just before, and one sent during the switch may be answered
/// after it, once its call to the dead node timed out.
#[derive(Default)]
struct Seen(Mutex<Vec<Answer>>);

impl Seen {
    fn record(&self, sent: Instant, status: u16, body: &Value) {
        let code = body["code"].as_str().unwrap_or("").to_string();
        self.0.lock().unwrap().push(Answer {
            sent,
            answered: Instant::now(),
            status,
            code,
        });
    }

    fn failures(&self) -> Vec<Answer> {
        let seen = self.0.lock().unwrap();
        seen.iter().filter(|a| a.status != 200).cloned().collect()
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Seconds from `kill` to `at`, negative before it.
fn since(kill: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(kill).as_secs_f64()
        - kill.saturating_duration_since(at).as_secs_f64()
}

/// Sends `request(n)` every [`PACE`] until `stop`, recording each answer with its times.
fn load<F>(stop: Arc<AtomicBool>, seen: Arc<Seen>, request: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(usize) -> reqwest::RequestBuilder + Send + 'static,
{
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let response = request(n).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            seen.record(sent, status, &body);
            n += 1;
            tokio::time::sleep(PACE).await;
        }
    })
}

/// Client addresses for probing the shared limit, each used once.
fn addresses() -> impl Iterator<Item = String> {
    (0..4000).map(|n| format!("198.51.{}.{}", n / 250, n % 250 + 1))
}

/// Whether the two gateways count one limit together: a new client passes on the first and is
/// refused on the second.
async fn limit_shared(first: &Gateway, second: &Gateway, address: &str) -> bool {
    let mut statuses = Vec::new();
    for gateway in [first, second] {
        let response = client()
            .get(gateway.url("/api/counted/"))
            .header("x-forwarded-for", address)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    statuses == [200, 429]
}

/// Runs the load, calls `kill`, and checks what each kind of request saw. `probes` are client
/// addresses whose limits live where the kill strikes. Returns `/readyz`'s `store` afterwards.
async fn failover_under_load(
    store: &str,
    target: RedisTarget,
    probes: Vec<String>,
    kill: impl FnOnce(),
) -> Value {
    let mut probes = probes.into_iter();
    let upstream = Upstream::start("app").await;
    let (_dir, path) = config(store, &upstream).write();
    add_demo_user(&path);
    let first = Gateway::start_in(tempfile::tempdir().unwrap(), &path).await;
    let second = Gateway::start_in(tempfile::tempdir().unwrap(), &path).await;
    let bearer = format!(
        "Bearer {}",
        first.access_token("demo", "demo-password").await
    );

    let keys = RedisStore::new(target, Duration::from_secs(2)).unwrap();
    let (cached, _) = add_key(&keys, 0).await;
    let mut unseen = Vec::new();
    for n in 1..=UNSEEN_KEYS {
        unseen.push(add_key(&keys, n).await.0);
    }
    let last = unseen
        .last()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    for gateway in [&first, &second] {
        gateway.wait_for_log(|l| l["prefix"] == last).await;
        let response = client()
            .get(gateway.url("/api/grades/"))
            .header("x-api-key", &cached)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the cached key is valid");
    }
    let probe = probes.next().unwrap();
    assert!(limit_shared(&first, &second, &probe).await, "shared before");

    let stop = Arc::new(AtomicBool::new(false));
    let (jwt, cached_seen, unseen_seen) = (
        Arc::new(Seen::default()),
        Arc::new(Seen::default()),
        Arc::new(Seen::default()),
    );
    let urls = [first.url("/api/courses/"), second.url("/api/courses/")];
    let tasks = [
        load(stop.clone(), jwt.clone(), move |n| {
            client().get(&urls[n % 2]).header("authorization", &bearer)
        }),
        load(stop.clone(), cached_seen.clone(), {
            let urls = [first.url("/api/grades/"), second.url("/api/grades/")];
            move |n| client().get(&urls[n % 2]).header("x-api-key", &cached)
        }),
        load(stop.clone(), unseen_seen.clone(), {
            let urls = [first.url("/api/grades/"), second.url("/api/grades/")];
            move |n| {
                let key = &unseen[n % unseen.len()];
                client().get(&urls[n % 2]).header("x-api-key", key)
            }
        }),
    ];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kill_time = Instant::now();
    kill();

    // The limit is shared again once both gateways reach the new master.
    let deadline = kill_time + Duration::from_secs(30);
    loop {
        let probe = probes.next().expect("enough probe addresses");
        if limit_shared(&first, &second, &probe).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the limit was never shared again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shared_after = kill_time.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    assert_eq!(jwt.failures(), [], "JWT requests failed");
    assert_eq!(
        cached_seen.failures(),
        [],
        "requests with a cached key failed"
    );
    let refused = unseen_seen.failures();
    let warnings = || -> Vec<Value> {
        [&first, &second]
            .iter()
            .flat_map(|gateway| gateway.logs())
            .filter(|l| l["level"] == "WARN")
            .collect()
    };
    for answer in &refused {
        let (sent, answered) = (
            since(kill_time, answer.sent),
            since(kill_time, answer.answered),
        );
        assert_eq!(
            (answer.status, answer.code.as_str()),
            (503, "auth_store_unavailable"),
            "an unseen key sent at {sent:.2}s"
        );
        // In the switch: still on its way when the master died, and sent before the limits
        // were shared again.
        assert!(
            answered >= 0.0 && sent <= shared_after,
            "503 for a request sent at {sent:.2}s and answered at {answered:.2}s, outside the switch (limits shared again at {shared_after:.2}s); the gateways' warnings:\n{:#?}",
            warnings()
        );
    }
    let after: Vec<_> = unseen_seen
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|a| since(kill_time, a.sent) > shared_after)
        .map(|a| a.status)
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|s| *s == 200),
        "{after:?}"
    );
    // One warning per kind of failure every ten seconds, not one per request.
    for gateway in [&first, &second] {
        let warnings = gateway
            .logs()
            .iter()
            .filter(|l| l["level"] == "WARN")
            .count();
        assert!(
            warnings <= 12,
            "{warnings} warnings:\n{:#?}",
            gateway.logs()
        );
    }
    eprintln!(
        "failover: {} JWT, {} cached-key and {} unseen-key requests; {} unseen refused with 503; limits shared again after {shared_after:.2} s",
        jwt.count(),
        cached_seen.count(),
        unseen_seen.count(),
        refused.len()
    );
    let ready = crate::common::get_json(first.admin_url("/readyz")).await;
    assert_eq!(ready["store"]["ok"], true, "{ready}");
    ready["store"].clone()
}

#[tokio::test]
async fn the_gateway_follows_a_sentinel_failover_under_load() {
    let mut redis = RedisSentinels::start().await;
    let store = redis.store_yaml("api_key_cache_ttl: 1s");
    let target = redis.target();
    let (old, new) = (redis.master.port, redis.replica.port);
    let probes = addresses().collect();
    let ready = failover_under_load(&store, target, probes, || redis.master.kill()).await;
    redis.wait_for_master(new).await;
    assert_ne!(old, new);
    // `/readyz` names the master in use: the former replica.
    assert_eq!(ready["backend"], "redis");
    assert_eq!(ready["node"], format!("127.0.0.1:{new}"), "{ready}");
    let described = ready["redis"].as_str().unwrap();
    assert!(
        described.starts_with("master `guichet` of the sentinels 127.0.0.1:"),
        "{ready}"
    );
}

#[tokio::test]
async fn the_gateway_rides_out_a_cluster_master_failing_over_under_load() {
    let mut cluster = RedisCluster::start(1).await;
    let store = cluster.store_yaml("api_key_cache_ttl: 1s");
    let target = cluster.target();
    // The master of the API keys' slot: every unseen key's lookup goes to it.
    let master = cluster.master_of(&guichet::store::keys::api_keys()).await;
    // Clients whose limits live on that master too (a limit key's tag is `{ip:<address>}`).
    let mut probes = Vec::new();
    for address in addresses() {
        if cluster.master_of(&format!("{{ip:{address}}}")).await == master {
            probes.push(address);
        }
    }
    let ready = failover_under_load(&store, target, probes, || cluster.nodes[master].kill()).await;
    let described = ready["redis"].as_str().unwrap();
    assert!(
        described.starts_with("the cluster seeded by 127.0.0.1:"),
        "{ready}"
    );
    cluster.wait_until_healthy(&[master]).await;
}

/// Creates an API key for the grades route with `guichet keys create`, as an operator does, with
/// the store's secrets in `env`; returns the key.
fn create_key(config: &std::path::Path, name: &str, env: &[(&str, &str)]) -> String {
    let args = ["keys", "create", "--name", name, "--role", "instructor"];
    let output = cli_with_env(
        &[&args[..], &["--scope", "grades:write"]].concat(),
        config,
        "",
        env,
    );
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines().next().unwrap().trim().to_string()
}

/// Creates a key with the CLI and waits until `gateway` serves it on the grades route; returns
/// the key. While the gateway follows a switch it may answer 503 (the store cannot be asked) or
/// 401 (the key is not yet in its index: it subscribes again and reads the index within about
/// a second).
async fn serves_a_new_key(gateway: &Gateway, env: &[(&str, &str)]) -> String {
    let key = create_key(&gateway.config_path(), "integration", env);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = client()
            .get(gateway.url("/api/grades/"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => return key,
            401 | 503 => assert!(Instant::now() < deadline, "the key was never served"),
            status => panic!(
                "{status}: {}\n{:#?}",
                response.text().await.unwrap(),
                gateway.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Passwords everywhere, as in production: the data nodes admit only an ACL user, and the
/// sentinels ask for their own password. The gateway and the CLI log in with `username`,
/// `password_env` and `sentinel.password_env`, find the new master after a failover with them,
/// and a wrong sentinel password leaves the store unreachable (and `/readyz` says so).
#[tokio::test]
async fn the_gateway_logs_in_to_password_protected_sentinels_and_their_master() {
    let auth = SentinelAuth {
        username: "guichet",
        password: "data-nodes-password-7f3a",
        sentinel_password: "sentinels-password-91c2",
    };
    let mut redis = RedisSentinels::start_with(Some(&auth), None).await;
    let upstream = Upstream::start("app").await;
    let store = redis.store_yaml_with(
        ", password_env: GUICHET_TEST_SENTINEL_PASSWORD",
        "username: guichet, password_env: GUICHET_TEST_REDIS_PASSWORD, api_key_cache_ttl: 1s",
    );
    let env = [
        ("GUICHET_TEST_REDIS_PASSWORD", auth.password),
        ("GUICHET_TEST_SENTINEL_PASSWORD", auth.sentinel_password),
    ];
    let gateway = Gateway::start_with_env(config(&store, &upstream), &env).await;
    let ready = crate::common::get_json(gateway.admin_url("/readyz")).await;
    assert_eq!(ready["store"]["ok"], true, "{ready}");
    assert_eq!(
        ready["store"]["node"],
        format!("127.0.0.1:{}", redis.master.port)
    );
    serves_a_new_key(&gateway, &env).await;

    let new_master = redis.replica.port;
    redis.master.kill();
    redis.wait_for_master(new_master).await;
    // A key created after the switch is stored on the new master, found through the sentinels
    // with their password.
    let after = serves_a_new_key(&gateway, &env).await;
    ready_on(&gateway, format!("127.0.0.1:{new_master}")).await;

    let wrong = [
        ("GUICHET_TEST_REDIS_PASSWORD", auth.password),
        (
            "GUICHET_TEST_SENTINEL_PASSWORD",
            "not-the-sentinels-password",
        ),
    ];
    let locked_out = Gateway::start_with_env(config(&store, &upstream), &wrong).await;
    let ready = crate::common::get_json(locked_out.admin_url("/readyz")).await;
    assert_eq!(ready["store"]["ok"], false, "{ready}");
    let response = client()
        .get(locked_out.url("/api/grades/"))
        .header("x-api-key", after)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "auth_store_unavailable", "{body}");
}

/// Waits up to 5 s for `/readyz` to name `node` as the store's, as a readiness probe polls it:
/// a call that failed late in a switch keeps the gateway not ready for half a second.
async fn ready_on(gateway: &Gateway, node: String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = crate::common::get_json(gateway.admin_url("/readyz")).await;
        if ready["store"]["node"] == node.as_str() {
            assert_eq!(ready["store"]["ok"], true, "{ready}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never named {node}: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A gateway on `store` whose process does not trust the test's CA: `/readyz` says the store is
/// unreachable.
async fn reaches_nothing_without_the_ca(store: &str, upstream: &Upstream) {
    let untrusting = Gateway::start(config(store, upstream)).await;
    let ready = crate::common::get_json(untrusting.admin_url("/readyz")).await;
    assert_eq!(ready["store"]["ok"], false, "{ready}");
}

/// `rediss://` sentinels: the gateway asks them over TLS, reaches the master over TLS, verifies
/// both against the CA that `SSL_CERT_FILE` names, follows a failover to the replica over TLS,
/// and reaches nothing without that CA.
#[tokio::test]
async fn the_gateway_reaches_sentinels_and_their_master_over_tls() {
    let tls = RedisTls::new();
    let mut redis = RedisSentinels::start_with(None, Some(&tls)).await;
    let upstream = Upstream::start("app").await;
    let store = redis.store_yaml("api_key_cache_ttl: 1s");
    assert!(store.contains("rediss://"), "{store}");
    let ca = tls.ca_file();
    let env = [("SSL_CERT_FILE", ca.as_str())];
    let gateway = Gateway::start_with_env(config(&store, &upstream), &env).await;
    serves_a_new_key(&gateway, &env).await;
    let ready = crate::common::get_json(gateway.admin_url("/readyz")).await;
    assert_eq!(ready["store"]["ok"], true, "{ready}");
    let master = redis.master.served_port();
    assert_eq!(ready["store"]["node"], format!("127.0.0.1:{master}"));

    let new_master = redis.replica.served_port();
    redis.master.kill();
    redis.wait_for_master(new_master).await;
    serves_a_new_key(&gateway, &env).await;
    ready_on(&gateway, format!("127.0.0.1:{new_master}")).await;

    reaches_nothing_without_the_ca(&store, &upstream).await;
}

/// `rediss://` cluster nodes: the gateway reads the map, stores and finds keys, and keeps a
/// limit, all over TLS with the certificates verified.
#[tokio::test]
async fn the_gateway_reaches_a_cluster_over_tls() {
    let tls = RedisTls::new();
    let cluster = RedisCluster::start_with(0, Some(&tls)).await;
    let upstream = Upstream::start("app").await;
    let store = cluster.store_yaml("");
    assert!(store.contains("rediss://"), "{store}");
    let ca = tls.ca_file();
    let env = [("SSL_CERT_FILE", ca.as_str())];
    let gateway = Gateway::start_with_env(config(&store, &upstream), &env).await;
    serves_a_new_key(&gateway, &env).await;
    let second = Gateway::start_with_env(config(&store, &upstream), &env).await;
    assert!(limit_shared(&gateway, &second, "198.51.100.7").await);
    let ready = crate::common::get_json(gateway.admin_url("/readyz")).await;
    assert_eq!(ready["store"]["ok"], true, "{ready}");

    reaches_nothing_without_the_ca(&store, &upstream).await;
}
