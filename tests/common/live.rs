//! Upstreams of live connections for tests: a WebSocket echo server (tokio-tungstenite) that
//! records each handshake and the close frames it receives, and a server-sent events stream
//! that sends its next event only when the test says so.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response as Handshake,
};
use tokio_tungstenite::tungstenite::Message;

/// What the echo server saw of one handshake.
#[derive(Clone, Debug)]
pub struct SeenHandshake {
    /// Path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl SeenHandshake {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Seen {
    handshakes: Vec<SeenHandshake>,
    /// The close codes of the close frames received.
    closes: Vec<u16>,
}

/// A WebSocket echo server: every text and binary message comes back as it was sent.
pub struct EchoSocket {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    _task: JoinSet<()>,
}

impl EchoSocket {
    pub async fn start() -> EchoSocket {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut task = JoinSet::new();
        let state = seen.clone();
        task.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(echo(stream, state.clone()));
            }
        });
        EchoSocket {
            addr,
            seen,
            _task: task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn handshakes(&self) -> Vec<SeenHandshake> {
        self.seen.lock().expect("lock").handshakes.clone()
    }

    pub fn closes(&self) -> Vec<u16> {
        self.seen.lock().expect("lock").closes.clone()
    }
}

/// Records each handshake it accepts.
struct Recorder(Arc<Mutex<Seen>>);

impl Callback for Recorder {
    fn on_request(
        self,
        request: &Request,
        response: Handshake,
    ) -> Result<Handshake, ErrorResponse> {
        let headers = request
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let target = request
            .uri()
            .path_and_query()
            .map_or_else(String::new, |p| p.to_string());
        self.0
            .lock()
            .expect("lock")
            .handshakes
            .push(SeenHandshake { target, headers });
        Ok(response)
    }
}

async fn echo(stream: tokio::net::TcpStream, seen: Arc<Mutex<Seen>>) {
    let recorder = Recorder(seen.clone());
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, recorder).await else {
        return;
    };
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Close(frame) = &message {
            let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
            seen.lock().expect("lock").closes.push(code);
        } else if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err()
        {
            return;
        }
    }
}

/// A `text/event-stream` upstream: each request gets event 1 at once, then each next event
/// only once [`EventSource::release`] allows it.
pub struct EventSource {
    pub addr: SocketAddr,
    gate: Arc<Semaphore>,
    _task: JoinSet<()>,
}

impl EventSource {
    pub async fn start(events: usize) -> EventSource {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let gate = Arc::new(Semaphore::new(0));
        let mut task = JoinSet::new();
        let permits = gate.clone();
        task.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let permits = permits.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |_request| {
                        let permits = permits.clone();
                        async move { Ok::<_, Infallible>(event_stream(permits, events)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        EventSource {
            addr,
            gate,
            _task: task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets the stream send its next event.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }
}

type Events = StreamBody<
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>,
>;

fn event_stream(gate: Arc<Semaphore>, events: usize) -> Response<Events> {
    let stream = futures_util::stream::unfold(0, move |sent| {
        let gate = gate.clone();
        async move {
            if sent == events {
                return None;
            }
            if sent > 0 {
                gate.acquire().await.expect("open").forget();
            }
            let event = format!("id: {}\ndata: event {}\n\n", sent + 1, sent + 1);
            Some((Ok(Frame::data(Bytes::from(event))), sent + 1))
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(StreamBody::new(Box::pin(stream) as _))
        .expect("response")
}

/// How long a test waits for something that must happen soon.
pub const SOON: Duration = Duration::from_secs(10);
