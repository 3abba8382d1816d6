//! A real HAProxy in front of gateway replicas, health-checking each one's `/readyz` on its
//! admin listener as a Kubernetes Service follows a readiness probe, and never retrying a failed
//! request: whatever a replica drops reaches the client.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use super::{client, eventually, free_port, Gateway};

pub struct HaProxy {
    child: Child,
    pub addr: SocketAddr,
    stats: SocketAddr,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// Starts HAProxy with one server per replica (named `r0`, `r1`, ...), checked every
    /// 100 ms (out after 2 failures, back after 2 successes), and waits until all are up.
    pub async fn start(replicas: &[&Gateway]) -> HaProxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let (addr, stats) = (free_port(), free_port());
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, replica)| {
                format!(
                    "  server r{i} {} check port {}\n",
                    replica.addr,
                    replica.admin.port()
                )
            })
            .collect();
        let config = format!(
            "global\n  maxconn 1000\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  \
             timeout server 30s\n  retries 0\n  option http-keep-alive\n\
             frontend stats\n  bind {stats}\n  stats enable\n  stats uri /stats\n\
             frontend fe\n  bind {addr}\n  default_backend replicas\n\
             backend replicas\n  option httpchk GET /readyz\n  http-check expect status 200\n  \
             default-server check inter 100ms fall 2 rise 2\n{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy (Debian package haproxy: run `bash deploy/setup.sh`)");
        let haproxy = HaProxy {
            child,
            addr,
            stats,
            _dir: dir,
        };
        for i in 0..replicas.len() {
            haproxy.wait_until_up(&format!("r{i}")).await;
        }
        haproxy
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Until HAProxy's own health checks have put `server` in rotation.
    pub async fn wait_until_up(&self, server: &str) {
        eventually(&format!("HAProxy sees {server} up"), || async {
            self.status(server).await.as_deref() == Some("UP")
        })
        .await;
    }

    /// The status HAProxy gives `server` (`UP`, `DOWN`, `UP 1/2`, ...).
    pub async fn status(&self, server: &str) -> Option<String> {
        self.statistic(server, "status").await
    }

    /// How many times HAProxy has taken `server` out of rotation (`chkdown`).
    pub async fn times_down(&self, server: &str) -> u64 {
        self.statistic(server, "chkdown")
            .await
            .and_then(|count| count.parse().ok())
            .expect("HAProxy's chkdown statistic")
    }

    /// One column of `server`'s line in HAProxy's CSV statistics.
    async fn statistic(&self, server: &str, column: &str) -> Option<String> {
        let csv = client()
            .get(format!("http://{}/stats;csv", self.stats))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let header: Vec<&str> = csv
            .lines()
            .next()?
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = header.iter().position(|name| *name == column)?;
        csv.lines()
            .map(|line| line.split(',').collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&"replicas") && fields.get(1) == Some(&server))
            .and_then(|fields| fields.get(column).map(|status| (*status).to_string()))
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
