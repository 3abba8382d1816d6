//! The end-to-end test harness: the real `guichet` binary on ephemeral ports with a config the
//! test writes, hyper upstreams that echo what they receive (and can be told to slow down, fail
//! their health check or die), an identity provider's JWKS endpoint, a private `redis-server`,
//! and a raw HTTP/1.1 client for requests that ordinary clients would tidy up first.

pub mod gateway;
pub mod haproxy;
pub mod jwks;
pub mod live;
pub mod load;
pub mod raw;
pub mod redis;
pub mod redis_ha;
pub mod tls;
pub mod upstream;

pub use gateway::{
    add_demo_user, check, cli, cli_with_env, serve_refused, serve_to_exit, Gateway, GatewayConfig,
};
pub use haproxy::HaProxy;
pub use jwks::JwksServer;
pub use load::Load;
pub use raw::raw_request;
pub use redis::RedisServer;
pub use redis_ha::{RedisCluster, RedisSentinels, RedisTls, SentinelAuth};
pub use upstream::Upstream;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on right now, and never handed out before in this test
/// process: the kernel may give a released port again at once, and two listeners of one
/// gateway on the same port would each get half the connections.
pub fn free_port() -> SocketAddr {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("an ephemeral port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr;
        }
    }
}

/// A reqwest client that keeps no connection pool between tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client")
}

/// A response's status and its JSON body.
pub async fn status_and_json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// GET `url` and its JSON body, whatever the status.
pub async fn get_json(url: String) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .expect("a response")
        .json()
        .await
        .expect("a JSON body")
}

/// GET `url` and its body as text, such as the `/metrics` exposition.
pub async fn get_text(url: String) -> String {
    client()
        .get(url)
        .send()
        .await
        .expect("a response")
        .text()
        .await
        .expect("a text body")
}

/// Waits until `check` holds, asking every 20 ms for at most 20 s: a test waits for the event it
/// needs, never for a fixed interval that a loaded machine may overrun.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "still waiting for {what} after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
