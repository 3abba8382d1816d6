//! Moving from the Django app without logging anyone out: tokens made by the real
//! djangorestframework-simplejwt (`tests/tokens/simplejwt_tokens.py`) accepted on routes while
//! `jwt.legacy_simplejwt` is open, a legacy refresh token exchanged once for a Guichet pair (in
//! the memory store and across two replicas sharing Redis), and both refused after the window.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::auth::{jwt_section, routes, seed};
use crate::common::{
    check, cli_with_env, client, status_and_json, Gateway, GatewayConfig, RedisServer, Upstream,
};

const DJANGO_SECRET: &str = "django-insecure-k3y-0f-th3-0ld-app-0123456789abcdef";

/// A pair simplejwt makes for `user_id` with `secret`, with simplejwt's default lifetimes.
fn simplejwt_pair(secret: &str, user_id: u64) -> (String, String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/tokens/simplejwt_tokens.py"
    );
    let output = std::process::Command::new("python3")
        .args([
            script,
            "--secret",
            secret,
            "--user-id",
            &user_id.to_string(),
        ])
        .output()
        .expect("python3 runs (bash deploy/setup.sh installs djangorestframework-simplejwt)");
    assert!(
        output.status.success(),
        "simplejwt_tokens.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pair: Value = serde_json::from_slice(&output.stdout).unwrap();
    let token = |name: &str| pair[name].as_str().unwrap().to_string();
    (token("access"), token("refresh"))
}

fn legacy_section(accept_until: &str) -> String {
    jwt_section().replace(
        "  leeway: 5s\n",
        &format!(
            "  leeway: 5s\n  legacy_simplejwt: {{ secret_env: DJANGO_SECRET_KEY, accept_until: {accept_until} }}\n"
        ),
    )
}

fn legacy_config(upstream: &Upstream, accept_until: &str) -> GatewayConfig {
    GatewayConfig::new(&format!(
        "include: [routes/*.yaml]\n{}{}",
        legacy_section(accept_until),
        seed()
    ))
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
    .file("routes/app.yaml", &routes(upstream))
}

async fn start(upstream: &Upstream, accept_until: &str) -> Gateway {
    let env = [("DJANGO_SECRET_KEY", DJANGO_SECRET)];
    Gateway::start_with_env(legacy_config(upstream, accept_until), &env).await
}

async fn get(gateway: &Gateway, path: &str, token: &str) -> (u16, Value) {
    let response = client()
        .get(gateway.url(path))
        .bearer_auth(token)
        .header("x-user-issuer", "https://spoofed.example")
        .send()
        .await
        .unwrap();
    status_and_json(response).await
}

async fn exchange(gateway: &Gateway, refresh: &str) -> (u16, Value) {
    let response = client()
        .post(gateway.url("/api/auth/token/refresh/"))
        .json(&json!({"refresh": refresh}))
        .send()
        .await
        .unwrap();
    status_and_json(response).await
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn legacy_access_tokens_pass_as_the_stored_user_and_forgeries_do_not() {
    let upstream = Upstream::start("app").await;
    let gateway = start(&upstream, "2099-01-01T00:00:00Z").await;
    let (access, _) = simplejwt_pair(DJANGO_SECRET, 1);
    assert!(claims_of(&access).get("iss").is_none(), "a Django token");

    let (status, echo) = get(&gateway, "/api/courses/", &access).await;
    assert_eq!(status, 200, "{echo}");
    let headers = &echo["headers"];
    assert_eq!(headers["x-auth-method"], json!(["jwt"]));
    assert_eq!(headers["x-user-id"], json!(["1"]));
    assert_eq!(headers["x-user-name"], json!(["demo"]), "the store's name");
    assert_eq!(headers["x-user-role"], json!(["student"]));
    assert!(headers.get("x-user-issuer").is_none(), "{headers}");
    // The role is the store's: a student may not use an instructor's route.
    let (status, body) = get(&gateway, "/api/teach/", &access).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("permission_denied"))
    );

    let (other_secret, _) = simplejwt_pair("another-django-secret-another-django-secret", 1);
    let (inactive, _) = simplejwt_pair(DJANGO_SECRET, 3);
    let (unknown_user, _) = simplejwt_pair(DJANGO_SECRET, 99);
    let mut parts: Vec<String> = access.split('.').map(str::to_string).collect();
    let mut forged = claims_of(&access);
    forged["user_id"] = json!("2");
    parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
    let tampered = parts.join(".");
    for (why, token) in [
        ("signed with another secret", other_secret),
        ("an inactive user", inactive),
        ("a user the store does not have", unknown_user),
        ("a tampered user_id", tampered),
    ] {
        let (status, body) = get(&gateway, "/api/courses/", &token).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("token_not_valid")),
            "{why}: {body}"
        );
    }
}

#[tokio::test]
async fn a_legacy_refresh_token_is_exchanged_once_for_a_guichet_pair() {
    let upstream = Upstream::start("app").await;
    let gateway = start(&upstream, "2099-01-01T00:00:00Z").await;
    let (access, refresh) = simplejwt_pair(DJANGO_SECRET, 2);

    let (status, pair) = exchange(&gateway, &refresh).await;
    assert_eq!(status, 200, "{pair}");
    let new_access = pair["access"].as_str().unwrap();
    let new_refresh = pair["refresh"].as_str().unwrap();
    let claims = claims_of(new_access);
    assert_eq!(
        (
            claims["iss"].as_str(),
            claims["username"].as_str(),
            claims["role"].as_str()
        ),
        (Some("guichet"), Some("teacher"), Some("instructor"))
    );
    let (status, echo) = get(&gateway, "/api/teach/", new_access).await;
    assert_eq!(
        (status, &echo["headers"]["x-user-name"]),
        (200, &json!(["teacher"]))
    );
    // The Guichet refresh token rotates as any other.
    let (status, rotated) = exchange(&gateway, new_refresh).await;
    assert_eq!(status, 200, "{rotated}");

    let (status, body) = exchange(&gateway, &refresh).await;
    assert_eq!(status, 401, "a second exchange is reuse: {body}");
    assert_eq!(body["detail"], "Token is blacklisted");
    // As with a reused Guichet refresh token, the family the first exchange started is revoked.
    let rotated_refresh = rotated["refresh"].as_str().unwrap();
    let (status, body) = exchange(&gateway, rotated_refresh).await;
    assert_eq!(status, 401, "the exchanged family is revoked: {body}");
    let (status, body) = exchange(&gateway, &access).await;
    assert_eq!(
        status, 401,
        "an access token is not a refresh token: {body}"
    );
    assert_eq!(body["code"], "token_not_valid");
}

#[tokio::test]
async fn legacy_tokens_verify_and_logging_out_ends_a_legacy_refresh_token() {
    let upstream = Upstream::start("app").await;
    let gateway = start(&upstream, "2099-01-01T00:00:00Z").await;
    let (access, refresh) = simplejwt_pair(DJANGO_SECRET, 1);
    let post = |path: &'static str, body: Value| {
        let request = client().post(gateway.url(path)).json(&body);
        async move { status_and_json(request.send().await.unwrap()).await }
    };
    for token in [&access, &refresh] {
        let (status, body) = post("/api/auth/token/verify/", json!({"token": token})).await;
        assert_eq!(status, 200, "{body}");
    }
    let (other, _) = simplejwt_pair("another-django-secret-another-django-secret", 1);
    let (status, _) = post("/api/auth/token/verify/", json!({"token": other})).await;
    assert_eq!(status, 401);

    let (status, body) = post("/api/auth/token/revoke/", json!({"refresh": refresh})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = exchange(&gateway, &refresh).await;
    assert_eq!(status, 401, "logged out: {body}");
}

#[tokio::test]
async fn replicas_sharing_redis_exchange_a_legacy_refresh_token_only_once() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start("app").await;
    let key = guichet::auth::jwt::generate_ed25519_pem();
    let env = [("DJANGO_SECRET_KEY", DJANGO_SECRET)];
    let config = || {
        GatewayConfig::new(&format!(
            "include: [routes/*.yaml]\nstore: {{ backend: redis, url: \"{}\" }}\n{}",
            redis.url(),
            legacy_section("2099-01-01T00:00:00Z")
        ))
        .file("keys/jwt.pem", &key)
        .file("routes/app.yaml", &routes(&upstream))
    };
    let (_dir, path) = config().write();
    let args = [
        "users",
        "add",
        "--username",
        "ada",
        "--email",
        "ada@hackitech.example",
        "--role",
        "student",
    ];
    let added = cli_with_env(&args, &path, "ada-password\n", &env);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let first = Gateway::start_with_env(config(), &env).await;
    let second = Gateway::start_with_env(config(), &env).await;
    let (access, refresh) = simplejwt_pair(DJANGO_SECRET, 1);
    let (status, echo) = get(&second, "/api/courses/", &access).await;
    assert_eq!(
        (status, &echo["headers"]["x-user-name"]),
        (200, &json!(["ada"]))
    );

    // Both replicas are asked at once; exactly one exchange succeeds.
    let (a, b) = tokio::join!(exchange(&first, &refresh), exchange(&second, &refresh));
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401], "{a:?} {b:?}");
    let (status, _) = exchange(&first, &refresh).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn after_the_window_legacy_tokens_are_refused_and_check_says_when_it_closes() {
    let upstream = Upstream::start("app").await;
    let closed = start(&upstream, "2026-01-01T00:00:00Z").await;
    let (access, refresh) = simplejwt_pair(DJANGO_SECRET, 1);
    let (status, body) = get(&closed, "/api/courses/", &access).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_not_valid"))
    );
    let (status, body) = exchange(&closed, &refresh).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_not_valid"))
    );

    let env = [("DJANGO_SECRET_KEY", DJANGO_SECRET)];
    for (until, says) in [
        (
            "2099-01-01T00:00:00Z",
            "accepted until 2099-01-01T00:00:00Z",
        ),
        (
            "2026-01-01T00:00:00Z",
            "the window closed at 2026-01-01T00:00:00Z",
        ),
    ] {
        let (_dir, path) = legacy_config(&upstream, until).write();
        let output = cli_with_env(&["check"], &path, "", &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(
            stderr.contains("gateway.yaml:") && stderr.contains(says),
            "check should warn with the position: {stderr}"
        );
        let strict = cli_with_env(&["check", "--strict"], &path, "", &env);
        assert!(!strict.status.success(), "a warning fails --strict");
    }
    // Without the secret, the configuration is refused with what to set.
    let (_dir, path) = legacy_config(&upstream, "2099-01-01T00:00:00Z").write();
    let output = check(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("DJANGO_SECRET_KEY is not set"), "{stderr}");
}
