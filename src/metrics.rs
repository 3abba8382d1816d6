//! Prometheus metrics: one registry owned by [`Metrics`], the families that answer "who, which
//! route, how fast, what failed", recorded once per request. Labels are bounded: route ids (never
//! raw paths), standard methods, roles from the configuration, never user ids.

use pingora::proxy::Session;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::config::Config;
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::upstream::Upstreams;

/// 100 µs to 30 s.
const DURATION_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
/// 64 B to 64 MiB.
const SIZE_BUCKETS: [f64; 11] = [
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub in_flight: IntGauge,
    pub request_size: Histogram,
    pub response_size: Histogram,
    pub upstream_healthy: IntGaugeVec,
    pub store_errors: IntCounterVec,
    pub store_duration: HistogramVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("guichet")
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace("guichet")
        .buckets(buckets.to_vec())
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let metrics = Metrics {
            requests: IntCounterVec::new(
                opts(
                    "http_requests_total",
                    "Requests answered, by route, method, status, auth method and role.",
                ),
                &["route", "method", "status", "auth", "role"],
            )?,
            duration: HistogramVec::new(
                histogram(
                    "http_request_duration_seconds",
                    "Time from the request's head to the response's end.",
                    &DURATION_BUCKETS,
                ),
                &["route", "method"],
            )?,
            upstream_duration: HistogramVec::new(
                histogram(
                    "upstream_duration_seconds",
                    "Time from sending the request upstream to its response head.",
                    &DURATION_BUCKETS,
                ),
                &["service"],
            )?,
            upstream_errors: IntCounterVec::new(
                opts(
                    "upstream_errors_total",
                    "Upstream failures: connect, timeout, broken, no_healthy_target.",
                ),
                &["service", "kind"],
            )?,
            auth_failures: IntCounterVec::new(
                opts(
                    "auth_failures_total",
                    "Requests refused by authentication or permissions, by reason.",
                ),
                &["reason"],
            )?,
            rate_limited: IntCounterVec::new(
                opts(
                    "rate_limited_total",
                    "Requests refused by a rate limit, by route and the limit's policy.",
                ),
                &["route", "scope"],
            )?,
            in_flight: IntGauge::with_opts(opts(
                "requests_in_flight",
                "Requests being handled now.",
            ))?,
            request_size: Histogram::with_opts(histogram(
                "request_size_bytes",
                "Request body sizes.",
                &SIZE_BUCKETS,
            ))?,
            response_size: Histogram::with_opts(histogram(
                "response_size_bytes",
                "Response body sizes.",
                &SIZE_BUCKETS,
            ))?,
            upstream_healthy: IntGaugeVec::new(
                opts(
                    "upstream_healthy",
                    "1 while an upstream target passes its health checks.",
                ),
                &["service", "target"],
            )?,
            store_errors: IntCounterVec::new(
                opts("store_errors_total", "Failed store calls, by operation."),
                &["op"],
            )?,
            store_duration: HistogramVec::new(
                histogram(
                    "store_duration_seconds",
                    "Store call durations, by operation.",
                    &DURATION_BUCKETS,
                ),
                &["op"],
            )?,
            registry,
        };
        let build_info = IntGaugeVec::new(
            opts("build_info", "The running build; always 1."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let collectors: [Box<dyn prometheus::core::Collector>; 13] = [
            Box::new(metrics.requests.clone()),
            Box::new(metrics.duration.clone()),
            Box::new(metrics.upstream_duration.clone()),
            Box::new(metrics.upstream_errors.clone()),
            Box::new(metrics.auth_failures.clone()),
            Box::new(metrics.rate_limited.clone()),
            Box::new(metrics.in_flight.clone()),
            Box::new(metrics.request_size.clone()),
            Box::new(metrics.response_size.clone()),
            Box::new(metrics.upstream_healthy.clone()),
            Box::new(metrics.store_errors.clone()),
            Box::new(metrics.store_duration.clone()),
            Box::new(build_info),
        ];
        for collector in collectors {
            metrics.registry.register(collector)?;
        }
        Ok(metrics)
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Metrics {
    /// Records one finished request (proxied, answered by the gateway, or failed).
    pub fn record(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        config: &Config,
        upstreams: &Upstreams,
    ) {
        let route = match (&ctx.route, ctx.endpoint) {
            (Some(route), _) => route.id.as_str(),
            (None, Some(endpoint)) => endpoint.id(),
            (None, None) => "unmatched",
        };
        let method = method_label(&session.req_header().method);
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let role = ctx
            .identity
            .role
            .as_deref()
            .filter(|role| config.auth.rank(role).is_some())
            .unwrap_or("none");
        self.requests
            .with_label_values(&[
                route,
                method,
                status_label(status),
                ctx.identity.method.as_str(),
                role,
            ])
            .inc();
        self.duration
            .with_label_values(&[route, method])
            .observe(ctx.started.elapsed().as_secs_f64());
        self.request_size.observe(ctx.body_bytes as f64);
        self.response_size.observe(session.body_bytes_sent() as f64);
        if let (Some(route), Some(time)) = (&ctx.route, ctx.upstream_time) {
            let service = &upstreams.pool(route.service).service.name;
            self.upstream_duration
                .with_label_values(&[service.as_str()])
                .observe(time.as_secs_f64());
        }
        if let Some(reason) = ctx.error.as_ref().and_then(auth_failure_reason) {
            self.auth_failures.with_label_values(&[reason]).inc();
        }
        if let Some(scope) = &ctx.throttled_by {
            self.rate_limited
                .with_label_values(&[route, scope.as_str()])
                .inc();
        }
    }
}

/// The `reason` label of `guichet_auth_failures_total`, for the errors that are auth failures.
fn auth_failure_reason(error: &GatewayError) -> Option<&'static str> {
    match error {
        GatewayError::Unauthorized { code, .. } => Some(match *code {
            "not_authenticated" => "missing_credentials",
            "token_not_valid" => "invalid_token",
            "authentication_failed" => "invalid_api_key",
            "no_active_account" => "bad_credentials",
            _ => "other",
        }),
        GatewayError::PermissionDenied => Some("permission_denied"),
        GatewayError::AuthStoreUnavailable => Some("store_unavailable"),
        _ => None,
    }
}

/// Status codes as label values without allocating: the codes APIs use by name, others by class.
fn status_label(status: u16) -> &'static str {
    match status {
        0 => "0",
        200 => "200",
        201 => "201",
        204 => "204",
        301 => "301",
        302 => "302",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => match other / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        },
    }
}

/// A method label: the standard methods by name, anything else as `OTHER`.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}
