//! Logging: the `tracing` subscriber (text or one JSON object per line, filtered by `RUST_LOG`),
//! the access-log line every request gets, the error line every gateway-made 5xx gets,
//! [`Repeated`], which keeps a warning that could come with every request from flooding the log,
//! and [`WithCauses`], which shows an error's whole chain of causes in a line.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pingora::proxy::Session;
use tracing_subscriber::EnvFilter;

use crate::context::RequestCtx;
use crate::errors::GatewayError;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Pingora's own chatter stays at warn unless `RUST_LOG` says otherwise.
const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora_proxy=warn";

/// The Redis client warns on every attempt to reach a cluster node that is down, hundreds a
/// second; Guichet's own warnings say so once in ten seconds. It is kept to errors unless
/// `RUST_LOG` names it.
const REDIS_CLIENT: &str = "redis=error";

pub fn init(format: LogFormat) {
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default();
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    if !from_env.contains("redis") {
        if let Ok(quiet) = REDIS_CLIENT.parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // A second call (tests, embedding) keeps the first subscriber.
    drop(installed);
}

fn upstream_url(ctx: &RequestCtx) -> &str {
    match (&ctx.route, ctx.target) {
        (Some(route), Some(target)) => {
            &ctx.snapshot
                .upstreams
                .pool(route.service)
                .target(target)
                .url
        }
        _ => "",
    }
}

/// One line per request, proxied or answered by the gateway.
pub fn access(session: &Session, ctx: &RequestCtx) {
    let request = session.req_header();
    let status = session
        .response_written()
        .map_or(0, |response| response.status.as_u16());
    access_line(
        ctx,
        request.method.as_str(),
        request.uri.path(),
        status,
        session.body_bytes_sent(),
    );
}

/// The access line of a request whose `method`, `path`, `status` and response body size are
/// given: every answer's, including heads refused before they were parsed.
pub fn access_line(ctx: &RequestCtx, method: &str, path: &str, status: u16, bytes_out: usize) {
    let identity = &ctx.identity;
    let (own, foreign) = match identity.issuer {
        None => (identity.user_id.as_deref(), None),
        Some(_) => (None, identity.user_id.as_deref()),
    };
    tracing::info!(
        target: "guichet::access",
        request_id = %ctx.request_id,
        trace_id = ctx.trace.as_ref().map_or("", |t| t.trace_id.as_str()),
        client_ip = %ctx.origin.as_ref().map(|o| o.client.to_string()).unwrap_or_default(),
        method,
        path,
        route = ctx.route_label(),
        status,
        duration_ms = ctx.started.elapsed().as_micros() as f64 / 1000.0,
        upstream = upstream_url(ctx),
        upstream_ms = ctx.upstream_time.map(|t| t.as_micros() as f64 / 1000.0),
        auth = identity.method.as_str(),
        // A number for Guichet's users, as before; a trusted issuer's user by subject and issuer.
        user_id = own.and_then(|id| id.parse::<u64>().ok()),
        subject = foreign,
        issuer = identity.issuer.as_deref(),
        consumer = identity.consumer.as_deref(),
        rate_limited = ctx.throttled_by.as_deref(),
        bytes_in = ctx.body_bytes,
        bytes_out,
        code = ctx.error.as_ref().map(GatewayError::code),
        "request"
    );
}

/// The line for a 5xx the gateway made, with the cause: at most one every ten seconds per route
/// and code, with the count left out (each request still has its access line with its code).
pub fn gateway_error(
    ctx: &RequestCtx,
    error: &GatewayError,
    cause: Option<&dyn std::fmt::Display>,
) {
    let Some(suppressed) = error_line_due(ctx.route_label(), error.code()) else {
        return;
    };
    tracing::error!(
        target: "guichet::error",
        request_id = %ctx.request_id,
        trace_id = ctx.trace.as_ref().map_or("", |t| t.trace_id.as_str()),
        status = error.status(),
        code = error.code(),
        route = ctx.route_label(),
        upstream = upstream_url(ctx),
        cause = cause.map(tracing::field::display),
        invariant = error.invariant(),
        suppressed,
        "{}",
        error.detail()
    );
}

/// Whether the error line of `code` on `route` is due, and how many were left out before it.
/// The kinds are bounded: the configured routes and the gateway's codes.
fn error_line_due(route: &str, code: &str) -> Option<u64> {
    static KINDS: OnceLock<Mutex<HashMap<String, Arc<Repeated>>>> = OnceLock::new();
    let kind = format!("{route} {code}");
    let repeated = KINDS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(kind)
        .or_default()
        .clone();
    repeated.due()
}

/// How often a [`Repeated`] warning may be logged.
pub const REPEAT_EVERY: Duration = Duration::from_secs(10);

/// A warning that may come with every request while something is wrong (the store is down, a
/// fallback is taken): logged at most once every [`REPEAT_EVERY`], with the number of
/// occurrences left out since the last line. One per kind of warning, usually a `static`.
pub struct Repeated {
    /// Milliseconds since [`process_clock`]'s start before which nothing more is logged.
    quiet_until: AtomicU64,
    suppressed: AtomicU64,
}

impl Repeated {
    pub const fn new() -> Repeated {
        Repeated {
            quiet_until: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this occurrence is to be logged, `n` being how many were left out since
    /// the last one logged; `None` when it is to be left out (and counted).
    pub fn due(&self) -> Option<u64> {
        self.due_at(process_clock())
    }

    fn due_at(&self, now: Duration) -> Option<u64> {
        let now = now.as_millis() as u64;
        let until = self.quiet_until.load(Ordering::Relaxed);
        let next = now + REPEAT_EVERY.as_millis() as u64;
        if now >= until
            && self
                .quiet_until
                .compare_exchange(until, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for Repeated {
    fn default() -> Repeated {
        Repeated::new()
    }
}

/// An error for a log line: its text, then each cause the text leaves out, `: `-separated.
/// Guichet's errors end their text with their cause's (`connect to host:80: Connection
/// refused`), but not every library's do: hyper's `connection error` keeps the I/O error in
/// `source()` only.
pub struct WithCauses<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for WithCauses<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.to_string();
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            next = cause.source();
        }
        f.write_str(&shown)
    }
}

/// Time since the first call, from a monotonic clock.
fn process_clock() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_logged_once_per_period_with_the_count_left_out() {
        let warning = Repeated::new();
        let at = |seconds: u64| Duration::from_secs(seconds);
        assert_eq!(warning.due_at(at(100)), Some(0));
        for second in [100, 101, 105, 109] {
            assert_eq!(warning.due_at(at(second)), None);
        }
        assert_eq!(warning.due_at(at(110)), Some(4));
        assert_eq!(warning.due_at(at(115)), None);
        assert_eq!(warning.due_at(at(300)), Some(1));
    }

    /// Says what failed and, like hyper's errors, keeps the cause out of its text.
    #[derive(Debug, thiserror::Error)]
    #[error("connection error")]
    struct Quiet(#[source] std::io::Error);

    /// Says what failed and ends its text with the cause's, like Guichet's errors.
    #[derive(Debug, thiserror::Error)]
    #[error("request: {0}")]
    struct Telling(#[source] Quiet);

    #[test]
    fn a_logged_error_shows_each_cause_once() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            WithCauses(&Telling(Quiet(refused()))).to_string(),
            "request: connection error: refused"
        );
        assert_eq!(WithCauses(&refused()).to_string(), "refused");
    }

    #[test]
    fn threads_racing_on_one_warning_log_it_once() {
        let warning = Repeated::new();
        let logged: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| (0..1000).filter(|_| warning.due().is_some()).count()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(logged, 1);
        assert_eq!(warning.suppressed.load(Ordering::Relaxed), 7999);
    }
}
