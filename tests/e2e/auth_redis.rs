//! Authentication with the Redis store: users and keys managed with the CLI, several replicas
//! sharing one `redis-server`, made-up keys that never reach Redis, and what happens when Redis
//! goes away.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::auth::{jwt_section, routes};
use crate::common::{cli, client, status_and_json, Gateway, GatewayConfig, RedisServer, Upstream};

/// A config folder for the Redis store; returns the folder and gateway.yaml's path.
fn redis_config(
    redis: &RedisServer,
    upstream: &Upstream,
) -> (tempfile::TempDir, std::path::PathBuf) {
    redis_config_with_ttl(redis, upstream, "30s")
}

fn redis_config_with_ttl(
    redis: &RedisServer,
    upstream: &Upstream,
    ttl: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    GatewayConfig::new(&format!(
        "include: [routes/*.yaml]\nstore: {{ backend: redis, url: \"{}\", api_key_cache_ttl: {ttl} }}\n{}",
        redis.url(),
        jwt_section()
    ))
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
    .file("routes/app.yaml", &routes(upstream))
    .write()
}

fn run(args: &[&str], config: &Path, stdin: &str) -> String {
    let output = cli(args, config, stdin);
    assert!(
        output.status.success(),
        "guichet {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Creates an instructor key with the grades:write scope and returns it (the first line printed).
fn create_key(config: &Path, name: &str) -> String {
    let args = [
        "keys",
        "create",
        "--name",
        name,
        "--role",
        "instructor",
        "--scope",
        "grades:write",
    ];
    run(&args, config, "")
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string()
}

/// A second replica on the same configuration folder.
async fn replica(config: &Path) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    Gateway::start_in(dir, config).await
}

async fn login(gateway: &Gateway, username: &str, password: &str) -> (u16, Value) {
    let response = gateway.login_request(username, password).send().await;
    status_and_json(response.unwrap()).await
}

/// A well-formed key that no store holds, different for every `n`.
fn unknown_key(n: usize) -> String {
    format!("gk_{n:010}.made-up-secret-{n}")
}

/// Waits until the gateway has read the prefixes of every key in Redis.
async fn wait_until_indexed(gateway: &Gateway) {
    gateway
        .wait_for_log(|l| l["message"] == "API key index loaded")
        .await;
}

/// GETs `url` with `key` and returns the status and the JSON body.
async fn get_with_key(client: &reqwest::Client, url: String, key: String) -> (u16, Value) {
    let response = client
        .get(url)
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn status_with_key(gateway: &Gateway, key: &str) -> u16 {
    client()
        .get(gateway.url("/api/grades/"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn users_managed_with_the_cli_log_in_on_every_replica() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start("app").await;
    let (_dir, config) = redis_config(&redis, &upstream);
    let added = run(
        &[
            "users",
            "add",
            "--username",
            "ada",
            "--email",
            "ada@hackitech.example",
            "--role",
            "student",
        ],
        &config,
        "first-password\n",
    );
    assert!(added.contains("added user 1 (ada, student)"), "{added}");
    let first = replica(&config).await;
    let second = replica(&config).await;
    for gateway in [&first, &second] {
        let (status, body) = login(gateway, "ada@hackitech.example", "first-password").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["role"], "student");
    }
    // A refresh token issued by one replica rotates on the other.
    let (_, body) = login(&first, "ada", "first-password").await;
    let response = client()
        .post(second.url("/api/auth/token/refresh/"))
        .json(&json!({"refresh": body["refresh"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    run(
        &["users", "set-password", "ada"],
        &config,
        "second-password\n",
    );
    run(&["users", "set-role", "ada", "instructor"], &config, "");
    let (status, body) = login(&second, "ada", "second-password").await;
    assert_eq!((status, body["role"].as_str()), (200, Some("instructor")));
    assert_eq!(login(&first, "ada", "first-password").await.0, 401);
    let listed = run(&["users", "list"], &config, "");
    assert!(
        listed.contains("ada") && listed.contains("instructor"),
        "{listed}"
    );
    run(&["users", "disable", "ada"], &config, "");
    assert_eq!(login(&first, "ada", "second-password").await.0, 401);

    let refused = cli(
        &[
            "users",
            "add",
            "--username",
            "bob",
            "--email",
            "b@x",
            "--role",
            "pope",
        ],
        &config,
        "pw\n",
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("`pope` is not a role"));
}

#[tokio::test]
async fn a_revoked_key_is_refused_by_every_replica_within_a_second() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start("app").await;
    let (_dir, config) = redis_config(&redis, &upstream);
    let key = create_key(&config, "grader");
    let first = replica(&config).await;
    let second = replica(&config).await;
    for gateway in [&first, &second] {
        assert_eq!(
            status_with_key(gateway, &key).await,
            200,
            "cached as valid now"
        );
    }
    let listed = run(&["keys", "list"], &config, "");
    assert!(
        listed.contains("grader") && !listed.contains(&key),
        "secrets are never listed: {listed}"
    );

    let prefix = key.split('.').next().unwrap();
    run(&["keys", "revoke", prefix], &config, "");
    let revoked_at = Instant::now();
    for gateway in [&first, &second] {
        loop {
            if status_with_key(gateway, &key).await == 401 {
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "a replica still accepts the revoked key after a second"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn when_redis_goes_away_jwts_and_cached_keys_keep_working() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start("app").await;
    let (_dir, config) = redis_config(&redis, &upstream);
    let cached = create_key(&config, "cached");
    let uncached = create_key(&config, "uncached");
    run(
        &[
            "users",
            "add",
            "--username",
            "ada",
            "--email",
            "ada@x.example",
            "--role",
            "student",
        ],
        &config,
        "pw-of-ada\n",
    );
    let gateway = replica(&config).await;
    let (_, body) = login(&gateway, "ada", "pw-of-ada").await;
    let access = body["access"].as_str().unwrap().to_string();
    assert_eq!(status_with_key(&gateway, &cached).await, 200);

    drop(redis);

    assert_eq!(
        status_with_key(&gateway, &cached).await,
        200,
        "a cached key keeps working"
    );
    let response = client()
        .get(gateway.url("/api/grades/"))
        .header("x-api-key", &uncached)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        503,
        "never 401/403 for a key that could not be checked"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "auth_store_unavailable");
    let response = client()
        .get(gateway.url("/api/courses/"))
        .header("authorization", format!("Bearer {access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "JWT routes do not touch the store");
    let (status, body) = login(&gateway, "ada", "pw-of-ada").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("auth_store_unavailable"))
    );
    let ready = client()
        .get(gateway.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["store"]["ok"], false);
    let ready = client()
        .get(gateway.admin_url("/readyz?exclude=store"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "JWT routes still serve: the replica stays in rotation"
    );
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["store"]["ok"], false, "still reported");
}

#[tokio::test]
async fn made_up_keys_are_refused_without_asking_redis() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start("app").await;
    let (_dir, config) = redis_config(&redis, &upstream);
    let key = create_key(&config, "grader");
    let gateway = replica(&config).await;
    wait_until_indexed(&gateway).await;
    assert_eq!(status_with_key(&gateway, &key).await, 200);
    let lookups = redis.calls("get").await;
    assert!(lookups > 0, "the valid key was looked up with GET");

    let client = client();
    for batch in 0..40 {
        let mut requests = JoinSet::new();
        for n in batch * 50..(batch + 1) * 50 {
            let (client, key) = (client.clone(), unknown_key(n));
            let (keyed, public) = (gateway.url("/api/grades/"), gateway.url("/api/public/"));
            requests.spawn(async move {
                let keyed = get_with_key(&client, keyed, key.clone()).await;
                let public = get_with_key(&client, public, key).await;
                (keyed, public)
            });
        }
        while let Some(answers) = requests.join_next().await {
            let ((status, body), (public_status, echo)) = answers.unwrap();
            assert_eq!(
                (status, body["code"].as_str()),
                (401, Some("authentication_failed")),
                "{body}"
            );
            assert_eq!(public_status, 200, "{echo}");
            assert_eq!(echo["headers"]["x-auth-method"], json!(["anonymous"]));
        }
    }
    assert_eq!(
        redis.calls("get").await,
        lookups,
        "none of the 2,000 made-up keys was looked up in Redis"
    );
    assert_eq!(status_with_key(&gateway, &key).await, 200);
}

#[tokio::test]
async fn a_key_created_while_gateways_run_is_accepted_by_every_one_within_a_second() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start("app").await;
    let (_dir, config) = redis_config(&redis, &upstream);
    let first = replica(&config).await;
    let second = replica(&config).await;
    for gateway in [&first, &second] {
        wait_until_indexed(gateway).await;
        assert_eq!(status_with_key(gateway, &unknown_key(1)).await, 401);
    }

    let key = create_key(&config, "late");
    let created_at = Instant::now();
    for gateway in [&first, &second] {
        while status_with_key(gateway, &key).await != 200 {
            assert!(
                created_at.elapsed() < Duration::from_secs(2),
                "a gateway still refuses the new key after two seconds"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let prefix = key.split('.').next().unwrap();
    run(&["keys", "revoke", prefix], &config, "");
    let revoked_at = Instant::now();
    for gateway in [&first, &second] {
        while status_with_key(gateway, &key).await != 401 {
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "a replica still accepts the revoked key after a second"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn while_redis_is_down_stale_keys_work_and_each_warning_comes_once_per_ten_seconds() {
    let mut redis = RedisServer::start().await;
    let upstream = Upstream::start("app").await;
    // A short TTL, so the cached key is stale (and Redis asked) by the time it is used again.
    let (_dir, config) = redis_config_with_ttl(&redis, &upstream, "1s");
    let cached = create_key(&config, "cached");
    let uncached = create_key(&config, "uncached");
    let gateway = replica(&config).await;
    wait_until_indexed(&gateway).await;
    assert_eq!(status_with_key(&gateway, &cached).await, 200);

    redis.stop();
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let client = client();
    for n in 0..50 {
        let (status, body) =
            get_with_key(&client, gateway.url("/api/grades/"), cached.clone()).await;
        assert_eq!(status, 200, "a cached key keeps working: {body}");
        let (status, body) =
            get_with_key(&client, gateway.url("/api/grades/"), uncached.clone()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("auth_store_unavailable")),
            "never 401/403 for a key that could not be checked"
        );
        let (status, body) =
            get_with_key(&client, gateway.url("/api/grades/"), unknown_key(n)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("authentication_failed")),
            "the index knows this prefix does not exist"
        );
    }
    gateway
        .wait_for_log(|l| l["message"] == "API key store unavailable; using the cached key")
        .await;

    // At most one line of a kind per started ten seconds of the outage.
    let allowed = 1 + down_at.elapsed().as_secs() / 10;
    let mut kinds: HashMap<String, u64> = HashMap::new();
    for line in gateway.logs().into_iter().filter(|l| l["level"] == "WARN") {
        let kind = format!("{} {}", line["message"], line["op"]);
        *kinds.entry(kind).or_default() += 1;
    }
    assert!(
        kinds.len() >= 2,
        "the store failures were logged: {kinds:?}"
    );
    for (kind, lines) in &kinds {
        assert!(
            lines <= &allowed,
            "{lines} lines of `{kind}` (at most {allowed})"
        );
    }
}

#[tokio::test]
async fn a_stale_key_used_by_many_requests_at_once_is_asked_for_once() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start("app").await;
    let (_dir, config) = redis_config_with_ttl(&redis, &upstream, "1s");
    let key = create_key(&config, "busy");
    let gateway = replica(&config).await;
    wait_until_indexed(&gateway).await;
    assert_eq!(status_with_key(&gateway, &key).await, 200);
    // Past the TTL, the cached key is stale: the next requests all want it asked for again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = redis.calls("get").await;
    // Redis busy for 200 ms (within the store's timeout) from just before the requests: the refresh waits behind it, and the
    // other requests come while it waits.
    let busy = "local start = redis.call('TIME') repeat local now = redis.call('TIME') \
                until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > 200000 return 1";
    let client = client();
    let requests = async {
        // Once the script runs.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut requests = JoinSet::new();
        for _ in 0..64 {
            let (client, url, key) = (client.clone(), gateway.url("/api/grades/"), key.clone());
            requests.spawn(async move { get_with_key(&client, url, key).await.0 });
        }
        while let Some(status) = requests.join_next().await {
            assert_eq!(status.unwrap(), 200);
        }
    };
    let script = ["EVAL", busy, "0"];
    let (script, ()) = tokio::join!(redis.command(&script), requests);
    assert_eq!(script.as_deref(), Some(":1"));
    let asked = redis.calls("get").await - before;
    assert!(
        (1..=2).contains(&asked),
        "64 requests with a stale key asked Redis {asked} times"
    );
}
