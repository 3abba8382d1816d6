//! Upstream pools: round-robin over each service's healthy targets, the pingora peers with the
//! service's timeouts, and the active health checks that take targets out of rotation and back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use prometheus::{IntGauge, IntGaugeVec};
use tokio::net::TcpStream;

use crate::config::{HealthCheck, Service, Target};

/// One pool per service, in the order of [`crate::config::Config::services`].
pub struct Upstreams {
    pools: Vec<Arc<Pool>>,
}

impl Upstreams {
    /// Pools for `services`, whose health shows in `healthy` (by service and target).
    pub fn new(services: &[Arc<Service>], healthy: &IntGaugeVec) -> Upstreams {
        Upstreams {
            pools: services
                .iter()
                .map(|s| Arc::new(Pool::new(s.clone(), healthy)))
                .collect(),
        }
    }

    pub fn pool(&self, service: usize) -> &Pool {
        &self.pools[service]
    }

    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }
}

/// The targets of one service and what the health checks last saw of them.
pub struct Pool {
    pub service: Arc<Service>,
    peers: Vec<HttpPeer>,
    healthy: Vec<AtomicBool>,
    next: AtomicUsize,
    /// Set once every target has been checked once; until then `/readyz` says not ready.
    checked: Vec<AtomicBool>,
    /// `guichet_upstream_healthy`, one gauge per target.
    gauges: Vec<IntGauge>,
}

impl Pool {
    fn new(service: Arc<Service>, healthy: &IntGaugeVec) -> Pool {
        let peers = service
            .targets
            .iter()
            .map(|target| {
                let mut peer = HttpPeer::new(target.addr, false, String::new());
                peer.options.connection_timeout = Some(service.connect_timeout);
                peer.options.read_timeout = Some(service.read_timeout);
                peer.options.write_timeout = Some(service.read_timeout);
                peer
            })
            .collect();
        let count = service.targets.len();
        let unchecked = service.health_check.is_some();
        let gauges = service
            .targets
            .iter()
            .map(|target| {
                let gauge =
                    healthy.with_label_values(&[service.name.as_str(), target.url.as_str()]);
                gauge.set(1);
                gauge
            })
            .collect();
        Pool {
            gauges,
            peers,
            healthy: (0..count).map(|_| AtomicBool::new(true)).collect(),
            next: AtomicUsize::new(0),
            checked: (0..count).map(|_| AtomicBool::new(!unchecked)).collect(),
            service,
        }
    }

    /// The next healthy target in round-robin order other than `avoid`.
    pub fn select(&self, avoid: Option<usize>) -> Option<usize> {
        let count = self.peers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&index| Some(index) != avoid && self.is_healthy(index))
    }

    /// Whether a target other than `index` could take a retry.
    pub fn has_healthy_other_than(&self, index: usize) -> bool {
        (0..self.peers.len()).any(|i| i != index && self.is_healthy(i))
    }

    pub fn peer(&self, index: usize) -> Box<HttpPeer> {
        Box::new(self.peers[index].clone())
    }

    pub fn target(&self, index: usize) -> &Target {
        &self.service.targets[index]
    }

    pub fn is_healthy(&self, index: usize) -> bool {
        self.healthy[index].load(Ordering::Relaxed)
    }

    pub fn healthy_count(&self) -> usize {
        (0..self.peers.len())
            .filter(|&i| self.is_healthy(i))
            .count()
    }

    /// Every target checked at least once and at least one of them healthy.
    pub fn is_ready(&self) -> bool {
        self.checked.iter().all(|c| c.load(Ordering::Relaxed)) && self.healthy_count() > 0
    }

    fn record(&self, index: usize, result: Result<(), String>) {
        let target = &self.service.targets[index];
        let was_healthy = self.healthy[index].swap(result.is_ok(), Ordering::Relaxed);
        self.gauges[index].set(i64::from(result.is_ok()));
        let first = !self.checked[index].swap(true, Ordering::Relaxed);
        match result {
            Err(cause) if was_healthy || first => tracing::warn!(
                service = %self.service.name,
                target = %target.url,
                %cause,
                "upstream target failed its health check; out of rotation"
            ),
            Ok(()) if !was_healthy => tracing::info!(
                service = %self.service.name,
                target = %target.url,
                "upstream target is healthy again; back in rotation"
            ),
            _ => {}
        }
    }
}

/// The pingora background service that runs one check loop per target.
pub struct HealthChecks {
    pub upstreams: Arc<Upstreams>,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = tokio::task::JoinSet::new();
        for pool in self.upstreams.pools() {
            let Some(check) = pool.service.health_check.clone() else {
                continue;
            };
            for index in 0..pool.service.targets.len() {
                let pool = pool.clone();
                let check = check.clone();
                tasks.spawn(async move {
                    let mut ticks = tokio::time::interval(check.interval);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        ticks.tick().await;
                        let result = probe(pool.target(index), &check).await;
                        pool.record(index, result);
                    }
                });
            }
        }
        // Dropping the JoinSet on shutdown aborts every loop.
        let _ = shutdown.changed().await;
    }
}

/// One health check: `GET <path>` within the timeout, answered with a 2xx or 3xx.
async fn probe(target: &Target, check: &HealthCheck) -> Result<(), String> {
    let attempt = async {
        let stream = TcpStream::connect(target.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        let request = http::Request::get(&check.path)
            .header(http::header::HOST, &target.host)
            .header(http::header::USER_AGENT, "guichet-health-check")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("GET {} answered {status}", check.path))
        }
    };
    tokio::time::timeout(check.timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", check.timeout)))
}
