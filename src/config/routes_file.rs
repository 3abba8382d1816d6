//! A routes file (`routes/<service>.yaml`) as written, and its reader: the service, its
//! upstreams and its routes, each value checked on its own; checks across values and files
//! live in `compile`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::decode::{Reader, Spanned};
use super::gateway_file::read_encoded_slashes;
use super::yaml::Node;
use super::{AuthLevel, EncodedSlashes, UpstreamTls};
use crate::cors::CorsPolicy;
use crate::ratelimit::Rate;
use crate::router::{MethodSet, PathPattern, PathTemplate};

/// `routes/<service>.yaml`.
pub struct ServiceFile {
    pub service: Option<Spanned<String>>,
    pub upstreams: Vec<UpstreamSpec>,
    pub health_check: Option<HealthCheckSpec>,
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub routes: Vec<RouteSpec>,
    /// `openapi:` as written: a file (resolved against gateway.yaml's folder later) or a URL.
    pub openapi: Option<Spanned<SpecWritten>>,
    /// `tls:`, its paths as written.
    pub tls: Option<UpstreamTls>,
}

pub enum SpecWritten {
    File(String),
    Url(http::Uri),
}

pub struct UpstreamSpec {
    pub url: String,
    pub addr: SocketAddr,
    pub host: String,
    pub tls: bool,
    pub sni: String,
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
    /// `None` when not written: gateway.yaml's applies; `Some(None)` for `cors: off`.
    pub cors: Option<Option<Arc<CorsPolicy>>>,
    /// `websocket: true`: upgrades to WebSocket are passed to the upstream.
    pub websocket: bool,
}

const SERVICE_KEYS: &[&str] = &[
    "service",
    "upstreams",
    "health_check",
    "timeouts",
    "routes",
    "openapi",
    "tls",
];
const HEALTH_CHECK_KEYS: &[&str] = &["path", "interval", "timeout"];
const TIMEOUT_KEYS: &[&str] = &["connect", "read", "idle"];
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
    "cors",
    "websocket",
];

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
        let (mut connect_timeout, mut read_timeout, mut idle_timeout) = (None, None, None);
        if let Some((node, field)) = fields.get("timeouts") {
            if let Some(timeouts) = r.fields(node, &field, TIMEOUT_KEYS) {
                if let Some((node, field)) = timeouts.get("connect") {
                    connect_timeout = r.duration(node, &field);
                }
                if let Some((node, field)) = timeouts.get("read") {
                    read_timeout = r.duration(node, &field);
                }
                if let Some((node, field)) = timeouts.get("idle") {
                    idle_timeout = r.duration(node, &field);
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
        let tls = fields
            .get("tls")
            .and_then(|(node, field)| super::tls::read_upstream(node, &field, r));
        Some(ServiceFile {
            service,
            upstreams,
            health_check,
            connect_timeout,
            read_timeout,
            idle_timeout,
            routes,
            openapi,
            tls,
        })
    }
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
        "write the service's base URL such as http://127.0.0.1:8001 or https://courses.internal:8443",
        |text| {
            let uri: http::Uri = text
                .parse()
                .map_err(|_| format!("`{text}` is not a URL"))?;
            let tls = match uri.scheme_str() {
                Some("http") => false,
                Some("https") => true,
                _ => return Err(format!("`{text}` is not an absolute http:// or https:// URL")),
            };
            let authority = uri
                .authority()
                .ok_or_else(|| format!("`{text}` has no host"))?;
            if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
                return Err(format!(
                    "`{text}` has a path, but an upstream URL is only scheme, host and port; a route's upstream_path changes paths"
                ));
            }
            let host = authority.host();
            let port = authority
                .port_u16()
                .unwrap_or(if tls { 443 } else { 80 });
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
                tls,
                sni: bare_host.to_ascii_lowercase(),
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
    let cors = match fields.get("cors") {
        Some((node, field)) => super::cors::read(node, &field, r).map(Some),
        None => Some(None),
    };
    let websocket = match fields.get("websocket") {
        Some((node, field)) => r.boolean(node, &field),
        None => Some(false),
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
        cors: cors?,
        websocket: websocket?,
    })
}

pub(super) fn read_methods(node: &Node, field: &str, r: &mut Reader) -> Option<MethodSet> {
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
