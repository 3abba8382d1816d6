//! Authentication with the Redis store: users and keys managed with the CLI, several replicas
//! sharing one `redis-server`, and what happens when Redis goes away.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth::{jwt_section, routes};
use crate::common::{cli, client, Gateway, GatewayConfig, RedisServer, Upstream};

/// A config folder for the Redis store; returns the folder and gateway.yaml's path.
fn redis_config(
    redis: &RedisServer,
    upstream: &Upstream,
) -> (tempfile::TempDir, std::path::PathBuf) {
    GatewayConfig::new(&format!(
        "include: [routes/*.yaml]\nstore: {{ backend: redis, url: \"{}\", api_key_cache_ttl: 30s }}\n{}",
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
    let response = client()
        .post(gateway.url("/api/auth/token/"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
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
}
