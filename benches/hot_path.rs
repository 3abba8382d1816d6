//! Micro-benchmarks of each step a proxied request pays for, so a regression shows where it is:
//! route matching, JWT verification (HS256 and EdDSA), API-key lookup (cached), the limits a
//! request must pass and the in-process limiter's check, and metrics recording.
//!
//! `cargo bench --bench hot_path` (CI only builds them: `cargo bench --no-run`).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;

use guichet::auth::api_key::{self, ApiKeys, KeyCheck};
use guichet::auth::identity::Identity;
use guichet::auth::jwt::{self, Keys, Subject, TokenType, Tokens};
use guichet::config::{self, Config};
use guichet::context::{InFlight, RequestCtx};
use guichet::metrics::Metrics;
use guichet::ratelimit::{LocalLimiter, Mode, SystemClock};
use guichet::router::{Lookup, Router};
use guichet::snapshot::Snapshot;
use guichet::store::{ApiKey, MemoryStore};

/// A configuration of 40 routes over 4 services, like a platform a few teams share.
fn platform() -> Config {
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::create_dir(dir.path().join("routes")).expect("routes folder");
    std::fs::write(dir.path().join("key.pem"), jwt::generate_ed25519_pem()).expect("key");
    std::fs::write(
        dir.path().join("gateway.yaml"),
        "include: [routes/*.yaml]
jwt: { algorithm: EdDSA, signing_key_file: key.pem }
rate_limits: { user: 1000/hour, anonymous: 60/min }
",
    )
    .expect("gateway.yaml");
    for service in ["courses", "accounts", "grades", "quizzes"] {
        let mut text = format!("service: {service}\nupstreams: [http://127.0.0.1:9]\nroutes:\n");
        for resource in ["items", "drafts", "stats", "exports", "tags"] {
            text.push_str(&format!(
                "  - path: /api/{service}/{resource}/\n    upstream_path: /{resource}/\n    auth: none\n  - path: /api/{service}/{{id}}/{resource}/\n    rate_limit: 30/min\n"
            ));
        }
        std::fs::write(dir.path().join(format!("routes/{service}.yaml")), text).expect("routes");
    }
    config::load(&dir.path().join("gateway.yaml")).expect("a valid configuration")
}

fn route_matching(c: &mut Criterion) {
    let config = platform();
    let router = Router::new(&config.routes);
    let mut group = c.benchmark_group("route matching");
    for path in [
        "/api/quizzes/items/",
        "/api/quizzes/12345/tags/",
        "/api/nowhere/at/all",
    ] {
        group.bench_function(path, |b| {
            b.iter(
                || match router.lookup(std::hint::black_box(path), &Method::GET) {
                    Lookup::Found(found) => found.upstream_path().len(),
                    Lookup::MethodNotAllowed(..) | Lookup::NotFound => 0,
                },
            )
        });
    }
    group.finish();
}

fn jwt_verification(c: &mut Criterion) {
    let ed25519 = Keys::from_private_pem(
        jsonwebtoken::Algorithm::EdDSA,
        jwt::generate_ed25519_pem().as_bytes(),
    )
    .expect("an Ed25519 key");
    let hs256 = Keys::from_secret(b"bench-only-secret-of-thirty-two-bytes!").expect("a secret");
    let subject = Subject {
        user_id: 1,
        username: "demo",
        role: "student",
    };
    let mut group = c.benchmark_group("JWT verification");
    for (name, keys) in [("EdDSA", ed25519), ("HS256", hs256)] {
        let hour = Duration::from_secs(3600);
        let tokens = Tokens::new(keys, "guichet", "hackitech", hour, hour, Duration::ZERO);
        let (token, _) = tokens
            .issue(&subject, TokenType::Access, None)
            .expect("a token");
        group.bench_function(name, |b| {
            b.iter(|| tokens.verify(std::hint::black_box(&token), TokenType::Access))
        });
        group.bench_function(format!("{name}, remembered"), |b| {
            b.iter(|| tokens.verify_access(std::hint::black_box(&token)))
        });
    }
    group.finish();
}

fn api_key_lookup(c: &mut Criterion) {
    let (key, prefix, secret_hash) = api_key::generate();
    let store = MemoryStore::new();
    store
        .insert_api_key(ApiKey {
            prefix,
            name: "grading".to_string(),
            secret_hash,
            role: "instructor".to_string(),
            scopes: vec!["grades:write".to_string()],
            created: 0,
            expires: None,
            revoked: false,
        })
        .expect("a key");
    let keys = ApiKeys::new(Arc::new(store), Duration::from_secs(3600));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    assert!(matches!(
        runtime.block_on(keys.check(&key)),
        KeyCheck::Valid(_)
    ));
    c.bench_function("API key lookup (cached)", |b| {
        b.iter(|| runtime.block_on(keys.check(std::hint::black_box(&key))))
    });
}

fn rate_limiting(c: &mut Criterion) {
    let config = platform();
    let route = config
        .routes
        .iter()
        .find(|r| !r.rate_limits.is_empty())
        .expect("a limited route");
    let identity = Identity {
        user_id: Some("42".to_string()),
        role: Some("student".to_string()),
        method: guichet::auth::identity::AuthMethod::Jwt,
        ..Identity::anonymous()
    };
    let client = "127.0.0.1".parse().expect("an address");
    let limiter = LocalLimiter::new(Arc::new(SystemClock));
    let limits = config.rate_limits.limits(route, &identity, client);
    c.bench_function("limits of a request (tier + route)", |b| {
        b.iter(|| config.rate_limits.limits(route, &identity, client))
    });
    c.bench_function("local limiter check (2 limits)", |b| {
        b.iter(|| limiter.check(std::hint::black_box(&limits), Mode::Peek))
    });
}

fn metrics_recording(c: &mut Criterion) {
    let metrics = Metrics::new().expect("metrics");
    let config = platform();
    let tls = guichet::tls::load(&config, &mut Vec::new()).expect("no TLS file to load");
    let snapshot = Arc::new(Snapshot::new(config, tls, &metrics, None, 1));
    let in_flight = InFlight::new(metrics.in_flight.clone());
    let mut ctx = RequestCtx::new(&in_flight, snapshot.clone());
    ctx.route = snapshot.config.routes.get(3).cloned();
    ctx.upstream_time = Some(Duration::from_micros(800));
    c.bench_function("metrics recording (one request)", |b| {
        b.iter(|| metrics.record_outcome(&ctx, &Method::GET, 200, 512))
    });
}

criterion_group!(
    hot_path,
    route_matching,
    jwt_verification,
    api_key_lookup,
    rate_limiting,
    metrics_recording
);
criterion_main!(hot_path);
