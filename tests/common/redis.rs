//! A private `redis-server` per test: its own unix socket in its own folder, no persistence,
//! stopped when dropped, so no two tests share state.

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
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut reply = vec![0u8; 512];
        let read = stream.read(&mut reply).await.ok()?;
        let text = String::from_utf8_lossy(&reply[..read]).to_string();
        text.split("\r\n").next().map(str::to_string)
    }
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
