//! The cost of the shared (Redis) rate limiter against the in-process one, measured in one run.
//!
//! `cargo bench --bench limiter` starts its own `redis-server` on a free loopback port, then runs
//! alternating rounds (local, Redis, local, Redis, …) of 64 concurrent callers checking two limits
//! per request (a consumer tier and a route limit, over 1,000 consumers), and prints checks per
//! second and latency percentiles for each, and the ratio of their medians.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use guichet::ratelimit::{Limit, Limiter, Mode, OnStoreError, Rate, RedisLimiter, SystemClock};
use guichet::store::RedisConnection;

const CALLERS: usize = 64;
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;

fn limits(consumer: usize) -> Vec<Limit> {
    let rate = Rate::parse("1000000/hour").expect("a rate");
    vec![
        Limit {
            policy: "user".to_string(),
            key: format!("tier:user:{consumer}"),
            rate,
        },
        Limit {
            policy: "route".to_string(),
            key: format!("route:bench:0:{consumer}"),
            rate,
        },
    ]
}

/// Runs one round; returns checks per second and the sorted latencies.
async fn round(limiter: Arc<Limiter>) -> (f64, Vec<Duration>) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let limiter = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut consumer = caller;
            while started.elapsed() < ROUND {
                let limits = limits(consumer % 1000);
                let t = Instant::now();
                let decision = limiter.check(&limits, Mode::Consume).await;
                latencies.push(t.elapsed());
                assert!(
                    decision.is_ok_and(|d| d.allowed),
                    "the limiter failed during the benchmark"
                );
                consumer += CALLERS;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a caller"));
    }
    all.sort();
    (all.len() as f64 / started.elapsed().as_secs_f64(), all)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    std::thread::sleep(Duration::from_millis(300));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let clock = Arc::new(SystemClock);
    let errors = prometheus::IntCounter::new("bench_errors", "unused").expect("a counter");
    let local = Arc::new(Limiter::new(
        clock.clone(),
        None,
        OnStoreError::Deny,
        errors.clone(),
    ));
    let connection = Arc::new(
        RedisConnection::new(
            &format!("redis://127.0.0.1:{port}/0"),
            Duration::from_secs(2),
        )
        .expect("a Redis URL"),
    );
    let shared = Arc::new(Limiter::new(
        clock,
        Some(RedisLimiter::new(connection)),
        OnStoreError::Deny,
        errors,
    ));

    let (mut local_rates, mut redis_rates) = (Vec::new(), Vec::new());
    println!("{CALLERS} concurrent callers, 2 limits per check, {ROUNDS} alternating rounds of {ROUND:?}");
    println!(
        "{:<8} {:>14} {:>10} {:>10}",
        "limiter", "checks/s", "p50", "p99"
    );
    for _ in 0..ROUNDS {
        for (name, limiter, rates) in [
            ("local", &local, &mut local_rates),
            ("redis", &shared, &mut redis_rates),
        ] {
            let (rate, latencies) = runtime.block_on(round(limiter.clone()));
            println!(
                "{name:<8} {rate:>14.0} {:>10?} {:>10?}",
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99)
            );
            rates.push(rate);
        }
    }
    let (local, redis_median) = (median(local_rates), median(redis_rates));
    println!(
        "median checks/s: local {local:.0}, redis {redis_median:.0}; redis/local = {:.3}",
        redis_median / local
    );
    let _ = redis.kill();
    let _ = redis.wait();
}
