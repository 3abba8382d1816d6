//! Every Redis key and channel Guichet uses, in one place: the store's users, API keys and
//! refresh-token families, the shared limiter's cells and the usage statistics' minutes. All
//! start with `guichet:`, so one Redis can serve other applications too.
//!
//! The keys one script or pipeline touches share a hash tag (`{…}`), so each operation runs on
//! one node of a cluster: the users and their login names (`{users}`: creating a user checks
//! both names and the id at once), the API keys and their index (`{apikeys}`), the usage
//! statistics (`{usage}`: one pipeline per flush), and a request's limits (the consumer, which
//! the limiter puts at the front of its keys as a tag). A family is one key.

use super::login_key;

const PREFIX: &str = "guichet";

/// The pub/sub channel on which revoked API key prefixes are announced.
pub const REVOCATIONS: &str = "guichet:revocations";
/// The pub/sub channel on which the prefixes of new API keys are announced, so that every
/// gateway's index of known prefixes takes them in within a moment.
pub const CREATIONS: &str = "guichet:key-creations";

/// A user's record.
pub fn user(id: u64) -> String {
    format!("{PREFIX}:{{users}}:user:{id}")
}

/// The set of every user id.
pub fn users() -> String {
    format!("{PREFIX}:{{users}}:all")
}

/// The counter that numbers new users.
pub fn next_user_id() -> String {
    format!("{PREFIX}:{{users}}:next_id")
}

/// The user id a username or email (case-insensitive) logs in as.
pub fn login(login: &str) -> String {
    format!("{PREFIX}:{{users}}:login:{}", login_key(login))
}

/// An API key's record, by its prefix.
pub fn api_key(prefix: &str) -> String {
    format!("{PREFIX}:{{apikeys}}:key:{prefix}")
}

/// The set of every API key prefix.
pub fn api_keys() -> String {
    format!("{PREFIX}:{{apikeys}}:all")
}

/// A refresh-token family: its current token and whether it was revoked.
pub fn family(family: &str) -> String {
    format!("{PREFIX}:family:{family}")
}

/// Something that may be used once, such as a legacy refresh token exchanged.
pub fn used_once(mark: &str) -> String {
    format!("{PREFIX}:once:{mark}")
}

/// A cell of the shared rate limiter. `key` starts with the consumer as a hash tag
/// (`{user:7}:tier:user`), so the limits of one request share a node of a cluster.
pub fn rate_limit(key: &str) -> String {
    format!("{PREFIX}:rl:{key}")
}

/// The usage statistics of one minute (minutes since the epoch).
pub fn usage_minute(minute: u64) -> String {
    format!("{PREFIX}:{{usage}}:{minute}")
}
