//! What one loaded configuration serves with: the configuration, its route table, its upstream
//! pools and its metric handles. Each request takes the current snapshot when it starts and keeps
//! it to the end, so a reload never changes a request half-way through. Background services
//! that start over on each configuration wait for the next one with [`wait_for_reload`].

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::server::ShutdownWatch;
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::{Metrics, Series};
use crate::router::Router;
use crate::upstream::Upstreams;

pub struct Snapshot {
    pub config: Arc<Config>,
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
        metrics: &Metrics,
        previous: Option<&Snapshot>,
        generation: u64,
    ) -> Snapshot {
        let upstreams = Upstreams::new(
            &config.services,
            &metrics.upstream_healthy,
            previous.map(|p| &*p.upstreams),
        );
        Snapshot {
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
