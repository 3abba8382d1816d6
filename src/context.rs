//! The per-request context that travels through every proxy phase, and the count of requests
//! in flight that graceful shutdown waits on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::auth::endpoints::Endpoint;
use crate::auth::identity::Identity;
use crate::config::Route;
use crate::errors::GatewayError;
use crate::forwarded::Origin;

/// What the gateway has learned about one request so far.
pub struct RequestCtx {
    pub request_id: String,
    pub started: Instant,
    pub origin: Option<Origin>,
    pub route: Option<Arc<Route>>,
    /// Set when the request is for one of the gateway's own endpoints.
    pub endpoint: Option<Endpoint>,
    pub identity: Identity,
    /// `RateLimit-Policy` and `RateLimit`, on every response of a limited route.
    pub rate_limit_fields: Vec<(&'static str, String)>,
    /// Path and query as sent upstream.
    pub upstream_target: String,
    /// The target chosen for the current attempt, and one that failed to connect.
    pub target: Option<usize>,
    pub failed_target: Option<usize>,
    pub attempts: u8,
    pub body_bytes: u64,
    /// The response the gateway made or is about to make itself.
    pub error: Option<GatewayError>,
    _in_flight: InFlightGuard,
}

impl RequestCtx {
    pub fn new(in_flight: &InFlight) -> RequestCtx {
        RequestCtx {
            request_id: String::new(),
            started: Instant::now(),
            origin: None,
            route: None,
            endpoint: None,
            identity: Identity::anonymous(),
            rate_limit_fields: Vec::new(),
            upstream_target: String::new(),
            target: None,
            failed_target: None,
            attempts: 0,
            body_bytes: 0,
            error: None,
            _in_flight: in_flight.enter(),
        }
    }
}

/// Requests between their first byte parsed and their last log line.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Leaves the count when the request's context is dropped, whatever path it took.
struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
