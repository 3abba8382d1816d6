//! Starting: binds the public and admin listeners (or takes them over from the running gateway
//! with `--upgrade`), and runs the pingora server with its services (proxy, admin, health
//! checks, reload on SIGHUP and, with `watch: true`, on changed files) until a signal ends it
//! the way `lifecycle` describes.

use std::net::TcpListener;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::ListenerConfig;
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::analytics::Usage;
use crate::auth::api_key::{self, ApiKeys};
use crate::auth::bearer::Foreign;
use crate::auth::issuers::KeyRefresh;
use crate::auth::jwt::Tokens;
use crate::auth::Auth;
use crate::config::{ClientLimits, Config, Listen, Overrides};
use crate::connection::{ClientConnections, Refusals};
use crate::context::InFlight;
use crate::endpoints::tokens::TokenService;
use crate::endpoints::Endpoints;
use crate::health::HealthChecks;
use crate::lifecycle::{self, AdminListener, Lifecycle, RuntimeFiles, Signals, UPGRADE_WAIT};
use crate::metrics::Metrics;
use crate::openapi::publish::{ApiDocs, DocsRefresh};
use crate::proxy::Gateway;
use crate::ratelimit::{Limiter, RedisLimiter, SystemClock};
use crate::reload::watcher::{Timing, WatchFiles};
use crate::reload::{ReloadOnHangup, Reloader};
use crate::snapshot::{Current, Snapshot};
use crate::store::{Instrumented, RedisConnection, Store};
use crate::tls::Material;

/// The read buffer each client connection keeps for its life. pingora's default, 64 KiB, is paid
/// by every idle keep-alive connection too; request heads need a few reads past 4 KiB, and body
/// reads larger than the buffer bypass it, so throughput does not depend on it.
const DOWNSTREAM_READ_BUFFER: usize = 4 * 1024;
/// pingora's default: one TCP segment.
const DOWNSTREAM_WRITE_BUFFER: usize = 1460;

/// Runs the gateway until it is told to stop. With `upgrade`, the listening sockets come from
/// the running gateway instead of being bound. Returns an error, already worded for the user,
/// when a listener cannot be bound.
pub fn serve(
    config: Config,
    tokens: Option<Arc<Tokens>>,
    foreign: Foreign,
    tls: Material,
    overrides: Overrides,
    upgrade: bool,
) -> Result<(), String> {
    if !upgrade {
        let tls_listen = config.tls.as_ref().map(|tls| &tls.listen);
        for listen in [&config.listen, &config.admin_listen]
            .into_iter()
            .chain(tls_listen)
        {
            ensure_bindable(listen)?;
        }
    }
    let files = Arc::new(RuntimeFiles::prepare(
        config.pid_file.as_deref(),
        config.upgrade_socket.as_deref(),
    )?);
    files.claim(upgrade)?;
    let metrics = Arc::new(Metrics::new().map_err(|e| format!("cannot set up metrics: {e}"))?);
    let crate::store::Opened { store, redis } =
        crate::store::open(&config.auth).map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> = Arc::new(Instrumented::new(
        store,
        metrics.store_duration.clone(),
        metrics.store_errors.clone(),
    ));
    let limiter = Arc::new(Limiter::new(
        Arc::new(SystemClock),
        redis.clone().map(RedisLimiter::new),
        &config.rate_limits,
        metrics.store_errors.with_label_values(&["rate_limit"]),
    ));
    let usage = Arc::new(Usage::new(redis.clone()));
    let token_service = TokenService::new(
        &config.auth,
        tokens.clone(),
        foreign.legacy.clone(),
        store.clone(),
        limiter.clone(),
        &config.rate_limits,
    );
    let auth = Arc::new(Auth::new(&config.auth, tokens, foreign, store, redis));
    let snapshot = Snapshot::new(config, tls, &metrics, None, 1);
    let docs = Arc::new(ApiDocs::new(&snapshot.config, &snapshot.router));
    let config = snapshot.config.clone();
    let current: Current = Arc::new(ArcSwap::from_pointee(snapshot));
    let (reloader, reloaded) = Reloader::new(overrides, current.clone(), metrics.clone());
    let reloader = Arc::new(reloader);
    let reload_on_hangup = ReloadOnHangup::new(reloader.clone());
    let in_flight = InFlight::new(metrics.in_flight.clone());
    let lifecycle = Lifecycle::default();

    let grace = config.shutdown_grace_period;
    let server_conf = ServerConf {
        threads: config.threads,
        // One worker: a current-thread runtime, the cheapest (6% less CPU per request than a
        // one-worker stealing runtime). Several: pingora's no-steal mode gives each worker its
        // own runtime but one upstream pool, whose idle-connection watchers it spawns on a
        // random worker; a connection taken up by another worker then races its watcher, and
        // pingora throws the connection away ("failed to acquire reusable stream", some 50 a
        // second under load). A stealing runtime runs the woken worker where the watcher ran:
        // no race, and 6% less CPU per request than no-steal with two workers.
        work_stealing: config.threads > 1,
        // A second past ours: `lifecycle::exit_when_drained` ends the process and says what
        // it cut.
        grace_period_seconds: Some(grace.as_secs_f64().ceil() as u64 + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: files
            .upgrade_socket
            .as_ref()
            .map_or_else(String::new, |path| path.to_string_lossy().into_owned()),
        ..ServerConf::default()
    };
    let options = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(options), server_conf);
    if let (true, Some(socket)) = (upgrade, &files.upgrade_socket) {
        tracing::info!(
            socket = %socket.display(),
            "waiting up to {} s for the running gateway's listeners: send it SIGQUIT",
            UPGRADE_WAIT.as_secs()
        );
    }
    server.bootstrap();
    files.write_pid_file();

    let gateway = Gateway {
        current: current.clone(),
        auth: auth.clone(),
        endpoints: Endpoints {
            tokens: token_service,
            auth: auth.clone(),
            usage: usage.clone(),
            docs: docs.clone(),
        },
        limiter,
        metrics: metrics.clone(),
        usage: usage.clone(),
        in_flight: in_flight.clone(),
        lifecycle: lifecycle.clone(),
    };
    let refusals = Refusals {
        current: current.clone(),
        metrics: metrics.clone(),
        usage: usage.clone(),
        in_flight: in_flight.clone(),
    };
    let mut http_proxy = pingora::proxy::http_proxy(&server.configuration, gateway);
    let mut server_options = HttpServerOptions::default();
    server_options.h2_idle_timeout = Some(config.client.keepalive_timeout);
    http_proxy.server_options = Some(server_options);
    http_proxy.h2_options = Some(h2_options(&config.client));
    let connections =
        ClientConnections::new(http_proxy, current.clone(), refusals, lifecycle.clone());
    let mut proxy = Service::new("guichet proxy".to_string(), connections);
    proxy.add_listener(
        ListenerConfig::tcp(config.listen.addr.to_string()).l4_buffer(L4BufferSettings::new(
            DOWNSTREAM_READ_BUFFER,
            DOWNSTREAM_WRITE_BUFFER,
        )),
    );
    if let Some(tls) = &config.tls {
        let settings = crate::tls::listener::settings(tls, current.clone())?;
        proxy.add_tls_with_settings(&tls.listen.addr.to_string(), None, settings);
    }

    let issuers = auth
        .bearer
        .as_ref()
        .map(|bearer| bearer.foreign.issuers.clone())
        .unwrap_or_default();
    let key_refresh = KeyRefresh {
        issuers: issuers.clone(),
        metrics: metrics.clone(),
    };
    let mut admin = Service::new(
        "guichet admin".to_string(),
        Admin {
            current: current.clone(),
            reloader: reloader.clone(),
            store: auth.store.clone(),
            issuers,
            metrics,
            docs: docs.clone(),
            lifecycle: lifecycle.clone(),
        },
    );
    admin.add_tcp(&config.admin_listen.addr.to_string());
    admin.threads = Some(1);
    let admin = AdminListener {
        service: admin,
        lifecycle: lifecycle.clone(),
    };

    let docs_refresh = DocsRefresh {
        docs,
        current: current.clone(),
        reloaded: reloaded.clone(),
    };
    let health_checks = HealthChecks {
        current: current.clone(),
        reloaded,
    };

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(background_service("health checks", health_checks));
    server.add_service(background_service("reload on SIGHUP", reload_on_hangup));
    if config.watch {
        let watch = WatchFiles::new(reloader.clone(), current.clone(), Timing::default());
        server.add_service(background_service("reload on changed files", watch));
    }
    server.add_service(background_service("OpenAPI fragments", docs_refresh));
    server.add_service(background_service("trusted issuers' keys", key_refresh));
    if auth.redis.is_some() {
        server.add_service(background_service("usage flush", UsageFlush(usage)));
    }
    let key_events = KeyEvents {
        redis: auth.redis.clone(),
        api_keys: auth.api_keys.clone(),
    };
    server.add_service(background_service("API key events", key_events));
    // Every client and upstream connection is a descriptor: the soft limit (often 1024) would
    // let a few hundred idle clients exhaust them, so it is raised to the hard limit, as Go's
    // runtime and nginx's `worker_rlimit_nofile` do.
    let open_files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    tracing::info!(
        listen = %config.listen.addr,
        tls_listen = config.tls.as_ref().map(|tls| tls.listen.addr.to_string()),
        admin_listen = %config.admin_listen.addr,
        open_files,
        services = config.services.len(),
        routes = config.routes.len(),
        "guichet is serving"
    );
    lifecycle::exit_when_drained(
        server.watch_execution_phase(),
        in_flight,
        lifecycle.clone(),
        grace,
        files.clone(),
    );
    let signals = Signals {
        lifecycle,
        current,
        files: files.clone(),
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    files.remove_pid_file();
    Ok(())
}

/// HTTP/2's bounds on what a client may send, from the same `client:` limits as HTTP/1: the
/// size of a request's header block, and at most 128 requests at once on one connection
/// (nginx's `http2_max_concurrent_streams`).
fn h2_options(client: &ClientLimits) -> H2Options {
    let mut options = H2Options::new();
    options
        .max_header_list_size(u32::try_from(client.max_header_size).unwrap_or(u32::MAX))
        .max_concurrent_streams(128);
    options
}

/// Keeps the API key index current (new keys and revocations, announced on Redis when it is the
/// store) until shutdown.
struct KeyEvents {
    redis: Option<Arc<RedisConnection>>,
    api_keys: Arc<ApiKeys>,
}

#[async_trait]
impl pingora::services::background::BackgroundService for KeyEvents {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        tokio::select! {
            () = api_key::follow_key_events(self.redis.clone(), self.api_keys.clone()) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Flushes the usage statistics to Redis about every second until shutdown.
struct UsageFlush(Arc<Usage>);

#[async_trait]
impl pingora::services::background::BackgroundService for UsageFlush {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        tokio::select! {
            () = crate::analytics::flush_every_second(self.0.clone()) => {}
            _ = shutdown.changed() => {}
        }
        // What the last second aggregated is not lost on a graceful stop.
        if let Err(error) = self.0.flush().await {
            tracing::warn!(%error, "usage statistics lost at shutdown");
        }
    }
}

/// Fails early, naming the setting, when an address is taken.
fn ensure_bindable(listen: &Listen) -> Result<(), String> {
    match TcpListener::bind(listen.addr) {
        Ok(_) => Ok(()),
        Err(e) => {
            let flag = format!("--{}", listen.field.replace(['_', '.'], "-"));
            let place = match &listen.at {
                Some(at) => format!("{at}: {}", listen.field),
                None => flag.clone(),
            };
            let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                "is already in use".to_string()
            } else {
                format!("cannot be bound: {e}")
            };
            Err(format!(
                "{place}: {} {why} (stop the other process, or choose another address with `{}:` or {flag})",
                listen.addr,
                listen.field,
            ))
        }
    }
}
