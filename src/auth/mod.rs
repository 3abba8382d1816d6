//! Authentication: tokens, passwords, API keys, and who a request is.

pub mod api_key;
pub mod jwt;
pub mod password;
