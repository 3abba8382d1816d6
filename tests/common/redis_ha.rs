//! Redis that survives a failure, started by the test: a cluster of three masters (each with a
//! replica when asked), and a master with a replica watched by three sentinels, with passwords or
//! TLS when asked. Every process has its own loopback ports and folder, keeps nothing on disk,
//! and is stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guichet::store::{RedisTarget, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::free_port;
use super::tls::{TestCa, Validity};

/// One `redis-server` process on a loopback port.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    dir: PathBuf,
    /// The user and password the test's own commands log in with, if the node asks for one.
    login: Option<(String, String)>,
    /// With TLS: the port where the node speaks it, to the gateway and to the other nodes (the
    /// test's own commands use `port`, in plain text).
    pub tls_port: Option<u16>,
    tls_args: Vec<String>,
}

/// A private CA and a certificate for 127.0.0.1 that every node of a set presents; clients are
/// not asked for certificates. The gateway trusts the CA through `SSL_CERT_FILE`.
pub struct RedisTls {
    dir: tempfile::TempDir,
}

impl RedisTls {
    pub fn new() -> RedisTls {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = TestCa::new("Redis test CA");
        ca.root.write(dir.path(), "ca");
        let validity = Validity {
            from_days: -1,
            to_days: 30,
        };
        ca.issue(&["127.0.0.1", "localhost"], validity)
            .write(dir.path(), "redis");
        RedisTls { dir }
    }

    /// The CA's certificate, for `SSL_CERT_FILE`.
    pub fn ca_file(&self) -> String {
        self.file("ca.pem")
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A node's TLS settings, replication and the cluster bus included.
    fn args(&self, tls_port: u16) -> Vec<String> {
        [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &self.file("redis.pem"),
            "--tls-key-file",
            &self.file("redis.key"),
            "--tls-ca-cert-file",
            &self.ca_file(),
            "--tls-auth-clients",
            "no",
            "--tls-replication",
            "yes",
            "--tls-cluster",
            "yes",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect()
    }
}

/// Passwords for a sentinel set, as a production one has them: the data nodes admit only the
/// ACL user `username` (the default user is off), and the sentinels ask for their own password.
pub struct SentinelAuth {
    pub username: &'static str,
    pub password: &'static str,
    pub sentinel_password: &'static str,
}

impl Node {
    /// A node; with `tls`, it also speaks TLS with that certificate.
    fn start(dir: &Path, name: &str, args: Vec<String>, tls: Option<&RedisTls>) -> Node {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("a node folder");
        let tls_port = tls.map(|_| free_port().port());
        let mut node = Node {
            child: None,
            port: free_port().port(),
            args,
            dir,
            login: None,
            tls_port,
            tls_args: tls.zip(tls_port).map_or(Vec::new(), |(t, p)| t.args(p)),
        };
        node.spawn();
        node
    }

    /// The port other nodes and the gateway reach this node on: its TLS port when it has one.
    pub fn served_port(&self) -> u16 {
        self.tls_port.unwrap_or(self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(&self.tls_args)
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
        match self.tls_port {
            Some(port) => format!("rediss://127.0.0.1:{port}"),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
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
        match &self.login {
            Some((user, password)) => {
                tcp_commands(self.port, &[&["AUTH", user, password], args]).await
            }
            None => tcp_command(self.port, args).await,
        }
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
        RedisCluster::start_with(replicas, None).await
    }

    /// A cluster whose nodes speak TLS to the gateway and to each other.
    pub async fn start_with(replicas: usize, tls: Option<&RedisTls>) -> RedisCluster {
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
                    tls,
                )
            })
            .collect();
        for node in &nodes {
            node.wait_until_up().await;
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.served_port()))
            .collect();
        let tls_args = match tls {
            Some(tls) => vec!["--tls".to_string(), "--cacert".to_string(), tls.ca_file()],
            None => Vec::new(),
        };
        let created = Command::new("redis-cli")
            .args(tls_args)
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
            .position(|node| owns(&slots, slot, node.served_port()))
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
        RedisSentinels::start_with(None, None).await
    }

    /// A sentinel set whose data nodes and sentinels ask for the passwords of `auth`, and speak
    /// TLS (to the gateway, and replication) with `tls`.
    pub async fn start_with(auth: Option<&SentinelAuth>, tls: Option<&RedisTls>) -> RedisSentinels {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_login: Vec<String> = match auth {
            Some(a) => [
                "--user",
                "default",
                "off",
                "--user",
                a.username,
                "on",
                &format!(">{}", a.password),
                "~*",
                "&*",
                "+@all",
                "--masteruser",
                a.username,
                "--masterauth",
                a.password,
            ]
            .iter()
            .map(|arg| arg.to_string())
            .collect(),
            None => Vec::new(),
        };
        let login = auth.map(|a| (a.username.to_string(), a.password.to_string()));
        let mut master = Node::start(dir.path(), "master", data_login.clone(), tls);
        master.login = login.clone();
        master.wait_until_up().await;
        let mut replica_args = data_login;
        replica_args.extend([
            "--replicaof".to_string(),
            "127.0.0.1".to_string(),
            master.served_port().to_string(),
        ]);
        let mut replica = Node::start(dir.path(), "replica", replica_args, tls);
        replica.login = login;
        replica.wait_until_up().await;
        let sentinel_login = match auth {
            Some(a) => format!(
                "sentinel auth-user {MASTER_NAME} {user}\n\
                 sentinel auth-pass {MASTER_NAME} {password}\n\
                 requirepass {sentinel}\n\
                 sentinel sentinel-pass {sentinel}\n",
                user = a.username,
                password = a.password,
                sentinel = a.sentinel_password
            ),
            None => String::new(),
        };
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
                         sentinel parallel-syncs {MASTER_NAME} 1\n\
                         {sentinel_login}",
                        master.served_port()
                    ),
                )
                .expect("a sentinel config");
                let mut sentinel = Node::start(
                    dir.path(),
                    &format!("sentinel{index}"),
                    vec![conf.display().to_string(), "--sentinel".to_string()],
                    tls,
                );
                sentinel.login =
                    auth.map(|a| ("default".to_string(), a.sentinel_password.to_string()));
                sentinel
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
        set.wait_for_master(set.master.served_port()).await;
        wait_until_replicated(&set.replica).await;
        set
    }

    /// The `store:` section for these sentinels, with `more` settings (`key: value, …`).
    pub fn store_yaml(&self, more: &str) -> String {
        self.store_yaml_with("", more)
    }

    /// [`RedisSentinels::store_yaml`] with more `sentinel:` settings (`, key: value, …`).
    pub fn store_yaml_with(&self, sentinel_more: &str, more: &str) -> String {
        let nodes: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"{}\"", s.url()))
            .collect();
        let sentinel = format!(
            "sentinel: {{ master: {MASTER_NAME}, nodes: [{}]{sentinel_more} }}",
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
    tcp_commands(port, &[args]).await
}

/// Commands sent together over one connection; the last one's reply flattened to text.
async fn tcp_commands(port: u16, commands: &[&[&str]]) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let mut request = String::new();
    for args in commands {
        request.push_str(&format!("*{}\r\n", args.len()));
        for arg in *args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
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
        if let Some(last) = last_reply(&reply, commands.len()) {
            return Some(last);
        }
    }
}

/// The `count`th reply in `bytes` flattened to text, once all `count` have arrived.
fn last_reply(bytes: &[u8], count: usize) -> Option<String> {
    let mut used = 0;
    let mut lines = Vec::new();
    for _ in 0..count {
        lines.clear();
        used += parse(&bytes[used..], &mut lines)?;
    }
    Some(lines.join("\n"))
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
