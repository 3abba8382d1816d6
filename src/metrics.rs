//! Prometheus metrics: one registry owned by [`Metrics`], the families that answer "who, which
//! route, how fast, what failed", recorded once per request. Labels are bounded: route ids (never
//! raw paths), standard methods, roles from the configuration, never user ids.

use http::Method;
use pingora::proxy::Session;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::auth::identity::AuthMethod;
use crate::config::Config;
use crate::context::{RequestCtx, UNMATCHED};
use crate::endpoints::Endpoint;
use crate::errors::GatewayError;

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
    pub config_reloads: IntCounterVec,
    /// Upgraded (WebSocket) connections open now, by route.
    pub websocket_connections: IntGaugeVec,
    /// Seconds since each trusted issuer's keys were last fetched (read), by issuer.
    pub jwks_age: GaugeVec,
    /// 1 while the last fetch of an issuer's keys failed, by issuer.
    pub jwks_refresh_failing: IntGaugeVec,
    /// When each certificate the gateway shows expires (`tls::Material::expiries`).
    tls_certificate_expiry: IntGaugeVec,
    /// The names `tls_certificate_expiry` shows now.
    certificate_names: Mutex<Vec<String>>,
}

/// The status of an upgraded connection's answer.
const SWITCHING_PROTOCOLS: u16 = 101;

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
            config_reloads: IntCounterVec::new(
                opts(
                    "config_reloads_total",
                    "Configuration reloads (SIGHUP, POST /reload or watch), by result: ok or error.",
                ),
                &["result"],
            )?,
            websocket_connections: IntGaugeVec::new(
                opts(
                    "websocket_connections",
                    "WebSocket connections open now, by route.",
                ),
                &["route"],
            )?,
            jwks_age: GaugeVec::new(
                opts(
                    "jwks_age_seconds",
                    "Seconds since each trusted issuer's JWKS was last fetched, by issuer; absent until the first fetch.",
                ),
                &["issuer"],
            )?,
            jwks_refresh_failing: IntGaugeVec::new(
                opts(
                    "jwks_refresh_failing",
                    "1 while the last fetch of a trusted issuer's JWKS failed (the last good copy serves), by issuer.",
                ),
                &["issuer"],
            )?,
            tls_certificate_expiry: IntGaugeVec::new(
                opts(
                    "tls_certificate_expiry_timestamp_seconds",
                    "When each certificate the gateway shows expires (the TLS listener's by name, client certificates as `<service> client`), in seconds since the Unix epoch.",
                ),
                &["name"],
            )?,
            certificate_names: Mutex::default(),
            registry,
        };
        for result in ["ok", "error"] {
            metrics.config_reloads.with_label_values(&[result]);
        }
        let build_info = IntGaugeVec::new(
            opts("build_info", "The running build; always 1."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let collectors: [Box<dyn prometheus::core::Collector>; 18] = [
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
            Box::new(metrics.config_reloads.clone()),
            Box::new(metrics.websocket_connections.clone()),
            Box::new(metrics.jwks_age.clone()),
            Box::new(metrics.jwks_refresh_failing.clone()),
            Box::new(metrics.tls_certificate_expiry.clone()),
            Box::new(build_info),
        ];
        for collector in collectors {
            metrics.registry.register(collector)?;
        }
        Ok(metrics)
    }

    /// Shows the certificates of the configuration just loaded, and only those: the series of
    /// names gone are removed, the others set in place (a scrape never sees them missing). Of
    /// two certificates with one name, the one expiring first counts.
    pub fn set_certificate_expiries(&self, expiries: &[(String, i64)]) {
        let mut earliest: HashMap<&str, i64> = HashMap::new();
        for (name, at) in expiries {
            let entry = earliest.entry(name.as_str()).or_insert(*at);
            *entry = (*entry).min(*at);
        }
        let mut shown = self
            .certificate_names
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for gone in shown
            .iter()
            .filter(|name| !earliest.contains_key(name.as_str()))
        {
            let _ = self
                .tls_certificate_expiry
                .remove_label_values(&[gone.as_str()]);
        }
        for (name, at) in &earliest {
            self.tls_certificate_expiry
                .with_label_values(&[*name])
                .set(*at);
        }
        *shown = earliest.keys().map(|name| name.to_string()).collect();
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
    /// Records one finished request (proxied, answered by the gateway, or failed), through the
    /// label handles of the configuration it was served with.
    pub fn record(&self, session: &Session, ctx: &RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let sent = session.body_bytes_sent() as u64;
        self.record_outcome(ctx, &session.req_header().method, status, sent);
    }

    /// Records one finished request from what its session says: its method, the status
    /// answered (0 when none was) and the response body's size.
    pub fn record_outcome(&self, ctx: &RequestCtx, method: &Method, status: u16, sent: u64) {
        let series = &ctx.snapshot.series;
        let route = series.route(ctx);
        let method = method_slot(method);
        let status_code = status;
        let status = status_slot(status);
        let auth = ctx.identity.method as usize;
        let role = series.role_slot(ctx.identity.role.as_deref());
        route
            .request_counter(&self.requests, &series.roles, [method, status, auth, role])
            .inc();
        // An upgraded connection's life (hours, for a WebSocket) is no request's latency.
        if status_code != SWITCHING_PROTOCOLS {
            route
                .duration(&self.duration, method)
                .observe(ctx.started.elapsed().as_secs_f64());
        }
        self.request_size.observe(ctx.body_bytes as f64);
        self.response_size.observe(sent as f64);
        if let (Some(route), Some(time)) = (&ctx.route, ctx.upstream_time) {
            series
                .upstream_duration(&self.upstream_duration, route.service)
                .observe(time.as_secs_f64());
        }
        if let Some(reason) = ctx.error.as_ref().and_then(auth_failure_reason) {
            self.auth_failures.with_label_values(&[reason]).inc();
        }
        if let Some(scope) = &ctx.throttled_by {
            self.rate_limited
                .with_label_values(&[&route.id, scope.as_str()])
                .inc();
        }
    }
}

/// The label handles of one configuration, resolved on first use and kept for as long as the
/// configuration serves, so that recording a request is array indexing and atomic adds: no
/// label hashing, no lock. A reload builds new ones; the families (and their counts) stay.
pub struct Series {
    /// The configured routes in order, then the gateway's endpoints, then `unmatched`.
    routes: Vec<RouteSeries>,
    /// `upstream_duration_seconds`, by service index.
    services: Vec<(String, OnceLock<Histogram>)>,
    /// The role labels, least privileged first, then `none`.
    roles: Vec<String>,
}

impl Series {
    pub fn new(config: &Config) -> Series {
        let ids = config
            .routes
            .iter()
            .map(|route| route.id.clone())
            .chain(Endpoint::ALL.iter().map(|e| e.id().to_string()))
            .chain([UNMATCHED.to_string()]);
        let mut roles = config.auth.roles.clone();
        roles.push("none".to_string());
        Series {
            routes: ids.map(RouteSeries::new).collect(),
            services: config
                .services
                .iter()
                .map(|s| (s.name.clone(), OnceLock::new()))
                .collect(),
            roles,
        }
    }

    fn route(&self, ctx: &RequestCtx) -> &RouteSeries {
        let configured = self.routes.len() - Endpoint::ALL.len() - 1;
        let index = match (&ctx.route, ctx.endpoint) {
            (Some(route), _) => route.index,
            (None, Some(endpoint)) => configured + endpoint as usize,
            (None, None) => self.routes.len() - 1,
        };
        &self.routes[index]
    }

    /// A configured role's position, or the `none` slot for no role or one no longer configured.
    fn role_slot(&self, role: Option<&str>) -> usize {
        let configured = &self.roles[..self.roles.len() - 1];
        role.and_then(|role| configured.iter().position(|r| r == role))
            .unwrap_or(configured.len())
    }

    fn upstream_duration(&self, family: &HistogramVec, service: usize) -> &Histogram {
        let (name, handle) = &self.services[service];
        handle.get_or_init(|| family.with_label_values(&[name.as_str()]))
    }
}

/// The handles of one route label value.
struct RouteSeries {
    id: String,
    /// Per method: `http_requests_total` by status, auth method and role, made on the method's
    /// first request so routes pay only for the methods they see.
    requests: [OnceLock<Box<[OnceLock<IntCounter>]>>; METHOD_LABELS.len()],
    durations: [OnceLock<Histogram>; METHOD_LABELS.len()],
}

impl RouteSeries {
    fn new(id: String) -> RouteSeries {
        RouteSeries {
            id,
            requests: std::array::from_fn(|_| OnceLock::new()),
            durations: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn request_counter(
        &self,
        family: &IntCounterVec,
        roles: &[String],
        [method, status, auth, role]: [usize; 4],
    ) -> &IntCounter {
        let per_method = self.requests[method].get_or_init(|| {
            let slots = STATUS_LABELS.len() * AUTH_LABELS.len() * roles.len();
            (0..slots).map(|_| OnceLock::new()).collect()
        });
        let slot = (status * AUTH_LABELS.len() + auth) * roles.len() + role;
        per_method[slot].get_or_init(|| {
            family.with_label_values(&[
                self.id.as_str(),
                METHOD_LABELS[method],
                STATUS_LABELS[status],
                AUTH_LABELS[auth],
                roles[role].as_str(),
            ])
        })
    }

    fn duration(&self, family: &HistogramVec, method: usize) -> &Histogram {
        self.durations[method]
            .get_or_init(|| family.with_label_values(&[self.id.as_str(), METHOD_LABELS[method]]))
    }
}

/// The `auth` label values, in the order of [`AuthMethod`]'s variants.
const AUTH_LABELS: [&str; 3] = [
    AuthMethod::Jwt.as_str(),
    AuthMethod::ApiKey.as_str(),
    AuthMethod::Anonymous.as_str(),
];

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
        GatewayError::LoginBusy { .. } => Some("login_busy"),
        _ => None,
    }
}

/// The status label values: the codes APIs use by name, others by class.
const STATUS_LABELS: [&str; 30] = [
    "0", "200", "201", "204", "301", "302", "304", "400", "401", "403", "404", "405", "408", "409",
    "413", "414", "422", "429", "431", "500", "501", "502", "503", "504", "505", "1xx", "2xx",
    "3xx", "4xx", "5xx",
];

/// The position of a status's label in [`STATUS_LABELS`].
fn status_slot(status: u16) -> usize {
    match status {
        0 => 0,
        200 => 1,
        201 => 2,
        204 => 3,
        301 => 4,
        302 => 5,
        304 => 6,
        400 => 7,
        401 => 8,
        403 => 9,
        404 => 10,
        405 => 11,
        408 => 12,
        409 => 13,
        413 => 14,
        414 => 15,
        422 => 16,
        429 => 17,
        431 => 18,
        500 => 19,
        501 => 20,
        502 => 21,
        503 => 22,
        504 => 23,
        505 => 24,
        other => match other / 100 {
            1 => 25,
            2 => 26,
            3 => 27,
            4 => 28,
            _ => 29,
        },
    }
}

/// The method label values: the standard methods by name, anything else as `OTHER`.
const METHOD_LABELS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "OTHER",
];

/// The position of a method's label in [`METHOD_LABELS`].
fn method_slot(method: &http::Method) -> usize {
    use http::Method;
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::CONNECT => 8,
        _ => 9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_statuses_keep_their_code_and_others_their_class() {
        for label in &STATUS_LABELS[..20] {
            let code: u16 = label.parse().unwrap();
            assert_eq!(STATUS_LABELS[status_slot(code)], *label);
        }
        for (code, label) in [
            (102, "1xx"),
            (206, "2xx"),
            (307, "3xx"),
            (418, "4xx"),
            (511, "5xx"),
            (999, "5xx"),
        ] {
            assert_eq!(STATUS_LABELS[status_slot(code)], label, "{code}");
        }
    }

    #[test]
    fn standard_methods_keep_their_name_and_others_are_other() {
        for name in &METHOD_LABELS[..9] {
            let method = http::Method::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(METHOD_LABELS[method_slot(&method)], *name);
        }
        let propfind = http::Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(METHOD_LABELS[method_slot(&propfind)], "OTHER");
    }
}
