//! The two kinds of configuration file as written: `gateway.yaml` and one routes file per
//! service. Each value is checked on its own here; checks across values and files live in
//! `compile`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ipnet::IpNet;

use std::path::Path;

use super::auth::AuthSections;
use super::decode::{Reader, Spanned};
use super::yaml::Node;
use super::{AuthConfig, AuthLevel, ClientLimits, Docs, EncodedSlashes, KeyFiles};
use crate::ratelimit::{Rate, RatePolicy};
use crate::router::{MethodSet, PathPattern, PathTemplate};

/// `gateway.yaml`.
pub struct GatewayFile {
    pub listen: Option<Spanned<SocketAddr>>,
    pub admin_listen: Option<Spanned<SocketAddr>>,
    pub public_url: Option<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub include: Vec<Spanned<String>>,
    pub watch: bool,
    pub threads: Option<usize>,
    pub shutdown_grace_period: Option<Duration>,
    pub shutdown_delay: Option<Duration>,
    pub pid_file: Option<Spanned<String>>,
    pub upgrade_socket: Option<Spanned<String>>,
    pub client: ClientLimits,
    pub encoded_slashes: EncodedSlashes,
    pub auth: AuthConfig,
    pub rate_limits: RatePolicy,
    pub record_metrics: bool,
    pub record_usage: bool,
    pub docs: Docs,
}

/// `routes/<service>.yaml`.
pub struct ServiceFile {
    pub service: Option<Spanned<String>>,
    pub upstreams: Vec<UpstreamSpec>,
    pub health_check: Option<HealthCheckSpec>,
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub routes: Vec<RouteSpec>,
    /// `openapi:` as written: a file (resolved against gateway.yaml's folder later) or a URL.
    pub openapi: Option<Spanned<SpecWritten>>,
}

pub enum SpecWritten {
    File(String),
    Url(http::Uri),
}

pub struct UpstreamSpec {
    pub url: String,
    pub addr: SocketAddr,
    pub host: String,
}

pub struct HealthCheckSpec {
    pub path: String,
    pub interval: Duration,
    pub timeout: Option<Duration>,
}

pub struct RouteSpec {
    pub field: String,
    pub id: Option<String>,
    pub path: Spanned<PathPattern>,
    pub upstream_path: Option<PathTemplate>,
    pub methods: MethodSet,
    pub max_body: Option<u64>,
    /// `None` when not written: the closed default applies.
    pub auth: Option<Spanned<AuthLevel>>,
    pub roles: Vec<Spanned<String>>,
    pub scopes: Vec<String>,
    pub forward_authorization: bool,
    pub rate_limits: Vec<Rate>,
    /// `None` when not written: gateway.yaml's applies.
    pub encoded_slashes: Option<EncodedSlashes>,
}

/// The longest path a unix socket address holds (`sun_path` less its final NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The longest path Linux opens (`PATH_MAX` less its final NUL).
const PATH_MAX: usize = 4095;

const GATEWAY_KEYS: &[&str] = &[
    "listen",
    "admin_listen",
    "public_url",
    "trusted_proxies",
    "include",
    "watch",
    "threads",
    "shutdown_grace_period",
    "shutdown_delay",
    "pid_file",
    "upgrade_socket",
    "client",
    "encoded_slashes",
    "store",
    "jwt",
    "roles",
    "seed",
    "rate_limits",
    "observability",
    "docs",
];
const CLIENT_KEYS: &[&str] = &[
    "header_timeout",
    "keepalive_timeout",
    "max_header_size",
    "max_headers",
    "max_request_line",
];
const DOCS_KEYS: &[&str] = &["title", "version", "description", "refresh"];
const OBSERVABILITY_KEYS: &[&str] = &["metrics", "usage"];
const SERVICE_KEYS: &[&str] = &[
    "service",
    "upstreams",
    "health_check",
    "timeouts",
    "routes",
    "openapi",
];
const HEALTH_CHECK_KEYS: &[&str] = &["path", "interval", "timeout"];
const TIMEOUT_KEYS: &[&str] = &["connect", "read"];
const ROUTE_KEYS: &[&str] = &[
    "id",
    "path",
    "upstream_path",
    "methods",
    "max_body",
    "auth",
    "roles",
    "scopes",
    "forward_authorization",
    "rate_limit",
    "encoded_slashes",
];

impl GatewayFile {
    pub fn read(node: &Node, r: &mut Reader, base: &Path, key_files: KeyFiles) -> GatewayFile {
        let fields = r.fields(node, "", GATEWAY_KEYS);
        let section = |key: &str| fields.as_ref().and_then(|f| f.get(key));
        let sections = AuthSections {
            store: section("store"),
            jwt: section("jwt"),
            roles: section("roles"),
            seed: section("seed"),
        };
        let mut file = GatewayFile {
            listen: None,
            admin_listen: None,
            public_url: None,
            trusted_proxies: Vec::new(),
            include: Vec::new(),
            watch: false,
            threads: None,
            shutdown_grace_period: None,
            shutdown_delay: None,
            pid_file: None,
            upgrade_socket: None,
            client: ClientLimits::default(),
            encoded_slashes: EncodedSlashes::default(),
            auth: super::auth::compile(sections, r, base, key_files),
            rate_limits: RatePolicy::default(),
            record_metrics: true,
            record_usage: true,
            docs: Docs::default(),
        };
        let Some(fields) = fields else {
            return file;
        };
        if let Some((node, field)) = fields.get("docs") {
            file.docs = read_docs(node, &field, r);
        }
        if let Some((node, field)) = fields.get("observability") {
            if let Some(section) = r.fields(node, &field, OBSERVABILITY_KEYS) {
                if let Some((node, field)) = section.get("metrics") {
                    file.record_metrics = r.boolean(node, &field).unwrap_or(true);
                }
                if let Some((node, field)) = section.get("usage") {
                    file.record_usage = r.boolean(node, &field).unwrap_or(true);
                }
            }
        }
        if let Some((node, field)) = fields.get("rate_limits") {
            file.rate_limits = super::limits::read_policy(node, &field, r, &file.auth.roles);
        }
        if let Some((node, field)) = fields.get("listen") {
            file.listen = r.socket_addr(node, &field);
        }
        if let Some((node, field)) = fields.get("admin_listen") {
            file.admin_listen = r.socket_addr(node, &field);
        }
        if let Some((node, field)) = fields.get("public_url") {
            file.public_url = r.parsed(
                node,
                &field,
                "a URL",
                "write the URL clients use, such as https://api.hackitech.example",
                |text| match text.parse::<http::Uri>() {
                    Ok(uri)
                        if matches!(uri.scheme_str(), Some("http" | "https"))
                            && uri.host().is_some() =>
                    {
                        Ok(text.trim_end_matches('/').to_string())
                    }
                    _ => Err(format!("`{text}` is not an absolute http(s) URL")),
                },
            );
        }
        if let Some((node, field)) = fields.get("trusted_proxies") {
            file.trusted_proxies = r
                .list(node, &field, "[10.0.0.0/8, 127.0.0.1]", Reader::ip_net)
                .unwrap_or_default();
        }
        if let Some((node, field)) = fields.get("include") {
            file.include = r
                .list(node, &field, "[routes/*.yaml]", Reader::string)
                .unwrap_or_default();
        }
        if let Some((node, field)) = fields.get("watch") {
            file.watch = r.boolean(node, &field).unwrap_or(false);
        }
        if let Some((node, field)) = fields.get("threads") {
            file.threads = r.count(node, &field, 1024);
        }
        if let Some((node, field)) = fields.get("shutdown_grace_period") {
            file.shutdown_grace_period = r.duration(node, &field);
        }
        if let Some((node, field)) = fields.get("shutdown_delay") {
            file.shutdown_delay = r.duration_or_zero(node, &field);
        }
        if let Some((node, field)) = fields.get("pid_file") {
            file.pid_file =
                read_runtime_path(node, &field, r, PATH_MAX, "/run/guichet/guichet.pid");
        }
        if let Some((node, field)) = fields.get("upgrade_socket") {
            file.upgrade_socket = read_runtime_path(
                node,
                &field,
                r,
                MAX_SOCKET_PATH,
                "/run/guichet/upgrade.sock",
            );
        }
        if let Some((node, field)) = fields.get("client") {
            file.client = read_client(node, &field, r);
        }
        if let Some((node, field)) = fields.get("encoded_slashes") {
            file.encoded_slashes = read_encoded_slashes(node, &field, r).unwrap_or_default();
        }
        file
    }
}

impl ServiceFile {
    pub fn read(node: &Node, r: &mut Reader) -> Option<ServiceFile> {
        let fields = r.fields(node, "", SERVICE_KEYS)?;
        let service = match fields.get("service") {
            Some((node, field)) => read_service_name(node, &field, r),
            None => {
                r.error(
                    fields.mark,
                    "service",
                    "missing: every routes file names its service",
                    "add `service: <name>`, such as `service: courses`",
                );
                None
            }
        };
        let upstreams = match fields.get("upstreams") {
            Some((node, field)) => {
                let list = r.list(node, &field, "[http://127.0.0.1:8001]", read_upstream);
                if matches!(&node.kind, super::yaml::NodeKind::Seq(items) if items.is_empty()) {
                    r.error(
                        node.mark,
                        &field,
                        "the list is empty",
                        "name at least one upstream such as http://127.0.0.1:8001",
                    );
                }
                list.unwrap_or_default()
            }
            None => {
                r.error(
                    fields.mark,
                    "upstreams",
                    "missing: a service needs at least one upstream",
                    "add `upstreams: [http://127.0.0.1:8001]`",
                );
                Vec::new()
            }
        };
        let health_check = fields
            .get("health_check")
            .and_then(|(node, field)| read_health_check(node, &field, r));
        let (mut connect_timeout, mut read_timeout) = (None, None);
        if let Some((node, field)) = fields.get("timeouts") {
            if let Some(timeouts) = r.fields(node, &field, TIMEOUT_KEYS) {
                if let Some((node, field)) = timeouts.get("connect") {
                    connect_timeout = r.duration(node, &field);
                }
                if let Some((node, field)) = timeouts.get("read") {
                    read_timeout = r.duration(node, &field);
                }
            }
        }
        let routes = match fields.get("routes") {
            Some((node, field)) => r
                .list(node, &field, "[{path: /api/courses/}]", read_route)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let openapi = fields
            .get("openapi")
            .and_then(|(node, field)| read_spec_source(node, &field, r));
        Some(ServiceFile {
            service,
            upstreams,
            health_check,
            connect_timeout,
            read_timeout,
            routes,
            openapi,
        })
    }
}

/// `client:`: the limits on a client's request head and idle connection.
fn read_client(node: &Node, field: &str, r: &mut Reader) -> ClientLimits {
    let mut limits = ClientLimits::default();
    let Some(fields) = r.fields(node, field, CLIENT_KEYS) else {
        return limits;
    };
    for (key, slot) in [
        ("header_timeout", &mut limits.header_timeout),
        ("keepalive_timeout", &mut limits.keepalive_timeout),
    ] {
        if let Some(duration) = fields.get(key).and_then(|(n, f)| r.duration(n, &f)) {
            *slot = duration;
        }
    }
    // pingora reads at most 1 MiB of head and 256 header lines whatever is set here.
    let sizes = [
        (
            "max_header_size",
            &mut limits.max_header_size,
            1024,
            1024 * 1024,
        ),
        (
            "max_request_line",
            &mut limits.max_request_line,
            256,
            1024 * 1024,
        ),
    ];
    for (key, slot, least, most) in sizes {
        let Some((node, field)) = fields.get(key) else {
            continue;
        };
        match r.size(node, &field) {
            Some(size) if (least..=most).contains(&size) => *slot = size as usize,
            Some(size) => r.error(
                node.mark,
                &field,
                format!("{size} bytes is outside what a request head can be limited to"),
                &format!("write a size from {least} bytes to 1MiB, such as 32KiB"),
            ),
            None => {}
        }
    }
    if let Some(count) = fields
        .get("max_headers")
        .and_then(|(n, f)| r.count(n, &f, 256))
    {
        limits.max_headers = count;
    }
    if limits.max_request_line > limits.max_header_size {
        if let Some((node, field)) = fields.get("max_request_line") {
            r.error(
                node.mark,
                &field,
                format!(
                    "the request line limit ({} bytes) is larger than the whole head's ({} bytes)",
                    limits.max_request_line, limits.max_header_size
                ),
                "make `max_request_line` at most `max_header_size`",
            );
        }
    }
    limits
}

/// `pid_file:` and `upgrade_socket:`: a path of at most `limit` bytes (a unix socket's is short).
fn read_runtime_path(
    node: &Node,
    field: &str,
    r: &mut Reader,
    limit: usize,
    example: &str,
) -> Option<Spanned<String>> {
    let path = r.parsed(
        node,
        field,
        "a file path",
        &format!(
            "write a path of at most {limit} bytes in a directory only the gateway's user can \
             write, such as {example}"
        ),
        |text| match text.len() {
            0 => Err("the path is empty".to_string()),
            n if n <= limit => Ok(text.to_string()),
            n => Err(format!(
                "a path here has at most {limit} bytes; this one has {n}"
            )),
        },
    )?;
    Some(Spanned::new(path, node.mark))
}

/// `encoded_slashes: reject | keep`.
fn read_encoded_slashes(node: &Node, field: &str, r: &mut Reader) -> Option<EncodedSlashes> {
    r.parsed(
        node,
        field,
        "reject or keep",
        "write reject (400 for %2F, %5C and \\ in paths) or keep (route and forward them as they are)",
        |text| match text {
            "reject" => Ok(EncodedSlashes::Reject),
            "keep" => Ok(EncodedSlashes::Keep),
            other => Err(format!("`{other}` is not reject or keep")),
        },
    )
}

fn read_docs(node: &Node, field: &str, r: &mut Reader) -> Docs {
    let mut docs = Docs::default();
    let Some(fields) = r.fields(node, field, DOCS_KEYS) else {
        return docs;
    };
    for (key, slot) in [
        ("title", &mut docs.title),
        ("version", &mut docs.version),
        ("description", &mut docs.description),
    ] {
        if let Some(value) = fields.get(key).and_then(|(n, f)| r.string(n, &f)) {
            *slot = value.value;
        }
    }
    if let Some(every) = fields.get("refresh").and_then(|(n, f)| r.duration(n, &f)) {
        docs.refresh = every;
    }
    docs
}

/// `openapi:` — `specs/courses.yaml` (a file) or `http://host:port/path` (fetched).
fn read_spec_source(node: &Node, field: &str, r: &mut Reader) -> Option<Spanned<SpecWritten>> {
    let hint = "write a file such as specs/courses.yaml, or the service's schema URL such as http://127.0.0.1:8001/api/schema/";
    let written = r.parsed(node, field, "a file or an http:// URL", hint, |text| {
        if text.starts_with("http://") || text.starts_with("https://") {
            match text.parse::<http::Uri>() {
                Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {
                    Ok(SpecWritten::Url(uri))
                }
                Ok(uri) if uri.scheme_str() == Some("https") => Err(format!(
                    "`{text}`: fragments are fetched over plain http inside the platform"
                )),
                _ => Err(format!("`{text}` is not an http URL")),
            }
        } else if text.is_empty() {
            Err("the path is empty".to_string())
        } else {
            Ok(SpecWritten::File(text.to_string()))
        }
    })?;
    Some(Spanned::new(written, node.mark))
}

fn read_service_name(node: &Node, field: &str, r: &mut Reader) -> Option<Spanned<String>> {
    let name = r.string(node, field)?;
    let valid = name
        .value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        r.error(
            node.mark,
            field,
            format!("`{}` is not a valid service name", name.value),
            "use lower-case letters, digits, - and _, such as `courses`",
        );
        return None;
    }
    if name.value == "guichet" {
        r.error(
            node.mark,
            field,
            "`guichet` is the gateway's own name (its endpoints' tag and metric labels)",
            "name the service after what it serves, such as `courses`",
        );
        return None;
    }
    Some(name)
}

fn read_upstream(r: &mut Reader, node: &Node, field: &str) -> Option<UpstreamSpec> {
    r.parsed(
        node,
        field,
        "a URL",
        "write the service's base URL such as http://127.0.0.1:8001 or http://courses:8000",
        |text| {
            let uri: http::Uri = text
                .parse()
                .map_err(|_| format!("`{text}` is not a URL"))?;
            match uri.scheme_str() {
                Some("http") => {}
                Some("https") => {
                    return Err(format!(
                        "`{text}`: https upstreams are not supported yet; use http:// inside the cluster"
                    ))
                }
                _ => return Err(format!("`{text}` is not an absolute http:// URL")),
            }
            let authority = uri
                .authority()
                .ok_or_else(|| format!("`{text}` has no host"))?;
            if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
                return Err(format!(
                    "`{text}` has a path, but an upstream URL is only scheme, host and port; a route's upstream_path changes paths"
                ));
            }
            let host = authority.host();
            let port = authority.port_u16().unwrap_or(80);
            let bare_host = host.trim_start_matches('[').trim_end_matches(']');
            let addr = (bare_host, port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| format!("`{text}`: host `{host}` does not resolve"))?;
            Ok(UpstreamSpec {
                url: text.trim_end_matches('/').to_string(),
                addr,
                host: authority.as_str().to_string(),
            })
        },
    )
}

fn read_health_check(node: &Node, field: &str, r: &mut Reader) -> Option<HealthCheckSpec> {
    let fields = r.fields(node, field, HEALTH_CHECK_KEYS)?;
    let path = match fields.get("path") {
        Some((node, field)) => r.string(node, &field).and_then(|path| {
            if path.value.starts_with('/') {
                return Some(path.value);
            }
            r.error(
                node.mark,
                &field,
                format!("`{}` does not start with /", path.value),
                "write a path on the upstream such as /healthz",
            );
            None
        }),
        None => {
            r.error(
                fields.mark,
                field,
                "missing `path`",
                "write `health_check: { path: /healthz, interval: 5s }`",
            );
            None
        }
    };
    let interval = match fields.get("interval") {
        Some((node, field)) => r.duration(node, &field),
        None => Some(Duration::from_secs(5)),
    };
    let timeout = match fields.get("timeout") {
        Some((node, field)) => r.duration(node, &field).map(Some),
        None => Some(None),
    };
    Some(HealthCheckSpec {
        path: path?,
        interval: interval?,
        timeout: timeout?,
    })
}

/// Reads one route; every field is checked even when an earlier one is wrong.
fn read_route(r: &mut Reader, node: &Node, field: &str) -> Option<RouteSpec> {
    let fields = r.fields(node, field, ROUTE_KEYS)?;
    let id = match fields.get("id") {
        Some((node, field)) => r.string(node, &field).map(|id| Some(id.value)),
        None => Some(None),
    };
    let path = match fields.get("path") {
        Some((node, field)) => r.scalar(node, &field, "a path").and_then(|text| {
            PathPattern::parse(text)
                .map(|pattern| Spanned::new(pattern, node.mark))
                .map_err(|e| r.error(node.mark, &field, e.message, &e.hint))
                .ok()
        }),
        None => {
            r.error(
                fields.mark,
                &format!("{field}.path"),
                "missing: every route has a path",
                "add `path: /api/<service>/`",
            );
            None
        }
    };
    let upstream_path = match (fields.get("upstream_path"), &path) {
        (Some((node, field)), Some(path)) => r.scalar(node, &field, "a path").and_then(|text| {
            PathTemplate::parse(text, &path.value)
                .map(Some)
                .map_err(|e| r.error(node.mark, &field, e.message, &e.hint))
                .ok()
        }),
        (Some(_), None) => None,
        (None, _) => Some(None),
    };
    let methods = match fields.get("methods") {
        Some((node, field)) => read_methods(node, &field, r),
        None => Some(MethodSet::ALL),
    };
    let max_body = match fields.get("max_body") {
        Some((node, field)) => r.size(node, &field).map(Some),
        None => Some(None),
    };
    let auth = match fields.get("auth") {
        Some((node, field)) => r
            .parsed(
                node,
                &field,
                "an auth level",
                "write none, jwt, api_key or any",
                |text| match text {
                    "none" => Ok(AuthLevel::None),
                    "jwt" => Ok(AuthLevel::Jwt),
                    "api_key" => Ok(AuthLevel::ApiKey),
                    "any" => Ok(AuthLevel::Any),
                    other => Err(format!("`{other}` is not an auth level")),
                },
            )
            .map(|level| Some(Spanned::new(level, node.mark))),
        None => Some(None),
    };
    let roles = fields
        .get("roles")
        .map(|(node, field)| r.strings(node, &field, "[instructor]"))
        .unwrap_or_default();
    let scopes = fields
        .get("scopes")
        .map(|(node, field)| r.strings(node, &field, "[grades:write]"))
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.value)
        .collect();
    let rate_limits = match fields.get("rate_limit") {
        Some((node, field)) => super::limits::read_route_rates(node, &field, r),
        None => Some(Vec::new()),
    };
    let forward_authorization = match fields.get("forward_authorization") {
        Some((node, field)) => r.boolean(node, &field),
        None => Some(false),
    };
    let encoded_slashes = match fields.get("encoded_slashes") {
        Some((node, field)) => read_encoded_slashes(node, &field, r).map(Some),
        None => Some(None),
    };
    Some(RouteSpec {
        field: fields.path().to_string(),
        id: id?,
        path: path?,
        upstream_path: upstream_path?,
        methods: methods?,
        max_body: max_body?,
        auth: auth?,
        roles,
        scopes,
        forward_authorization: forward_authorization?,
        rate_limits: rate_limits?,
        encoded_slashes: encoded_slashes?,
    })
}

fn read_methods(node: &Node, field: &str, r: &mut Reader) -> Option<MethodSet> {
    let sets = r.list(node, field, "[GET, POST]", |r, node, field| {
        let name = r.scalar(node, field, "a method")?;
        MethodSet::parse([name])
            .map_err(|_| {
                r.error(
                    node.mark,
                    field,
                    format!("`{name}` is not an HTTP method"),
                    &format!("write one of {}", MethodSet::ALL.allow_header()),
                )
            })
            .ok()
    })?;
    let items = match &node.kind {
        super::yaml::NodeKind::Seq(items) => items.len(),
        _ => 0,
    };
    if sets.len() != items {
        return None;
    }
    if sets.is_empty() {
        r.error(
            node.mark,
            field,
            "no method is allowed",
            "list at least one method, or remove `methods` to allow all",
        );
        return None;
    }
    Some(sets.into_iter().fold(MethodSet::EMPTY, MethodSet::union))
}
