//! `guichet users …`, `guichet keys …` and `guichet hash-password`: managing users and API keys
//! in the configured store. Passwords are read from standard input, never from arguments; a new
//! API key is printed once and only its hash is kept. Names, emails, roles and scopes with a
//! control character are refused, and listings print stored text escaped.

use std::borrow::Cow;
use std::io::BufRead;

use clap::Subcommand;

use crate::auth::{api_key, password};
use crate::config::{Config, StoreBackend};
use crate::credentials::fits_a_header;
use crate::store::{redis_target, ApiKey, NewUser, RedisStore, Store, User};

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a user; the password is read from standard input.
    Add {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: String,
    },
    /// Set a user's password, read from standard input.
    SetPassword { username: String },
    /// Give a user another role.
    SetRole { username: String, role: String },
    /// Stop a user from logging in or refreshing tokens.
    Disable { username: String },
    /// List the users.
    List,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: String,
        /// A scope the key carries; repeat for more.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// When the key stops working, as an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List the API keys (never their secrets).
    List,
    /// Revoke a key by its prefix; every gateway stops accepting it within a second.
    Revoke { prefix: String },
}

/// `guichet usage`: the usage report of the Redis store as a table.
pub async fn usage(
    config: &Config,
    window: &str,
    consumer: Option<&str>,
    route: Option<&str>,
) -> Result<String, String> {
    let store = redis_store(config)?;
    let span = crate::analytics::window(window)
        .ok_or_else(|| format!("`{window}` is not a window; use 1h, 24h or 7d"))?;
    let usage = crate::analytics::Usage::new(Some(store.connection()));
    let report = usage
        .report(span, crate::auth::jwt::unix_now(), consumer, route)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = format!(
        "{:<9} {:<40} {:>9} {:>6} {:>6} {:>9} {:>9} {:>9}",
        "", "name", "requests", "4xx", "5xx", "throttled", "p50_ms", "p95_ms"
    );
    let ms = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |ms| format!("{ms}"));
    for section in ["consumers", "routes"] {
        if let Some(rows) = report[section].as_object() {
            for (name, stats) in rows {
                out.push_str(&format!(
                    "\n{:<9} {:<40} {:>9} {:>6} {:>6} {:>9} {:>9} {:>9}",
                    section.trim_end_matches('s'),
                    escaped(name),
                    stats["requests"],
                    stats["errors_4xx"],
                    stats["errors_5xx"],
                    stats["throttled"],
                    ms(&stats["p50_ms"]),
                    ms(&stats["p95_ms"]),
                ));
            }
        }
    }
    Ok(out)
}

/// Reads one line (the password) from standard input.
pub fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err(
            "no password on standard input (pipe it in: `printf '%s' \"$PASSWORD\" | guichet …`)"
                .to_string(),
        );
    }
    Ok(password)
}

fn redis_store(config: &Config) -> Result<RedisStore, String> {
    match &config.auth.store {
        StoreBackend::Redis(settings) => RedisStore::new(
            redis_target(settings).map_err(|e| e.to_string())?,
            std::time::Duration::from_secs(5),
        )
        .map_err(|e| e.to_string()),
        StoreBackend::Memory => Err(format!(
            "{}: this command needs `store: {{ backend: redis }}`; the memory store lives inside each gateway process (users and keys come from `seed:`, with hashes from `guichet hash-password` and `guichet keys create`; usage from GET /api/analytics/usage/ on the gateway)",
            config.source.display()
        )),
    }
}

fn check_role(config: &Config, role: &str) -> Result<(), String> {
    if config.auth.rank(role).is_some() {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a role; the roles are {}",
            escaped(role),
            config.auth.roles.join(", ")
        ))
    }
}

/// Refuses `value` if it holds a control character, naming the `field` it was given as: names
/// and roles reach the services in identity headers, which cannot carry them, and every value
/// reaches the listings.
fn plain(field: &str, value: &str) -> Result<(), String> {
    if fits_a_header(value) {
        Ok(())
    } else {
        Err(format!(
            "{field} holds a control character: `{}`; write it without one (names and roles are sent to the services in headers, and every value is printed in listings)",
            escaped(value)
        ))
    }
}

/// A header line and one line per row, each cell padded to its column's width.
fn table<const N: usize>(
    widths: [usize; N],
    header: [&str; N],
    rows: impl Iterator<Item = [String; N]>,
) -> String {
    let line = |cells: [&str; N]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join(" ")
    };
    let mut out = line(header);
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

/// `text` as it can be printed: control characters as Rust escapes (`\r`, `\u{1b}`) and `\`
/// doubled so an escape cannot be faked. Text stored before control characters were refused may
/// hold them, and printed raw they would rewrite the operator's terminal.
fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || c.is_control()) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' || c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

async fn find_user(store: &dyn Store, username: &str) -> Result<User, String> {
    store
        .user_by_login(username)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no user `{}`", escaped(username)))
}

impl UsersCommand {
    /// Refuses control characters in what the command would store.
    fn check_text(&self) -> Result<(), String> {
        match self {
            UsersCommand::Add {
                username,
                email,
                role,
            } => {
                plain("--username", username)?;
                plain("--email", email)?;
                plain("--role", role)
            }
            UsersCommand::SetRole { role, .. } => plain("the role", role),
            UsersCommand::SetPassword { .. }
            | UsersCommand::Disable { .. }
            | UsersCommand::List => Ok(()),
        }
    }
}

pub async fn users(config: &Config, command: UsersCommand) -> Result<String, String> {
    command.check_text()?;
    let store = redis_store(config)?;
    match command {
        UsersCommand::Add {
            username,
            email,
            role,
        } => {
            check_role(config, &role)?;
            let password_hash = password::hash(&read_password()?);
            let user = store
                .add_user(NewUser {
                    username,
                    email,
                    role,
                    password_hash,
                })
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "added user {} ({}, {})",
                user.id, user.username, user.role
            ))
        }
        UsersCommand::SetPassword { username } => {
            let mut user = find_user(&store, &username).await?;
            user.password_hash = password::hash(&read_password()?);
            store.update_user(&user).await.map_err(|e| e.to_string())?;
            Ok(format!("password of {} changed", escaped(&username)))
        }
        UsersCommand::SetRole { username, role } => {
            check_role(config, &role)?;
            let mut user = find_user(&store, &username).await?;
            user.role.clone_from(&role);
            store.update_user(&user).await.map_err(|e| e.to_string())?;
            Ok(format!("{} is now {role}", escaped(&username)))
        }
        UsersCommand::Disable { username } => {
            let mut user = find_user(&store, &username).await?;
            user.active = false;
            store.update_user(&user).await.map_err(|e| e.to_string())?;
            Ok(format!("{} is disabled", escaped(&username)))
        }
        UsersCommand::List => {
            let users = store.list_users().await.map_err(|e| e.to_string())?;
            let rows = users.iter().map(|u| {
                [
                    u.id.to_string(),
                    escaped(&u.username).into_owned(),
                    escaped(&u.email).into_owned(),
                    escaped(&u.role).into_owned(),
                    u.active.to_string(),
                ]
            });
            let header = ["id", "username", "email", "role", "active"];
            Ok(table([6, 20, 32, 12, 0], header, rows))
        }
    }
}

pub async fn keys(config: &Config, command: KeysCommand) -> Result<String, String> {
    match command {
        KeysCommand::Create {
            name,
            role,
            scopes,
            expires,
        } => {
            plain("--name", &name)?;
            plain("--role", &role)?;
            for scope in &scopes {
                plain("--scope", scope)?;
            }
            check_role(config, &role)?;
            let expires_at = expires
                .as_deref()
                .map(|text| {
                    humantime::parse_rfc3339(text)
                        .map_err(|_| {
                            format!("`{text}` is not an RFC 3339 time such as 2027-01-01T00:00:00Z")
                        })
                        .map(|at| {
                            at.duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_secs())
                        })
                })
                .transpose()?;
            let (key, prefix, secret_hash) = api_key::generate();
            let record = ApiKey {
                prefix: prefix.clone(),
                name: name.clone(),
                secret_hash: secret_hash.clone(),
                role: role.clone(),
                scopes: scopes.clone(),
                created: crate::auth::jwt::unix_now(),
                expires: expires_at,
                revoked: false,
            };
            if matches!(config.auth.store, StoreBackend::Memory) {
                let expires = expires.map_or(String::new(), |at| format!(", expires: {at}"));
                return Ok(format!(
                    "{key}\n\nThis key is shown once. With the memory store, add it to gateway.yaml:\n  seed:\n    api_keys:\n      - {{ name: {name}, prefix: {prefix}, key_hash: {secret_hash}, role: {role}, scopes: [{}]{expires} }}",
                    scopes.join(", ")
                ));
            }
            redis_store(config)?
                .add_api_key(&record)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "{key}\n\nThis key is shown once; only its hash is stored (prefix {prefix})."
            ))
        }
        KeysCommand::List => {
            let store = redis_store(config)?;
            let keys = store.list_api_keys().await.map_err(|e| e.to_string())?;
            let rows = keys.iter().map(|k| {
                [
                    escaped(&k.prefix).into_owned(),
                    escaped(&k.name).into_owned(),
                    escaped(&k.role).into_owned(),
                    k.revoked.to_string(),
                    escaped(&k.scopes.join(",")).into_owned(),
                ]
            });
            let header = ["prefix", "name", "role", "revoked", "scopes"];
            Ok(table([16, 24, 12, 8, 0], header, rows))
        }
        KeysCommand::Revoke { prefix } => {
            let store = redis_store(config)?;
            if store
                .revoke_api_key(&prefix)
                .await
                .map_err(|e| e.to_string())?
            {
                Ok(format!("revoked {}", escaped(&prefix)))
            } else {
                Err(format!("no API key with prefix `{}`", escaped(&prefix)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused_naming_the_field_and_echoed_escaped() {
        assert_eq!(plain("--username", "zoë"), Ok(()));
        let refused = plain("--username", "ev\r\nil").unwrap_err();
        assert!(
            refused.starts_with("--username holds a control character: `ev\\r\\nil`"),
            "{refused}"
        );
    }

    #[test]
    fn listings_escape_control_characters_and_backslashes_only() {
        assert!(matches!(escaped("zoë grader"), Cow::Borrowed("zoë grader")));
        assert_eq!(escaped("a\r\nb\0\t\u{1b}[2J"), "a\\r\\nb\\0\\t\\u{1b}[2J");
        // A real backslash cannot pass for an escape.
        assert_eq!(escaped("a\\rb"), "a\\\\rb");
        assert_ne!(escaped("a\\rb"), escaped("a\rb"));
    }
}
