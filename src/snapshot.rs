//! What one loaded configuration serves with: the configuration, its route table, its upstream
//! pools and its metric handles. Each request takes the current snapshot when it starts and keeps
//! it to the end, so a reload never changes a request half-way through.

use std::sync::Arc;

use arc_swap::ArcSwap;

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
