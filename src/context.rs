//! The per-request context that travels through every proxy phase, and the count of requests
//! in flight that graceful shutdown waits on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use prometheus::IntGauge;

use crate::auth::identity::Identity;
use crate::config::{Config, Route};
use crate::cors::CorsPolicy;
use crate::endpoints::Endpoint;
use crate::errors::GatewayError;
use crate::forwarded::Origin;
use crate::request_id::RequestId;
use crate::snapshot::Snapshot;
use crate::trace::TraceContext;

/// How logs, metrics and usage name the route of a request no route or endpoint matched.
pub const UNMATCHED: &str = "unmatched";

/// What the gateway has learned about one request so far.
pub struct RequestCtx {
    /// The configuration this request is served with, from its first phase to its last.
    pub snapshot: Arc<Snapshot>,
    pub request_id: RequestId,
    /// The W3C trace this request continues or starts.
    pub trace: Option<TraceContext>,
    pub started: Instant,
    pub origin: Option<Origin>,
    pub route: Option<Arc<Route>>,
    /// Set when the request is for one of the gateway's own endpoints.
    pub endpoint: Option<Endpoint>,
    pub identity: Identity,
    /// `RateLimit-Policy` and `RateLimit`, on every response of a limited route.
    pub rate_limit_fields: Vec<(&'static HeaderName, String)>,
    /// Path and query as sent upstream.
    pub upstream_target: String,
    /// The target chosen for the current attempt.
    pub target: Option<usize>,
    /// Targets this request already failed on, which its retries skip (empty, and allocated
    /// for nothing, unless an attempt failed).
    pub failed_targets: Vec<usize>,
    pub body_bytes: u64,
    /// When the request went upstream, and how long its response head took.
    pub upstream_sent: Option<Instant>,
    pub upstream_time: Option<Duration>,
    /// The rate limit policy that refused the request, if one did.
    pub throttled_by: Option<String>,
    /// The response the gateway made or is about to make itself.
    pub error: Option<GatewayError>,
    /// Whose CORS policy the request is answered with: once its path is known its route's (or,
    /// for a method no route there takes, the nearest route's), else gateway.yaml's.
    pub cors_from: CorsFrom,
    /// `Access-Control-Allow-Origin` for the request's origin, when CORS allows it.
    pub cors_origin: Option<HeaderValue>,
    _in_flight: InFlightGuard,
}

impl RequestCtx {
    /// The route's id, the gateway endpoint's, or [`UNMATCHED`].
    pub fn route_label(&self) -> &str {
        match (&self.route, self.endpoint) {
            (Some(route), _) => &route.id,
            (None, Some(endpoint)) => endpoint.id(),
            (None, None) => UNMATCHED,
        }
    }

    /// The CORS policy the request is answered with, if CORS is on for it.
    pub fn cors(&self) -> Option<&CorsPolicy> {
        self.cors_from.policy(&self.snapshot.config)
    }

    pub fn new(in_flight: &InFlight, snapshot: Arc<Snapshot>) -> RequestCtx {
        RequestCtx {
            snapshot,
            request_id: RequestId::NONE,
            trace: None,
            started: Instant::now(),
            origin: None,
            route: None,
            endpoint: None,
            identity: Identity::anonymous(),
            rate_limit_fields: Vec::new(),
            upstream_target: String::new(),
            target: None,
            failed_targets: Vec::new(),
            body_bytes: 0,
            upstream_sent: None,
            upstream_time: None,
            throttled_by: None,
            error: None,
            cors_from: CorsFrom::Gateway,
            cors_origin: None,
            _in_flight: in_flight.enter(),
        }
    }
}

/// Whose CORS policy answers a request: an index rather than a shared pointer, so that a
/// request costs no reference count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorsFrom {
    /// gateway.yaml's `cors:`.
    Gateway,
    /// The `cors:` of the route at this index of `Config::routes`.
    Route(usize),
}

impl CorsFrom {
    pub fn policy(self, config: &Config) -> Option<&CorsPolicy> {
        match self {
            CorsFrom::Gateway => config.cors.as_deref(),
            CorsFrom::Route(index) => config.routes.get(index)?.cors.as_deref(),
        }
    }
}

/// Requests between their head being parsed and their last log line: the
/// `guichet_requests_in_flight` gauge, which graceful shutdown also waits on.
#[derive(Clone)]
pub struct InFlight(IntGauge);

impl InFlight {
    pub fn new(gauge: IntGauge) -> InFlight {
        InFlight(gauge)
    }

    fn enter(&self) -> InFlightGuard {
        self.0.inc();
        InFlightGuard(self.0.clone())
    }

    pub fn count(&self) -> i64 {
        self.0.get()
    }
}

/// Leaves the count when the request's context is dropped, whatever path it took.
struct InFlightGuard(IntGauge);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
