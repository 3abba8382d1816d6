//! End-to-end tests: the real `guichet` binary, real hyper upstreams, real sockets.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod auth_redis;
mod check;
mod config_limits;
mod conformance;
mod container;
mod cors;
mod docs;
mod drain;
mod failover;
mod forwarding;
mod harness;
mod hostile;
mod hostile_tokens;
mod issuers;
mod kubernetes;
mod legacy;
mod lifecycle;
mod live;
mod logins;
mod metrics;
mod monitoring;
mod ratelimit;
mod reload;
mod retries;
mod rollout;
mod routing;
mod store;
mod tls;
mod usage;
mod watch;
