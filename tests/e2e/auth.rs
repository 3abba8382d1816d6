//! Authentication and permissions through the real listener: the token contract, the attacks
//! on it, API keys, roles and scopes, and the identity the upstream receives.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::common::{client, get_json, status_and_json, Gateway, GatewayConfig, Upstream};

pub const DEMO_KEY: &str = "gk_demo.demo-secret";
pub const READER_KEY: &str = "gk_read.reader-secret";
pub const OPS_KEY: &str = "gk_ops.ops-secret";

/// A gateway with a JWT key, seeded users and keys, and one route per permission kind.
pub struct Fixture {
    pub gateway: Gateway,
    pub upstream: Upstream,
    pub key_pem: String,
}

pub fn routes(upstream: &Upstream) -> String {
    format!(
        "service: app
upstreams: [{}]
routes:
  - path: /api/public/
    auth: none
  - path: /api/courses/
  - path: /api/teach/
    roles: [instructor]
  - path: /api/grades/
    auth: api_key
    scopes: [grades:write]
  - path: /api/any/
    auth: any
  - path: /api/forward/
    forward_authorization: true
",
        upstream.url()
    )
}

pub fn jwt_section() -> &'static str {
    "jwt:
  issuer: guichet
  audience: hackitech
  algorithm: EdDSA
  signing_key_file: keys/jwt.pem
  access_ttl: 1h
  refresh_ttl: 1d
  leeway: 5s
roles: [student, instructor, admin]
"
}

pub fn seed() -> String {
    let hash = |password: &str| guichet::auth::password::hash(password);
    let key_hash = |secret: &str| guichet::auth::api_key::hash_secret(secret);
    format!(
        "seed:
  users:
    - {{ id: 1, username: demo, email: demo@hackitech.example, role: student, password_hash: \"{}\" }}
    - {{ id: 2, username: teacher, email: teacher@hackitech.example, role: instructor, password_hash: \"{}\" }}
    - {{ id: 3, username: gone, email: gone@hackitech.example, role: admin, password_hash: \"{}\", active: false }}
  api_keys:
    - {{ name: grading, prefix: gk_demo, key_hash: {}, role: instructor, scopes: [grades:write] }}
    - {{ name: reader, prefix: gk_read, key_hash: {}, role: student }}
    - {{ name: ops, prefix: gk_ops, key_hash: {}, role: admin }}
",
        hash("demo-password"),
        hash("teacher-password"),
        hash("gone-password"),
        key_hash("demo-secret"),
        key_hash("reader-secret"),
        key_hash("ops-secret"),
    )
}

impl Fixture {
    pub async fn start() -> Fixture {
        let upstream = Upstream::start("app").await;
        let key_pem = guichet::auth::jwt::generate_ed25519_pem();
        let config = GatewayConfig::new(&format!(
            "include: [routes/*.yaml]\n{}{}",
            jwt_section(),
            seed()
        ))
        .file("keys/jwt.pem", &key_pem)
        .file("routes/app.yaml", &routes(&upstream));
        Fixture {
            gateway: Gateway::start(config).await,
            upstream,
            key_pem,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = client()
            .post(self.gateway.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn login(&self, username: &str, password: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/auth/token/",
                json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = client().get(self.gateway.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// Signs `claims` with the gateway's own key and kid, for forged-but-signed tokens.
    async fn sign(&self, claims: &Value) -> String {
        let jwks: Value = get_json(self.gateway.url("/.well-known/jwks.json")).await;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_string);
        let key = EncodingKey::from_ed_pem(self.key_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn login_answers_the_inherited_contract_by_username_or_email() {
    let f = Fixture::start().await;
    for login in ["demo", "demo@hackitech.example", "DEMO@Hackitech.example"] {
        let body = f.login(login, "demo-password").await;
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "access",
                "refresh",
                "user_id",
                "username",
                "email",
                "role",
                "token_lifetime"
            ]
        );
        assert_eq!(body["user_id"], 1);
        assert_eq!(body["username"], "demo");
        assert_eq!(body["email"], "demo@hackitech.example");
        assert_eq!(body["role"], "student");
        assert_eq!(
            body["token_lifetime"],
            json!({"access": "3600 seconds", "refresh": "86400 seconds"})
        );
        let access = claims_of(body["access"].as_str().unwrap());
        assert_eq!(access["token_type"], "access");
        assert_eq!(access["sub"], "1");
        assert_eq!(access["user_id"], 1);
        assert_eq!(access["iss"], "guichet");
        assert_eq!(access["aud"], "hackitech");
        assert!(access["jti"].as_str().is_some_and(|j| !j.is_empty()));
        let refresh = claims_of(body["refresh"].as_str().unwrap());
        assert_eq!(refresh["token_type"], "refresh");
        assert!(refresh["family"].is_string());
    }
}

#[tokio::test]
async fn bad_credentials_and_inactive_users_get_the_same_401() {
    let f = Fixture::start().await;
    for (username, password) in [
        ("demo", "wrong"),
        ("nobody", "demo-password"),
        ("gone", "gone-password"),
    ] {
        let (status, body) = f
            .post(
                "/api/auth/token/",
                json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(status, 401, "{username}");
        assert_eq!(body["code"], "no_active_account");
        assert_eq!(
            body["detail"],
            "No active account found with the given credentials"
        );
    }
}

#[tokio::test]
async fn an_unknown_user_costs_a_password_verification_too() {
    let f = Fixture::start().await;
    // The fastest of each: load on the machine only ever adds time, so the minimum is the
    // cost of the request itself (a median still moves when the password pool, at the lowest
    // priority, is starved for a few of the samples).
    let fastest = |durations: &[Duration]| durations.iter().copied().min().unwrap_or_default();
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        for (username, samples) in [("demo", &mut wrong), ("nobody-at-all", &mut unknown)] {
            let started = Instant::now();
            let (status, _) = f
                .post(
                    "/api/auth/token/",
                    json!({"username": username, "password": "x"}),
                )
                .await;
            samples.push(started.elapsed());
            assert_eq!(status, 401);
        }
    }
    let (wrong, unknown) = (fastest(&wrong), fastest(&unknown));
    // Without the decoy verification an unknown user answers hundreds of times faster.
    assert!(
        unknown * 3 >= wrong,
        "unknown user {unknown:?} vs wrong password {wrong:?}"
    );
}

#[tokio::test]
async fn malformed_login_bodies_are_400_or_413_naming_the_problem() {
    let f = Fixture::start().await;
    let send = |body: Vec<u8>| {
        client()
            .post(f.gateway.url("/api/auth/token/"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (status, body) = status_and_json(send(b"{not json".to_vec()).await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("JSON parse error"),
        "{body}"
    );
    let (status, body) =
        status_and_json(send(br#"{"username": "demo"}"#.to_vec()).await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(body["detail"], "Field \"password\" is required.");
    let (status, body) = status_and_json(
        send(br#"{"username": 5, "password": "x"}"#.to_vec())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["detail"], "Field \"username\" must be a string.");
    let (status, body) = status_and_json(send(vec![b' '; 100_000]).await.unwrap()).await;
    assert_eq!(status, 413);
    assert_eq!(body["code"], "payload_too_large");
    let response = client()
        .get(f.gateway.url("/api/auth/token/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
}

#[tokio::test]
async fn a_protected_route_wants_a_bearer_token_and_the_upstream_learns_who() {
    let f = Fixture::start().await;
    let response = f.get("/api/courses/", &[]).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"api\""
    );
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "not_authenticated");
    assert_eq!(f.upstream.hits(), 0);

    let access = f.login("demo", "demo-password").await["access"]
        .as_str()
        .unwrap()
        .to_string();
    let response = f
        .get(
            "/api/courses/",
            &[
                ("authorization", &bearer(&access)),
                ("x-user-id", "999"),
                ("x-user-role", "admin"),
                ("x-consumer", "spoofed"),
                ("x-auth-method", "api_key"),
            ],
        )
        .await;
    let (status, echo) = status_and_json(response).await;
    assert_eq!(status, 200);
    let headers = &echo["headers"];
    assert_eq!(headers["x-user-id"], json!(["1"]));
    assert_eq!(headers["x-user-name"], json!(["demo"]));
    assert_eq!(headers["x-user-role"], json!(["student"]));
    assert_eq!(headers["x-auth-method"], json!(["jwt"]));
    assert!(
        headers.get("x-consumer").is_none(),
        "spoofed header removed: {headers}"
    );
    assert!(
        headers.get("authorization").is_none(),
        "credentials stay at the gateway"
    );

    let (_, echo) = status_and_json(
        f.get("/api/forward/", &[("authorization", &bearer(&access))])
            .await,
    )
    .await;
    assert_eq!(echo["headers"]["authorization"], json!([bearer(&access)]));
}

#[tokio::test]
async fn forged_and_misused_tokens_are_401_token_not_valid() {
    let f = Fixture::start().await;
    let login = f.login("demo", "demo-password").await;
    let access = login["access"].as_str().unwrap();
    let refresh = login["refresh"].as_str().unwrap();
    let claims = claims_of(access);
    let now = guichet::auth::jwt::unix_now();
    let with = |changes: Value| {
        let mut forged = claims.clone();
        for (name, value) in changes.as_object().unwrap() {
            forged[name] = value.clone();
        }
        forged
    };
    let parts: Vec<&str> = access.split('.').collect();
    let header_none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let admin_payload = URL_SAFE_NO_PAD.encode(with(json!({"role": "admin"})).to_string());
    let jwks: Value = f
        .get("/.well-known/jwks.json", &[])
        .await
        .json()
        .await
        .unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap();
    let public_x = jwks["keys"][0]["x"].as_str().unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(kid.to_string());
    let key_confusion = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &EncodingKey::from_secret(public_x.as_bytes()),
    )
    .unwrap();
    let mut other_kid = Header::new(Algorithm::EdDSA);
    other_kid.kid = Some("not-a-known-key".to_string());
    let unknown_kid = jsonwebtoken::encode(
        &other_kid,
        &claims,
        &EncodingKey::from_ed_pem(f.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let stranger = guichet::auth::jwt::generate_ed25519_pem();
    let no_kid_other_key = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &EncodingKey::from_ed_pem(stranger.as_bytes()).unwrap(),
    )
    .unwrap();
    let attacks = [
        ("alg none", format!("{header_none}.{}.", parts[1])),
        ("key confusion", key_confusion),
        ("expired", f.sign(&with(json!({"exp": now - 600}))).await),
        (
            "not yet valid",
            f.sign(&with(json!({"nbf": now + 600}))).await,
        ),
        ("wrong issuer", f.sign(&with(json!({"iss": "evil"}))).await),
        (
            "wrong audience",
            f.sign(&with(json!({"aud": "other-app"}))).await,
        ),
        ("refresh as access", refresh.to_string()),
        (
            "tampered",
            format!("{}.{admin_payload}.{}", parts[0], parts[2]),
        ),
        ("unknown kid", unknown_kid),
        ("no kid, another key", no_kid_other_key),
        ("garbage", "not.a.token".to_string()),
    ];
    for (attack, token) in attacks {
        let response = f
            .get("/api/courses/", &[("authorization", &bearer(&token))])
            .await;
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"api\", error=\"invalid_token\"",
            "{attack}"
        );
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, 401, "{attack}");
        assert_eq!(body["code"], "token_not_valid", "{attack}");
    }
    assert_eq!(f.upstream.hits(), 0);
    // The same forging machinery, used honestly, is accepted: the attacks failed for their flaw.
    let honest = f.sign(&with(json!({"exp": now + 600}))).await;
    let response = f
        .get("/api/courses/", &[("authorization", &bearer(&honest))])
        .await;
    assert_eq!(response.status(), 200);
    // Other JWT libraries leave `kid` out: such a token is checked against the signing key.
    let no_kid = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &with(json!({"exp": now + 600})),
        &EncodingKey::from_ed_pem(f.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let response = f
        .get("/api/courses/", &[("authorization", &bearer(&no_kid))])
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(f.upstream.hits(), 2);
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_revokes_its_family() {
    let f = Fixture::start().await;
    let first = f.login("demo", "demo-password").await["refresh"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, second) = f
        .post("/api/auth/token/refresh/", json!({"refresh": first}))
        .await;
    assert_eq!(status, 200, "{second}");
    let keys: Vec<&str> = second
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["access", "refresh"]);
    let second_refresh = second["refresh"].as_str().unwrap().to_string();
    assert_ne!(second_refresh, first);
    assert_eq!(
        claims_of(&second_refresh)["family"],
        claims_of(&first)["family"]
    );
    let access = second["access"].as_str().unwrap();
    let response = f
        .get("/api/courses/", &[("authorization", &bearer(access))])
        .await;
    assert_eq!(response.status(), 200);

    // Someone replays the first refresh token: refused, and the family dies with it.
    let (status, body) = f
        .post("/api/auth/token/refresh/", json!({"refresh": first}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "token_not_valid");
    let (status, _) = f
        .post(
            "/api/auth/token/refresh/",
            json!({"refresh": second_refresh}),
        )
        .await;
    assert_eq!(status, 401, "the legitimate holder must log in again");
    let (status, _) = f
        .post("/api/auth/token/refresh/", json!({"refresh": access}))
        .await;
    assert_eq!(status, 401, "an access token is not a refresh token");
}

#[tokio::test]
async fn verify_and_revoke() {
    let f = Fixture::start().await;
    let login = f.login("demo", "demo-password").await;
    let (status, body) = f
        .post("/api/auth/token/verify/", json!({"token": login["access"]}))
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = f
        .post("/api/auth/token/verify/", json!({"token": "x.y.z"}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "token_not_valid");

    let (status, body) = f
        .post(
            "/api/auth/token/revoke/",
            json!({"refresh": login["refresh"]}),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, _) = f
        .post(
            "/api/auth/token/refresh/",
            json!({"refresh": login["refresh"]}),
        )
        .await;
    assert_eq!(status, 401, "logged out");
}

#[tokio::test]
async fn roles_form_a_hierarchy() {
    let f = Fixture::start().await;
    let student = f.login("demo", "demo-password").await["access"]
        .as_str()
        .unwrap()
        .to_string();
    let teacher = f.login("teacher", "teacher-password").await["access"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = status_and_json(
        f.get("/api/teach/", &[("authorization", &bearer(&student))])
            .await,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "permission_denied");
    let response = f
        .get("/api/teach/", &[("authorization", &bearer(&teacher))])
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn api_keys_work_from_either_header_and_scopes_are_enforced() {
    let f = Fixture::start().await;
    for header in [
        ("x-api-key", DEMO_KEY.to_string()),
        ("authorization", format!("Api-Key {DEMO_KEY}")),
    ] {
        let (status, echo) =
            status_and_json(f.get("/api/grades/", &[(header.0, &header.1)]).await).await;
        assert_eq!(status, 200, "{header:?}");
        assert_eq!(echo["headers"]["x-consumer"], json!(["grading"]));
        assert_eq!(echo["headers"]["x-user-role"], json!(["instructor"]));
        assert_eq!(echo["headers"]["x-auth-method"], json!(["api_key"]));
        assert!(echo["headers"].get("x-api-key").is_none());
    }
    let line = f
        .gateway
        .wait_for_log(|l| l["target"] == "guichet::access" && l["auth"] == "api_key")
        .await;
    assert_eq!(line["consumer"], "grading");
    let response = f
        .get("/api/grades/", &[("x-api-key", "gk_demo.wrong")])
        .await;
    assert_eq!(
        response.headers()["www-authenticate"],
        "Api-Key realm=\"api\""
    );
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "authentication_failed");
    let (status, body) =
        status_and_json(f.get("/api/grades/", &[("x-api-key", READER_KEY)]).await).await;
    assert_eq!(status, 403, "the reader key lacks grades:write");
    assert_eq!(body["code"], "permission_denied");
    let access = f.login("demo", "demo-password").await["access"]
        .as_str()
        .unwrap()
        .to_string();
    let response = f
        .get("/api/grades/", &[("authorization", &bearer(&access))])
        .await;
    assert_eq!(
        response.status(),
        401,
        "an api_key route does not take a JWT"
    );
    let response = f.get("/api/courses/", &[("x-api-key", DEMO_KEY)]).await;
    assert_eq!(
        response.status(),
        401,
        "a jwt route does not take an API key"
    );
    for credential in [
        ("x-api-key", DEMO_KEY.to_string()),
        ("authorization", bearer(&access)),
    ] {
        let response = f.get("/api/any/", &[(credential.0, &credential.1)]).await;
        assert_eq!(response.status(), 200, "auth: any takes both");
    }
}

#[tokio::test]
async fn a_key_created_for_the_memory_store_keeps_its_expiry_when_pasted() {
    let upstream = Upstream::start("app").await;
    let without_seed = |seed: &str| {
        GatewayConfig::new(&format!(
            "include: [routes/*.yaml]\n{}{seed}",
            jwt_section()
        ))
        .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
        .file("routes/app.yaml", &routes(&upstream))
    };
    let (_dir, path) = without_seed("").write();
    // What `keys create` prints: the key, then the seed entry to paste into gateway.yaml.
    let create = |name: &str, expires: &[&str]| {
        let mut args = vec!["keys", "create", "--name", name, "--role", "instructor"];
        args.extend(["--scope", "grades:write"]);
        args.extend(expires);
        let output = crate::common::cli(&args, &path, "");
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        let key = text.lines().next().unwrap().trim().to_string();
        let entry = text
            .lines()
            .find(|l| l.trim_start().starts_with("- {"))
            .unwrap_or_else(|| panic!("no seed entry in\n{text}"))
            .trim()
            .to_string();
        (key, entry)
    };
    let (expired, expired_entry) = create("old", &["--expires", "2020-01-01T00:00:00Z"]);
    let (current, current_entry) = create("new", &[]);
    assert!(
        expired_entry.contains("expires: 2020-01-01T00:00:00Z"),
        "{expired_entry}"
    );

    let seed = format!("seed:\n  api_keys:\n    {expired_entry}\n    {current_entry}\n");
    let gateway = Gateway::start(without_seed(&seed)).await;
    let status = |key: String| {
        let url = gateway.url("/api/grades/");
        async move {
            client()
                .get(url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(current).await, 200);
    assert_eq!(status(expired).await, 401, "the pasted key expired in 2020");
}

#[tokio::test]
async fn public_routes_pass_a_valid_identity_on_and_ignore_a_bad_one() {
    let f = Fixture::start().await;
    let (status, echo) = status_and_json(f.get("/api/public/", &[("x-user-id", "7")]).await).await;
    assert_eq!(status, 200);
    assert_eq!(echo["headers"]["x-auth-method"], json!(["anonymous"]));
    assert!(echo["headers"].get("x-user-id").is_none());
    let access = f.login("demo", "demo-password").await["access"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, echo) = status_and_json(
        f.get("/api/public/", &[("authorization", &bearer(&access))])
            .await,
    )
    .await;
    assert_eq!(echo["headers"]["x-user-id"], json!(["1"]));
    let (status, echo) = status_and_json(
        f.get("/api/public/", &[("authorization", "Bearer garbage")])
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(echo["headers"]["x-auth-method"], json!(["anonymous"]));
}

#[tokio::test]
async fn an_independent_implementation_verifies_issued_tokens_from_the_jwks_alone() {
    let f = Fixture::start().await;
    let access = f.login("demo", "demo-password").await["access"]
        .as_str()
        .unwrap()
        .to_string();
    let script = r#"
import json, sys, urllib.request
import jwt
jwks_url, token = sys.argv[1], sys.argv[2]
keys = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token)
claims = jwt.decode(token, keys.key, algorithms=["EdDSA"], audience="hackitech", issuer="guichet")
print(json.dumps(claims))
"#;
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            &f.gateway.url("/.well-known/jwks.json"),
            &access,
        ])
        .output()
        .expect("python3 with PyJWT (pip install 'pyjwt[crypto]')");
    assert!(
        output.status.success(),
        "PyJWT refused the token: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let claims: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(claims["username"], "demo");
    assert_eq!(claims["token_type"], "access");
}

#[tokio::test]
async fn tokens_of_an_earlier_key_are_accepted_during_a_rotation() {
    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::jwk::AlgorithmParameters;

    let old_pem = guichet::auth::jwt::generate_ed25519_pem();
    let old =
        guichet::auth::jwt::Keys::from_private_pem(Algorithm::EdDSA, old_pem.as_bytes()).unwrap();
    let old_jwk = old.jwks().keys[0].clone();
    let AlgorithmParameters::OctetKeyPair(okp) = &old_jwk.algorithm else {
        panic!("an Ed25519 key")
    };
    // SubjectPublicKeyInfo for Ed25519: a fixed 12-byte prefix, then the 32-byte key.
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend(URL_SAFE_NO_PAD.decode(&okp.x).unwrap());
    let old_public = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(der)
    );

    let upstream = Upstream::start("app").await;
    let config = GatewayConfig::new(&format!(
        "include: [routes/*.yaml]\n{}",
        jwt_section().replace(
            "  leeway: 5s\n",
            "  leeway: 5s\n  verification_keys: [keys/old-public.pem]\n"
        )
    ))
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
    .file("keys/old-public.pem", &old_public)
    .file("routes/app.yaml", &routes(&upstream));
    let gateway = Gateway::start(config).await;

    let jwks: Value = get_json(gateway.url("/.well-known/jwks.json")).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    let old_kid = old_jwk.common.key_id.clone().unwrap();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&old_kid.as_str()), "{kids:?}");

    let now = guichet::auth::jwt::unix_now();
    let claims = json!({
        "token_type": "access", "jti": "j", "iat": now, "exp": now + 600, "iss": "guichet",
        "aud": "hackitech", "sub": "9", "user_id": 9, "username": "before-rotation", "role": "student"
    });
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(old_kid);
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ed_pem(old_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let response = client()
        .get(gateway.url("/api/courses/"))
        .header("authorization", bearer(&token))
        .send()
        .await
        .unwrap();
    let (status, echo) = status_and_json(response).await;
    assert_eq!(status, 200);
    assert_eq!(echo["headers"]["x-user-name"], json!(["before-rotation"]));
}
