//! How the process stops without dropping a request. SIGTERM drains so that a load balancer can
//! follow: `/readyz` answers 503 at once, the public listener keeps accepting for
//! `shutdown_delay` while every answer closes its connection, then it stops accepting, idle
//! connections are closed and in-flight requests finish within `shutdown_grace_period`; the
//! admin listener answers until the process exits. SIGQUIT hands the listening sockets to a
//! process started with `guichet serve --upgrade`, then drains the same way. SIGINT stops at once.

mod admin;
mod handover;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{broadcast, watch};

pub use self::admin::AdminListener;
pub use self::handover::{RuntimeFiles, UPGRADE_WAIT};
use crate::context::InFlight;
use crate::snapshot::Current;

/// Where the process is in its life, shared by the proxy (which closes connections once it is
/// leaving) and the admin listener (which reports a drain).
#[derive(Clone)]
pub struct Lifecycle {
    state: Arc<AtomicU8>,
    /// Turns true when connections start closing: HTTP/2 connections, which pingora serves
    /// until its own shutdown, are sent GOAWAY then.
    leaving: watch::Sender<bool>,
    /// Turns true just before the grace period ends: upgraded connections, which never end by
    /// themselves, close then.
    farewell: watch::Sender<bool>,
}

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        Lifecycle {
            state: Arc::default(),
            leaving: watch::Sender::new(false),
            farewell: watch::Sender::new(false),
        }
    }
}

/// How long before the grace period's end upgraded connections are told to close, so that
/// their close frames go out before the process exits.
const FAREWELL: Duration = Duration::from_millis(500);

const SERVING: u8 = 0;
const DRAINING: u8 = 1;
const HANDING_OVER: u8 = 2;

impl Lifecycle {
    /// SIGTERM arrived: the replica is leaving, load balancers must take it out.
    pub fn draining(&self) -> bool {
        self.state.load(Ordering::Relaxed) == DRAINING
    }

    /// SIGQUIT handed the listeners over: the address keeps serving from the new process.
    pub fn handing_over(&self) -> bool {
        self.state.load(Ordering::Relaxed) == HANDING_OVER
    }

    /// Every answer from now on closes its connection (`Connection: close`), so clients and
    /// load balancers open their next one where the traffic now goes.
    pub fn closing_connections(&self) -> bool {
        self.state.load(Ordering::Relaxed) != SERVING
    }

    /// Hears when connections start closing (see [`Lifecycle::closing_connections`]).
    pub fn leaving(&self) -> watch::Receiver<bool> {
        self.leaving.subscribe()
    }

    /// Hears when upgraded connections must close: the grace period is about to end.
    pub fn farewell(&self) -> watch::Receiver<bool> {
        self.farewell.subscribe()
    }

    fn enter(&self, state: u8) {
        self.state.store(state, Ordering::Relaxed);
        self.leaving.send_replace(state != SERVING);
    }
}

/// SIGTERM, SIGINT and SIGQUIT as streams. Once registered, tokio catches them for the life of
/// the process, so one that no stream awaits is lost: hence [`signals_while_stopping`].
struct StopSignals {
    term: Signal,
    interrupt: Signal,
    quit: Signal,
}

impl StopSignals {
    fn install() -> Option<StopSignals> {
        Some(StopSignals {
            term: signal(SignalKind::terminate()).ok()?,
            interrupt: signal(SignalKind::interrupt()).ok()?,
            quit: signal(SignalKind::quit()).ok()?,
        })
    }
}

/// The signals that end the process, for pingora's main loop.
pub struct Signals {
    pub lifecycle: Lifecycle,
    /// `shutdown_delay` is read when SIGTERM arrives: a reload changes it.
    pub current: Current,
    pub files: Arc<RuntimeFiles>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let Some(mut signals) = StopSignals::install() else {
            tracing::error!("cannot install signal handlers; stop the gateway with SIGKILL");
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = signals.term.recv() => {
                    let delay = self.current.load().config.shutdown_delay;
                    self.lifecycle.enter(DRAINING);
                    tracing::info!(
                        shutdown_delay = ?delay,
                        "SIGTERM: draining; /readyz answers 503, connections close after their answer"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = signals.interrupt.recv() => return ShutdownSignal::FastShutdown,
                    }
                    tracing::info!("shutdown delay over: no longer accepting connections");
                    signals_while_stopping(self.files.clone());
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = signals.interrupt.recv() => return ShutdownSignal::FastShutdown,
                _ = signals.quit.recv() => match handover::receiver_waiting(self.files.upgrade_socket.as_deref()) {
                    Ok(socket) => {
                        self.lifecycle.enter(HANDING_OVER);
                        tracing::info!(socket = %socket.display(), "SIGQUIT: handing the listeners over");
                        signals_while_stopping(self.files.clone());
                        return ShutdownSignal::GracefulUpgrade;
                    }
                    Err(why) => tracing::error!("SIGQUIT ignored, still serving: {why}"),
                },
            }
        }
    }
}

/// Once the drain has begun, pingora no longer listens for signals: SIGINT still stops at once
/// (the requests in flight are cut), SIGTERM and SIGQUIT are logged and change nothing.
fn signals_while_stopping(files: Arc<RuntimeFiles>) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let Some(mut signals) = StopSignals::install() else {
                return;
            };
            loop {
                tokio::select! {
                    _ = signals.interrupt.recv() => {
                        tracing::warn!("SIGINT while stopping: exiting now, requests in flight are cut");
                        files.remove_pid_file();
                        std::process::exit(0);
                    }
                    _ = signals.term.recv() => tracing::info!("SIGTERM ignored: already stopping (SIGINT stops at once)"),
                    _ = signals.quit.recv() => tracing::info!("SIGQUIT ignored: already stopping"),
                }
            }
        });
    });
}

/// Once pingora has stopped the listeners of a graceful shutdown (after SIGTERM's delay, or
/// after SIGQUIT's hand-over), ends the process as soon as the last in-flight request has been
/// answered, instead of waiting out the whole grace period as pingora does; at the end of the
/// grace period it says how many requests it cuts. Upgraded connections are told to close just
/// before its end ([`Lifecycle::farewell`]). Pingora's own grace period is set a second
/// longer, so that this is what ends the process.
pub fn exit_when_drained(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    in_flight: InFlight,
    lifecycle: Lifecycle,
    grace: Duration,
    files: Arc<RuntimeFiles>,
) {
    std::thread::spawn(move || {
        loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        let deadline = Instant::now() + grace;
        let farewell_at = deadline - FAREWELL.min(grace / 2);
        // Connections accepted just before the listener stopped have a moment to send their
        // request head.
        std::thread::sleep(Duration::from_millis(100));
        while Instant::now() < deadline && in_flight.count() > 0 {
            if Instant::now() >= farewell_at {
                lifecycle.farewell.send_replace(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match in_flight.count() {
            0 => tracing::info!("drained; exiting"),
            cut => tracing::warn!(
                in_flight = cut,
                grace_period = ?grace,
                "grace period over; exiting, the requests still in flight are cut"
            ),
        }
        files.remove_pid_file();
        std::process::exit(0);
    });
}
