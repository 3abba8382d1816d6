//! A second floor beside `pingora_floor`, for `deploy/bench/compare.sh` and `instructions.sh`:
//! pingora keeps the server (listeners, the no-steal runtime with one worker, graceful shutdown
//! and upgrade), and each accepted connection is served as HTTP/1.1 by hyper, forwarding every
//! request with a pooled hyper-util client: keep-alive on both sides, bodies streamed both ways,
//! hop-by-hop fields removed, the head read within a timeout. Same allocator, release profile and
//! 4 KiB client read buffer as the gateway (hyper keeps its own read buffer above it). It
//! answers whether another data path under the same server costs less per request.
//!
//!   cargo run --release --example hyper_floor -- 127.0.0.1:8080 127.0.0.1:8001

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::uri::{self, Authority, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pingora::apps::ServerApp;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::protocols::Stream;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::listening::Service;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

struct Forward {
    client: Client<HttpConnector, Incoming>,
    /// The upstream every request goes to.
    upstream: Authority,
}

impl Forward {
    async fn forward(&self, mut request: Request<Incoming>) -> Response<Body> {
        let mut target = uri::Parts::default();
        target.scheme = Some(Scheme::HTTP);
        target.authority = Some(self.upstream.clone());
        target.path_and_query = request.uri().path_and_query().cloned();
        match Uri::from_parts(target) {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => return status(StatusCode::BAD_REQUEST),
        }
        remove_hop_by_hop(request.headers_mut());
        match self.client.request(request).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.boxed_unsync())
            }
            Err(_) => status(StatusCode::BAD_GATEWAY),
        }
    }
}

/// Removes the hop-by-hop fields and those the `Connection` field names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

fn status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

#[async_trait]
impl ServerApp for Forward {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let app = self.clone();
        let service = service_fn(move |request| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.forward(request).await) }
        });
        // A timer, as any server facing clients needs one: a head slower than the gateway's
        // `client.header_timeout` (30 s) closes the connection.
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let mut connection = std::pin::pin!(connection);
        let mut shutdown = shutdown.clone();
        tokio::select! {
            _ = connection.as_mut() => {}
            _ = shutdown.changed() => {
                // Finishes the request in progress, then closes.
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
        None
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: hyper_floor LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        // Stops at once on SIGTERM, when the benchmark is over.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let Ok(upstream) = upstream.parse::<Authority>() else {
        eprintln!("{upstream}: not HOST:PORT");
        std::process::exit(2);
    };
    let forward = Forward { client, upstream };
    let mut service = Service::new("hyper floor".to_string(), forward);
    service
        .add_listener(ListenerConfig::tcp(listen).l4_buffer(L4BufferSettings::new(4 * 1024, 1460)));
    server.add_service(service);
    server.run_forever();
}
