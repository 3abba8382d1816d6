//! Configuration reload, on SIGHUP or `POST /reload` on the admin listener. The files are read
//! and checked again; a valid configuration serves every request that starts after the swap
//! (requests in flight finish on theirs), an invalid one is reported and changes nothing.
//! Listeners, threads, the grace period, the pid file and upgrade socket, the store and `watch`
//! are set at start and keep their values. With `watch: true`, [`watcher`] reloads when the
//! files change, through the same [`Reloader`].

pub mod watcher;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use crate::auth::keys::KeyFiles;
use crate::config::{Config, Overrides, StoreBackend};
use crate::metrics::Metrics;
use crate::render;
use crate::snapshot::{Current, Snapshot};
use crate::store::redis_target;
use crate::tls::Material;

/// A reload that took effect.
#[derive(Debug)]
pub struct Reloaded {
    pub generation: u64,
    pub routes: usize,
    pub services: usize,
    /// Settings the files changed that only a restart applies.
    pub restart_required: Vec<&'static str>,
}

pub struct Reloader {
    overrides: Overrides,
    current: Current,
    metrics: Arc<Metrics>,
    reloaded: watch::Sender<u64>,
    /// One reload at a time, so two triggers cannot interleave their swaps.
    serial: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<String>>,
}

impl Reloader {
    /// A reloader of the configuration `current` serves, and the receiver that hears of each reload.
    pub fn new(
        overrides: Overrides,
        current: Current,
        metrics: Arc<Metrics>,
    ) -> (Reloader, watch::Receiver<u64>) {
        let (reloaded, receiver) = watch::channel(current.load().generation);
        let reloader = Reloader {
            overrides,
            current,
            metrics,
            reloaded,
            serial: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
        };
        (reloader, receiver)
    }

    /// Reads the configuration files again and, when they are valid, serves them.
    pub async fn reload(&self, trigger: &'static str) -> Result<Reloaded, Vec<String>> {
        let _one_at_a_time = self.serial.lock().await;
        let running = self.current.load_full();
        let path = running.config.source.clone();
        let outcome = read(path.clone())
            .await
            .map(|(config, tls)| self.swap(config, tls, &running));
        let result = if outcome.is_ok() { "ok" } else { "error" };
        self.metrics
            .config_reloads
            .with_label_values(&[result])
            .inc();
        let mut last_error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match &outcome {
            Ok(done) => {
                *last_error = None;
                tracing::info!(
                    trigger,
                    config = %path.display(),
                    generation = done.generation,
                    routes = done.routes,
                    services = done.services,
                    "configuration reloaded"
                );
                if !done.restart_required.is_empty() {
                    tracing::warn!(
                        settings = ?done.restart_required,
                        "these settings changed but take effect only on restart"
                    );
                }
            }
            Err(errors) => {
                *last_error = Some(errors.join("\n"));
                tracing::error!(
                    trigger,
                    config = %path.display(),
                    errors = %errors.join("\n"),
                    "configuration reload failed; the running configuration is unchanged"
                );
            }
        }
        outcome
    }

    /// Replaces the running snapshot with one for `next`, keeping the settings only a restart applies.
    fn swap(&self, mut next: Config, mut tls: Material, running: &Snapshot) -> Reloaded {
        self.overrides.apply(&mut next);
        let mut restart_required = keep_restart_only(&mut next, &running.config);
        restart_required.extend(keep_tls_listener(&mut next, &mut tls, running));
        let generation = running.generation + 1;
        let snapshot = Snapshot::new(next, tls, &self.metrics, Some(running), generation);
        running
            .upstreams
            .forget_targets_gone(&snapshot.upstreams, &self.metrics.upstream_healthy);
        let reloaded = Reloaded {
            generation,
            routes: snapshot.config.routes.len(),
            services: snapshot.config.services.len(),
            restart_required,
        };
        self.current.store(Arc::new(snapshot));
        self.reloaded.send_replace(generation);
        reloaded
    }

    /// `/readyz`'s view: the generation serving and why the last reload failed, if it did.
    pub fn status(&self) -> Value {
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        json!({
            "generation": self.current.load().generation,
            "source": self.current.load().config.source.display().to_string(),
            "last_reload_error": last_error,
        })
    }
}

/// Loads and checks the files, off the async threads (seed passwords may be hashed). The token
/// keys are built to check them, then dropped: the running ones, read at start, stay.
async fn read(path: PathBuf) -> Result<(Config, Material), Vec<String>> {
    let shown = path.display().to_string();
    match tokio::task::spawn_blocking(move || render::load(&path, KeyFiles::CreateMissing)).await {
        Ok(Ok(loaded)) => {
            for warning in &loaded.warnings {
                tracing::warn!("{warning}");
            }
            Ok((loaded.config, loaded.tls))
        }
        Ok(Err(errors)) => Err(errors.lines()),
        Err(e) => Err(vec![format!("{shown}: could not be loaded: {e}")]),
    }
}

/// Puts back the running values of the settings bound at start, and names those that differ.
fn keep_restart_only(next: &mut Config, running: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if next.listen.addr != running.listen.addr {
        changed.push("listen");
    }
    if next.admin_listen.addr != running.admin_listen.addr {
        changed.push("admin_listen");
    }
    if next.threads != running.threads {
        changed.push("threads");
    }
    if next.shutdown_grace_period != running.shutdown_grace_period {
        changed.push("shutdown_grace_period");
    }
    if next.pid_file != running.pid_file {
        changed.push("pid_file");
    }
    if next.upgrade_socket != running.upgrade_socket {
        changed.push("upgrade_socket");
    }
    if !same_store(&next.auth.store, &running.auth.store) {
        changed.push("store");
    }
    if next.rate_limits.max_tracked_keys != running.rate_limits.max_tracked_keys {
        changed.push("rate_limits.max_tracked_keys");
    }
    if next.watch != running.watch {
        changed.push("watch");
    }
    next.listen = running.listen.clone();
    next.admin_listen = running.admin_listen.clone();
    next.threads = running.threads;
    next.shutdown_grace_period = running.shutdown_grace_period;
    next.pid_file.clone_from(&running.pid_file);
    next.upgrade_socket.clone_from(&running.upgrade_socket);
    next.auth.store = running.auth.store.clone();
    // The token keys, trusted issuers and legacy window are built once at start: the API
    // document keeps describing the ones in use.
    next.auth.tokens.clone_from(&running.auth.tokens);
    next.rate_limits.max_tracked_keys = running.rate_limits.max_tracked_keys;
    next.watch = running.watch;
    changed
}

/// The TLS listener is bound at start with its address, lowest version and ALPN: those keep
/// their running values, and so does the listener's presence (with the running certificates
/// when the files drop it). Its certificates, `redirect_http` and `hsts` take effect.
fn keep_tls_listener(
    next: &mut Config,
    tls: &mut Material,
    running: &Snapshot,
) -> Vec<&'static str> {
    let mut changed = Vec::new();
    match (&mut next.tls, &running.config.tls) {
        (Some(next), Some(running)) => {
            for (setting, differs) in [
                ("tls.listen", next.listen.addr != running.listen.addr),
                ("tls.min_version", next.min_version != running.min_version),
                ("tls.http2", next.http2 != running.http2),
            ] {
                if differs {
                    changed.push(setting);
                }
            }
            next.listen = running.listen.clone();
            next.min_version = running.min_version;
            next.http2 = running.http2;
        }
        (None, None) => {}
        (_, kept) => {
            changed.push("tls");
            next.tls.clone_from(kept);
            tls.listener.clone_from(&running.tls.listener);
        }
    }
    changed
}

/// Whether two configurations open the same store: both memory, or the same Redis, reached
/// and logged in to the same way.
fn same_store(next: &StoreBackend, running: &StoreBackend) -> bool {
    match (next, running) {
        (StoreBackend::Memory, StoreBackend::Memory) => true,
        (StoreBackend::Redis(next), StoreBackend::Redis(running)) => {
            redis_target(next).ok() == redis_target(running).ok()
        }
        _ => false,
    }
}

/// Reloads on every SIGHUP until shutdown.
pub struct ReloadOnHangup {
    reloader: Arc<Reloader>,
    hangups: Mutex<Option<Signal>>,
}

impl ReloadOnHangup {
    /// Takes SIGHUP over from its default (ending the process) before any service starts: a
    /// SIGHUP sent while the gateway is still starting is kept and acted on once it runs.
    pub fn new(reloader: Arc<Reloader>) -> ReloadOnHangup {
        let hangups = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|runtime| {
                runtime.block_on(async { signal(SignalKind::hangup()).map_err(|e| e.to_string()) })
            });
        let hangups = hangups
            .inspect_err(|error| {
                tracing::error!(%error, "cannot listen for SIGHUP; reload with POST /reload on the admin listener");
            })
            .ok();
        ReloadOnHangup {
            reloader,
            hangups: Mutex::new(hangups),
        }
    }
}

#[async_trait]
impl BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self
            .hangups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(mut hangups) = taken else {
            return;
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    let _ = self.reloader.reload("SIGHUP").await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
