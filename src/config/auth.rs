//! The authentication sections of `gateway.yaml` — `store`, `jwt`, `roles`, `seed` — read with
//! positions and compiled: keys loaded (or, for the demo, generated), secrets taken from the
//! environment, seed data checked against the roles.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::decode::{Fields, Reader, Spanned};
use super::source::{read_bounded, ReadError, MAX_CONFIG_FILE};
use super::yaml::Node;
use super::{AuthConfig, KeyFiles, StoreBackend};
use crate::auth::jwt::{self, Keys, Tokens};
use crate::credentials::{fits_a_header, is_argon2_hash, split_api_key};
use crate::store::{ApiKey, User};

const STORE_KEYS: &[&str] = &["backend", "url", "api_key_cache_ttl", "timeout"];
const JWT_KEYS: &[&str] = &[
    "issuer",
    "audience",
    "algorithm",
    "signing_key_file",
    "secret_env",
    "verification_keys",
    "access_ttl",
    "refresh_ttl",
    "leeway",
    "generate_key_if_missing",
    "max_pending_logins",
];
const SEED_KEYS: &[&str] = &["users", "api_keys"];
const SEED_USER_KEYS: &[&str] = &["id", "username", "email", "role", "password_hash", "active"];
const SEED_KEY_KEYS: &[&str] = &["name", "prefix", "key_hash", "role", "scopes", "expires"];

/// Password checks admitted at once by default: a class of 50 arriving together fits, and the
/// last of 64 waits 64 checks' time on one thread (about 1 s at the 14 ms a check took in a
/// release build on a free core; a few seconds on a busy machine), within what a person waits
/// for a login form. Each pending check holds a small job and its connection; argon2's 19 MiB
/// is taken only by the checks running.
const DEFAULT_MAX_PENDING_LOGINS: usize = 64;
/// More would be a typo, and a queue nobody waits out.
const MAX_PENDING_LOGINS: usize = 100_000;

pub const DEFAULT_ROLES: [&str; 3] = ["student", "instructor", "admin"];
const REDIS_URL_ENV: &str = "GUICHET_REDIS_URL";

/// Reads and compiles the four sections of `gateway.yaml` given as nodes.
pub struct AuthSections<'n> {
    pub store: Option<(&'n Node, String)>,
    pub jwt: Option<(&'n Node, String)>,
    pub roles: Option<(&'n Node, String)>,
    pub seed: Option<(&'n Node, String)>,
}

pub fn compile(sections: AuthSections, r: &mut Reader, base: &Path, keys: KeyFiles) -> AuthConfig {
    let roles = match &sections.roles {
        Some((node, field)) => read_roles(node, field, r),
        None => DEFAULT_ROLES.iter().map(|s| s.to_string()).collect(),
    };
    let (backend, api_key_cache_ttl, store_timeout) = match &sections.store {
        Some((node, field)) => read_store(node, field, r),
        None => (StoreBackend::Memory, None, None),
    };
    let (tokens, max_pending_logins) = match &sections.jwt {
        Some((node, field)) => read_jwt(node, field, r, base, keys),
        None => (None, DEFAULT_MAX_PENDING_LOGINS),
    };
    let (users, api_keys) = match &sections.seed {
        Some((node, field)) => {
            if matches!(backend, StoreBackend::Redis { .. }) {
                r.error(
                    node.mark,
                    field,
                    "seed data is for the memory store only",
                    "manage users and keys in Redis with `guichet users` and `guichet keys`, or use `store: { backend: memory }`",
                );
            }
            read_seed(node, field, r, &roles)
        }
        None => (Vec::new(), Vec::new()),
    };
    AuthConfig {
        jwt_written: sections.jwt.is_some(),
        store: backend,
        store_timeout: store_timeout.unwrap_or(Duration::from_millis(250)),
        api_key_cache_ttl: api_key_cache_ttl.unwrap_or(Duration::from_secs(30)),
        max_pending_logins,
        tokens: tokens.map(Arc::new),
        roles,
        seed_users: users,
        seed_api_keys: api_keys,
    }
}

const HOLDS_CONTROL: &str = "holds a control character";
const HOLDS_CONTROL_FIX: &str =
    "write it without one: names and roles reach the services in identity headers";

/// A text value that can go into an identity header: no control character.
fn header_safe(r: &mut Reader, node: &Node, field: &str) -> Option<Spanned<String>> {
    let text = r.string(node, field)?;
    if fits_a_header(&text.value) {
        Some(text)
    } else {
        r.error(text.mark, field, HOLDS_CONTROL, HOLDS_CONTROL_FIX);
        None
    }
}

fn read_roles(node: &Node, field: &str, r: &mut Reader) -> Vec<String> {
    let roles = r.strings(node, field, "[student, instructor, admin]");
    let mut names: Vec<String> = Vec::new();
    let mut listed = HashSet::new();
    for role in roles {
        if !fits_a_header(&role.value) {
            r.error(role.mark, field, HOLDS_CONTROL, HOLDS_CONTROL_FIX);
        } else if !listed.insert(role.value.clone()) {
            r.error(
                role.mark,
                field,
                format!("role `{}` is listed twice", role.value),
                "list each role once",
            );
        } else {
            names.push(role.value);
        }
    }
    if names.is_empty() {
        r.error(
            node.mark,
            field,
            "no role is defined",
            "list the roles from least to most privileged, such as [student, instructor, admin]",
        );
    }
    names
}

fn read_store(
    node: &Node,
    field: &str,
    r: &mut Reader,
) -> (StoreBackend, Option<Duration>, Option<Duration>) {
    let Some(fields) = r.fields(node, field, STORE_KEYS) else {
        return (StoreBackend::Memory, None, None);
    };
    let url = fields
        .get("url")
        .and_then(|(node, field)| r.string(node, &field));
    let backend = match fields.get("backend") {
        Some((node, field)) => match r.scalar(node, &field, "memory or redis") {
            Some("memory") => StoreBackend::Memory,
            Some("redis") => {
                let from_env = std::env::var(REDIS_URL_ENV)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .map(|v| Spanned::new(v, node.mark));
                match from_env.or(url) {
                    Some(url) => {
                        if let Err(e) = redis::Client::open(url.value.as_str()) {
                            r.error(
                                url.mark,
                                &format!("{}.url", fields.path()),
                                format!("`{}` is not a Redis URL: {e}", url.value),
                                "write redis://host:6379/0 or unix:///path/to/redis.sock",
                            );
                        }
                        StoreBackend::Redis { url: url.value }
                    }
                    None => {
                        r.error(
                            node.mark,
                            &field,
                            "the redis store needs a URL",
                            &format!("add `url: redis://127.0.0.1:6379/0`, or set {REDIS_URL_ENV}"),
                        );
                        StoreBackend::Memory
                    }
                }
            }
            Some(other) => {
                r.error(
                    node.mark,
                    &field,
                    format!("`{other}` is not a store backend"),
                    "write memory or redis",
                );
                StoreBackend::Memory
            }
            None => StoreBackend::Memory,
        },
        None => StoreBackend::Memory,
    };
    let ttl = fields
        .get("api_key_cache_ttl")
        .and_then(|(node, field)| r.duration(node, &field));
    let timeout = fields
        .get("timeout")
        .and_then(|(node, field)| r.duration(node, &field));
    (backend, ttl, timeout)
}

/// The `jwt` section: the token keys and settings, and the bound on pending password checks.
fn read_jwt(
    node: &Node,
    field: &str,
    r: &mut Reader,
    base: &Path,
    key_files: KeyFiles,
) -> (Option<Tokens>, usize) {
    let Some(fields) = r.fields(node, field, JWT_KEYS) else {
        return (None, DEFAULT_MAX_PENDING_LOGINS);
    };
    let max_pending_logins = match fields.get("max_pending_logins") {
        Some((node, field)) => r.count(node, &field, MAX_PENDING_LOGINS),
        None => Some(DEFAULT_MAX_PENDING_LOGINS),
    };
    let tokens = read_tokens(&fields, field, r, base, key_files);
    (
        tokens,
        max_pending_logins.unwrap_or(DEFAULT_MAX_PENDING_LOGINS),
    )
}

fn read_tokens(
    fields: &Fields,
    field: &str,
    r: &mut Reader,
    base: &Path,
    key_files: KeyFiles,
) -> Option<Tokens> {
    let text = |r: &mut Reader, key: &str, default: &str| match fields.get(key) {
        Some((node, field)) => r.string(node, &field).map(|s| s.value),
        None => Some(default.to_string()),
    };
    let issuer = text(r, "issuer", "guichet");
    let audience = text(r, "audience", "hackitech");
    let duration = |r: &mut Reader, key: &str, default: u64| match fields.get(key) {
        Some((node, field)) => r.duration(node, &field),
        None => Some(Duration::from_secs(default)),
    };
    let access_ttl = duration(r, "access_ttl", 3600);
    let refresh_ttl = duration(r, "refresh_ttl", 7 * 24 * 3600);
    let leeway = match fields.get("leeway") {
        Some((node, field)) => r.parsed(
            node,
            &field,
            "a duration",
            "write a duration such as 30s",
            |t| humantime::parse_duration(t).map_err(|_| format!("`{t}` is not a duration")),
        ),
        None => Some(Duration::from_secs(30)),
    };
    let generate = match fields.get("generate_key_if_missing") {
        Some((node, field)) => r.boolean(node, &field).unwrap_or(false),
        None => false,
    };
    let algorithm = match fields.get("algorithm") {
        Some((node, field)) => r.parsed(
            node,
            &field,
            "an algorithm",
            "write EdDSA, ES256, RS256 or HS256",
            |t| match t {
                "EdDSA" => Ok(Algorithm::EdDSA),
                "ES256" => Ok(Algorithm::ES256),
                "RS256" => Ok(Algorithm::RS256),
                "HS256" => Ok(Algorithm::HS256),
                other => Err(format!("`{other}` is not a supported algorithm")),
            },
        )?,
        None => Algorithm::EdDSA,
    };
    let mut keys = if algorithm == Algorithm::HS256 {
        let Some((node, field)) = fields.get("secret_env") else {
            r.error(fields.mark, &format!("{field}.secret_env"), "HS256 needs a shared secret from the environment", "add `secret_env: GUICHET_JWT_SECRET` and set that variable to at least 32 random bytes");
            return None;
        };
        let name = r.string(node, &field)?;
        let secret = std::env::var(&name.value).unwrap_or_default();
        match Keys::from_secret(secret.as_bytes()) {
            Ok(keys) => keys,
            Err(why) => {
                let why = if secret.is_empty() {
                    format!("the environment variable {} is not set", name.value)
                } else {
                    why
                };
                r.error(name.mark, &field, why, "set it to at least 32 random bytes, such as the output of `openssl rand -base64 48`");
                return None;
            }
        }
    } else {
        let Some((node, field)) = fields.get("signing_key_file") else {
            r.error(
                fields.mark,
                &format!("{field}.signing_key_file"),
                format!("{algorithm:?} needs a private key file"),
                "add `signing_key_file: keys/jwt.pem`",
            );
            return None;
        };
        let file = r.string(node, &field)?;
        let path = base.join(&file.value);
        let pem = read_or_generate_key(&path, algorithm, generate, key_files);
        match pem.and_then(|pem| Keys::from_private_pem(algorithm, pem.as_bytes())) {
            Ok(keys) => keys,
            Err(why) => {
                r.error(
                    file.mark,
                    &field,
                    format!("{}: {why}", path.display()),
                    &key_hint(algorithm),
                );
                return None;
            }
        }
    };
    if let Some((node, field)) = fields.get("verification_keys") {
        for (index, file) in r
            .strings(node, &field, "[keys/old-public.pem]")
            .into_iter()
            .enumerate()
        {
            let path = base.join(&file.value);
            let accepted = read_bounded(&path, MAX_CONFIG_FILE)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|pem| keys.accept_public_pem(&pem));
            if let Err(why) = accepted {
                r.error(
                    file.mark,
                    &format!("{field}[{index}]"),
                    why,
                    "list PEM public keys of earlier signing keys",
                );
            }
        }
    }
    Some(Tokens::new(
        keys,
        &issuer?,
        &audience?,
        access_ttl?,
        refresh_ttl?,
        leeway?,
    ))
}

fn key_hint(algorithm: Algorithm) -> String {
    match algorithm {
        Algorithm::EdDSA => "create one with `openssl genpkey -algorithm ed25519 -out keys/jwt-ed25519.pem`, or set `generate_key_if_missing: true` for a demo".to_string(),
        Algorithm::ES256 => "create one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out keys/jwt-es256.pem`".to_string(),
        _ => "create one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out keys/jwt-rs256.pem`".to_string(),
    }
}

/// The key file's text; a missing EdDSA key is generated when allowed (written only by `serve`).
fn read_or_generate_key(
    path: &Path,
    algorithm: Algorithm,
    generate: bool,
    key_files: KeyFiles,
) -> Result<String, String> {
    match read_bounded(path, MAX_CONFIG_FILE) {
        Ok(pem) => String::from_utf8(pem).map_err(|_| "the key file is not PEM text".to_string()),
        Err(e) if e.is_not_found() && generate && algorithm == Algorithm::EdDSA => {
            let pem = jwt::generate_ed25519_pem();
            if key_files == KeyFiles::CreateMissing {
                write_private(path, &pem)
                    .map_err(|e| format!("cannot create the key file: {e}"))?;
                tracing::warn!(path = %path.display(), "generated a new JWT signing key (demo only: replicas must share one key)");
            }
            Ok(pem)
        }
        Err(ReadError::Io(e)) => Err(format!("cannot read the key file: {e}")),
        Err(e) => Err(format!("the key file: {e}")),
    }
}

fn write_private(path: &Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(pem.as_bytes())
}

fn read_seed(
    node: &Node,
    field: &str,
    r: &mut Reader,
    roles: &[String],
) -> (Vec<User>, Vec<ApiKey>) {
    let Some(fields) = r.fields(node, field, SEED_KEYS) else {
        return (Vec::new(), Vec::new());
    };
    let users = fields
        .get("users")
        .and_then(|(node, field)| {
            r.list(
                node,
                &field,
                "[{id: 1, username: demo, ...}]",
                |r, node, field| read_seed_user(node, field, r, roles),
            )
        })
        .unwrap_or_default();
    let api_keys = fields
        .get("api_keys")
        .and_then(|(node, field)| {
            r.list(
                node,
                &field,
                "[{name: grading-service, ...}]",
                |r, node, field| read_seed_key(node, field, r, roles),
            )
        })
        .unwrap_or_default();
    (users, api_keys)
}

fn required<'n>(
    r: &mut Reader,
    fields: &Fields<'n>,
    key: &str,
    example: &str,
) -> Option<(&'n Node, String)> {
    let found = fields.get(key);
    if found.is_none() {
        r.error(
            fields.mark,
            &format!("{}.{key}", fields.path()),
            format!("missing `{key}`"),
            &format!("add `{key}: {example}`"),
        );
    }
    found
}

fn known_role(
    r: &mut Reader,
    role: Option<Spanned<String>>,
    field: &str,
    roles: &[String],
) -> Option<String> {
    let role = role?;
    if roles.contains(&role.value) {
        Some(role.value)
    } else {
        r.error(
            role.mark,
            field,
            format!("`{}` is not a role", role.value),
            &format!("write one of {}", roles.join(", ")),
        );
        None
    }
}

fn read_seed_user(node: &Node, field: &str, r: &mut Reader, roles: &[String]) -> Option<User> {
    let fields = r.fields(node, field, SEED_USER_KEYS)?;
    let id = required(r, &fields, "id", "1").and_then(|(node, field)| {
        r.parsed(node, &field, "a number", "write a whole number", |t| {
            t.parse::<u64>()
                .map_err(|_| format!("`{t}` is not a user id"))
        })
    });
    let username = required(r, &fields, "username", "demo")
        .and_then(|(node, field)| header_safe(r, node, &field));
    let email = required(r, &fields, "email", "demo@hackitech.example")
        .and_then(|(node, field)| header_safe(r, node, &field));
    let role = required(r, &fields, "role", "student").and_then(|(node, field)| {
        let role = r.string(node, &field);
        known_role(r, role, &field, roles)
    });
    let password_hash =
        required(r, &fields, "password_hash", "\"$argon2id$...\"").and_then(|(node, field)| {
            let hash = r.string(node, &field)?;
            if is_argon2_hash(&hash.value) {
                Some(hash.value)
            } else {
                r.error(
                    hash.mark,
                    &field,
                    "not an argon2 password hash",
                    "make one with `guichet hash-password`, which reads the password from stdin",
                );
                None
            }
        });
    let active = match fields.get("active") {
        Some((node, field)) => r.boolean(node, &field),
        None => Some(true),
    };
    Some(User {
        id: id?,
        username: username?.value,
        email: email?.value,
        role: role?,
        password_hash: password_hash?,
        active: active?,
    })
}

fn read_seed_key(node: &Node, field: &str, r: &mut Reader, roles: &[String]) -> Option<ApiKey> {
    let fields = r.fields(node, field, SEED_KEY_KEYS)?;
    let name = required(r, &fields, "name", "grading-service")
        .and_then(|(node, field)| header_safe(r, node, &field));
    let prefix = required(r, &fields, "prefix", "gk_demo").and_then(|(node, field)| {
        let prefix = r.string(node, &field)?;
        if split_api_key(&format!("{}.x", prefix.value)).is_some() {
            Some(prefix.value)
        } else {
            r.error(
                prefix.mark,
                &field,
                format!("`{}` is not a key prefix", prefix.value),
                "use letters, digits, _ and -",
            );
            None
        }
    });
    let key_hash = required(r, &fields, "key_hash", "<64 hex digits>").and_then(|(node, field)| {
        let hash = r.string(node, &field)?;
        if hash.value.len() == 64 && hash.value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(hash.value.to_ascii_lowercase())
        } else {
            r.error(hash.mark, &field, "not a SHA-256 hex digest", "make a key and its seed entry with `guichet keys create --name NAME --role ROLE --seed`");
            None
        }
    });
    let role = required(r, &fields, "role", "instructor").and_then(|(node, field)| {
        let role = r.string(node, &field);
        known_role(r, role, &field, roles)
    });
    let scopes = fields
        .get("scopes")
        .map(|(node, field)| {
            r.strings(node, &field, "[grades:write]")
                .into_iter()
                .map(|s| s.value)
                .collect()
        })
        .unwrap_or_default();
    let expires = match fields.get("expires") {
        Some((node, field)) => r
            .parsed(
                node,
                &field,
                "a time",
                "write an RFC 3339 time such as 2027-01-01T00:00:00Z",
                |t| {
                    humantime::parse_rfc3339(t)
                        .map_err(|_| format!("`{t}` is not an RFC 3339 time"))
                        .map(|at| {
                            at.duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_secs())
                        })
                },
            )
            .map(Some),
        None => Some(None),
    };
    Some(ApiKey {
        prefix: prefix?,
        name: name?.value,
        secret_hash: key_hash?,
        role: role?,
        scopes,
        created: 0,
        expires: expires?,
        revoked: false,
    })
}
