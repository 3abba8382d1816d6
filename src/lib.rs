//! Guichet: the single entry point of the Hackitech platform, an API gateway built on pingora.
//!
//! A request's way through: [`proxy`] identifies it, [`router`] matches its (normalised, see
//! [`path`]) path, [`upstream`] picks a healthy target, [`forwarded`] sets the headers the
//! backend can trust, and [`logs`] writes its access line. [`endpoints`] answers the gateway's
//! own paths, [`errors`] is the one JSON error shape, and [`respond`] the one way every response
//! gets its common fields.
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

pub mod admin;
pub mod analytics;
pub mod auth;
pub mod authz;
pub mod cli;
pub mod config;
pub mod connection;
pub mod context;
pub mod cors;
pub mod credentials;
pub mod endpoints;
pub mod errors;
pub mod forwarded;
pub mod health;
pub mod lifecycle;
pub mod logs;
pub mod manage;
pub mod metrics;
pub mod openapi;
pub mod path;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod render;
pub mod request_id;
pub mod respond;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod websocket;
pub mod wellformed;
