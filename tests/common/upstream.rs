//! An upstream service for tests: a hyper server that answers every request with a JSON echo of
//! what it received, streams large bodies both ways, and can be slowed, made unhealthy, told to
//! hang up without answering, or killed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use openssl::ssl::SslAcceptor;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

struct State {
    name: String,
    delay_ms: AtomicU64,
    status: AtomicU64,
    healthy: AtomicBool,
    hang_up: AtomicBool,
    hits: AtomicUsize,
    connections: AtomicUsize,
    /// The OpenAPI fragment served at `/api/schema/`, if any.
    spec: Mutex<Option<Value>>,
    /// Fields added to every echo, such as the upstream's own CORS fields.
    fields: Mutex<Vec<(String, String)>>,
}

/// A running upstream. `GET /healthz` answers 200 or 503 as told; `GET /download/<n>` streams
/// `n` bytes; a request for `…/teapot` gets `418 Short and Stout` with hop-by-hop fields of
/// HTTP/1.0 keep-alive and two `Set-Cookie`; every other request gets the echo.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: Mutex<Option<JoinHandle<()>>>,
    tls: Option<Arc<SslAcceptor>>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        Upstream::serve(name, None).await
    }

    /// The same upstream over TLS (HTTP/1.1), with `acceptor`'s certificate and client checks.
    pub async fn start_tls(name: &str, acceptor: SslAcceptor) -> Upstream {
        Upstream::serve(name, Some(Arc::new(acceptor))).await
    }

    async fn serve(name: &str, tls: Option<Arc<SslAcceptor>>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            name: name.to_string(),
            delay_ms: AtomicU64::new(0),
            status: AtomicU64::new(200),
            healthy: AtomicBool::new(true),
            hang_up: AtomicBool::new(false),
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            spec: Mutex::new(None),
            fields: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone(), tls.clone()));
        Upstream {
            addr,
            state,
            task: Mutex::new(Some(task)),
            tls,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `spec` at `/api/schema/`, as JSON or YAML as the request's `Accept` prefers
    /// (drf-spectacular's behaviour); the status set by [`Upstream::fail_with`] applies to it too.
    pub fn serve_spec(&self, spec: Value) {
        *self.state.spec.lock().expect("lock") = Some(spec);
    }

    /// Every echo carries the field `name: value` too (appended: a name given twice is sent
    /// twice), as an upstream with its own CORS settings would.
    pub fn add_field(&self, name: &str, value: &str) {
        self.state
            .fields
            .lock()
            .expect("lock")
            .push((name.to_string(), value.to_string()));
    }

    /// Answers (other than health checks) wait this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answers (other than health checks) carry this status, with the echo as body.
    pub fn fail_with(&self, status: u16) {
        self.state.status.store(u64::from(status), Ordering::SeqCst);
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests that would get the echo are read whole and counted, then their connection is
    /// closed without a byte of answer, as a server that crashes while handling them would.
    pub fn hang_up(&self, hang_up: bool) {
        self.state.hang_up.store(hang_up, Ordering::SeqCst);
    }

    /// Requests received, answered or hung up on, not counting health checks.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far, health checks' included.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection, idle keep-alive ones and those with a
    /// request under way, as a crash would: connections are refused from now on.
    pub fn kill(&self) {
        if let Some(task) = self.task.lock().expect("lock").take() {
            task.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn revive(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        let task = tokio::spawn(accept_loop(listener, self.state.clone(), self.tls.clone()));
        *self.task.lock().expect("lock") = Some(task);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, tls: Option<Arc<SslAcceptor>>) {
    // Connections live in this set, so aborting the loop closes them too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(state.clone(), request));
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(acceptor) => {
                    let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
                        return;
                    };
                    let Ok(mut stream) = tokio_openssl::SslStream::new(ssl, stream) else {
                        return;
                    };
                    // A client the acceptor refuses (no client certificate) is dropped here.
                    if Pin::new(&mut stream).accept().await.is_err() {
                        return;
                    }
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}

type Reply = Response<Either<Full<Bytes>, Zeros>>;

/// What a request gets instead of an answer after [`Upstream::hang_up`]: hyper closes the
/// connection when its service fails.
#[derive(Debug)]
struct HangUp;

impl std::fmt::Display for HangUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hung up as told")
    }
}

impl std::error::Error for HangUp {}

async fn answer(state: Arc<State>, request: Request<Incoming>) -> Result<Reply, HangUp> {
    let path = request.uri().path().to_string();
    if path == "/healthz" {
        let status = if state.healthy.load(Ordering::SeqCst) {
            200
        } else {
            503
        };
        return Ok(json_response(status, json!({"healthy": status == 200})));
    }
    if path.ends_with("/teapot") {
        return Ok(teapot());
    }
    let spec = state.spec.lock().expect("lock").clone();
    if let (Some(spec), "/api/schema/") = (spec, path.as_str()) {
        return Ok(spec_response(&state, &request, &spec));
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some(size) = path
        .strip_prefix("/download/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        return Ok(Response::builder()
            .header("content-type", "application/octet-stream")
            .header("content-length", size)
            .body(Either::Right(Zeros { remaining: size }))
            .expect("response"));
    }
    let mut headers = Map::new();
    for (name, value) in request.headers() {
        let entry = headers
            .entry(name.as_str().to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(values) = entry {
            values.push(Value::String(
                value.to_str().unwrap_or("<binary>").to_string(),
            ));
        }
    }
    let method = request.method().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    // Count the body as it streams in; keep only a small one to echo back.
    let mut body = request.into_body();
    let mut body_bytes = 0usize;
    let mut kept = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            body_bytes += data.len();
            if kept.len() < 65536 {
                kept.extend_from_slice(data);
            }
        }
    }
    if state.hang_up.load(Ordering::SeqCst) {
        return Err(HangUp);
    }
    let mut reply = json_response(
        state.status.load(Ordering::SeqCst) as u16,
        json!({
            "upstream": state.name,
            "method": method,
            "target": target,
            "headers": headers,
            "body_bytes": body_bytes,
            "body": String::from_utf8_lossy(&kept),
        }),
    );
    for (name, value) in state.fields.lock().expect("lock").iter() {
        reply.headers_mut().append(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("a field name"),
            hyper::header::HeaderValue::from_str(value).expect("a field value"),
        );
    }
    Ok(reply)
}

fn spec_response(state: &State, request: &Request<Incoming>, spec: &Value) -> Reply {
    let accept = request
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let status = state.status.load(Ordering::SeqCst) as u16;
    if status != 200 {
        return json_response(status, json!({"detail": "failing as told"}));
    }
    let (content_type, body) = if accept.contains("json") {
        ("application/vnd.oai.openapi+json", spec.to_string())
    } else {
        (
            "application/vnd.oai.openapi",
            serde_yaml::to_string(spec).expect("yaml"),
        )
    };
    Response::builder()
        .header("content-type", content_type)
        .body(Either::Left(Full::new(Bytes::from(body))))
        .expect("response")
}

fn teapot() -> Reply {
    let mut response = Response::builder()
        .status(418)
        .header("Keep-Alive", "timeout=5")
        .header("Proxy-Connection", "keep-alive")
        .header("Set-Cookie", "a=1")
        .header("Set-Cookie", "b=2")
        .header("X-Brewed-By", "teapot")
        .body(Either::Left(Full::new(Bytes::from_static(b"tea"))))
        .expect("response");
    response
        .extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(b"Short and Stout"));
    response
}

fn json_response(status: u16, body: Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Either::Left(Full::new(Bytes::from(body.to_string()))))
        .expect("response")
}

/// A body of zero bytes produced 64 KiB at a time, never held whole.
pub struct Zeros {
    remaining: u64,
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let chunk = self.remaining.min(65536);
        self.remaining -= chunk;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![
            0u8;
            chunk as usize
        ])))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
