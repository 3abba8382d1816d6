//! The authentication sections of `gateway.yaml` — `store`, `jwt`, `roles`, `seed` — read with
//! positions into plain settings, seed data checked against the roles. Key files, secrets and
//! the environment are not read here: `auth::keys` and the store read them where they are
//! used, and report what is wrong at the positions kept in the settings.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::decode::{Fields, Reader, Spanned};
use super::yaml::{Node, NodeKind};
use super::{
    AuthConfig, ClaimPaths, IssuerSettings, JwksSource, LegacySettings, RedisSettings,
    SentinelSettings, Setting, SigningKey, StoreBackend, TokenSettings,
};
use crate::credentials::{fits_a_header, is_argon2_hash, split_api_key};
use crate::store::{ApiKey, User};

const STORE_KEYS: &[&str] = &[
    "backend",
    "url",
    "sentinel",
    "cluster",
    "username",
    "password_env",
    "api_key_cache_ttl",
    "timeout",
];
const SENTINEL_KEYS: &[&str] = &["master", "nodes", "password_env"];
const CLUSTER_KEYS: &[&str] = &["nodes"];
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
    "trusted_issuers",
    "legacy_simplejwt",
];
const ISSUER_KEYS: &[&str] = &[
    "issuer",
    "jwks_url",
    "jwks_file",
    "audience",
    "algorithms",
    "claims",
    "roles",
];
const CLAIM_KEYS: &[&str] = &["user_id", "username", "role"];
const LEGACY_KEYS: &[&str] = &["secret_env", "accept_until"];
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

/// Reads and compiles the four sections of `gateway.yaml` given as nodes.
pub struct AuthSections<'n> {
    pub store: Option<(&'n Node, String)>,
    pub jwt: Option<(&'n Node, String)>,
    pub roles: Option<(&'n Node, String)>,
    pub seed: Option<(&'n Node, String)>,
}

pub fn compile(sections: AuthSections, r: &mut Reader, base: &Path) -> AuthConfig {
    let roles = match &sections.roles {
        Some((node, field)) => read_roles(node, field, r),
        None => DEFAULT_ROLES.iter().map(|s| s.to_string()).collect(),
    };
    let (backend, api_key_cache_ttl, store_timeout) = match &sections.store {
        Some((node, field)) => read_store(node, field, r),
        None => (StoreBackend::Memory, None, None),
    };
    let (tokens, max_pending_logins) = match &sections.jwt {
        Some((node, field)) => read_jwt(node, field, r, base, &roles),
        None => (None, DEFAULT_MAX_PENDING_LOGINS),
    };
    let (users, api_keys) = match &sections.seed {
        Some((node, field)) => {
            if matches!(backend, StoreBackend::Redis(_)) {
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
        tokens,
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
    let url = fields.get("url").and_then(|(node, field)| {
        r.string(node, &field).map(|url| Setting {
            value: url.value,
            at: r.at(url.mark),
            field,
        })
    });
    let sentinel = fields
        .get("sentinel")
        .and_then(|(node, field)| read_sentinel(node, &field, r));
    let cluster = fields
        .get("cluster")
        .and_then(|(node, field)| read_cluster(node, &field, r));
    one_redis_form(&fields, r);
    let username = fields
        .get("username")
        .and_then(|(node, field)| r.string(node, &field))
        .map(|name| name.value);
    let password_env = variable_name(&fields, "password_env", r);
    let backend = match fields.get("backend") {
        Some((node, field)) => match r.scalar(node, &field, "memory or redis") {
            Some("memory") => StoreBackend::Memory,
            Some("redis") => StoreBackend::Redis(Box::new(RedisSettings {
                url,
                sentinel,
                cluster,
                username,
                password_env,
                at: r.at(node.mark),
                section: fields.path().to_string(),
            })),
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

/// The name of an environment variable at `key`, with its position (the variable is read where
/// the store is opened).
fn variable_name(fields: &Fields, key: &str, r: &mut Reader) -> Option<Setting<String>> {
    let (node, field) = fields.get(key)?;
    r.string(node, &field).map(|name| Setting {
        value: name.value,
        at: r.at(name.mark),
        field,
    })
}

/// `store.sentinel`: `{ master, nodes }`, both required, and the sentinels' `password_env`.
fn read_sentinel(node: &Node, field: &str, r: &mut Reader) -> Option<SentinelSettings> {
    let fields = r.fields(node, field, SENTINEL_KEYS)?;
    let master = match fields.get("master") {
        Some((node, field)) => r.string(node, &field).map(|name| name.value),
        None => {
            r.error(
                fields.mark,
                &format!("{field}.master"),
                "the sentinels need the name of the master they watch",
                "add `master: guichet`, the name in the sentinels' `sentinel monitor` line",
            );
            None
        }
    };
    let nodes = redis_nodes(&fields, field, r, "redis://10.0.0.1:26379");
    let password_env = variable_name(&fields, "password_env", r);
    Some(SentinelSettings {
        master: master?,
        nodes,
        password_env,
    })
}

/// `store.cluster`: `{ nodes }`, the seed nodes the cluster's map is read from.
fn read_cluster(node: &Node, field: &str, r: &mut Reader) -> Option<Vec<Setting<String>>> {
    let fields = r.fields(node, field, CLUSTER_KEYS)?;
    Some(redis_nodes(&fields, field, r, "redis://10.0.0.1:7000"))
}

/// The `nodes` list of `sentinel` or `cluster`: at least one URL, each with its position (the
/// URLs are checked where the store is opened, with the credentials).
fn redis_nodes(
    fields: &Fields,
    field: &str,
    r: &mut Reader,
    example: &str,
) -> Vec<Setting<String>> {
    let Some((node, nodes_field)) = fields.get("nodes") else {
        r.error(
            fields.mark,
            &format!("{field}.nodes"),
            "no nodes are listed",
            &format!("add `nodes: [\"{example}\"]`, listing two or more so one can be down"),
        );
        return Vec::new();
    };
    let urls = r.strings(node, &nodes_field, example);
    if urls.is_empty() {
        r.error(
            node.mark,
            &nodes_field,
            "no nodes are listed",
            &format!("list them: [\"{example}\"]"),
        );
    }
    urls.into_iter()
        .enumerate()
        .map(|(index, url)| Setting {
            value: url.value,
            at: r.at(url.mark),
            field: format!("{nodes_field}[{index}]"),
        })
        .collect()
}

/// `url`, `sentinel` and `cluster` are three ways to name the same Redis: at most one is written.
fn one_redis_form(fields: &Fields, r: &mut Reader) {
    let written: Vec<(&Node, String)> = ["url", "sentinel", "cluster"]
        .into_iter()
        .filter_map(|key| fields.get(key))
        .collect();
    if let [(_, first), (second, field), ..] = written.as_slice() {
        r.error(
            second.mark,
            field,
            format!("`{first}` already names the Redis to use"),
            "keep one of url (one node), sentinel (a master and its sentinels) or cluster",
        );
    }
}

/// The `jwt` section: the token settings, and the bound on pending password checks.
fn read_jwt(
    node: &Node,
    field: &str,
    r: &mut Reader,
    base: &Path,
    roles: &[String],
) -> (Option<TokenSettings>, usize) {
    let Some(fields) = r.fields(node, field, JWT_KEYS) else {
        return (None, DEFAULT_MAX_PENDING_LOGINS);
    };
    let max_pending_logins = match fields.get("max_pending_logins") {
        Some((node, field)) => r.count(node, &field, MAX_PENDING_LOGINS),
        None => Some(DEFAULT_MAX_PENDING_LOGINS),
    };
    let tokens = read_tokens(&fields, field, r, base, roles);
    (
        tokens,
        max_pending_logins.unwrap_or(DEFAULT_MAX_PENDING_LOGINS),
    )
}

/// The token settings; `None` when the algorithm or the signing key cannot be read. A value
/// that does not read otherwise is reported and left at its default, so the key is still
/// checked and one load lists every error.
fn read_tokens(
    fields: &Fields,
    field: &str,
    r: &mut Reader,
    base: &Path,
    roles: &[String],
) -> Option<TokenSettings> {
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
    let signing = if algorithm == Algorithm::HS256 {
        let Some((node, field)) = fields.get("secret_env") else {
            r.error(fields.mark, &format!("{field}.secret_env"), "HS256 needs a shared secret from the environment", "add `secret_env: GUICHET_JWT_SECRET` and set that variable to at least 32 random bytes");
            return None;
        };
        let name = r.string(node, &field)?;
        SigningKey::SecretEnv(Setting {
            value: name.value,
            at: r.at(name.mark),
            field,
        })
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
        SigningKey::File {
            path: Setting {
                value: base.join(&file.value),
                at: r.at(file.mark),
                field,
            },
            generate_if_missing: generate,
        }
    };
    let verification_keys = match fields.get("verification_keys") {
        Some((node, field)) => r
            .strings(node, &field, "[keys/old-public.pem]")
            .into_iter()
            .enumerate()
            .map(|(index, file)| Setting {
                value: base.join(&file.value),
                at: r.at(file.mark),
                field: format!("{field}[{index}]"),
            })
            .collect(),
        None => Vec::new(),
    };
    let trusted_issuers = match fields.get("trusted_issuers") {
        Some((node, field)) => r
            .list(
                node,
                &field,
                "[{issuer: https://sso.example/realms/main, jwks_url: ..., audience: ...}]",
                |r, node, field| read_issuer(node, field, r, base, roles),
            )
            .unwrap_or_default(),
        None => Vec::new(),
    };
    distinct_issuers(&trusted_issuers, issuer.as_deref(), r);
    let legacy = fields
        .get("legacy_simplejwt")
        .and_then(|(node, field)| read_legacy(node, &field, r));
    Some(TokenSettings {
        algorithm,
        signing,
        verification_keys,
        issuer: issuer.unwrap_or_default(),
        audience: audience.unwrap_or_default(),
        access_ttl: access_ttl.unwrap_or_default(),
        refresh_ttl: refresh_ttl.unwrap_or_default(),
        leeway: leeway.unwrap_or_default(),
        trusted_issuers,
        legacy,
    })
}

/// Algorithms a provider's published keys can verify.
const ASYMMETRIC: &str = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA";

/// One of `jwt.trusted_issuers`.
fn read_issuer(
    node: &Node,
    field: &str,
    r: &mut Reader,
    base: &Path,
    roles: &[String],
) -> Option<IssuerSettings> {
    let fields = r.fields(node, field, ISSUER_KEYS)?;
    // The issuer goes upstream in `X-User-Issuer`.
    let issuer = required(r, &fields, "issuer", "https://sso.example/realms/main")
        .and_then(|(node, field)| header_safe(r, node, &field));
    let audience = required(r, &fields, "audience", "hackitech-api")
        .and_then(|(node, field)| r.string(node, &field));
    let jwks = match (fields.get("jwks_url"), fields.get("jwks_file")) {
        (Some(_), Some((node, field))) => {
            r.error(node.mark, &field, "`jwks_url` already says where the keys are", "keep one of jwks_url (fetched and refreshed) or jwks_file (read at start)");
            None
        }
        (Some((node, field)), None) => r
            .parsed(node, &field, "a URL", "write the provider's JWKS address, such as https://sso.example/realms/main/protocol/openid-connect/certs", |t| {
                let uri: http::Uri = t.parse().map_err(|_| format!("`{t}` is not a URL"))?;
                match (uri.scheme_str(), uri.host()) {
                    _ if uri.authority().is_some_and(|a| a.as_str().contains('@')) => {
                        Err(format!("`{t}` holds credentials; a JWKS document is public"))
                    }
                    (Some("https" | "http"), Some(_)) => Ok(uri),
                    _ => Err(format!("`{t}` is not an http or https URL with a host")),
                }
            })
            .map(|uri| JwksSource::Url(Setting { value: uri, at: r.at(node.mark), field })),
        (None, Some((node, field))) => r.string(node, &field).map(|file| {
            JwksSource::File(Setting {
                value: base.join(&file.value),
                at: r.at(file.mark),
                field,
            })
        }),
        (None, None) => {
            r.error(fields.mark, &format!("{field}.jwks_url"), "no keys are named for this issuer", "add `jwks_url:` with the provider's JWKS address, or `jwks_file:` with a saved JWKS document");
            None
        }
    };
    let algorithms = match fields.get("algorithms") {
        Some((node, field)) => r
            .list(node, &field, "[RS256, ES256]", |r, node, field| {
                r.parsed(
                    node,
                    field,
                    "an algorithm",
                    &format!("write {ASYMMETRIC}"),
                    |t| match t {
                        "HS256" | "HS384" | "HS512" => Err(format!(
                            "{t} is symmetric: a provider's public keys cannot verify it"
                        )),
                        other => other
                            .parse::<Algorithm>()
                            .map_err(|_| format!("`{other}` is not a supported algorithm")),
                    },
                )
            })
            .unwrap_or_default(),
        None => vec![Algorithm::RS256],
    };
    let claims = match fields.get("claims") {
        Some((node, field)) => read_claim_paths(node, &field, r)?,
        None => ClaimPaths {
            user_id: "sub".to_string(),
            username: Some("preferred_username".to_string()),
            role: None,
        },
    };
    let roles = match fields.get("roles") {
        Some((node, field)) => read_role_map(node, &field, r, roles),
        None => Vec::new(),
    };
    Some(IssuerSettings {
        issuer: issuer?.value,
        jwks: jwks?,
        audience: audience?.value,
        algorithms,
        claims,
        roles,
        at: r.at(node.mark),
        field: field.to_string(),
    })
}

/// `claims:` of a trusted issuer: which claim holds the user id (default `sub`), the username
/// (default `preferred_username`) and the roles (default none), as dotted paths.
fn read_claim_paths(node: &Node, field: &str, r: &mut Reader) -> Option<ClaimPaths> {
    let fields = r.fields(node, field, CLAIM_KEYS)?;
    let mut path = |key: &str| -> Option<Option<String>> {
        let Some((node, field)) = fields.get(key) else {
            return Some(None);
        };
        let text = r.string(node, &field)?;
        if text.value.split('.').any(str::is_empty) {
            r.error(
                text.mark,
                &field,
                format!("`{}` is not a dotted claim path", text.value),
                "write claim names joined by dots, such as realm_access.roles",
            );
            return None;
        }
        Some(Some(text.value))
    };
    let user_id = path("user_id");
    let username = path("username");
    let role = path("role");
    Some(ClaimPaths {
        user_id: user_id?.unwrap_or_else(|| "sub".to_string()),
        username: username?.or_else(|| Some("preferred_username".to_string())),
        role: role?,
    })
}

/// `roles:` of a trusted issuer: provider role → one of Guichet's roles.
fn read_role_map(
    node: &Node,
    field: &str,
    r: &mut Reader,
    roles: &[String],
) -> Vec<(String, String)> {
    let NodeKind::Map(entries) = &node.kind else {
        r.error(
            node.mark,
            field,
            "expected a map of provider role to Guichet role",
            "write `{ teacher: instructor, learner: student }`",
        );
        return Vec::new();
    };
    let mut mapped: Vec<(String, String)> = Vec::new();
    for (key, value) in entries {
        let path = super::decode::join(field, &key.name);
        if mapped.iter().any(|(theirs, _)| *theirs == key.name) {
            r.error(
                key.mark,
                &path,
                format!("`{}` is mapped twice", key.name),
                "keep one",
            );
            continue;
        }
        let role = r.string(value, &path);
        if let Some(role) = known_role(r, role, &path, roles) {
            mapped.push((key.name.clone(), role));
        }
    }
    mapped
}

/// Each trusted issuer once, and none that is the gateway's own `issuer`.
fn distinct_issuers(issuers: &[IssuerSettings], own: Option<&str>, r: &mut Reader) {
    for (index, entry) in issuers.iter().enumerate() {
        let clash = if own == Some(entry.issuer.as_str()) {
            Some("it is the gateway's own `jwt.issuer`")
        } else if issuers[..index].iter().any(|e| e.issuer == entry.issuer) {
            Some("an earlier entry trusts it already")
        } else {
            None
        };
        if let Some(clash) = clash {
            r.errors.push(
                entry.at.clone(),
                format!("{}.issuer", entry.field),
                format!("issuer `{}` cannot be trusted here: {clash}", entry.issuer),
                Some(
                    "each issuer names one source of tokens; remove this entry or fix its `issuer`"
                        .to_string(),
                ),
            );
        }
    }
}

/// `jwt.legacy_simplejwt`: `{ secret_env, accept_until }`, both required.
fn read_legacy(node: &Node, field: &str, r: &mut Reader) -> Option<LegacySettings> {
    let fields = r.fields(node, field, LEGACY_KEYS)?;
    let secret_env = variable_name(&fields, "secret_env", r);
    if secret_env.is_none() && fields.get("secret_env").is_none() {
        r.error(
            fields.mark,
            &format!("{field}.secret_env"),
            "the Django secret's variable is not named",
            "add `secret_env: DJANGO_SECRET_KEY`, the variable holding the Django app's SECRET_KEY",
        );
    }
    let accept_until = match required(r, &fields, "accept_until", "2027-03-01T00:00:00Z") {
        Some((node, field)) => unix_time(r, node, &field).map(|until| Setting {
            value: until,
            at: r.at(node.mark),
            field,
        }),
        None => None,
    };
    Some(LegacySettings {
        secret_env: secret_env?,
        accept_until: accept_until?,
    })
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
        Some((node, field)) => unix_time(r, node, &field).map(Some),
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

/// An RFC 3339 time, as seconds since the Unix epoch.
fn unix_time(r: &mut Reader, node: &Node, field: &str) -> Option<u64> {
    r.parsed(
        node,
        field,
        "a time",
        "write an RFC 3339 time such as 2027-03-01T00:00:00Z",
        |t| {
            humantime::parse_rfc3339(t)
                .map_err(|_| format!("`{t}` is not an RFC 3339 time"))
                .map(|at| {
                    at.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                })
        },
    )
}
