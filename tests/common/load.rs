//! Load while the gateway is replaced: clients sending back to back on keep-alive connections,
//! counting every answer that is not a 200 and every error.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{client, eventually};

/// Clients sending back to back on keep-alive connections, counting what failed.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub answered: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(url: String, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..workers)
            .map(|_| {
                let (url, stop, answered, failures) = (
                    url.clone(),
                    stop.clone(),
                    answered.clone(),
                    failures.clone(),
                );
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::Relaxed) {
                        match client.get(&url).send().await {
                            Ok(response) if response.status() == 200 => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(response) => failures
                                .lock()
                                .unwrap()
                                .push(format!("status {}", response.status())),
                            Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            answered,
            failures,
            workers,
        }
    }

    pub async fn wait_for(&self, answered: usize) {
        let count = self.answered.clone();
        eventually("requests answered under load", || {
            let count = count.clone();
            async move { count.load(Ordering::Relaxed) >= answered }
        })
        .await;
    }

    /// Stops the clients and returns how many requests were answered, and the failures.
    pub async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.answered.load(Ordering::Relaxed), failures)
    }
}
