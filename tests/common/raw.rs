//! A raw HTTP/1.1 exchange over TCP, for request targets that URL-tidying clients would rewrite
//! (dot-segments, duplicate slashes, odd encodings) and for exact header control.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawResponse {
    pub status: u16,
    /// The status line's reason phrase.
    pub reason: String,
    /// Lower-cased names; repeated headers joined with ", ".
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends `head` (the request line and headers, without the blank line) and an optional body,
/// with `Connection: close` unless `head` has its own `Connection`, and reads the whole response.
pub async fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let close = if head.to_ascii_lowercase().contains("\r\nconnection:") {
        ""
    } else {
        "\r\nConnection: close"
    };
    let request = format!("{head}{close}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut bytes))
        .await
        .expect("response within 30 s")
        .expect("read");
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> RawResponse {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next().expect("status line").splitn(3, ' ').skip(1);
    let status = status_line
        .next()
        .and_then(|code| code.parse().ok())
        .expect("status code");
    let reason = status_line.next().unwrap_or_default().to_string();
    let mut headers: HashMap<String, String> = HashMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers
                .entry(name.trim().to_ascii_lowercase())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(value.trim())
                })
                .or_insert_with(|| value.trim().to_string());
        }
    }
    let mut body = bytes[end + 4..].to_vec();
    if let Some(length) = headers.get("content-length").and_then(|l| l.parse().ok()) {
        body.truncate(length);
    }
    RawResponse {
        status,
        reason,
        headers,
        body,
    }
}

/// One client connection held open, for keep-alive, pipelined and slow clients: bytes go out
/// exactly as given, responses are read one at a time.
pub struct RawConnection {
    stream: TcpStream,
    received: Vec<u8>,
}

impl RawConnection {
    pub async fn open(addr: SocketAddr) -> RawConnection {
        RawConnection {
            stream: TcpStream::connect(addr).await.expect("connect"),
            received: Vec::new(),
        }
    }

    /// Writes `bytes`; an error means the gateway closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next whole response (framed by its Content-Length), or `None` when the connection
    /// closes before one arrives. Waits at most 30 s.
    pub async fn response(&mut self) -> Option<RawResponse> {
        let read = async {
            loop {
                if let Some(length) = response_length(&self.received) {
                    let rest = self.received.split_off(length);
                    let whole = std::mem::replace(&mut self.received, rest);
                    return Some(parse(&whole));
                }
                let mut chunk = [0u8; 16 * 1024];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("a response or a close within 30 s")
    }

    /// Whether the gateway closes the connection (with nothing more to read) within `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(
            tokio::time::timeout(limit, self.stream.read(&mut chunk)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// The length of the first response in `bytes` once it is all there.
fn response_length(bytes: &[u8]) -> Option<usize> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (bytes.len() >= end + length).then_some(end + length)
}
