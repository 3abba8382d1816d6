//! One suite for every store: memory, and Redis on a private `redis-server`, a cluster of three
//! masters and a master found through three sentinels; and Redis over TLS.

use std::time::Duration;

use guichet::store::{
    ApiKey, FamilyRotation, MemoryStore, NewUser, RedisStore, RedisTarget, Rotation, Store,
    StoreError,
};

use crate::common::tls::{TestCa, Validity};
use crate::common::{
    cli, cli_with_env, eventually, free_port, GatewayConfig, RedisCluster, RedisSentinels,
    RedisServer,
};

const TTL: Duration = Duration::from_secs(60);

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.to_string(),
        email: format!("{name}@hackitech.example"),
        role: "student".to_string(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_string(),
    }
}

fn key(prefix: &str, name: &str) -> ApiKey {
    ApiKey {
        prefix: prefix.to_string(),
        name: name.to_string(),
        secret_hash: "ab".repeat(32),
        role: "instructor".to_string(),
        scopes: vec!["grades:write".to_string()],
        created: 1_700_000_000,
        expires: None,
        revoked: false,
    }
}

async fn users_are_found_by_username_or_email(store: &dyn Store) {
    let demo = store.add_user(new_user("demo")).await.unwrap();
    let other = store.add_user(new_user("other")).await.unwrap();
    assert_ne!(demo.id, other.id);
    assert!(demo.active);
    let by_name = store.user_by_login("demo").await.unwrap().unwrap();
    let by_email = store
        .user_by_login("Demo@Hackitech.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_name, demo);
    assert_eq!(by_email, demo);
    assert_eq!(
        store.user_by_id(other.id).await.unwrap().unwrap().username,
        "other"
    );
    assert!(store.user_by_login("nobody").await.unwrap().is_none());
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["demo", "other"]);
}

async fn a_taken_name_or_email_is_a_conflict(store: &dyn Store) {
    store.add_user(new_user("demo")).await.unwrap();
    let mut same_email = new_user("demo2");
    same_email.email = "DEMO@hackitech.example".to_string();
    assert!(matches!(
        store.add_user(same_email).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.add_user(new_user("demo")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.list_users().await.unwrap().len(), 1);
}

async fn updates_change_role_password_and_activity(store: &dyn Store) {
    let mut user = store.add_user(new_user("demo")).await.unwrap();
    user.role = "admin".to_string();
    user.active = false;
    user.password_hash = "$argon2id$new".to_string();
    user.username = "renamed".to_string();
    store.update_user(&user).await.unwrap();
    let stored = store.user_by_login("demo").await.unwrap().unwrap();
    assert_eq!(stored.role, "admin");
    assert!(!stored.active);
    assert_eq!(stored.password_hash, "$argon2id$new");
    assert_eq!(stored.username, "demo", "names do not change");
}

async fn api_keys_are_found_by_prefix_and_revoked(store: &dyn Store) {
    store.add_api_key(&key("gk_a", "grading")).await.unwrap();
    store.add_api_key(&key("gk_b", "analytics")).await.unwrap();
    assert!(matches!(
        store.add_api_key(&key("gk_a", "again")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.api_key("gk_a").await.unwrap().unwrap().name,
        "grading"
    );
    assert!(store.api_key("gk_zz").await.unwrap().is_none());
    assert!(store.revoke_api_key("gk_a").await.unwrap());
    assert!(!store.revoke_api_key("gk_zz").await.unwrap());
    assert!(store.api_key("gk_a").await.unwrap().unwrap().revoked);
    let names: Vec<String> = store
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["analytics", "grading"]);
}

async fn a_family_rotates_once_per_token_and_reuse_revokes_it(store: &dyn Store) {
    store.start_family("f1", "t1", TTL).await.unwrap();
    let f1 = FamilyRotation {
        family: "f1",
        presented: "t1",
        next: "t2",
        ttl: TTL,
    };
    assert_eq!(store.rotate_family(&f1).await.unwrap(), Rotation::Rotated);
    let t2_to_t3 = FamilyRotation {
        presented: "t2",
        next: "t3",
        ..f1
    };
    assert_eq!(
        store.rotate_family(&t2_to_t3).await.unwrap(),
        Rotation::Rotated
    );
    // t1 again: a stolen, already-rotated token. The family dies, t3 included.
    let t1_again = FamilyRotation { next: "t4", ..f1 };
    assert_eq!(
        store.rotate_family(&t1_again).await.unwrap(),
        Rotation::Refused
    );
    let t3_to_t5 = FamilyRotation {
        presented: "t3",
        next: "t5",
        ..f1
    };
    assert_eq!(
        store.rotate_family(&t3_to_t5).await.unwrap(),
        Rotation::Refused
    );
    let unknown = FamilyRotation {
        family: "unknown",
        presented: "x",
        next: "y",
        ttl: TTL,
    };
    assert_eq!(
        store.rotate_family(&unknown).await.unwrap(),
        Rotation::Refused
    );

    store.start_family("f2", "u1", TTL).await.unwrap();
    store.revoke_family("f2", TTL).await.unwrap();
    let revoked = FamilyRotation {
        family: "f2",
        presented: "u1",
        next: "u2",
        ttl: TTL,
    };
    assert_eq!(
        store.rotate_family(&revoked).await.unwrap(),
        Rotation::Refused
    );
}

async fn run_suite(make: impl AsyncFnMut() -> (Box<dyn Store>, Option<RedisServer>)) {
    let mut make = make;
    let (store, _redis) = make().await;
    users_are_found_by_username_or_email(store.as_ref()).await;
    let (store, _redis) = make().await;
    a_taken_name_or_email_is_a_conflict(store.as_ref()).await;
    let (store, _redis) = make().await;
    updates_change_role_password_and_activity(store.as_ref()).await;
    let (store, _redis) = make().await;
    api_keys_are_found_by_prefix_and_revoked(store.as_ref()).await;
    let (store, _redis) = make().await;
    a_family_rotates_once_per_token_and_reuse_revokes_it(store.as_ref()).await;
}

#[tokio::test]
async fn the_memory_store_passes_the_store_suite() {
    run_suite(async || (Box::new(MemoryStore::new()) as Box<dyn Store>, None)).await;
}

#[tokio::test]
async fn the_redis_store_passes_the_store_suite() {
    run_suite(async || {
        let redis = RedisServer::start().await;
        let store =
            RedisStore::new(RedisTarget::node(&redis.url()), Duration::from_secs(2)).unwrap();
        (Box::new(store) as Box<dyn Store>, Some(redis))
    })
    .await;
}

#[tokio::test]
async fn a_redis_cluster_passes_the_store_suite() {
    let cluster = RedisCluster::start(0).await;
    let target = cluster.target();
    run_suite(async || {
        for node in &cluster.nodes {
            node.command(&["FLUSHALL"]).await;
        }
        let store = RedisStore::new(target.clone(), Duration::from_secs(2)).unwrap();
        (Box::new(store) as Box<dyn Store>, None)
    })
    .await;
}

#[tokio::test]
async fn a_sentinel_master_passes_the_store_suite() {
    let sentinels = RedisSentinels::start().await;
    let target = sentinels.target();
    run_suite(async || {
        sentinels.master.command(&["FLUSHALL"]).await;
        let store = RedisStore::new(target.clone(), Duration::from_secs(2)).unwrap();
        (Box::new(store) as Box<dyn Store>, None)
    })
    .await;
}

#[tokio::test]
async fn a_redis_store_that_is_down_says_unavailable_within_its_timeout() {
    let redis = RedisServer::start().await;
    let store =
        RedisStore::new(RedisTarget::node(&redis.url()), Duration::from_millis(300)).unwrap();
    store.add_user(new_user("demo")).await.unwrap();
    drop(redis);
    let started = std::time::Instant::now();
    let result = store.user_by_login("demo").await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// `rediss://`: the store reaches a `redis-server` that only speaks TLS, verifying its
/// certificate against the CA that `SSL_CERT_FILE` names, and refuses it without that CA.
#[tokio::test]
async fn a_redis_over_tls_is_reached_with_its_certificate_verified() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Redis test CA");
    ca.root.write(dir.path(), "ca");
    let validity = Validity {
        from_days: -1,
        to_days: 30,
    };
    ca.issue(&["localhost"], validity)
        .write(dir.path(), "redis");
    let port = free_port().port();
    let file = |name: &str| dir.path().join(name).display().to_string();
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            &file("redis.pem"),
            "--tls-key-file",
            &file("redis.key"),
        ])
        .args([
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            "no",
        ])
        .args(["--save", "", "--appendonly", "no", "--dir", &file("")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    eventually("the TLS port", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    let (_config_dir, config) = GatewayConfig::new(&format!(
        "store: {{ backend: redis, url: \"rediss://localhost:{port}/0\" }}\n"
    ))
    .write();
    let add = [
        "users",
        "add",
        "--username",
        "ada",
        "--email",
        "ada@hackitech.example",
        "--role",
        "student",
    ];
    let trusted = [("SSL_CERT_FILE", file("ca.pem"))];
    let trusted: Vec<(&str, &str)> = trusted.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = cli_with_env(&add, &config, "a-password\n", &trusted);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed = cli_with_env(&["users", "list"], &config, "", &trusted);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("ada"));
    // Without the CA the server's certificate is not trusted, and nothing is written.
    let untrusted = cli(&["users", "list"], &config, "");
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success());
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
    let _ = server.kill();
    let _ = server.wait();
}
