//! What one loaded configuration serves with: the configuration, its route table, its upstream
//! pools and its metric handles. Each request takes the current snapshot when it starts and keeps
//! it to the end, so a reload never changes a request half-way through. Background services
//! that start over on each configuration wait for the next one with [`wait_for_reload`].

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use pingora::server::ShutdownWatch;
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::{Metrics, Series};
use crate::router::Router;
use crate::tls::Material;
use crate::upstream::Upstreams;

pub struct Snapshot {
    pub config: Arc<Config>,
    /// The certificates and upstream TLS settings loaded with `config`.
    pub tls: Material,
    /// `Strict-Transport-Security` for answers on the TLS listener, when `tls.hsts` is set.
    pub hsts: Option<HeaderValue>,
    pub router: Router,
    pub upstreams: Arc<Upstreams>,
    pub series: Series,
    /// 1 for the configuration the gateway started with, one more for each reload.
    pub generation: u64,
}

/// The snapshot new requests get; a reload swaps it.
pub type Current = Arc<ArcSwap<Snapshot>>;

impl Snapshot {
    /// Builds what `config` serves with; `previous` lends its upstream health state.
    pub fn new(
        config: Config,
        tls: Material,
        metrics: &Metrics,
        previous: Option<&Snapshot>,
        generation: u64,
    ) -> Snapshot {
        let upstreams = Upstreams::new(
            &config.services,
            &tls.upstreams,
            &metrics.upstream_healthy,
            previous.map(|p| &*p.upstreams),
        );
        metrics.set_certificate_expiries(&tls.expiries(&config));
        let hsts = config
            .tls
            .as_ref()
            .filter(|tls| !tls.hsts.is_zero())
            .and_then(|tls| HeaderValue::try_from(format!("max-age={}", tls.hsts.as_secs())).ok());
        Snapshot {
            tls,
            hsts,
            router: Router::new(&config.routes),
            upstreams: Arc::new(upstreams),
            series: Series::new(&config),
            config: Arc::new(config),
            generation,
        }
    }
}

/// For background services that start over on each configuration: waits for the next reload,
/// or for `period` when one is given. `false` means the server is shutting down.
pub async fn wait_for_reload(
    reloaded: &mut watch::Receiver<u64>,
    period: Option<Duration>,
    shutdown: &mut ShutdownWatch,
) -> bool {
    let timer = async {
        match period {
            Some(period) => tokio::time::sleep(period).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown.changed() => false,
        _ = timer => true,
        changed = reloaded.changed() => {
            if changed.is_err() {
                // The reloader is gone: nothing changes any more until shutdown.
                let _ = shutdown.changed().await;
            }
            changed.is_ok()
        }
    }
}
