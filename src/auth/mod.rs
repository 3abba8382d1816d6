//! Authentication: tokens, passwords, API keys, and who a request is.

pub mod jwt;
pub mod password;
