//! `guichet check`: every error at once, each as `file:line:col: field: what (what to write)`.

use std::path::Path;

use serde_json::json;

use crate::common::{check, cli, GatewayConfig, Upstream};

fn run_check(config: &GatewayConfig) -> (i32, String, String, tempfile::TempDir) {
    let (dir, path) = config.write();
    let output = check(&path);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
        dir,
    )
}

#[test]
fn a_valid_config_passes_with_a_summary() {
    let config = GatewayConfig::new("include: [routes/*.yaml]\n")
        .file(
            "routes/a.yaml",
            "service: a\nupstreams: [http://127.0.0.1:1]\nroutes:\n  - path: /a/\n    auth: none\n  - path: /a/{id}/b/\n    auth: api_key\n",
        )
        .file(
            "routes/b.yaml",
            "service: b\nupstreams: [http://127.0.0.1:2]\nroutes:\n  - path: /b/\n    auth: none\n",
        );
    let (code, stdout, stderr, _dir) = run_check(&config);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok, 2 services, 3 routes"), "{stdout}");
}

#[test]
fn every_error_is_reported_at_once_with_its_position_and_a_fix() {
    let config = GatewayConfig::new(
        "listen: 127.0.0.1:8080
admin_lisen: 127.0.0.1:9090
include: [routes/*.yaml, missing/*.yaml]
shutdown_grace_period: forever
",
    )
    .file(
        "routes/courses.yaml",
        "service: courses
upstreams: [http://127.0.0.1:8001, htp://oops]
timeouts: { connect: 1s, read: 30 seconds please }
routes:
  - path: /api/courses/
  - path: /api/courses/
    methods: [GET]
  - path: /api/lessons/{id}/
  - path: /api/lessons/{slug}/
  - path: /api/quizzes/
    max_body: 10 MiBs
",
    )
    .file(
        "routes/courses-copy.yaml",
        "service: courses
upstreams: [http://127.0.0.1:8002]
",
    );
    let (code, _stdout, stderr, dir) = run_check(&config);
    assert_eq!(code, 1, "{stderr}");
    let root = dir.path();
    let at = |file: &str| root.join(file).display().to_string();
    let expected = [
        format!("{}:2:1: admin_lisen: unknown key `admin_lisen` (did you mean `admin_listen`?", at("gateway.yaml")),
        format!("{}:3:26: include[1]: `missing/*.yaml` matches no file", at("gateway.yaml")),
        format!("{}:4:24: shutdown_grace_period: `forever` is not a duration (write a duration such as", at("gateway.yaml")),
        format!("{}:2:36: upstreams[1]: `htp://oops` is not an absolute http:// or https:// URL (write the service's base URL", at("routes/courses.yaml")),
        format!("{}:3:32: timeouts.read: `30 seconds please` is not a duration", at("routes/courses.yaml")),
        format!("{}:11:15: routes[4].max_body: `10 MiBs` is not a size (write a size such as", at("routes/courses.yaml")),
        format!("{}:6:11: routes[1].path: duplicate route: `/api/courses/` for GET, HEAD is already routed to service `courses` at {}:5:11", at("routes/courses.yaml"), at("routes/courses.yaml")),
        format!("{}:9:11: routes[3].path: shadowed route: `/api/lessons/{{slug}}/` matches the same requests as `/api/lessons/{{id}}/` (service `courses`, {}:8:11) for every method, so one of them is never used", at("routes/courses.yaml"), at("routes/courses.yaml")),
        // Files are read in name order, so the copy comes first and the original is the repeat.
        format!("{}:1:10: service: service `courses` is already defined at {}:1:10 (keep each service in one routes file", at("routes/courses.yaml"), at("routes/courses-copy.yaml")),
    ];
    for line in &expected {
        assert!(
            stderr.contains(line.as_str()),
            "missing:\n{line}\nin:\n{stderr}"
        );
    }
    assert!(
        stderr.trim_end().ends_with("errors in the configuration"),
        "{stderr}"
    );
}

#[test]
fn yaml_syntax_errors_and_missing_files_are_named() {
    let config = GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/bad.yaml",
        "service: bad\nupstreams: [http://127.0.0.1:1\nroutes: []\n",
    );
    let (code, _, stderr, dir) = run_check(&config);
    assert_eq!(code, 1);
    let bad = dir.path().join("routes/bad.yaml").display().to_string();
    assert!(
        stderr.contains(&format!("{bad}:")) && stderr.contains("invalid YAML"),
        "{stderr}"
    );

    let output = check(Path::new("/nonexistent/gateway.yaml"));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/gateway.yaml: cannot read the file"),
        "{stderr}"
    );
}

#[test]
fn the_repository_config_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = check(&root.join("gateway.yaml"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
}

#[test]
fn authentication_settings_are_checked_with_positions_and_fixes() {
    let config = GatewayConfig::new(
        "include: [routes/*.yaml]
jwt:
  algorithm: EdDSA
  signing_key_file: keys/missing.pem
roles: [student, instructor]
seed:
  users:
    - { id: 1, username: a, email: a@x, role: wizard, password_hash: plain-text }
",
    )
    .file(
        "routes/a.yaml",
        "service: a
upstreams: [http://127.0.0.1:1]
routes:
  - path: /a/
    roles: [admin]
  - path: /b/
    auth: none
    scopes: [x:y]
  - path: /c/
    auth: sometimes
",
    );
    let (code, _, stderr, dir) = run_check(&config);
    assert_eq!(code, 1);
    let at = |file: &str| dir.path().join(file).display().to_string();
    assert!(
        !stderr.contains("no `jwt` section"),
        "no cascade from the broken key: {stderr}"
    );
    let expected = [
        format!("{}:4:21: jwt.signing_key_file: {}: cannot read the key file", at("gateway.yaml"), at("keys/missing.pem")),
        "(create one with `openssl genpkey -algorithm ed25519 -out keys/jwt-ed25519.pem`, or set `generate_key_if_missing: true` for a demo)".to_string(),
        format!("{}:8:47: seed.users[0].role: `wizard` is not a role (write one of student, instructor)", at("gateway.yaml")),
        format!("{}:8:70: seed.users[0].password_hash: not an argon2 password hash (make one with `guichet hash-password`", at("gateway.yaml")),
        format!("{}:5:13: routes[0].roles[0]: `admin` is not a role (write one of student, instructor", at("routes/a.yaml")),
        format!("{}:6:11: routes[1].auth: a public route (`auth: none`) cannot require roles or scopes", at("routes/a.yaml")),
        format!("{}:10:11: routes[2].auth: `sometimes` is not an auth level (write none, jwt, api_key or any)", at("routes/a.yaml")),
    ];
    for line in &expected {
        assert!(
            stderr.contains(line.as_str()),
            "missing:\n{line}\nin:\n{stderr}"
        );
    }
}

#[test]
fn limiter_state_settings_are_checked_with_positions_and_fixes() {
    let config = GatewayConfig::new(
        "include: [routes/*.yaml]
rate_limits:
  anonymous: 100/day
  max_tracked_keys: lots
  ipv6_prefix: 0
",
    )
    .file(
        "routes/a.yaml",
        "service: a\nupstreams: [http://127.0.0.1:1]\nroutes:\n  - path: /a/\n    auth: none\n",
    );
    let (code, _, stderr, dir) = run_check(&config);
    assert_eq!(code, 1);
    let at = dir.path().join("gateway.yaml").display().to_string();
    let expected = [
        format!("{at}:4:21: rate_limits.max_tracked_keys: `lots` is not a whole number from 1 to 100000000 (write a whole number from 1 to 100000000; the default, 1000000, takes about"),
        format!("{at}:5:16: rate_limits.ipv6_prefix: `0` is not a prefix length from 1 to 128 (write 64 to count each /64 network as one client, the default; 128 to count each address"),
    ];
    for line in &expected {
        assert!(
            stderr.contains(line.as_str()),
            "missing:\n{line}\nin:\n{stderr}"
        );
    }
}

#[test]
fn a_route_needing_a_jwt_without_a_jwt_section_says_what_to_write() {
    let config = GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/a.yaml",
        "service: a\nupstreams: [http://127.0.0.1:1]\nroutes:\n  - path: /a/\n  - path: /b/\n    auth: any\n",
    );
    let (code, _, stderr, dir) = run_check(&config);
    assert_eq!(code, 1);
    let file = dir.path().join("routes/a.yaml").display().to_string();
    assert!(stderr.contains(&format!(
        "{file}:4:11: routes[0].auth: this route needs a JWT (`auth: jwt` is the default), but gateway.yaml has no `jwt` section (write `auth: none` for a public route or `auth: api_key` for service keys, or add a `jwt` section to gateway.yaml)"
    )), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:6:11: routes[1].auth: this route asks for a JWT"
        )),
        "{stderr}"
    );
}

#[test]
fn hs256_takes_its_secret_from_the_environment_only() {
    let config = GatewayConfig::new(
        "jwt: { algorithm: HS256, secret_env: GUICHET_TEST_SECRET_THAT_IS_NOT_SET }\n",
    );
    let (code, _, stderr, _dir) = run_check(&config);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("jwt.secret_env: the environment variable GUICHET_TEST_SECRET_THAT_IS_NOT_SET is not set"),
        "{stderr}"
    );
}

#[test]
fn seed_data_is_refused_with_the_redis_store() {
    let config = GatewayConfig::new(
        "store: { backend: redis, url: \"redis://127.0.0.1:1/0\" }\nseed: { users: [] }\n",
    );
    let (code, _, stderr, _dir) = run_check(&config);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("seed: seed data is for the memory store only"),
        "{stderr}"
    );
}

#[test]
fn sentinel_and_cluster_settings_are_checked_with_positions_and_fixes() {
    let refused = [
        (
            "url: \"redis://10.0.0.1:6379\", cluster: { nodes: [\"redis://10.0.0.2:7000\"] }",
            "store.cluster: `store.url` already names the Redis to use",
        ),
        (
            "sentinel: { nodes: [\"redis://10.0.0.1:26379\"] }",
            "store.sentinel.master: the sentinels need the name of the master they watch",
        ),
        (
            "sentinel: { master: guichet, nodes: [] }",
            "store.sentinel.nodes: no nodes are listed",
        ),
        (
            "sentinel: { master: guichet, nodes: [\"redis://10.0.0.1:26379\"], quorum: 2 }",
            "store.sentinel.quorum: unknown key",
        ),
        (
            "cluster: { nodes: [\"unix:///run/redis.sock\"] }",
            "store.cluster.nodes[0]: a cluster node is reached over TCP",
        ),
        (
            "cluster: { nodes: [\"redis://10.0.0.1:7000\", \"rediss://10.0.0.2:7000\"] }",
            "store.cluster.nodes[1]: some nodes are listed with redis:// and some with rediss://",
        ),
        (
            "cluster: { nodes: [\"http://10.0.0.1:7000\"] }",
            "store.cluster.nodes[0]: `http://10.0.0.1:7000` is not a Redis URL",
        ),
        (
            "url: \"redis://10.0.0.1:6379\", password_env: GUICHET_TEST_REDIS_PASSWORD_NOT_SET",
            "store.password_env: the environment variable GUICHET_TEST_REDIS_PASSWORD_NOT_SET is not set",
        ),
    ];
    for (store, expected) in refused {
        let config = GatewayConfig::new(&format!("store: {{ backend: redis, {store} }}\n"));
        let (code, _, stderr, _dir) = run_check(&config);
        assert_eq!(code, 1, "{store}: {stderr}");
        assert!(stderr.contains(expected), "{store}:\n{stderr}");
        assert!(
            stderr.contains("gateway.yaml:1:"),
            "{store}: no position:\n{stderr}"
        );
    }
    for store in [
        "sentinel: { master: guichet, nodes: [\"redis://10.0.0.1:26379\", \"redis://10.0.0.2:26379\"] }, username: guichet",
        "cluster: { nodes: [\"rediss://10.0.0.1:7000\", \"rediss://10.0.0.2:7000\"] }",
    ] {
        let config = GatewayConfig::new(&format!("store: {{ backend: redis, {store} }}\n"));
        let (code, _, stderr, _dir) = run_check(&config);
        assert_eq!(code, 0, "{store}: {stderr}");
    }
}

#[test]
fn documentation_settings_are_checked_with_positions_and_fixes() {
    let config = GatewayConfig::new(
        "include: [routes/*.yaml]
docs: { title: Platform, refresh: often, colour: blue }
",
    )
    .file(
        "routes/a.yaml",
        "service: a
upstreams: [http://127.0.0.1:1]
openapi: specs/missing.yaml
routes:
  - { path: /a/, auth: none }
",
    )
    .file(
        "routes/b.yaml",
        "service: b
upstreams: [http://127.0.0.1:2]
openapi: https://b.internal/api/schema/
routes:
  - { path: /b/, auth: none }
",
    );
    let (code, _, stderr, dir) = run_check(&config);
    assert_eq!(code, 1, "{stderr}");
    let at = |file: &str| dir.path().join(file).display().to_string();
    let expected = [
        format!("{}:2:35: docs.refresh: `often` is not a duration", at("gateway.yaml")),
        format!("{}:2:42: docs.colour: unknown key `colour`", at("gateway.yaml")),
        format!("{}:3:10: openapi: `specs/missing.yaml` is not a file", at("routes/a.yaml")),
        "(paths are relative to the folder of gateway.yaml, such as specs/courses.yaml)".to_string(),
        format!("{}:3:10: openapi: `https://b.internal/api/schema/`: fragments are fetched over plain http", at("routes/b.yaml")),
    ];
    for line in &expected {
        assert!(
            stderr.contains(line.as_str()),
            "missing:\n{line}\nin:\n{stderr}"
        );
    }
}

#[test]
fn a_reader_that_goes_away_is_not_a_crash() {
    // `guichet check | head -1` and the like: standard output closed before the command writes.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_guichet"))
        .args(["check", "--config"])
        .arg(root.join("gateway.yaml"))
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("guichet runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A drf-spectacular service documents its own schema view; `openapi:` points at it.
fn spectacular_fragment(extra: Option<&str>) -> serde_json::Value {
    let ok = json!({"responses": {"200": {"description": "ok"}}});
    let mut paths = json!({
        "/api/schema/": {"get": {"operationId": "schema_retrieve", "responses": {"200": {"description": "OpenApi3 schema for this API."}}}},
        "/quizzes/": {"get": ok},
    });
    if let Some(path) = extra {
        paths[path] = json!({"get": ok});
    }
    json!({"openapi": "3.0.3", "info": {"title": "Quizzes", "version": "1"}, "paths": paths})
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_check_takes_a_service_s_own_schema_view_as_its_own_not_drift() {
    let service = Upstream::start("quizzes").await;
    let config = GatewayConfig::new("include: [routes/*.yaml]\n").file(
        "routes/quizzes.yaml",
        &format!(
            "service: quizzes\nupstreams: [{0}]\nopenapi: {0}/api/schema/\nroutes:\n  - {{ path: /api/quizzes/, upstream_path: /quizzes/, auth: none }}\n",
            service.url()
        ),
    );
    let (_dir, path) = config.write();
    let strict = |path: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            let output = cli(&["check", "--strict"], &path, "");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            (output.status.success(), text)
        })
    };

    service.serve_spec(spectacular_fragment(None));
    let (passed, report) = strict(path.clone()).await.expect("check ran");
    assert!(passed, "{report}");
    assert!(
        report.contains("API document: 0 problems, 0 drift"),
        "{report}"
    );

    // Anything else the service documents and no route exposes is drift still.
    service.serve_spec(spectacular_fragment(Some("/internal/stats/")));
    let (passed, report) = strict(path).await.expect("check ran");
    assert!(!passed, "{report}");
    assert!(
        report.contains("GET /internal/stats/ is documented but no route exposes it"),
        "{report}"
    );
    assert!(!report.contains("GET /api/schema/"), "{report}");
}

#[test]
fn trusted_issuers_and_the_legacy_window_are_checked_with_positions_and_fixes() {
    let config = GatewayConfig::new(
        "jwt:
  algorithm: EdDSA
  signing_key_file: keys/jwt.pem
  trusted_issuers:
    - issuer: https://sso.example/realms/a
      jwks_url: ftp://sso.example/certs
      algorithms: [RS256, HS256]
      roles: { teacher: wizard }
    - issuer: https://sso.example/realms/a
      jwks_url: https://sso.example/realms/a/certs
      jwks_file: keys/a.json
      audience: api
      claims: { user_id: \"realm_access..id\" }
    - issuer: https://sso.example/realms/b
      jwks_file: keys/missing.json
      audience: api
    - { issuer: https://sso.example/realms/b, jwks_url: \"http://127.0.0.1:1/certs\", audience: api }
  legacy_simplejwt: { secret_env: DJANGO_SECRET_KEY, accept_until: next-spring }
roles: [student, instructor]
",
    )
    .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem());
    let (code, _, stderr, dir) = run_check(&config);
    assert_eq!(code, 1);
    let at = dir.path().join("gateway.yaml").display().to_string();
    let expected = [
        format!("{at}:5:13: jwt.trusted_issuers[0].audience: missing `audience` (add `audience: hackitech-api`)"),
        format!("{at}:6:17: jwt.trusted_issuers[0].jwks_url: `ftp://sso.example/certs` is not an http or https URL with a host"),
        format!("{at}:7:27: jwt.trusted_issuers[0].algorithms[1]: HS256 is symmetric: a provider's public keys cannot verify it"),
        format!("{at}:8:25: jwt.trusted_issuers[0].roles.teacher: `wizard` is not a role (write one of student, instructor)"),
        format!("{at}:11:18: jwt.trusted_issuers[1].jwks_file: `jwks_url` already says where the keys are"),
        format!("{at}:13:26: jwt.trusted_issuers[1].claims.user_id: `realm_access..id` is not a dotted claim path"),
        format!("{at}:15:18: jwt.trusted_issuers[2].jwks_file: {}: cannot read the file", dir.path().join("keys/missing.json").display()),
        format!("{at}:17:7: jwt.trusted_issuers[3].issuer: issuer `https://sso.example/realms/b` cannot be trusted here: an earlier entry trusts it already"),
        format!("{at}:18:68: jwt.legacy_simplejwt.accept_until: `next-spring` is not an RFC 3339 time"),
    ];
    for line in &expected {
        assert!(
            stderr.contains(line.as_str()),
            "missing:\n{line}\nin:\n{stderr}"
        );
    }
}

#[test]
fn a_jwks_address_without_tls_beyond_loopback_is_a_warning() {
    let issuer = |url: &str| {
        GatewayConfig::new(&format!(
            "jwt:
  signing_key_file: keys/jwt.pem
  trusted_issuers:
    - {{ issuer: https://sso.example/realms/a, jwks_url: \"{url}\", audience: api }}
"
        ))
        .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
    };
    let (code, _, stderr, _dir) = run_check(&issuer("http://sso.example/certs"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("gateway.yaml:4:57: jwt.trusted_issuers[0].jwks_url: the keys of `https://sso.example/realms/a` are fetched without TLS, so anyone on the path can sign tokens for it; use the provider's https address"),
        "{stderr}"
    );
    for quiet in ["https://sso.example/certs", "http://127.0.0.1:8081/certs"] {
        let (code, _, stderr, _dir) = run_check(&issuer(quiet));
        assert_eq!(code, 0, "{stderr}");
        assert!(!stderr.contains("without TLS"), "{quiet}: {stderr}");
    }
    let (code, _, stderr, _dir) = run_check(&issuer("https://admin:secret@sso.example/certs"));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("holds credentials; a JWKS document is public"),
        "{stderr}"
    );
}
