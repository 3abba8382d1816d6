//! Guichet: the single entry point of the Hackitech platform, an API gateway built on pingora.
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

pub mod config;
pub mod path;
pub mod router;
