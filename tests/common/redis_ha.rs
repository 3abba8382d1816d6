//! Redis that survives a failure, started by the test: a cluster of three masters (each with a
//! replica when asked), and a master with a replica watched by three sentinels. Every process
//! has its own loopback ports and folder, keeps nothing on disk, and is stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guichet::store::{RedisTarget, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::free_port;

/// One `redis-server` process on a loopback port.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    dir: PathBuf,
}

impl Node {
    fn start(dir: &Path, name: &str, args: Vec<String>) -> Node {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("a node folder");
        let mut node = Node {
            child: None,
            port: free_port().port(),
            args,
            dir,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            // A new replica syncs at once rather than after the default five seconds.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.dir)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the process at once, as a crashed machine would go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends one command and returns the reply's text: a simple or bulk string's content, an
    /// error's line, or the items of an array, one per line. `None` if not connected.
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        tcp_command(self.port, args).await
    }

    async fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).await.as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three masters sharing the 16384 slots, each with `replicas` replicas.
pub struct RedisCluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start(replicas: usize) -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<Node> = (0..3 * (1 + replicas))
            .map(|index| {
                let bus = free_port().port().to_string();
                let args = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    // A replica takes over however long ago it last heard from its master.
                    "--cluster-replica-validity-factor",
                    "0",
                ];
                Node::start(
                    dir.path(),
                    &format!("node{index}"),
                    args.iter().map(|a| a.to_string()).collect(),
                )
            })
            .collect();
        for node in &nodes {
            node.wait_until_up().await;
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_until_healthy(&[]).await;
        for node in &cluster.nodes {
            let role = node.command(&["ROLE"]).await.unwrap_or_default();
            if role.starts_with("slave") {
                wait_until_replicated(node).await;
            }
        }
        cluster
    }

    /// The seed nodes' URLs, as `store.cluster.nodes` lists them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The same Redis as the gateway reaches it, for the test's own calls.
    pub fn target(&self) -> RedisTarget {
        RedisTarget::new(Topology::Cluster { nodes: self.urls() })
    }

    /// The `store:` section for this cluster, with `more` settings (`key: value, …`).
    pub fn store_yaml(&self, more: &str) -> String {
        let nodes: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        store_yaml(
            &format!("cluster: {{ nodes: [{}] }}", nodes.join(", ")),
            more,
        )
    }

    /// The node that serves `key`'s slot as master, as a running node's map says.
    pub async fn master_of(&self, key: &str) -> usize {
        let running = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a running node");
        let slot: u64 = running
            .command(&["CLUSTER", "KEYSLOT", key])
            .await
            .and_then(|s| s.parse().ok())
            .expect("a slot");
        let slots = running
            .command(&["CLUSTER", "SLOTS"])
            .await
            .unwrap_or_default();
        self.nodes
            .iter()
            .position(|node| owns(&slots, slot, node.port))
            .unwrap_or_else(|| panic!("no master serves the slot of {key}"))
    }

    /// Waits until every running node reports `cluster_state:ok`, `except` left out.
    pub async fn wait_until_healthy(&self, except: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut healthy = true;
            for (index, node) in self.nodes.iter().enumerate() {
                if except.contains(&index) || node.child.is_none() {
                    continue;
                }
                let info = node.command(&["CLUSTER", "INFO"]).await.unwrap_or_default();
                healthy &= info.contains("cluster_state:ok");
            }
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn store_yaml(form: &str, more: &str) -> String {
    let more = if more.is_empty() {
        String::new()
    } else {
        format!(", {more}")
    };
    format!("store: {{ backend: redis, {form}{more} }}\n")
}

/// Whether `CLUSTER SLOTS`' flattened reply says the master on `port` serves `slot`.
fn owns(slots: &str, slot: u64, port: u16) -> bool {
    let items: Vec<&str> = slots.lines().collect();
    // Each range is: start, end, master ip, master port, master id, then its replicas.
    items.windows(4).any(|w| {
        match (
            w[0].parse::<u64>(),
            w[1].parse::<u64>(),
            w[3].parse::<u16>(),
        ) {
            (Ok(start), Ok(end), Ok(master)) => {
                w[2] == "127.0.0.1" && master == port && (start..=end).contains(&slot)
            }
            _ => false,
        }
    })
}

/// A master named `guichet`, one replica, and three sentinels that fail over after a second.
pub struct RedisSentinels {
    pub master: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// The master's name in the sentinels' configuration.
pub const MASTER_NAME: &str = "guichet";

impl RedisSentinels {
    pub async fn start() -> RedisSentinels {
        let dir = tempfile::tempdir().expect("temp dir");
        let master = Node::start(dir.path(), "master", Vec::new());
        master.wait_until_up().await;
        let replica = Node::start(
            dir.path(),
            "replica",
            vec![
                "--replicaof".to_string(),
                "127.0.0.1".to_string(),
                master.port.to_string(),
            ],
        );
        replica.wait_until_up().await;
        let sentinels: Vec<Node> = (0..3)
            .map(|index| {
                let folder = dir.path().join(format!("sentinel{index}"));
                std::fs::create_dir_all(&folder).expect("a sentinel folder");
                let conf = folder.join("sentinel.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 3000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n",
                        master.port
                    ),
                )
                .expect("a sentinel config");
                Node::start(
                    dir.path(),
                    &format!("sentinel{index}"),
                    vec![conf.display().to_string(), "--sentinel".to_string()],
                )
            })
            .collect();
        for sentinel in &sentinels {
            sentinel.wait_until_up().await;
        }
        let set = RedisSentinels {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        set.wait_for_master(set.master.port).await;
        wait_until_replicated(&set.replica).await;
        set
    }

    /// The `store:` section for these sentinels, with `more` settings (`key: value, …`).
    pub fn store_yaml(&self, more: &str) -> String {
        let nodes: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"{}\"", s.url()))
            .collect();
        let sentinel = format!(
            "sentinel: {{ master: {MASTER_NAME}, nodes: [{}] }}",
            nodes.join(", ")
        );
        store_yaml(&sentinel, more)
    }

    /// The same Redis as the gateway reaches it, for the test's own calls.
    pub fn target(&self) -> RedisTarget {
        RedisTarget::new(Topology::Sentinel {
            master: MASTER_NAME.to_string(),
            nodes: self.sentinels.iter().map(Node::url).collect(),
        })
    }

    /// Waits until every sentinel names the master on `port` and knows of a replica.
    pub async fn wait_for_master(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut agreed = true;
            for sentinel in &self.sentinels {
                let named = sentinel
                    .command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
                    .await
                    .unwrap_or_default();
                agreed &= named.lines().nth(1) == Some(port.to_string().as_str());
            }
            if agreed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not name port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until a replica has its master's data and follows its writes.
async fn wait_until_replicated(replica: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = replica
            .command(&["INFO", "replication"])
            .await
            .unwrap_or_default();
        if info.contains("master_link_status:up") {
            return;
        }
        assert!(Instant::now() < deadline, "the replica did not sync");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One command over TCP; the reply flattened to text (see [`Node::command`]).
pub async fn tcp_command(port: u16, args: &[&str]) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut reply = Vec::new();
    loop {
        let mut chunk = vec![0u8; 16384];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if read == 0 {
            return None;
        }
        reply.extend_from_slice(&chunk[..read]);
        let mut lines = Vec::new();
        if parse(&reply, &mut lines).is_some() {
            return Some(lines.join("\n"));
        }
    }
}

/// Parses one RESP2 reply from `bytes` into `out`; the bytes used, or `None` if incomplete.
fn parse(bytes: &[u8], out: &mut Vec<String>) -> Option<usize> {
    let end = bytes.windows(2).position(|w| w == b"\r\n")?;
    let line = String::from_utf8_lossy(&bytes[1..end]).to_string();
    let rest = end + 2;
    match bytes.first()? {
        b'+' | b'-' | b':' => {
            out.push(if bytes[0] == b'-' {
                format!("-{line}")
            } else {
                line
            });
            Some(rest)
        }
        b'$' => {
            let length: i64 = line.parse().ok()?;
            if length < 0 {
                out.push(String::new());
                return Some(rest);
            }
            let body = bytes.get(rest..rest + length as usize)?;
            bytes.get(rest + length as usize + 1)?;
            out.push(String::from_utf8_lossy(body).to_string());
            Some(rest + length as usize + 2)
        }
        b'*' => {
            let count: i64 = line.parse().ok()?;
            let mut used = rest;
            for _ in 0..count.max(0) {
                used += parse(&bytes[used..], out)?;
            }
            Some(used)
        }
        _ => None,
    }
}
