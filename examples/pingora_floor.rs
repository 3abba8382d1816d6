//! The floor under Guichet's plain-proxy scenario (d) in `deploy/bench/compare.sh`: a pingora
//! proxy that only forwards, built with Guichet's settings (no-steal runtime with one worker,
//! mimalloc, the release profile, a 4 KiB client read buffer). Measured beside nginx and Guichet
//! in the same run, it separates what pingora itself costs from what Guichet adds.
//!
//!   cargo run --release --example pingora_floor -- 127.0.0.1:8080 127.0.0.1:8001

use async_trait::async_trait;
use pingora::listeners::ListenerConfig;
use pingora::prelude::*;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Forward {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: pingora_floor LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        // Stops at once on SIGTERM, when the benchmark is over.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Forward { upstream });
    proxy
        .add_listener(ListenerConfig::tcp(listen).l4_buffer(L4BufferSettings::new(4 * 1024, 1460)));
    server.add_service(proxy);
    server.run_forever();
}
