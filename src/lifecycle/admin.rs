//! The admin listener's own life: it keeps answering through a drain, so that probes see
//! `/readyz` 503 and `/healthz` 200 until the process exits, and stops accepting only once its
//! socket has been handed to a new process (which then answers on the same address).

use async_trait::async_trait;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::listening::Service as ListeningService;
use pingora::services::Service;
use tokio::sync::watch;

use super::Lifecycle;
use crate::admin::Admin;

pub struct AdminListener {
    pub service: ListeningService<Admin>,
    pub lifecycle: Lifecycle,
}

#[async_trait]
impl Service for AdminListener {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let (stop, stopped) = watch::channel(false);
        let lifecycle = self.lifecycle.clone();
        tokio::spawn(async move {
            while shutdown.changed().await.is_ok() {
                if *shutdown.borrow() && lifecycle.handing_over() {
                    let _ = stop.send(true);
                }
            }
            // The listener would take a closed channel for a shutdown: `stop` stays open.
            std::future::pending::<()>().await;
        });
        self.service
            .start_service(fds, stopped, listeners_per_fd)
            .await;
    }

    fn name(&self) -> &str {
        self.service.name()
    }

    fn threads(&self) -> Option<usize> {
        self.service.threads()
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.service.listen_addresses()
    }
}
