//! The health checks' schedule: one probe loop per checked target of the current
//! configuration, started over on the new configuration after each reload.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;

use crate::snapshot::{wait_for_reload, Current};
use crate::upstream::{probe, Upstreams};

/// The pingora background service that runs one check loop per target of the current
/// configuration, and starts over on the new one after each reload.
pub struct HealthChecks {
    pub current: Current,
    pub reloaded: watch::Receiver<u64>,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut reloaded = self.reloaded.clone();
        loop {
            // Dropping the JoinSet aborts every loop of the configuration it was started for.
            let _tasks = check_loops(&self.current.load().upstreams);
            if !wait_for_reload(&mut reloaded, None, &mut shutdown).await {
                return;
            }
        }
    }
}

fn check_loops(upstreams: &Upstreams) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for pool in upstreams.pools() {
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
                    let result = probe(&pool, index, &check).await;
                    pool.record(index, result);
                }
            });
        }
    }
    tasks
}
