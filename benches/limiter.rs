//! The in-process limiter under a flood of distinct consumers, and the cost of the shared
//! (Redis) limiter against the in-process one.
//!
//! `cargo bench --bench limiter` runs, in order:
//! - one pass of 2,000,000 distinct anonymous consumers at `100/day` through a limiter with the
//!   default `max_tracked_keys` (1,000,000), printing the CPU time per check of each 100,000 and
//!   the resident memory as it fills and once it is past the cap;
//! - criterion: checks per second of CPU time (this thread's, so other programs on a busy
//!   machine do not count) for the first and for the last 100,000 of 1,000,000 distinct keys,
//!   each measured on a limiter already holding the keys before them;
//! - alternating rounds (local, Redis, local, Redis, …) of 64 concurrent callers checking two
//!   limits per request (a consumer tier and a route limit, over 1,000 consumers), with its own
//!   `redis-server` on a free loopback port, printing checks per second and latency percentiles
//!   for each, and the ratio of their medians.

use std::fmt::Write;
use std::hint::black_box;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};

use guichet::ratelimit::{
    Limit, Limiter, LocalLimiter, Mode, OnStoreError, Rate, RatePolicy, RedisLimiter, SystemClock,
    DEFAULT_MAX_TRACKED_KEYS,
};
use guichet::store::{RedisConnection, RedisTarget};

/// The gateway's allocator, so resident memory is what the gateway would hold.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The flood: this many distinct client addresses at `anonymous: 100/day`.
const FLOOD: usize = 1_000_000;
const SLICE: usize = 100_000;

/// Consumer `n`'s tier limit, with room in its key for any other consumer's.
fn anonymous(n: usize) -> [Limit; 1] {
    let mut limit = [Limit {
        policy: "anonymous".to_string(),
        key: String::with_capacity(32),
        rate: Rate::parse("100/day").expect("a rate"),
    }];
    set_consumer(&mut limit, n);
    limit
}

/// Rewrites `limit` for consumer `n` in place: no allocation.
fn set_consumer(limit: &mut [Limit; 1], n: usize) {
    let key = &mut limit[0].key;
    key.clear();
    // Writing to a String cannot fail.
    let _ = write!(
        key,
        "tier:anonymous:ip:10.{}.{}.{}",
        n >> 16 & 0xff,
        n >> 8 & 0xff,
        n & 0xff
    );
}

/// A field of /proc/self/status in MiB (0 where there is none).
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// CPU time this thread has run, in nanoseconds, from /proc (0 where there is none): the
/// machine may be busy, and wall time would count the time others ran.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One pass of twice the flood through one limiter with the default cap: the CPU time per
/// check of each slice, and the resident memory (now and at its peak) over what the process
/// held before the limiter was made. Keys are written between slices, outside the timing.
fn one_pass() {
    let mut slice: Vec<[Limit; 1]> = (0..SLICE).map(anonymous).collect();
    let (rss, peak) = (status_mib("VmRSS:"), status_mib("VmHWM:"));
    let limiter = LocalLimiter::new(Arc::new(SystemClock));
    println!(
        "one pass of {} distinct keys at 100/day, max_tracked_keys {DEFAULT_MAX_TRACKED_KEYS}",
        2 * FLOOD
    );
    println!(
        "{:>20} {:>14} {:>14} {:>14}",
        "keys", "CPU ns/check", "RSS added", "peak added"
    );
    println!(
        "{:>20} {:>14} {:>10.1} MiB {:>10.1} MiB",
        "none",
        "",
        status_mib("VmRSS:") - rss,
        status_mib("VmHWM:") - peak,
    );
    let mut first = 0.0;
    for start in (0..2 * FLOOD).step_by(SLICE) {
        for (offset, limit) in slice.iter_mut().enumerate() {
            set_consumer(limit, start + offset);
        }
        let cpu = thread_cpu_ns();
        for limit in &slice {
            black_box(limiter.check(limit, Mode::Consume));
        }
        let ns = (thread_cpu_ns() - cpu) as f64 / SLICE as f64;
        if start == 0 {
            first = ns;
        }
        println!(
            "{:>20} {ns:>14.0} {:>10.1} MiB {:>10.1} MiB",
            format!("{start}..{}", start + SLICE),
            status_mib("VmRSS:") - rss,
            status_mib("VmHWM:") - peak,
        );
        if start + SLICE == FLOOD {
            println!("last / first 100k of {FLOOD}: {:.2}", ns / first);
        }
    }
}

/// Checks per second of CPU time for the first and the last slice of the flood; one iteration
/// is one slice, checked on a limiter already holding the keys before it (filled untimed).
fn flood(c: &mut Criterion) {
    let limits: Vec<[Limit; 1]> = (0..FLOOD).map(anonymous).collect();
    let mut group = c.benchmark_group(format!("{FLOOD} distinct keys at 100 per day"));
    group
        .throughput(Throughput::Elements(SLICE as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_millis(500));
    for (name, start) in [("first 100k", 0), ("last 100k", FLOOD - SLICE)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    let limiter = LocalLimiter::new(Arc::new(SystemClock));
                    for limit in &limits[..start] {
                        limiter.check(limit, Mode::Consume);
                    }
                    let cpu = thread_cpu_ns();
                    for limit in &limits[start..start + SLICE] {
                        black_box(limiter.check(limit, Mode::Consume));
                    }
                    timed += Duration::from_nanos(thread_cpu_ns() - cpu);
                }
                timed
            })
        });
    }
    group.finish();
}

const CALLERS: usize = 64;
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;

fn limits(consumer: usize) -> Vec<Limit> {
    let rate = Rate::parse("1000000/hour").expect("a rate");
    vec![
        Limit {
            policy: "user".to_string(),
            key: format!("{{user:{consumer}}}:tier:user"),
            rate,
        },
        Limit {
            policy: "route".to_string(),
            key: format!("{{user:{consumer}}}:route:bench:0"),
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
    // `cargo bench --bench limiter -- shared`: the Redis comparison alone.
    if !std::env::args().any(|arg| arg == "shared") {
        one_pass();
        let mut criterion = Criterion::default().configure_from_args();
        flood(&mut criterion);
        criterion.final_summary();
    }
    shared_against_local();
}

/// The Redis comparison: alternating rounds, with a private `redis-server`.
fn shared_against_local() {
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
    let policy = RatePolicy {
        on_store_error: OnStoreError::Deny,
        ..RatePolicy::default()
    };
    let local = Arc::new(Limiter::new(clock.clone(), None, &policy, errors.clone()));
    let connection = Arc::new(
        RedisConnection::new(
            RedisTarget::node(&format!("redis://127.0.0.1:{port}/0")),
            Duration::from_secs(2),
        )
        .expect("a Redis URL"),
    );
    let shared = Arc::new(Limiter::new(
        clock,
        Some(RedisLimiter::new(connection)),
        &policy,
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
