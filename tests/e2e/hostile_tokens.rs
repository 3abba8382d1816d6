//! Hostile tokens and identity look-alikes through the real listener: JOSE headers the gateway
//! must refuse (RFC 7515 `crit`, RFC 7797 `b64`), validly signed claims that no identity header
//! can carry, headers that WSGI, Rack and PHP would read as the identity, and the CLI refusing
//! and escaping control characters.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use crate::auth::{jwt_section, routes, Fixture};
use crate::common::{cli, client, status_and_json, GatewayConfig, RedisServer, Upstream};

/// A token with exactly `header` as its JOSE header, signed with the gateway's own key: whatever
/// is refused is refused for what it says, not for its signature.
fn signed(f: &Fixture, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = EncodingKey::from_ed_pem(f.key_pem.as_bytes()).unwrap();
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::EdDSA).unwrap();
    format!("{input}.{signature}")
}

async fn kid(f: &Fixture) -> String {
    let jwks: Value = f
        .get("/.well-known/jwks.json", &[])
        .await
        .json()
        .await
        .unwrap();
    jwks["keys"][0]["kid"].as_str().unwrap().to_string()
}

fn claims(token_type: &str, username: &str, role: &str) -> Value {
    let now = guichet::auth::jwt::unix_now();
    json!({
        "token_type": token_type, "jti": "j", "iat": now, "exp": now + 600, "iss": "guichet",
        "aud": "hackitech", "sub": "1", "user_id": 1, "username": username, "role": role,
        "family": "f"
    })
}

async fn assert_route_refuses(f: &Fixture, token: &str, case: &str) {
    let response = f
        .get(
            "/api/courses/",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"api\", error=\"invalid_token\"",
        "{case}"
    );
    let (status, body) = status_and_json(response).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_not_valid")),
        "{case}: {body}"
    );
}

#[tokio::test]
async fn crit_b64_and_control_characters_are_401_token_not_valid_on_routes_and_endpoints() {
    let f = Fixture::start().await;
    let kid = kid(&f).await;
    let plain = json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
    let with = |extra: Value| {
        let mut header = plain.clone();
        for (name, value) in extra.as_object().unwrap() {
            header[name] = value.clone();
        }
        header
    };
    let student = claims("access", "demo", "student");
    let cases = [
        (
            "crit naming an extension",
            with(json!({"crit": ["exp"], "exp": 1})),
            student.clone(),
        ),
        ("crit empty", with(json!({"crit": []})), student.clone()),
        (
            "b64 false with crit",
            with(json!({"b64": false, "crit": ["b64"]})),
            student.clone(),
        ),
        (
            "b64 false alone",
            with(json!({"b64": false})),
            student.clone(),
        ),
        (
            "CR LF in username",
            plain.clone(),
            claims("access", "demo\r\nX-User-Role: admin", "student"),
        ),
        (
            "NUL in username",
            plain.clone(),
            claims("access", "demo\0", "student"),
        ),
        (
            "LF in role",
            plain.clone(),
            claims("access", "demo", "student\nadmin"),
        ),
        (
            "DEL in username",
            plain.clone(),
            claims("access", "de\u{7f}mo", "student"),
        ),
    ];
    for (case, header, claims) in &cases {
        let token = signed(&f, header, claims);
        assert_route_refuses(&f, &token, case).await;
        let (status, body) = f
            .post("/api/auth/token/verify/", json!({"token": token}))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("token_not_valid")),
            "verify, {case}: {body}"
        );
        // As a refresh token: refused before the store is consulted.
        let mut refresh = claims.clone();
        refresh["token_type"] = "refresh".into();
        let refresh = signed(&f, header, &refresh);
        for endpoint in ["/api/auth/token/refresh/", "/api/auth/token/revoke/"] {
            let (status, body) = f.post(endpoint, json!({"refresh": refresh})).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (401, Some("token_not_valid")),
                "{endpoint}, {case}: {body}"
            );
        }
    }
    assert_eq!(f.upstream.hits(), 0);

    // The same machinery with nothing hostile is accepted: each case failed for its flaw.
    let honest = signed(&f, &plain, &student);
    let (status, echo) = status_and_json(
        f.get(
            "/api/courses/",
            &[("authorization", &format!("Bearer {honest}"))],
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(echo["headers"]["x-user-name"], json!(["demo"]));
    let (status, _) = f
        .post("/api/auth/token/verify/", json!({"token": honest}))
        .await;
    assert_eq!(status, 200);
    let honest_refresh = signed(&f, &plain, &claims("refresh", "demo", "student"));
    let (status, _) = f
        .post(
            "/api/auth/token/revoke/",
            json!({"refresh": honest_refresh}),
        )
        .await;
    assert_eq!(status, 200);
    // Non-ASCII names are not control characters.
    let accented = signed(&f, &plain, &claims("access", "zoë", "student"));
    let response = f
        .get(
            "/api/courses/",
            &[("authorization", &format!("Bearer {accented}"))],
        )
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn underscored_look_alikes_of_identity_headers_never_reach_the_upstream() {
    let f = Fixture::start().await;
    let access = f.login("demo", "demo-password").await["access"]
        .as_str()
        .unwrap()
        .to_string();
    let bearer = format!("Bearer {access}");
    let look_alikes = [
        ("X_User_Role", "admin"),
        ("x_user_id", "1"),
        ("X_USER_NAME", "root"),
        ("x-user_role", "admin"),
        ("X_Consumer", "spoofed"),
        ("X_Auth_Method", "api_key"),
        ("X_API_Key", "gk_demo.demo-secret"),
    ];
    let mut headers = vec![("authorization", bearer.as_str()), ("x_course_id", "42")];
    headers.extend(look_alikes);
    for path in ["/api/courses/", "/api/public/"] {
        let (status, echo) = status_and_json(f.get(path, &headers).await).await;
        assert_eq!(status, 200, "{path}");
        let received = echo["headers"].as_object().unwrap();
        for (name, _) in look_alikes {
            assert!(
                !received.contains_key(&name.to_ascii_lowercase()),
                "{path}: {name} reached the upstream: {received:?}"
            );
        }
        assert_eq!(received["x-user-role"], json!(["student"]), "{path}");
        assert_eq!(received["x-user-id"], json!(["1"]), "{path}");
        assert_eq!(
            received["x_course_id"],
            json!(["42"]),
            "{path}: other underscored headers pass"
        );
    }
    // A route that forwards credentials forwards their look-alikes too; identity ones never.
    let (_, echo) = status_and_json(f.get("/api/forward/", &headers).await).await;
    assert_eq!(echo["headers"]["x_api_key"], json!(["gk_demo.demo-secret"]));
    assert!(echo["headers"].get("x_user_role").is_none(), "{echo}");
}

/// A configuration folder on the Redis store.
fn redis_config(redis: &RedisServer, upstream: &Upstream) -> (tempfile::TempDir, PathBuf) {
    GatewayConfig::new(&format!(
        "include: [routes/*.yaml]\nstore: {{ backend: redis, url: \"{}\" }}\n{}",
        redis.url(),
        jwt_section()
    ))
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
    .file("routes/app.yaml", &routes(upstream))
    .write()
}

fn stdout(args: &[&str], config: &Path) -> String {
    let output = cli(args, config, "a-password\n");
    assert!(
        output.status.success(),
        "guichet {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn the_cli_refuses_control_characters_naming_the_field() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start("app").await;
    let (_dir, config) = redis_config(&redis, &upstream);
    let user = |username: &'static str, email: &'static str, role: &'static str| {
        vec![
            "users",
            "add",
            "--username",
            username,
            "--email",
            email,
            "--role",
            role,
        ]
    };
    let refused = [
        (user("ev\ril", "e@x.example", "student"), "--username"),
        (user("eve", "e@x.example\n", "student"), "--email"),
        (user("eve", "e@x.example", "student\u{1b}[2J"), "--role"),
        (vec!["users", "set-role", "demo", "admin\r"], "role"),
        (
            vec![
                "keys",
                "create",
                "--name",
                "grader\r\n",
                "--role",
                "student",
            ],
            "--name",
        ),
    ];
    for (args, field) in refused {
        let output = cli(&args, &config, "a-password\n");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(
            stderr.contains(&format!("{field} holds a control character")),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.trim_end().contains(['\r', '\n', '\u{1b}']),
            "the error repeats the value escaped: {stderr:?}"
        );
    }
    let listed = stdout(&["users", "list"], &config);
    assert_eq!(listed.lines().count(), 1, "nobody was added: {listed}");
    let listed = stdout(&["keys", "list"], &config);
    assert_eq!(listed.lines().count(), 1, "no key was created: {listed}");
    // The same names without the control character are fine.
    let added = stdout(&user("eve", "e@x.example", "student"), &config);
    assert!(added.contains("added user 1 (eve, student)"), "{added}");
}

#[tokio::test]
async fn names_stored_with_control_characters_are_listed_escaped_and_never_cause_a_500() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start("app").await;
    let (_dir, config) = redis_config(&redis, &upstream);
    // As an earlier version, which did not refuse them, could have stored them.
    let user = json!({
        "id": 7, "username": "ev\r\nil", "email": "evil@x.example", "role": "student",
        "password_hash": guichet::auth::password::hash("evil-password"), "active": true
    });
    let key = json!({
        "prefix": "gk_evil", "name": "grader\r\nX-User-Role: admin",
        "secret_hash": guichet::auth::api_key::hash_secret("evil-secret"), "role": "instructor",
        "scopes": ["grades:write"], "created": 0, "expires": null, "revoked": false
    });
    use guichet::store::keys;
    let (user_key, login, users) = (keys::user(7), keys::login("ev\r\nil"), keys::users());
    let (key_key, api_keys) = (keys::api_key("gk_evil"), keys::api_keys());
    for command in [
        vec!["SET", &user_key, &user.to_string()],
        vec!["SET", &login, "7"],
        vec!["SADD", &users, "7"],
        vec!["SET", &key_key, &key.to_string()],
        vec!["SADD", &api_keys, "gk_evil"],
    ] {
        let reply = redis.command(&command).await.unwrap();
        assert!(!reply.starts_with('-'), "{command:?}: {reply}");
    }
    let users = stdout(&["users", "list"], &config);
    assert!(users.contains(r"ev\r\nil"), "{users:?}");
    assert!(!users.contains('\r'), "{users:?}");
    let keys = stdout(&["keys", "list"], &config);
    assert!(keys.contains(r"grader\r\nX-User-Role: admin"), "{keys:?}");
    assert!(!keys.contains('\r'), "{keys:?}");

    let gateway = crate::common::Gateway::start_in(tempfile::tempdir().unwrap(), &config).await;
    let access = gateway.access_token("ev\r\nil", "evil-password").await;
    let response = client()
        .get(gateway.url("/api/courses/"))
        .header("authorization", format!("Bearer {access}"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_not_valid")),
        "{body}"
    );
    let response = client()
        .get(gateway.url("/api/grades/"))
        .header("x-api-key", "gk_evil.evil-secret")
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("authentication_failed")),
        "{body}"
    );
    assert_eq!(upstream.hits(), 0);
}

#[test]
fn seed_names_and_roles_with_control_characters_are_configuration_errors() {
    let config = GatewayConfig::new(
        "roles: [student, \"ad\\rmin\"]
seed:
  users:
    - { id: 1, username: \"ev\\nil\", email: a@b.example, role: student, password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\" }
  api_keys:
    - { name: \"gr\\u0000ading\", prefix: gk_a, key_hash: 0000000000000000000000000000000000000000000000000000000000000000, role: student }
",
    );
    let (_dir, path) = config.write();
    let output = crate::common::check(&path);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "gateway.yaml:1:18: roles: holds a control character",
        "gateway.yaml:4:26: seed.users[0].username: holds a control character",
        "gateway.yaml:6:15: seed.api_keys[0].name: holds a control character",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}
