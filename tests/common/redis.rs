//! A private `redis-server` per test: its own unix socket in its own folder, no persistence,
//! stopped when dropped, so no two tests share state; it tells which commands it has run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

pub struct RedisServer {
    child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("redis.sock");
        let server = RedisServer {
            child: spawn(&socket, dir.path()),
            socket,
            _dir: dir,
        };
        server.wait_until_up().await;
        server
    }

    /// Stops the server; `resume` starts a fresh one on the same socket.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn resume(&mut self) {
        let dir = self.socket.parent().expect("socket folder").to_path_buf();
        self.child = spawn(&self.socket, &dir);
        self.wait_until_up().await;
    }

    async fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).await.as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The URL redis clients take for the socket.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Sends one command and returns the first line of the reply, or `None` if not connected.
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = UnixStream::connect(&self.socket).await.ok()?;
        stream.write_all(&encode(args)).await.ok()?;
        let mut reply = vec![0u8; 512];
        let read = stream.read(&mut reply).await.ok()?;
        let text = String::from_utf8_lossy(&reply[..read]).to_string();
        text.split("\r\n").next().map(str::to_string)
    }

    /// How many times the server has run `command` (lower case, as `INFO commandstats` names
    /// it) since it started; 0 for one it never ran.
    pub async fn calls(&self, command: &str) -> u64 {
        let stats = self.bulk(&["INFO", "commandstats"]).await;
        let line = format!("cmdstat_{command}:calls=");
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |rest| {
                rest.split(',')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("a count of calls")
            })
    }

    /// Sends one command whose reply is a bulk string, and returns that string.
    async fn bulk(&self, args: &[&str]) -> String {
        let mut stream = UnixStream::connect(&self.socket)
            .await
            .expect("redis-server is up");
        stream.write_all(&encode(args)).await.expect("send");
        let mut reply = Vec::new();
        loop {
            let mut chunk = vec![0u8; 4096];
            let read = stream.read(&mut chunk).await.expect("read");
            assert!(read > 0, "redis-server closed the connection");
            reply.extend_from_slice(&chunk[..read]);
            let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
                continue;
            };
            let header = String::from_utf8_lossy(&reply[..end]).to_string();
            let length: usize = header
                .strip_prefix('$')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a bulk string: {header}"));
            if let Some(body) = reply.get(end + 2..end + 2 + length) {
                return String::from_utf8_lossy(body).to_string();
            }
        }
    }
}

/// A command in the Redis protocol.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    request.into_bytes()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(socket: &std::path::Path, dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no"])
        .arg("--unixsocket")
        .arg(socket)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (apt-get install redis-server)")
}
