//! Upstream pools: round-robin over each service's healthy targets, the pingora peers with the
//! service's timeouts, and the health check probe whose result takes a target out of rotation
//! and back (run on a schedule by `health`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use pingora::connectors::TransportConnector;
use pingora::upstreams::peer::HttpPeer;
use prometheus::{IntGauge, IntGaugeVec};

use crate::config::{HealthCheck, Service, Target};
use crate::logs::WithCauses;
use crate::tls::upstream::UpstreamMaterial;

/// How long a keep-alive connection to a target waits in the pool for its next request before
/// the gateway closes it. An upstream that closes an idle connection itself may do so just as a
/// request is sent on it: an idempotent request is then retried, a POST gets 502. Closing first
/// avoids that with upstreams whose keep-alive timeout is longer (gunicorn's default is 2 s,
/// uvicorn's, Node's and Apache's 5 s, nginx's 75 s); under load connections are reused long
/// before.
const POOLED_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// One pool per service, in the order of [`crate::config::Config::services`].
pub struct Upstreams {
    pools: Vec<Arc<Pool>>,
}

impl Upstreams {
    /// Pools for `services`, whose health shows in `healthy` (by service and target). A target
    /// that `previous` (the configuration being replaced) already checked keeps what was seen of
    /// it, so a reload neither sends traffic to a dead target nor waits for a live one.
    pub fn new(
        services: &[Arc<Service>],
        tls: &[Arc<UpstreamMaterial>],
        healthy: &IntGaugeVec,
        previous: Option<&Upstreams>,
    ) -> Upstreams {
        Upstreams {
            pools: services
                .iter()
                .zip(tls)
                .map(|(service, tls)| {
                    let before = previous.and_then(|p| p.by_name(&service.name));
                    Arc::new(Pool::new(service.clone(), tls.clone(), healthy, before))
                })
                .collect(),
        }
    }

    fn by_name(&self, name: &str) -> Option<&Pool> {
        self.pools
            .iter()
            .find(|pool| pool.service.name == name)
            .map(|pool| &**pool)
    }

    /// Removes the `guichet_upstream_healthy` series of targets that `next` no longer has.
    pub fn forget_targets_gone(&self, next: &Upstreams, healthy: &IntGaugeVec) {
        for pool in &self.pools {
            for target in &pool.service.targets {
                let kept = next
                    .by_name(&pool.service.name)
                    .is_some_and(|p| p.position(&target.url).is_some());
                if !kept {
                    let _ = healthy.remove_label_values(&[&pool.service.name, &target.url]);
                }
            }
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
    /// How its https targets are verified.
    pub tls: Arc<UpstreamMaterial>,
    peers: Vec<HttpPeer>,
    healthy: Vec<AtomicBool>,
    next: AtomicUsize,
    /// Set once every target has been checked once; until then `/readyz` says not ready.
    checked: Vec<AtomicBool>,
    /// `guichet_upstream_healthy`, one gauge per target.
    gauges: Vec<IntGauge>,
}

impl Pool {
    fn new(
        service: Arc<Service>,
        tls: Arc<UpstreamMaterial>,
        healthy: &IntGaugeVec,
        before: Option<&Pool>,
    ) -> Pool {
        let peers = service
            .targets
            .iter()
            .map(|target| {
                let mut peer = tls.peer(target);
                peer.options.connection_timeout = Some(service.connect_timeout);
                peer.options.read_timeout = Some(service.read_timeout);
                peer.options.write_timeout = Some(service.read_timeout);
                peer.options.idle_timeout = Some(POOLED_IDLE_TIMEOUT);
                peer
            })
            .collect();
        let checks = service.health_check.is_some();
        // (healthy, checked) per target: as seen before a reload, else healthy until checked.
        let states: Vec<(bool, bool)> = service
            .targets
            .iter()
            .map(|target| {
                let seen = before
                    .filter(|b| checks && b.service.health_check.is_some())
                    .and_then(|b| b.position(&target.url).map(|i| (b, i)));
                match seen {
                    Some((b, i)) => (b.is_healthy(i), b.checked[i].load(Ordering::Relaxed)),
                    None => (true, !checks),
                }
            })
            .collect();
        let gauges = service
            .targets
            .iter()
            .zip(&states)
            .map(|(target, &(healthy_now, _))| {
                let gauge =
                    healthy.with_label_values(&[service.name.as_str(), target.url.as_str()]);
                gauge.set(i64::from(healthy_now));
                gauge
            })
            .collect();
        Pool {
            gauges,
            peers,
            healthy: states.iter().map(|s| AtomicBool::new(s.0)).collect(),
            next: AtomicUsize::new(0),
            checked: states.iter().map(|s| AtomicBool::new(s.1)).collect(),
            service,
            tls,
        }
    }

    fn position(&self, url: &str) -> Option<usize> {
        self.service.targets.iter().position(|t| t.url == url)
    }

    /// The next healthy target in round-robin order that is not in `skip`, the targets the
    /// request failed on. A retry takes the first one after the target that failed last and
    /// leaves the rotation where it was: advancing it would send the next request to the
    /// failed target first again.
    pub fn select(&self, skip: &[usize]) -> Option<usize> {
        let count = self.peers.len();
        let start = match skip.last() {
            Some(&failed) => failed + 1,
            None => self.next.fetch_add(1, Ordering::Relaxed),
        };
        (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&index| !skip.contains(&index) && self.is_healthy(index))
    }

    /// Whether a healthy target outside `skip` is left to take a retry.
    pub fn has_healthy_outside(&self, skip: &[usize]) -> bool {
        (0..self.peers.len()).any(|i| !skip.contains(&i) && self.is_healthy(i))
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
        self.is_checked() && self.healthy_count() > 0
    }

    /// Every target checked at least once, healthy or not.
    pub fn is_checked(&self) -> bool {
        self.checked.iter().all(|c| c.load(Ordering::Relaxed))
    }

    /// Takes the target out of rotation or puts it back after a check, logging the change.
    pub fn record(&self, index: usize, result: Result<(), GetError>) {
        let target = &self.service.targets[index];
        let was_healthy = self.healthy[index].swap(result.is_ok(), Ordering::Relaxed);
        self.gauges[index].set(i64::from(result.is_ok()));
        let first = !self.checked[index].swap(true, Ordering::Relaxed);
        match result {
            Err(cause) if was_healthy || first => tracing::warn!(
                service = %self.service.name,
                target = %target.url,
                cause = %WithCauses(&cause),
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

/// Why a `GET` on a target failed: a health check, or the part of a fragment's fetch that
/// [`get_once`] makes.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("connect: {0}")]
    Connect(#[source] Box<pingora::Error>),
    #[error("TLS: the certificate is not trusted: {0}")]
    Untrusted(Arc<str>),
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("request: {0}")]
    Request(#[source] http::Error),
    #[error("request: {0}")]
    Send(#[source] hyper::Error),
    #[error("GET {path} answered {status}")]
    Status {
        path: String,
        status: http::StatusCode,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One `GET` on a new HTTP/1.1 connection over `stream`: health checks, fetched fragments.
pub async fn get_once<S>(
    stream: S,
    path: &str,
    headers: &[(http::header::HeaderName, &str)],
) -> Result<http::Response<hyper::body::Incoming>, GetError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(GetError::Handshake)?;
    tokio::spawn(connection);
    let mut request = http::Request::get(path);
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(GetError::Request)?;
    sender.send_request(request).await.map_err(GetError::Send)
}

/// Connects the way requests do: TLS with the service's settings for an https target.
fn connector() -> &'static TransportConnector {
    static CONNECTOR: OnceLock<TransportConnector> = OnceLock::new();
    CONNECTOR.get_or_init(|| TransportConnector::new(None))
}

/// A new connection to one target, made as requests' are (TLS, verification, client
/// certificate, `timeouts.connect`): for the connections the gateway relays itself.
pub async fn connect(pool: &Pool, index: usize) -> pingora::Result<pingora::protocols::Stream> {
    connector().new_stream(&pool.peers[index]).await
}

/// One health check: `GET <path>` within the timeout, answered with a 2xx or 3xx, on a new
/// connection made with the same peer settings as requests (TLS, verification, client
/// certificate).
pub async fn probe(pool: &Pool, index: usize, check: &HealthCheck) -> Result<(), GetError> {
    let target = pool.target(index);
    let attempt = async {
        let stream = match connector().new_stream(&pool.peers[index]).await {
            Ok(stream) => stream,
            Err(error) if error.etype() == &pingora::ErrorType::InvalidCert => {
                let why = pool.tls.diagnose(target, check.timeout).await;
                return Err(match why {
                    Some(why) => GetError::Untrusted(why),
                    None => GetError::Connect(error),
                });
            }
            Err(error) => return Err(GetError::Connect(error)),
        };
        let headers = [
            (http::header::HOST, target.host.as_str()),
            (http::header::USER_AGENT, "guichet-health-check"),
        ];
        let response = get_once(stream, &check.path, &headers).await?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(GetError::Status {
                path: check.path.clone(),
                status,
            })
        }
    };
    tokio::time::timeout(check.timeout, attempt)
        .await
        .unwrap_or(Err(GetError::Timeout(check.timeout)))
}

#[cfg(test)]
mod tests {
    use prometheus::{IntGaugeVec, Opts};

    use super::*;
    use crate::config::UpstreamTls;

    fn plain_target(addr: std::net::SocketAddr) -> Target {
        Target {
            url: format!("http://{addr}"),
            addr,
            host: addr.to_string(),
            tls: false,
            sni: addr.ip().to_string(),
        }
    }

    fn pool_of(targets: Vec<Target>) -> Pool {
        let service = Service {
            name: "courses".to_string(),
            targets,
            health_check: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            openapi: None,
            tls: UpstreamTls::default(),
        };
        let tls = UpstreamMaterial::load(&service.tls, "courses", false, 0, &mut Vec::new())
            .unwrap_or_else(|_| panic!("the default settings name no file"));
        let gauges = IntGaugeVec::new(Opts::new("healthy", "healthy"), &["service", "target"])
            .expect("gauges");
        Pool::new(Arc::new(service), Arc::new(tls), &gauges, None)
    }

    fn pool(targets: usize) -> Pool {
        pool_of(
            (0..targets)
                .map(|i| plain_target(([127, 0, 0, 1], 8001 + i as u16).into()))
                .collect(),
        )
    }

    #[test]
    fn selection_skips_the_targets_a_request_failed_on_and_the_unhealthy_ones() {
        let pool = pool(3);
        pool.record(2, Err(GetError::Timeout(Duration::from_secs(1))));
        for _ in 0..6 {
            assert_eq!(pool.select(&[0]), Some(1));
            assert_eq!(pool.select(&[1]), Some(0));
        }
        assert!(pool.has_healthy_outside(&[0]));
        assert_eq!(pool.select(&[0, 1]), None);
        assert!(!pool.has_healthy_outside(&[1, 0]));
    }

    #[tokio::test]
    async fn a_failed_check_keeps_its_cause() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("address");
        drop(closed);
        let pool = pool_of(vec![plain_target(addr)]);
        let check = HealthCheck {
            path: "/health".to_string(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
        };
        let error = probe(&pool, 0, &check).await.expect_err("nothing listens");
        assert!(std::error::Error::source(&error).is_some(), "{error:?}");
        let causes = WithCauses(&error).to_string();
        assert!(causes.contains("Connection refused"), "{causes}");
        assert!(error.to_string().starts_with("connect: "), "{error}");
    }

    #[test]
    fn retries_leave_the_rotation_where_it_was() {
        let pool = pool(2);
        let first = pool.select(&[]);
        assert_eq!(pool.select(&[1]), Some(0));
        let second = pool.select(&[]);
        assert_ne!(first, second, "round-robin goes on as if no retry had been");
    }
}
