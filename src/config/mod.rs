//! Configuration: `gateway.yaml` plus the routes files it includes, read in three steps —
//! parse (a YAML tree that keeps positions), read (typed values, every error collected) and
//! compile (checks across files, then an immutable [`Config`] the gateway runs on).
//!
//! A configuration is plain data: no key is built, no key file read or written and no
//! environment variable read here. What needs them (the token keys, the store's URL) is built
//! from the settings by the part that uses it, through [`load_with`], which reports its errors
//! with the others at the positions the settings keep.

mod auth;
mod compile;
mod cors;
mod decode;
mod error;
mod gateway_file;
mod limits;
mod overrides;
mod routes_file;
pub mod source;
mod tls;
pub mod yaml;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use jsonwebtoken::Algorithm;

pub use error::{ConfigError, ConfigErrors, Location};
pub use gateway_file::MAX_SOCKET_PATH;
pub use overrides::{distinct_listeners, Overrides};
pub use tls::{CertificateFiles, TlsListener, TlsVersion, UpstreamTls};

use crate::cors::CorsPolicy;
use crate::ratelimit::{Rate, RatePolicy};
use crate::router::{MethodSet, PathPattern, PathTemplate};
use crate::store::{ApiKey, User};

/// The whole configuration, checked and ready to serve.
#[derive(Debug)]
pub struct Config {
    /// The `gateway.yaml` this was loaded from.
    pub source: PathBuf,
    /// The `include` patterns as written, relative to the folder of `source`.
    pub include: Vec<String>,
    /// Whether `serve` reloads by itself when the files change; read at start.
    pub watch: bool,
    pub listen: Listen,
    pub admin_listen: Listen,
    /// `tls:`: the TLS listener, if any.
    pub tls: Option<TlsListener>,
    pub public_url: String,
    pub trusted_proxies: Vec<IpNet>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// How long SIGTERM waits for in-flight requests, once the listener has stopped accepting.
    pub shutdown_grace_period: Duration,
    /// How long after SIGTERM the public listener keeps accepting (`/readyz` answers 503 at
    /// once), so load balancers take the replica out first.
    pub shutdown_delay: Duration,
    /// Where the process id is written; `None`: the default private runtime directory.
    pub pid_file: Option<PathBuf>,
    /// The socket a `serve --upgrade` process receives the listeners on; `None`: beside the
    /// pid file.
    pub upgrade_socket: Option<PathBuf>,
    /// How long and how large a client's request head may be; how long an idle connection stays.
    pub client: ClientLimits,
    /// What routes do with encoded slashes unless they say otherwise.
    pub encoded_slashes: EncodedSlashes,
    /// `cors:`: every route's unless it has its own, and the gateway's own endpoints'.
    pub cors: Option<Arc<CorsPolicy>>,
    pub services: Vec<Arc<Service>>,
    pub routes: Vec<Arc<Route>>,
    pub auth: AuthConfig,
    pub rate_limits: RatePolicy,
    /// Whether each request is recorded in the metrics families (`/metrics` is served anyway).
    pub record_metrics: bool,
    /// Whether each request is added to the usage statistics.
    pub record_usage: bool,
    /// The merged API document's title, version and description.
    pub docs: Docs,
}

/// `client:` in gateway.yaml: what a client connection may cost before the gateway refuses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// The whole request head, from its first byte (from the connection's start for the first
    /// request); answered 408 when it takes longer.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in it is closed after this.
    pub keepalive_timeout: Duration,
    /// Bytes of the whole request head (431 above).
    pub max_header_size: usize,
    /// Header field lines of a request (431 above).
    pub max_headers: usize,
    /// Bytes of the request line (414 above).
    pub max_request_line: usize,
}

impl Default for ClientLimits {
    /// No looser than nginx's defaults (`client_header_timeout 60s`, `keepalive_timeout 75s`,
    /// `large_client_header_buffers 4 8k`).
    fn default() -> ClientLimits {
        ClientLimits {
            header_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            max_header_size: 32 * 1024,
            max_headers: 100,
            max_request_line: 8 * 1024,
        }
    }
}

/// What a route does with a path holding `%2F`, `%5C` or `\`: a backend that decodes them
/// would see other segments than the ones the gateway routed on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EncodedSlashes {
    /// 400 `bad_request`.
    #[default]
    Reject,
    /// Routed on the gateway's reading (they are not separators) and forwarded as they are.
    Keep,
}

/// `docs:` in gateway.yaml.
#[derive(Clone, Debug)]
pub struct Docs {
    pub title: String,
    pub version: String,
    pub description: String,
    /// How often fragments served by the services are fetched again.
    pub refresh: Duration,
}

impl Default for Docs {
    fn default() -> Docs {
        Docs {
            title: "Hackitech API".to_string(),
            version: "1.0.0".to_string(),
            description: String::new(),
            refresh: Duration::from_secs(60),
        }
    }
}

/// Where a service's OpenAPI fragment comes from: `openapi:` in its routes file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecSource {
    /// A file, resolved against the folder of gateway.yaml.
    File(PathBuf),
    /// Fetched from the service, YAML or JSON.
    Url(http::Uri),
}

impl SpecSource {
    /// The path the service serves its own schema at, when the fragment is fetched from it.
    pub fn served_at(&self) -> Option<&str> {
        match self {
            SpecSource::File(_) => None,
            SpecSource::Url(uri) => Some(uri.path()),
        }
    }
}

impl std::fmt::Display for SpecSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecSource::File(path) => write!(f, "{}", path.display()),
            SpecSource::Url(uri) => write!(f, "{uri}"),
        }
    }
}

/// Where state lives, the token keys, the roles and the seed data.
pub struct AuthConfig {
    pub store: StoreBackend,
    /// How long one store call may take before it counts as unavailable.
    pub store_timeout: Duration,
    pub api_key_cache_ttl: Duration,
    /// `jwt.max_pending_logins`: password checks admitted at once; past it, 503 `login_busy`.
    pub max_pending_logins: usize,
    /// `None` without a `jwt` section: the token endpoints are off.
    pub tokens: Option<TokenSettings>,
    /// Whether gateway.yaml has a `jwt` section (even one with errors).
    pub jwt_written: bool,
    /// From least to most privileged; each includes the ones before it.
    pub roles: Vec<String>,
    pub seed_users: Vec<User>,
    pub seed_api_keys: Vec<ApiKey>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("store", &self.store)
            .field("jwt", &self.tokens.is_some())
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl AuthConfig {
    /// The rank of a role in the hierarchy, if it is one.
    pub fn rank(&self, role: &str) -> Option<usize> {
        self.roles.iter().position(|r| r == role)
    }
}

#[derive(Clone, Debug)]
pub enum StoreBackend {
    Memory,
    Redis(Box<RedisSettings>),
}

/// `store: { backend: redis }`. The URL is taken where the store is opened: the environment
/// may give one instead of `url:`.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `url:`, if written.
    pub url: Option<Setting<String>>,
    /// `sentinel: { master, nodes }`, if written.
    pub sentinel: Option<SentinelSettings>,
    /// `cluster: { nodes }`: the seed nodes, if written.
    pub cluster: Option<Vec<Setting<String>>>,
    /// `username:` (Redis ACL), if written.
    pub username: Option<String>,
    /// `password_env:`: the variable holding the password, read where the store is opened.
    pub password_env: Option<Setting<String>>,
    /// Where `backend: redis` is written: a URL from the environment, or a missing one, is
    /// reported there.
    pub at: Location,
    /// The section's field path, `store`.
    pub section: String,
}

/// `store.sentinel`: the master's name as the sentinels know it, the sentinels, and the
/// variable holding the sentinels' own password, if they have one.
#[derive(Clone, Debug)]
pub struct SentinelSettings {
    pub master: String,
    pub nodes: Vec<Setting<String>>,
    pub password_env: Option<Setting<String>>,
}

/// A setting and where it is written, for what is checked after reading (a key file, the
/// variable holding a secret, the Redis URL), with the same position and field as the reader's
/// own errors.
#[derive(Clone, Debug)]
pub struct Setting<T> {
    pub value: T,
    pub at: Location,
    /// The dotted field path, such as `jwt.signing_key_file`.
    pub field: String,
}

impl<T> Setting<T> {
    /// An error about this setting, and what to write instead.
    pub fn error(&self, message: impl Into<String>, hint: &str) -> ConfigError {
        ConfigError {
            at: self.at.clone(),
            field: self.field.clone(),
            message: message.into(),
            hint: Some(hint.to_string()),
        }
    }
}

/// `jwt:` in gateway.yaml: how tokens are signed, issued and checked.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub algorithm: Algorithm,
    pub signing: SigningKey,
    /// PEM public keys of earlier signing keys, whose tokens are still accepted; resolved
    /// against the folder of gateway.yaml.
    pub verification_keys: Vec<Setting<PathBuf>>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub leeway: Duration,
    /// `trusted_issuers`: identity providers whose tokens routes accept, by their JWKS.
    pub trusted_issuers: Vec<IssuerSettings>,
    /// `legacy_simplejwt`: the Django app's tokens, accepted for a while.
    pub legacy: Option<LegacySettings>,
}

/// One of `jwt.trusted_issuers`.
#[derive(Clone, Debug)]
pub struct IssuerSettings {
    /// The `iss` its tokens carry.
    pub issuer: String,
    pub jwks: JwksSource,
    pub audience: String,
    /// Asymmetric algorithms only: the keys come from a public document.
    pub algorithms: Vec<Algorithm>,
    pub claims: ClaimPaths,
    /// Provider role → Guichet role; a provider role not listed gives no role.
    pub roles: Vec<(String, String)>,
    /// Where the entry starts, for errors found when its keys are read.
    pub at: Location,
    pub field: String,
}

/// Where a trusted issuer's keys are published.
#[derive(Clone, Debug)]
pub enum JwksSource {
    /// Fetched, cached and refreshed.
    Url(Setting<http::Uri>),
    /// Read when the gateway starts, resolved against the folder of gateway.yaml.
    File(Setting<PathBuf>),
}

/// Dotted paths into a provider's claims, such as `realm_access.roles`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimPaths {
    pub user_id: String,
    pub username: Option<String>,
    pub role: Option<String>,
}

/// `jwt.legacy_simplejwt`: HS256 tokens of djangorestframework-simplejwt, signed with the
/// Django secret.
#[derive(Clone, Debug)]
pub struct LegacySettings {
    /// The environment variable holding the Django `SECRET_KEY`.
    pub secret_env: Setting<String>,
    /// Seconds since the Unix epoch; from then on, legacy tokens are refused.
    pub accept_until: Setting<u64>,
}

/// Where the signing key comes from.
#[derive(Clone, Debug)]
pub enum SigningKey {
    /// HS256: the name of the environment variable holding the shared secret.
    SecretEnv(Setting<String>),
    /// A PEM private key file, resolved against the folder of gateway.yaml.
    File {
        path: Setting<PathBuf>,
        /// `generate_key_if_missing`: an absent EdDSA key is generated (a demo's).
        generate_if_missing: bool,
    },
}

/// What a route asks of its callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthLevel {
    None,
    Jwt,
    ApiKey,
    Any,
}

/// A listening address and where it was set, to point at when it cannot be bound.
#[derive(Clone, Debug)]
pub struct Listen {
    pub addr: SocketAddr,
    /// The file position of the setting, or `None` when it came from a flag or the default.
    pub at: Option<Location>,
    pub field: &'static str,
}

/// A backend service and its upstream targets.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub targets: Vec<Target>,
    pub health_check: Option<HealthCheck>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// How long an upgraded (WebSocket) connection may carry nothing either way.
    pub idle_timeout: Duration,
    pub openapi: Option<SpecSource>,
    /// How its https targets are verified; the defaults when the routes file has no `tls:`.
    pub tls: UpstreamTls,
}

/// One upstream address of a service.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL as configured, for logs and `/readyz`.
    pub url: String,
    pub addr: SocketAddr,
    /// The `Host` header sent to this target.
    pub host: String,
    /// `https://`: the connection is TLS, its certificate verified against `sni`.
    pub tls: bool,
    /// The name sent in the TLS handshake and verified: `tls.server_name`, else the URL's host
    /// without its port (which `compile` refuses for an IP address while `verify` is on).
    pub sni: String,
}

#[derive(Clone, Debug)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// One route: which requests it takes and where they go.
#[derive(Debug)]
pub struct Route {
    /// Position in [`Config::routes`].
    pub index: usize,
    /// A stable name for logs and metrics: `id:` or `<service>:<path>`.
    pub id: String,
    /// Index into [`Config::services`].
    pub service: usize,
    pub pattern: PathPattern,
    pub upstream_path: Option<PathTemplate>,
    pub methods: MethodSet,
    pub max_body: Option<u64>,
    pub auth: AuthLevel,
    /// The least privileged role admitted (`roles:` lists alternatives; the lowest rank wins).
    pub min_role: Option<usize>,
    /// Every scope an API key must carry.
    pub scopes: Vec<String>,
    pub forward_authorization: bool,
    /// Limits of this route, per consumer, on top of the consumer's tier.
    pub rate_limits: Vec<Rate>,
    /// The route's `encoded_slashes`, or gateway.yaml's.
    pub encoded_slashes: EncodedSlashes,
    /// The route's `cors:`, or gateway.yaml's; `None` when off.
    pub cors: Option<Arc<CorsPolicy>>,
    /// `websocket: true`: an upgrade to WebSocket is passed to the upstream.
    pub websocket: bool,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// Loads and checks `gateway.yaml` and everything it includes, as plain data.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, |_| Ok(())).map(|(config, ())| config)
}

/// As [`load`], and `build` makes from the configuration what plain data cannot hold (keys,
/// what the environment says). It runs on the configuration as read even when the files have
/// errors, so that one load lists them all, in file and line order.
pub fn load_with<T>(
    path: &Path,
    build: impl FnOnce(&Config) -> Result<T, ConfigErrors>,
) -> Result<(Config, T), ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let Some(config) = compile::read(path, &mut errors) else {
        return Err(errors);
    };
    match build(&config) {
        Ok(built) if errors.is_empty() => Ok((config, built)),
        Ok(_) => Err(errors.sorted()),
        Err(more) => {
            errors.0.extend(more.0);
            Err(errors.sorted())
        }
    }
}

impl Config {
    pub fn service_of(&self, route: &Route) -> &Arc<Service> {
        &self.services[route.service]
    }

    /// The files this configuration is made of as the folder holds them now: `gateway.yaml`,
    /// what each `include` pattern matches (globbed again on each call, so files added or
    /// removed since the load show), and the TLS certificates, keys and authorities it names
    /// (a renewed certificate is a change). Token key files and OpenAPI fragments are not
    /// among them.
    pub fn files(&self) -> Vec<PathBuf> {
        let base = self.source.parent().unwrap_or(Path::new(""));
        let mut files = vec![self.source.clone()];
        for pattern in &self.include {
            // A pattern that leaves the folder or does not parse was refused at load.
            if let Ok(matches) = compile::include_matches(base, pattern) {
                files.extend(matches);
            }
        }
        let listener = self.tls.iter().flat_map(|tls| &tls.certificates);
        let clients = self.services.iter().filter_map(|s| s.tls.client.as_ref());
        for pair in listener.chain(clients) {
            files.extend([pair.cert.value.clone(), pair.key.value.clone()]);
        }
        let authorities = self.services.iter().filter_map(|s| s.tls.ca.as_ref());
        files.extend(authorities.map(|ca| ca.value.clone()));
        // Services sharing an authority name it once.
        let mut seen = std::collections::HashSet::new();
        files.retain(|file| seen.insert(file.clone()));
        files
    }
}

#[cfg(test)]
mod tests;
