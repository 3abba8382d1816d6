//! Client connections, between pingora's listener and its HTTP/1 proxy: each accepted stream
//! is wrapped in a [`GuardedStream`] that enforces the `client:` limits on request heads and
//! idle keep-alive time, and served request after request as pingora's own keep-alive loop
//! does, with pipelining on (requests sent back to back in one write are all answered, in
//! order). Heads refused before the gateway sees them are answered, logged and counted here.
//! HTTP/2 connections (negotiated by ALPN on the TLS listener) go to pingora's own HTTP/2
//! loop, each stream a request of the same proxy.

mod guard;
mod head;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::{HttpProxy, Session};
use pingora::server::ShutdownWatch;

pub use self::guard::{GuardedStream, Phase};
use crate::analytics::{Observation, Usage};
use crate::context::{InFlight, RequestCtx, UNMATCHED};
use crate::errors::GatewayError;
use crate::forwarded::Origin;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::respond;
use crate::snapshot::Current;

/// The proxy service's application: pingora's HTTP proxy behind the guard.
pub struct ClientConnections {
    proxy: Arc<HttpProxy<Gateway>>,
    current: Current,
    refusals: Arc<Refusals>,
    lifecycle: Lifecycle,
}

impl ClientConnections {
    pub fn new(
        proxy: HttpProxy<Gateway>,
        current: Current,
        refusals: Refusals,
        lifecycle: Lifecycle,
    ) -> Self {
        ClientConnections {
            proxy: Arc::new(proxy),
            current,
            refusals: Arc::new(refusals),
            lifecycle,
        }
    }
}

#[async_trait]
impl ServerApp for ClientConnections {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            // HTTP/2 (TLS only): pingora's own connection loop serves each stream as a request
            // of the same proxy; HTTP/2's settings bound the heads (see `server`). It sends
            // GOAWAY when told to stop: as soon as the gateway starts closing connections.
            let stop = self.stop_when_leaving(shutdown);
            return ServerApp::process_new(&self.proxy, stream, &stop).await;
        }
        // Limits are read once per connection: a reload applies to the connections after it.
        let limits = self.current.load().config.client;
        let phase = Arc::new(Phase::default());
        let guarded = GuardedStream::new(stream, phase.clone(), limits, self.refusals.clone());
        let mut session = ServerSession::new_http1(Box::new(guarded));
        loop {
            // The guard times the wait for a request and its head: pingora must not time those
            // reads again (keep-alive 0 is "no timeout"), and stops keeping connections alive
            // once the server is shutting down.
            let keep_alive = !*shutdown.borrow();
            session.set_keepalive(keep_alive.then_some(0));
            session.set_pipelining_enabled(true);
            let reused = self.proxy.process_new_http(session, shutdown).await?;
            let (stream, settings) = reused.consume();
            session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            phase.next_request();
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

impl ClientConnections {
    /// A shutdown signal that turns when pingora's does or when the gateway starts closing
    /// connections (a drain or a hand-over), whichever comes first; it lives as long as the
    /// connection that holds it.
    fn stop_when_leaving(&self, shutdown: &ShutdownWatch) -> ShutdownWatch {
        let (stop, stopped) = tokio::sync::watch::channel(*shutdown.borrow());
        let (mut shutdown, mut leaving) = (shutdown.clone(), self.lifecycle.leaving());
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.wait_for(|stopping| *stopping) => {}
                _ = leaving.wait_for(|leaving| *leaving) => {}
                () = stop.closed() => return,
            }
            let _ = stop.send(true);
        });
        stopped
    }
}

/// Tells the guard of the request's connection that the gateway has its head: what is written
/// from now on is the gateway's answer. Called first thing for every request.
pub fn head_taken(session: &Session) {
    let guard = session
        .as_downstream()
        .stream()
        .and_then(|stream| (**stream).as_any().downcast_ref::<GuardedStream>());
    if let Some(guard) = guard {
        guard.phase().head_taken();
    }
}

/// Answers, logs and counts heads refused before the gateway saw them, as every other answer
/// is: an access line, `guichet_http_requests_total{route="unmatched"}`, the usage statistics.
pub struct Refusals {
    pub current: Current,
    pub metrics: Arc<Metrics>,
    pub usage: Arc<Usage>,
    pub in_flight: InFlight,
}

/// How much of a refused request's target goes into its log line.
const LOGGED_TARGET: usize = 256;

impl Refusals {
    /// The whole answer to a refused head (the connection is closed after it), recorded; `tls`
    /// says whether it came over the TLS listener.
    pub fn answer(
        &self,
        peer: Option<IpAddr>,
        tls: bool,
        request_line: Option<&[u8]>,
        error: &GatewayError,
    ) -> Bytes {
        let mut ctx = RequestCtx::new(&self.in_flight, self.current.load_full());
        ctx.request_id = crate::request_id::from_client_or_new(None);
        ctx.origin = peer.map(|ip| Origin {
            tls,
            ..Origin::new(ip, None, &[])
        });
        let (method, target) = head::method_and_target(request_line.unwrap_or(b""));
        let head_only = method == b"HEAD";
        let method = Method::from_bytes(method).unwrap_or(Method::GET);
        let mut target = String::from_utf8_lossy(target).into_owned();
        if target.len() > LOGGED_TARGET {
            let cut = (0..=LOGGED_TARGET)
                .rev()
                .find(|i| target.is_char_boundary(*i))
                .unwrap_or(0);
            target.truncate(cut);
        }
        let status = error.status();
        let (answer, sent) = respond::refusal(&ctx, error.clone(), head_only);
        ctx.error = Some(error.clone());
        let config = &ctx.snapshot.config;
        if config.record_metrics {
            self.metrics
                .record_outcome(&ctx, &method, status, sent as u64);
        }
        if config.record_usage {
            let seen = Observation {
                consumer: "anonymous",
                route: UNMATCHED,
                status,
                latency: ctx.started.elapsed(),
                throttled: false,
            };
            self.usage.record(&seen, crate::auth::jwt::unix_now());
        }
        crate::logs::access_line(&ctx, method.as_str(), &target, status, sent);
        answer
    }
}
