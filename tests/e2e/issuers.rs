//! Trusted issuers (issue 21) through the real listener: tokens an identity provider signed with
//! PyJWT (`tests/tokens/idp.py`, RS256 and ES256) are verified against the provider's JWKS,
//! served by a real HTTP endpoint ([`JwksServer`]) that counts its fetches and can be stopped.
//! The upstream receives the provider's user with the mapped role and the issuer; the usage
//! statistics, `/readyz`, `/metrics` and the API document name the issuer; keys the provider
//! rotates in are fetched once, keys it withdraws stop working when the document expires, a
//! provider that is down leaves the cached keys serving, a saved JWKS file serves without any
//! fetch; each issuer's users are rate-limited apart from Guichet's own; every token the issuers
//! did not vouch for is refused alike; and `guichet check` refuses a symmetric algorithm for an
//! issuer; requests with a new kid that arrive while its fetch is on its way wait for it.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::auth::{jwt_section, routes, seed, OPS_KEY};
use crate::common::{
    check, client, eventually, get_json, get_text, status_and_json, Gateway, GatewayConfig,
    JwksServer, Upstream,
};
use crate::metrics::{parse, series};

/// The provider every test trusts, as Keycloak names a realm.
const ISSUER: &str = "https://sso.hackitech.example/realms/hackitech";
/// A second trusted provider, with keys of its own.
const PARTNER: &str = "https://login.partner.example/realms/partner";
const AUDIENCE: &str = "hackitech-api";
const IDP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tokens/idp.py");

/// Asserts the answer every refused token gets: 401 `token_not_valid`, as Simple JWT words it.
fn assert_not_valid(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(
        body["detail"], "Given token not valid for any token type",
        "{what}: {body}"
    );
    assert_eq!(body["code"], "token_not_valid", "{what}: {body}");
}

/// Runs `idp.py` with `args`, which must succeed, and returns what it printed.
async fn idp(args: &[&str]) -> String {
    let output = tokio::process::Command::new("python3")
        .arg(IDP)
        .args(args)
        .output()
        .await
        .expect("run python3 tests/tokens/idp.py");
    assert!(
        output.status.success(),
        "idp.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .trim()
        .to_string()
}

/// The stand-in provider's key folder: private keys stay here, public JWKs go to the JWKS server.
struct Provider {
    dir: tempfile::TempDir,
}

/// One signing key of the provider.
struct Key {
    alg: &'static str,
    kid: String,
    path: PathBuf,
    jwk: Value,
}

impl Provider {
    fn new() -> Provider {
        Provider {
            dir: tempfile::tempdir().expect("a key folder"),
        }
    }

    /// A new key pair (`RS256`, `ES256`, or `HS256` for a shared secret).
    async fn key(&self, alg: &'static str, kid: &str) -> Key {
        let path = self.dir.path().join(format!("{kid}.pem"));
        let printed = idp(&[
            "keygen",
            "--alg",
            alg,
            "--kid",
            kid,
            "--out",
            path.to_str().expect("a UTF-8 path"),
        ])
        .await;
        Key {
            alg,
            kid: kid.to_string(),
            path,
            jwk: serde_json::from_str(&printed).expect("a JWK"),
        }
    }
}

impl Key {
    /// A token of `claims` signed by PyJWT with this key, its kid in the header.
    async fn mint(&self, claims: &Value) -> String {
        self.mint_as(Some(&self.kid), claims).await
    }

    /// As [`Key::mint`] with the header's `kid` chosen (`None`: no `kid` at all).
    async fn mint_as(&self, kid: Option<&str>, claims: &Value) -> String {
        let claims = claims.to_string();
        let mut args = vec![
            "mint",
            "--key",
            self.path.to_str().expect("a UTF-8 path"),
            "--alg",
            self.alg,
            "--claims",
            &claims,
        ];
        if let Some(kid) = kid {
            args.extend(["--kid", kid]);
        }
        idp(&args).await
    }
}

/// An unsigned token (`alg: none`) naming `kid`.
async fn unsigned(kid: &str, claims: &Value) -> String {
    idp(&[
        "mint",
        "--alg",
        "none",
        "--kid",
        kid,
        "--claims",
        &claims.to_string(),
    ])
    .await
}

/// A JWKS document of these keys' public halves.
fn document(keys: &[&Key]) -> Value {
    json!({"keys": keys.iter().map(|key| key.jwk.clone()).collect::<Vec<_>>()})
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Keycloak-shaped claims for `username` with realm roles `roles`, valid for ten minutes.
fn claims(username: &str, roles: &[&str]) -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": format!("0c5e6a1e-{username}"),
        "preferred_username": username,
        "realm_access": {"roles": roles},
        "iat": now,
        "exp": now + 600,
        "jti": format!("{username}-{}", next_serial()),
    })
}

/// A distinct `jti`, so that two tokens of one user differ and each is verified afresh.
fn next_serial() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A `jwt.trusted_issuers` entry, Keycloak-style: roles under `realm_access.roles`.
fn trusted(issuer: &str, jwks_url: &str, algorithms: &str) -> String {
    format!(
        "    - issuer: {issuer}
      jwks_url: {jwks_url}
      audience: {AUDIENCE}
      algorithms: {algorithms}
      claims: {{ user_id: sub, username: preferred_username, role: realm_access.roles }}
      roles: {{ teacher: instructor, learner: student }}
"
    )
}

/// Guichet's own token settings (`crate::auth::jwt_section`) with `entries` trusted.
fn config(upstream: &Upstream, entries: &str) -> GatewayConfig {
    let jwt = jwt_section().replace(
        "  leeway: 5s\n",
        &format!("  leeway: 5s\n  trusted_issuers:\n{entries}"),
    );
    GatewayConfig::new(&format!("include: [routes/*.yaml]\n{jwt}{}", seed()))
        .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem())
        .file("routes/app.yaml", &routes(upstream))
}

/// `GET path` with `Authorization: Bearer token` and `extra` headers: the status and JSON body.
async fn call(gateway: &Gateway, path: &str, token: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut request = client()
        .get(gateway.url(path))
        .header("authorization", format!("Bearer {token}"));
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    status_and_json(request.send().await.expect("an answer")).await
}

/// The status alone of `GET /api/courses/` with `token`.
async fn status_of(gateway: &Gateway, token: &str) -> u16 {
    call(gateway, "/api/courses/", token, &[]).await.0
}

/// `/readyz`'s report on `issuer`.
async fn issuer_status(gateway: &Gateway, issuer: &str) -> Value {
    get_json(gateway.admin_url("/readyz")).await["issuers"][issuer].clone()
}

/// Waits until the background task has fetched `issuer`'s keys and holds `keys` of them.
async fn wait_for_keys(gateway: &Gateway, issuer: &str, keys: u64) {
    eventually(&format!("{keys} keys of {issuer} in /readyz"), || async {
        let status = issuer_status(gateway, issuer).await;
        status["keys"] == keys && status["age_seconds"].is_number()
    })
    .await;
}

/// Asserts the upstream was told `user` of `issuer` with `role` (or no role header at all).
fn assert_identity(echo: &Value, user: &str, role: Option<&str>, issuer: &str) {
    let headers = &echo["headers"];
    assert_eq!(headers["x-auth-method"], json!(["jwt"]), "{echo}");
    assert_eq!(
        headers["x-user-id"],
        json!([format!("0c5e6a1e-{user}")]),
        "{echo}"
    );
    assert_eq!(headers["x-user-name"], json!([user]), "{echo}");
    assert_eq!(headers["x-user-issuer"], json!([issuer]), "{echo}");
    match role {
        Some(role) => assert_eq!(headers["x-user-role"], json!([role]), "{echo}"),
        None => assert!(headers.get("x-user-role").is_none(), "{echo}"),
    }
}

#[tokio::test]
async fn provider_tokens_in_rs256_and_es256_reach_the_upstream_as_the_mapped_user() {
    let provider = Provider::new();
    let rsa = provider.key("RS256", "rsa-2025").await;
    let ec = provider.key("ES256", "ec-2025").await;
    let jwks = JwksServer::start(document(&[&rsa, &ec]), None).await;

    // Keycloak puts several audiences in `aud`, and roles the gateway does not map beside its own.
    let mut teacher_claims = claims("marie", &["teacher", "offline_access"]);
    teacher_claims["aud"] = json!(["account", AUDIENCE]);
    let teacher = rsa.mint(&teacher_claims).await;
    let learner = ec.mint(&claims("lea", &["learner"])).await;
    // No `kid`: the one published key that fits ES256. Of two mapped roles, the higher.
    let both = ec
        .mint_as(None, &claims("sam", &["learner", "teacher"]))
        .await;
    // Only unmapped roles: no role at all.
    let guest = rsa.mint(&claims("gus", &["uma_authorization"])).await;

    let upstream = Upstream::start("app").await;
    let gateway = Gateway::start(config(
        &upstream,
        &trusted(ISSUER, &jwks.url(), "[RS256, ES256]"),
    ))
    .await;
    wait_for_keys(&gateway, ISSUER, 2).await;

    // The client's own claims to an issuer or a role are replaced by what the token proved.
    let spoofed = [
        ("x-user-issuer", "https://sso.evil.example/realms/x"),
        ("x-user-role", "admin"),
    ];
    let (status, echo) = call(&gateway, "/api/courses/", &teacher, &spoofed).await;
    assert_eq!(status, 200, "{echo}");
    assert_identity(&echo, "marie", Some("instructor"), ISSUER);
    let (status, echo) = call(&gateway, "/api/courses/", &learner, &spoofed).await;
    assert_eq!(status, 200, "{echo}");
    assert_identity(&echo, "lea", Some("student"), ISSUER);
    let (status, echo) = call(&gateway, "/api/courses/", &both, &[]).await;
    assert_eq!(status, 200, "{echo}");
    assert_identity(&echo, "sam", Some("instructor"), ISSUER);
    let (status, echo) = call(&gateway, "/api/courses/", &guest, &spoofed).await;
    assert_eq!(status, 200, "{echo}");
    assert_identity(&echo, "gus", None, ISSUER);

    // `roles: [instructor]` takes the mapped role.
    let (status, echo) = call(&gateway, "/api/teach/", &teacher, &[]).await;
    assert_eq!(status, 200, "{echo}");
    assert_identity(&echo, "marie", Some("instructor"), ISSUER);
    let (status, body) = call(&gateway, "/api/teach/", &learner, &[]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "permission_denied", "{body}");

    // Guichet's own users carry no issuer, and cannot claim one either.
    let own = gateway.access_token("demo", "demo-password").await;
    let (status, echo) = call(&gateway, "/api/courses/", &own, &spoofed).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-user-id"], json!(["1"]), "{echo}");
    assert!(echo["headers"].get("x-user-issuer").is_none(), "{echo}");

    // Usage statistics name the provider's users with their issuer.
    let usage = || async {
        let response = client()
            .get(gateway.url("/api/analytics/usage/"))
            .header("x-api-key", OPS_KEY)
            .send()
            .await
            .expect("an answer");
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, 200, "{body}");
        body
    };
    let marie = format!("user:marie@{ISSUER}");
    let lea = format!("user:lea@{ISSUER}");
    eventually("the provider's users in the usage statistics", || async {
        let report = usage().await;
        report["consumers"][&marie]["requests"] == 2 && report["consumers"][&lea]["requests"] == 2
    })
    .await;
    let report = usage().await;
    assert_eq!(report["consumers"][&lea]["errors_4xx"], 1, "{report}");
    assert_eq!(report["consumers"][&marie]["errors_4xx"], 0, "{report}");
    assert_eq!(
        report["consumers"][format!("user:sam@{ISSUER}")]["requests"],
        1,
        "{report}"
    );
    assert_eq!(report["consumers"]["user:demo"]["requests"], 1, "{report}");

    // The API document tells clients which providers' tokens they may bring.
    let schema = get_json(gateway.url("/api/schema/?format=json")).await;
    let bearer = &schema["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        bearer["x-trusted-issuers"],
        json!([{"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256", "ES256"]}]),
        "{bearer}"
    );
    let description = bearer["description"].as_str().unwrap_or_default();
    assert!(description.contains(ISSUER), "{bearer}");
    assert!(description.contains(AUDIENCE), "{bearer}");

    // The access log names the provider's user by subject and issuer; user_id stays a number.
    let line = gateway
        .wait_for_log(|l| l["auth"] == "jwt" && l["issuer"] == ISSUER)
        .await;
    assert!(
        line["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("0c5e6a1e-")),
        "{line}"
    );
    assert!(line.get("user_id").is_none(), "{line}");
}

#[tokio::test]
async fn a_key_rotated_in_is_fetched_once_and_the_next_unknown_kid_waits_a_minute() {
    let provider = Provider::new();
    let old = provider.key("RS256", "2025-01").await;
    let new = provider.key("RS256", "2025-02").await;
    let next = provider.key("ES256", "2025-03").await;
    let old_token = old.mint(&claims("marie", &["teacher"])).await;
    let new_token = new.mint(&claims("lea", &["learner"])).await;
    let next_token = next.mint(&claims("sam", &["learner"])).await;
    // No `Cache-Control`: kept 300 s, so no scheduled fetch happens during the test.
    let jwks = JwksServer::start(document(&[&old]), None).await;
    let upstream = Upstream::start("app").await;
    let gateway = Gateway::start(config(
        &upstream,
        &trusted(ISSUER, &jwks.url(), "[RS256, ES256]"),
    ))
    .await;
    wait_for_keys(&gateway, ISSUER, 1).await;
    assert_eq!(jwks.fetches(), 1, "one fetch at start");
    assert_eq!(status_of(&gateway, &old_token).await, 200);

    // The provider publishes a new key and signs with it: one fetch, no restart.
    jwks.set(document(&[&old, &new]));
    let (status, echo) = call(&gateway, "/api/courses/", &new_token, &[]).await;
    assert_eq!(status, 200, "{echo}");
    assert_identity(&echo, "lea", Some("student"), ISSUER);
    assert_eq!(jwks.fetches(), 2, "the unknown kid fetched the keys once");
    assert_eq!(issuer_status(&gateway, ISSUER).await["keys"], 2);

    // Right after, another unknown kid does not fetch again, even though the provider has
    // published it by now: the bound is one such fetch a minute.
    jwks.set(document(&[&old, &new, &next]));
    let (status, body) = call(&gateway, "/api/courses/", &next_token, &[]).await;
    assert_not_valid(status, &body, "a second unknown kid within the minute");
    assert_eq!(jwks.fetches(), 2, "no second fetch within the minute");
    // The keys already known keep working, without fetching.
    assert_eq!(status_of(&gateway, &old_token).await, 200);
    assert_eq!(status_of(&gateway, &new_token).await, 200);
    let (status, _) = call(&gateway, "/api/courses/", &next_token, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(jwks.fetches(), 2);
    assert_eq!(issuer_status(&gateway, ISSUER).await["keys"], 2);
}

/// At a rotation under load, the requests that bring the new kid while its one fetch is on its
/// way wait for that fetch rather than being refused (they were: 19 of 20 got 401).
#[tokio::test]
async fn concurrent_requests_with_a_rotated_in_kid_all_wait_for_the_one_fetch() {
    let provider = Provider::new();
    let old = provider.key("RS256", "2025-01").await;
    let new = provider.key("RS256", "2025-02").await;
    let token = new.mint(&claims("lea", &["learner"])).await;
    let jwks = JwksServer::start(document(&[&old]), None).await;
    let upstream = Upstream::start("app").await;
    let gateway = Gateway::start(config(&upstream, &trusted(ISSUER, &jwks.url(), "[RS256]"))).await;
    wait_for_keys(&gateway, ISSUER, 1).await;

    jwks.set(document(&[&old, &new]));
    let burst = (0..20).map(|_| status_of(&gateway, &token));
    let statuses = futures_util::future::join_all(burst).await;
    assert_eq!(jwks.fetches(), 2, "one fetch for the whole burst");
    assert!(
        statuses.iter().all(|status| *status == 200),
        "requests that came while the new key was being fetched: {statuses:?}"
    );
}

#[tokio::test]
async fn a_key_the_provider_withdraws_stops_working_when_the_document_expires() {
    let provider = Provider::new();
    let stays = provider.key("RS256", "stays").await;
    let goes = provider.key("RS256", "goes").await;
    let staying = stays.mint(&claims("marie", &["teacher"])).await;
    let going = goes.mint(&claims("lea", &["learner"])).await;
    // The shortest lifetime the gateway honours.
    let jwks = JwksServer::start(document(&[&stays, &goes]), Some("public, max-age=5")).await;
    let upstream = Upstream::start("app").await;
    let gateway = Gateway::start(config(&upstream, &trusted(ISSUER, &jwks.url(), "[RS256]"))).await;
    wait_for_keys(&gateway, ISSUER, 2).await;
    // Several times, so that more than one worker thread remembers the token as verified.
    for _ in 0..8 {
        assert_eq!(status_of(&gateway, &going).await, 200);
    }
    assert_eq!(status_of(&gateway, &staying).await, 200);

    let before = jwks.fetches();
    jwks.set(document(&[&stays]));
    let withdrawn = Instant::now();
    // Until the gateway fetches again, its copy (and its memory of the token) still holds.
    let status = status_of(&gateway, &going).await;
    if jwks.fetches() == before {
        assert_eq!(status, 200, "the document's lifetime has not ended yet");
    }
    let mut last = status;
    while last != 401 && withdrawn.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = status_of(&gateway, &going).await;
    }
    assert_eq!(
        last,
        401,
        "the withdrawn key still worked {:?} after the 5 s document was replaced",
        withdrawn.elapsed()
    );
    assert!(jwks.fetches() > before);
    // Refused on every thread, not only on the one that verified it again.
    for _ in 0..8 {
        let (status, body) = call(&gateway, "/api/courses/", &going, &[]).await;
        assert_not_valid(status, &body, "the withdrawn key");
    }
    // The key that stayed in the document still works.
    assert_eq!(status_of(&gateway, &staying).await, 200);
    assert_eq!(issuer_status(&gateway, ISSUER).await["keys"], 1);
}

#[tokio::test]
async fn with_the_provider_down_cached_keys_serve_and_readyz_and_metrics_say_so() {
    let provider = Provider::new();
    let key = provider.key("RS256", "up-1").await;
    let later = provider.key("RS256", "up-2").await;
    let mut tokens = Vec::new();
    for user in ["ann", "bob", "cy", "dee", "eve"] {
        tokens.push(key.mint(&claims(user, &["learner"])).await);
    }
    let later_token = later.mint(&claims("fay", &["teacher"])).await;
    let jwks = JwksServer::start(document(&[&key]), None).await;
    let upstream = Upstream::start("app").await;
    let gateway = Gateway::start(config(&upstream, &trusted(ISSUER, &jwks.url(), "[RS256]"))).await;
    wait_for_keys(&gateway, ISSUER, 1).await;
    let readyz = gateway.admin_url("/readyz");
    eventually("/readyz 200", || async {
        client()
            .get(&readyz)
            .send()
            .await
            .expect("an answer")
            .status()
            == 200
    })
    .await;

    jwks.stop();
    // Tokens the gateway has never seen are verified with the keys it holds.
    for token in &tokens {
        let (status, echo) = call(&gateway, "/api/courses/", token, &[]).await;
        assert_eq!(status, 200, "{echo}");
        assert_eq!(echo["headers"]["x-user-issuer"], json!([ISSUER]));
    }
    // A key published while the provider is unreachable cannot be fetched: the token is refused
    // and the fetch's failure is reported, the last good copy kept.
    jwks.set(document(&[&key, &later]));
    let (status, body) = call(&gateway, "/api/courses/", &later_token, &[]).await;
    assert_not_valid(status, &body, "a kid the provider published while down");
    assert_eq!(jwks.fetches(), 1);

    let response = client().get(&readyz).send().await.expect("an answer");
    let (status, ready) = status_and_json(response).await;
    assert_eq!(
        status, 200,
        "a provider down is not the gateway down: {ready}"
    );
    let issuer = &ready["issuers"][ISSUER];
    assert_eq!(issuer["source"], jwks.url(), "{ready}");
    assert_eq!(issuer["keys"], 1, "{ready}");
    assert!(issuer["age_seconds"].as_f64().is_some(), "{ready}");
    assert!(
        issuer["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{ready}"
    );
    let failing = series("guichet_jwks_refresh_failing", &[("issuer", ISSUER)]);
    let age = series("guichet_jwks_age_seconds", &[("issuer", ISSUER)]);
    eventually("guichet_jwks_refresh_failing 1", || async {
        parse(&get_text(gateway.admin_url("/metrics")).await).get(&failing) == Some(&1.0)
    })
    .await;
    let samples = parse(&get_text(gateway.admin_url("/metrics")).await);
    assert!(
        samples.get(&age).is_some_and(|age| *age >= 0.0),
        "{samples:?}"
    );
    // Still serving with the cached keys after the failure.
    assert_eq!(status_of(&gateway, &tokens[0]).await, 200);
    assert_eq!(
        status_of(&gateway, &key.mint(&claims("gil", &[])).await).await,
        200
    );

    // The provider comes back: the retry (30 s after the failure) fetches the new document.
    jwks.restart().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let issuer = issuer_status(&gateway, ISSUER).await;
        if issuer["last_error"].is_null() && issuer["keys"] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the keys were not fetched again within 60 s of the provider's return: {issuer}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, echo) = call(&gateway, "/api/courses/", &later_token, &[]).await;
    assert_eq!(status, 200, "{echo}");
    assert_identity(&echo, "fay", Some("instructor"), ISSUER);
    eventually("guichet_jwks_refresh_failing 0", || async {
        parse(&get_text(gateway.admin_url("/metrics")).await).get(&failing) == Some(&0.0)
    })
    .await;
}

#[tokio::test]
async fn tokens_the_issuers_did_not_vouch_for_are_401_token_not_valid() {
    let provider = Provider::new();
    let rsa = provider.key("RS256", "a-rsa").await;
    let ec = provider.key("ES256", "a-ec").await;
    let partner_key = provider.key("RS256", "b-rsa").await;
    // Published by the partner, but the partner is trusted for RS256 only.
    let partner_ec = provider.key("ES256", "b-ec").await;
    // Never published: the same kid as the provider's key, another key.
    let stray = provider.key("RS256", "a-rsa-stray").await;
    let secret = provider.key("HS256", "a-hmac").await;
    let jwks = JwksServer::start(document(&[&rsa, &ec]), None).await;
    let partner_jwks = JwksServer::start(document(&[&partner_key, &partner_ec]), None).await;

    let valid = claims("marie", &["teacher"]);
    let with = |changes: &[(&str, Value)]| {
        let mut claims = valid.clone();
        for (name, value) in changes {
            claims[*name] = value.clone();
        }
        claims
    };
    let mut without_exp = valid.clone();
    without_exp.as_object_mut().expect("claims").remove("exp");
    let t = now();
    let cross = partner_key.mint(&valid).await;
    let attacks = [
        (
            "wrong audience",
            rsa.mint(&with(&[("aud", json!("another-api"))])).await,
        ),
        (
            "audience of Guichet's own tokens",
            rsa.mint(&with(&[("aud", json!("hackitech"))])).await,
        ),
        (
            "an issuer not trusted",
            rsa.mint(&with(&[(
                "iss",
                json!("https://sso.evil.example/realms/x"),
            )]))
            .await,
        ),
        (
            "the gateway's own issuer",
            rsa.mint(&with(&[("iss", json!("guichet"))])).await,
        ),
        (
            "the partner's kid and key, claiming the first issuer",
            cross.clone(),
        ),
        (
            "the first issuer's kid and key, claiming the partner",
            rsa.mint(&with(&[("iss", json!(PARTNER))])).await,
        ),
        (
            "expired beyond the leeway",
            rsa.mint(&with(&[("exp", json!(t - 60)), ("iat", json!(t - 660))]))
                .await,
        ),
        ("no exp", rsa.mint(&without_exp).await),
        (
            "ES256 with a key the partner publishes, the partner being trusted for RS256 only",
            partner_ec.mint(&with(&[("iss", json!(PARTNER))])).await,
        ),
        (
            "not valid before ten minutes from now",
            rsa.mint(&with(&[("nbf", json!(t + 600))])).await,
        ),
        ("alg none", unsigned(&rsa.kid, &valid).await),
        (
            "HS256, an algorithm not allowed",
            secret.mint_as(Some(&rsa.kid), &valid).await,
        ),
        ("HS256 without a kid", secret.mint_as(None, &valid).await),
        (
            "ES256 with the kid of an RSA key",
            ec.mint_as(Some(&rsa.kid), &valid).await,
        ),
        (
            "signed by another key under a published kid",
            stray.mint_as(Some(&rsa.kid), &valid).await,
        ),
        ("a kid nobody published", stray.mint(&valid).await),
    ];
    let good = rsa.mint(&valid).await;
    let good_ec = ec.mint(&valid).await;
    let mut partner_claims = claims("lea", &["learner"]);
    partner_claims["iss"] = json!(PARTNER);
    let partner_token = partner_key.mint(&partner_claims).await;

    let upstream = Upstream::start("app").await;
    let entries = format!(
        "{}{}",
        trusted(ISSUER, &jwks.url(), "[RS256, ES256]"),
        trusted(PARTNER, &partner_jwks.url(), "[RS256]")
    );
    let gateway = Gateway::start(config(&upstream, &entries)).await;
    wait_for_keys(&gateway, ISSUER, 2).await;
    wait_for_keys(&gateway, PARTNER, 2).await;

    // The same machinery, used honestly, is accepted: each attack fails for its flaw.
    for token in [&good, &good_ec] {
        let (status, echo) = call(&gateway, "/api/courses/", token, &[]).await;
        assert_eq!(status, 200, "{echo}");
        assert_identity(&echo, "marie", Some("instructor"), ISSUER);
    }
    let (status, echo) = call(&gateway, "/api/courses/", &partner_token, &[]).await;
    assert_eq!(status, 200, "{echo}");
    assert_identity(&echo, "lea", Some("student"), PARTNER);
    // Expired a second ago, within `jwt.leeway` (5 s): still accepted. Only judged when minting
    // and sending took less than the 4 s left, which a loaded machine may exceed.
    let minted = Instant::now();
    let lately = rsa.mint(&with(&[("exp", json!(now() - 1))])).await;
    let status = status_of(&gateway, &lately).await;
    if minted.elapsed() < Duration::from_secs(3) {
        assert_eq!(status, 200, "expired within the leeway");
    }

    let hits = upstream.hits();
    for (attack, token) in &attacks {
        let (status, body) = call(&gateway, "/api/courses/", token, &[]).await;
        assert_not_valid(status, &body, attack);
    }
    assert_eq!(
        upstream.hits(),
        hits,
        "no refused token reached the upstream"
    );
    // A public route ignores a refused token: the request goes through as nobody's.
    let (status, echo) = call(&gateway, "/api/public/", &cross, &[]).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(
        echo["headers"]["x-auth-method"],
        json!(["anonymous"]),
        "{echo}"
    );
    assert!(echo["headers"].get("x-user-issuer").is_none(), "{echo}");
}

#[tokio::test]
async fn each_issuer_s_users_have_their_own_rate_limits_and_a_saved_jwks_file_serves() {
    let provider = Provider::new();
    let key = provider.key("RS256", "a-rsa").await;
    let partner_key = provider.key("ES256", "b-ec").await;
    let unpublished = provider.key("ES256", "b-next").await;
    // Three users with the same id and name, one per source of tokens.
    let as_demo = |issuer: &str| {
        let mut claims = claims("demo", &["learner"]);
        claims["iss"] = json!(issuer);
        claims["sub"] = json!("1");
        claims
    };
    let ours = key.mint(&as_demo(ISSUER)).await;
    let partners = partner_key.mint(&as_demo(PARTNER)).await;
    let partners_next = unpublished.mint(&as_demo(PARTNER)).await;
    let jwks = JwksServer::start(document(&[&key]), None).await;
    let upstream = Upstream::start("app").await;
    let entries = format!(
        "{}{}",
        trusted(ISSUER, &jwks.url(), "[RS256]"),
        trusted(PARTNER, "keys/partner.json", "[ES256]").replace("jwks_url", "jwks_file")
    );
    let config = config(&upstream, &entries)
        .file("keys/partner.json", &document(&[&partner_key]).to_string())
        .file(
            "routes/app.yaml",
            &format!(
                "{}  - path: /api/limited/\n    rate_limit: 2/hour\n",
                routes(&upstream)
            ),
        );
    let gateway = Gateway::start(config).await;
    wait_for_keys(&gateway, ISSUER, 1).await;

    // The saved document is read at start: no source to fetch, no error, no age to alert on.
    let partner = issuer_status(&gateway, PARTNER).await;
    assert_eq!(partner["source"], "file", "{partner}");
    assert_eq!(partner["keys"], 1, "{partner}");
    assert!(partner["age_seconds"].is_null(), "{partner}");
    assert!(partner["last_error"].is_null(), "{partner}");

    // Guichet's user 1 spends their two requests an hour.
    let own = gateway.access_token("demo", "demo-password").await;
    let limited = |token: &str| {
        let token = token.to_string();
        let gateway = &gateway;
        async move { call(gateway, "/api/limited/", &token, &[]).await.0 }
    };
    assert_eq!(limited(&own).await, 200);
    assert_eq!(limited(&own).await, 200);
    assert_eq!(limited(&own).await, 429);
    // The providers' users with the same id and name have budgets of their own.
    for token in [&ours, &partners] {
        let (status, echo) = call(&gateway, "/api/limited/", token, &[]).await;
        assert_eq!(status, 200, "{echo}");
        assert_eq!(echo["headers"]["x-user-id"], json!(["1"]), "{echo}");
        assert_eq!(limited(token).await, 200);
        assert_eq!(limited(token).await, 429);
    }
    let (_, echo) = call(&gateway, "/api/courses/", &partners, &[]).await;
    assert_eq!(echo["headers"]["x-user-issuer"], json!([PARTNER]), "{echo}");
    assert_eq!(echo["headers"]["x-user-role"], json!(["student"]), "{echo}");

    // A file is never fetched again: a key missing from it stays unknown.
    let (status, body) = call(&gateway, "/api/courses/", &partners_next, &[]).await;
    assert_not_valid(status, &body, "a kid the saved document lacks");
    assert_eq!(issuer_status(&gateway, PARTNER).await["keys"], 1);
}

#[test]
fn check_refuses_a_symmetric_algorithm_for_a_trusted_issuer_with_its_position() {
    let gateway = format!(
        "jwt:
  issuer: guichet
  audience: hackitech
  algorithm: EdDSA
  signing_key_file: keys/jwt.pem
  trusted_issuers:
    - issuer: {ISSUER}
      jwks_url: http://127.0.0.1:1/certs
      audience: {AUDIENCE}
      algorithms: [RS256, HS256]
"
    );
    let config = GatewayConfig::new(&gateway)
        .file("keys/jwt.pem", &guichet::auth::jwt::generate_ed25519_pem());
    let (dir, path) = config.write();
    let output = check(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let (line, column) = position_of(&gateway, "HS256");
    let expected = format!(
        "{}:{line}:{column}: jwt.trusted_issuers[0].algorithms[1]: HS256 is symmetric: a provider's public keys cannot verify it (write RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA",
        dir.path().join("gateway.yaml").display()
    );
    assert!(
        stderr.contains(&expected),
        "missing:\n{expected}\nin:\n{stderr}"
    );
    assert_eq!(stderr.matches("is symmetric").count(), 1, "{stderr}");
    // The same file with an asymmetric algorithm passes.
    std::fs::write(&path, gateway.replace("HS256", "ES256")).expect("rewrite gateway.yaml");
    let output = check(&path);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The 1-based line and column of the first `needle` in `text`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(index, line)| line.find(needle).map(|at| (index + 1, at + 1)))
        .expect("the needle in the text")
}
