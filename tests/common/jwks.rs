//! An identity provider's JWKS endpoint for tests: a hyper server that answers `GET /certs` with
//! the key set it was last given, counts those fetches, and can be stopped (connections refused)
//! and started again on the same port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct State {
    document: Mutex<Value>,
    cache_control: Option<String>,
    fetches: AtomicUsize,
}

/// The server's thread and what ends it.
struct Running {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// A running JWKS endpoint at [`JwksServer::url`]. `GET /certs` answers 200 `application/json`
/// with the document (and `Cache-Control` if one was given); anything else gets 404. Every
/// connection carries one request and is closed after its answer (`Connection: close`), so no
/// client holds a connection that outlives [`JwksServer::stop`].
pub struct JwksServer {
    addr: SocketAddr,
    state: Arc<State>,
    running: Mutex<Option<Running>>,
}

impl JwksServer {
    pub async fn start(document: Value, cache_control: Option<&str>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            document: Mutex::new(document),
            cache_control: cache_control.map(str::to_string),
            fetches: AtomicUsize::new(0),
        });
        let running = serve(listener, state.clone());
        JwksServer {
            addr,
            state,
            running: Mutex::new(Some(running)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/certs", self.addr)
    }

    /// What the next `GET /certs` answers.
    pub fn set(&self, document: Value) {
        *self.state.document.lock().expect("lock") = document;
    }

    /// `GET /certs` answered so far, across restarts.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection before returning: connections are refused
    /// from now on.
    pub fn stop(&self) {
        if let Some(running) = self.running.lock().expect("lock").take() {
            let _ = running.stop.send(());
            running.thread.join().expect("the JWKS server's thread");
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        *self.running.lock().expect("lock") = Some(serve(listener, self.state.clone()));
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves `listener` on a thread and runtime of its own. An aborted task is dropped only when
/// its runtime next runs it, so its listener could still take a connection after `abort`
/// returns; ending the thread instead closes the listener before [`JwksServer::stop`] returns.
fn serve(listener: TcpListener, state: Arc<State>) -> Running {
    let listener = listener.into_std().expect("a std listener");
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).expect("a tokio listener");
            tokio::select! {
                () = accept_loop(listener, state) => {}
                _ = stopped => {}
            }
        });
    });
    Running { stop, thread }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    // Connections live in this set, so ending the loop closes them too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(state.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET || request.uri().path() != "/certs" {
        return Ok(Response::builder()
            .status(404)
            .body(Full::new(Bytes::new()))
            .expect("response"));
    }
    let body = state.document.lock().expect("lock").to_string();
    let mut response = Response::builder().header("content-type", "application/json");
    if let Some(cache_control) = &state.cache_control {
        response = response.header("cache-control", cache_control);
    }
    state.fetches.fetch_add(1, Ordering::SeqCst);
    Ok(response
        .body(Full::new(Bytes::from(body)))
        .expect("response"))
}
