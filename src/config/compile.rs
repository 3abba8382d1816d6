//! From files to a [`Config`]: reads `gateway.yaml`, expands `include`, reads each routes file,
//! then checks what no single value shows (one file per service, no duplicate or shadowed
//! routes, unique route ids) and builds the snapshot.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::decode::{Reader, Spanned};
use super::error::{ConfigErrors, Location};
use super::gateway_file::GatewayFile;
use super::routes_file::{RouteSpec, ServiceFile, SpecWritten};
use super::source::{self, MAX_CONFIG_FILE};
use super::yaml::{self, Node};
use super::{AuthLevel, Config, HealthCheck, Listen, Route, Service, SpecSource, Target};
use crate::router::{MethodSet, Segment};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// An upgraded connection with nothing either way for this long is closed (`timeouts.idle`).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// Long enough for a load balancer probing every second or two, and for Kubernetes to remove
/// the endpoint, before the listener stops accepting.
const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(5);

/// The configuration as read, its errors added to `errors`; `None` when gateway.yaml itself
/// cannot be read or parsed.
pub fn read(path: &Path, errors: &mut ConfigErrors) -> Option<Config> {
    let gateway_file: Arc<Path> = Arc::from(path);
    let base = gateway_file.parent().unwrap_or(Path::new("")).to_path_buf();
    let node = read_tree(&gateway_file, None, errors)?;
    let gateway = GatewayFile::read(
        &node,
        &mut Reader {
            file: gateway_file.clone(),
            errors,
        },
        &base,
    );
    let mut services = Vec::new();
    for included in expand_includes(&gateway_file, &gateway, errors) {
        let file: Arc<Path> = Arc::from(included.file.as_path());
        if let Some(node) = read_tree(&file, Some(&included), errors) {
            let mut reader = Reader {
                file: file.clone(),
                errors,
            };
            if let Some(service) = ServiceFile::read(&node, &mut reader) {
                services.push((file, service));
            }
        }
    }
    Some(build(path, gateway, services, errors))
}

/// Reads and parses one file. Errors about the file as a whole (it cannot be read, or it is too
/// large) point at where it was named: an `include` entry, or nowhere for gateway.yaml itself.
fn read_tree(
    file: &Arc<Path>,
    named_at: Option<&Included>,
    errors: &mut ConfigErrors,
) -> Option<Node> {
    let bytes = match source::read_bounded(file, MAX_CONFIG_FILE) {
        Ok(bytes) => bytes,
        Err(e) => {
            let hint = Some(e.hint().to_string());
            match named_at {
                Some(included) => errors.push(
                    included.at.clone(),
                    included.field.clone(),
                    format!("{}: {e}", file.display()),
                    hint,
                ),
                None => errors.push(
                    Location {
                        file: file.clone(),
                        mark: None,
                    },
                    "",
                    e.to_string(),
                    hint,
                ),
            }
            return None;
        }
    };
    match yaml::parse(&bytes) {
        Ok(node) => Some(node),
        Err(e) => {
            errors.push(
                Location {
                    file: file.clone(),
                    mark: Some(e.mark),
                },
                "",
                e.message,
                e.hint,
            );
            None
        }
    }
}

/// A routes file and the `include` entry that named it.
struct Included {
    file: PathBuf,
    at: Location,
    field: String,
}

/// The routes files named by `include`, relative to the folder of `gateway.yaml`, each once.
/// An include may not lead out of that folder: not by an absolute path, not by `..`, not by a
/// symbolic link, so that what a configuration reads is what its folder holds.
fn expand_includes(
    gateway_file: &Arc<Path>,
    gateway: &GatewayFile,
    errors: &mut ConfigErrors,
) -> Vec<Included> {
    let base = gateway_file.parent().unwrap_or(Path::new(""));
    let folder = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let folder = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
    let mut seen: HashSet<PathBuf> = HashSet::from([gateway_file.to_path_buf()]);
    let mut files = Vec::new();
    for (index, pattern) in gateway.include.iter().enumerate() {
        let at = Location {
            file: gateway_file.clone(),
            mark: Some(pattern.mark),
        };
        let field = format!("include[{index}]");
        let written = Path::new(&pattern.value);
        let leaves = if written.is_absolute() {
            Some("is an absolute path")
        } else if written.components().any(|c| c == Component::ParentDir) {
            Some("goes up with `..`")
        } else {
            None
        };
        if let Some(why) = leaves {
            errors.push(
                at,
                field,
                format!(
                    "`{}` {why}; includes stay inside the configuration's folder",
                    pattern.value
                ),
                Some(format!(
                    "move the file into {} and write its path from there, such as routes/courses.yaml",
                    folder.display()
                )),
            );
            continue;
        }
        let matches = match include_matches(base, &pattern.value) {
            Ok(paths) => paths,
            Err(e) => {
                errors.push(
                    at,
                    field,
                    format!("`{}` is not a valid pattern: {}", pattern.value, e.msg),
                    Some("write a path or a glob such as routes/*.yaml".to_string()),
                );
                continue;
            }
        };
        if matches.is_empty() {
            errors.push(
                at.clone(),
                field.clone(),
                format!("`{}` matches no file", pattern.value),
                Some(format!(
                    "patterns are relative to the folder of {}; check the name, or remove the entry",
                    gateway_file.display()
                )),
            );
        }
        for file in matches {
            // A file that cannot be resolved is reported when it is read.
            if let Ok(target) = std::fs::canonicalize(&file) {
                if !target.starts_with(&folder) {
                    errors.push(
                        at.clone(),
                        field.clone(),
                        format!(
                            "{} leads to {}, outside the configuration's folder",
                            file.display(),
                            target.display()
                        ),
                        Some(format!(
                            "copy the file into {}; an include may not follow a link out of it",
                            folder.display()
                        )),
                    );
                    continue;
                }
            }
            if seen.insert(file.clone()) {
                files.push(Included {
                    file,
                    at: at.clone(),
                    field: field.clone(),
                });
            }
        }
    }
    files
}

/// The paths an `include` pattern matches now, relative to `base` (the folder of gateway.yaml).
/// Patterns that leave the folder are refused before this.
pub(super) fn include_matches(
    base: &Path,
    pattern: &str,
) -> Result<Vec<PathBuf>, glob::PatternError> {
    let full = base.join(pattern);
    Ok(glob::glob(&full.to_string_lossy())?
        .filter_map(Result::ok)
        .collect())
}

/// A fragment file must exist when the configuration is loaded; URLs are fetched later.
fn spec_source(
    written: Spanned<SpecWritten>,
    base: &Path,
    file: &Arc<Path>,
    errors: &mut ConfigErrors,
) -> Option<SpecSource> {
    match written.value {
        SpecWritten::Url(uri) => Some(SpecSource::Url(uri)),
        SpecWritten::File(name) => {
            let path = base.join(&name);
            if path.is_file() {
                return Some(SpecSource::File(path));
            }
            errors.push(
                Location {
                    file: file.clone(),
                    mark: Some(written.mark),
                },
                "openapi",
                format!("`{name}` is not a file ({} was looked for)", path.display()),
                Some(
                    "paths are relative to the folder of gateway.yaml, such as specs/courses.yaml"
                        .to_string(),
                ),
            );
            None
        }
    }
}

fn build(
    source: &Path,
    gateway: GatewayFile,
    files: Vec<(Arc<Path>, ServiceFile)>,
    errors: &mut ConfigErrors,
) -> Config {
    let gateway_file: Arc<Path> = Arc::from(source);
    let base = source.parent().unwrap_or(Path::new("")).to_path_buf();
    let listen = |spanned: Option<super::decode::Spanned<std::net::SocketAddr>>,
                  default: &str,
                  field: &'static str| match spanned {
        Some(spanned) => Listen {
            addr: spanned.value,
            at: Some(Location {
                file: gateway_file.clone(),
                mark: Some(spanned.mark),
            }),
            field,
        },
        None => Listen {
            addr: default.parse().expect("default listen addresses are valid"),
            at: None,
            field,
        },
    };
    let mut config = Config {
        source: source.to_path_buf(),
        include: gateway.include.iter().map(|p| p.value.clone()).collect(),
        watch: gateway.watch,
        listen: listen(gateway.listen, super::DEFAULT_LISTEN, "listen"),
        admin_listen: listen(
            gateway.admin_listen,
            super::DEFAULT_ADMIN_LISTEN,
            "admin_listen",
        ),
        tls: gateway.tls,
        public_url: gateway
            .public_url
            .unwrap_or_else(|| "http://localhost:8080".to_string()),
        trusted_proxies: gateway.trusted_proxies,
        threads: gateway.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        shutdown_grace_period: gateway
            .shutdown_grace_period
            .unwrap_or(DEFAULT_GRACE_PERIOD),
        shutdown_delay: gateway.shutdown_delay.unwrap_or(DEFAULT_SHUTDOWN_DELAY),
        pid_file: gateway.pid_file.map(|path| base.join(path.value)),
        upgrade_socket: gateway.upgrade_socket.map(|path| base.join(path.value)),
        client: gateway.client,
        encoded_slashes: gateway.encoded_slashes,
        cors: gateway.cors,
        services: Vec::new(),
        routes: Vec::new(),
        auth: gateway.auth,
        rate_limits: gateway.rate_limits,
        record_metrics: gateway.record_metrics,
        record_usage: gateway.record_usage,
        docs: gateway.docs,
    };
    if config.listen.addr == config.admin_listen.addr {
        errors.push(
            config.admin_listen.at.clone().unwrap_or_else(|| Location {
                file: gateway_file.clone(),
                mark: None,
            }),
            "admin_listen",
            format!("{} is also the public listener", config.admin_listen.addr),
            Some("give the admin listener its own address, such as 127.0.0.1:9090".to_string()),
        );
    }

    if let Some(tls) = &config.tls {
        for other in [&config.listen, &config.admin_listen] {
            if tls.listen.addr == other.addr {
                errors.push(
                    tls.listen.at.clone().unwrap_or_else(|| Location {
                        file: gateway_file.clone(),
                        mark: None,
                    }),
                    "tls.listen",
                    format!("{} is also `{}`", other.addr, other.field),
                    Some("give the TLS listener its own port, such as 0.0.0.0:8443".to_string()),
                );
            }
        }
    }

    let mut service_files: HashMap<String, Location> = HashMap::new();
    // Every route with where it was written, for the checks across files.
    let mut placed: Vec<(Location, String, Arc<Route>)> = Vec::new();
    for (file, spec) in files {
        let Some(name) = spec.service else { continue };
        let name_at = Location {
            file: file.clone(),
            mark: Some(name.mark),
        };
        if let Some(first) = service_files.get(&name.value) {
            errors.push(
                name_at.clone(),
                "service",
                format!("service `{}` is already defined at {first}", name.value),
                Some("keep each service in one routes file, or rename this one".to_string()),
            );
        } else {
            service_files.insert(name.value.clone(), name_at.clone());
        }
        let index = config.services.len();
        let read_timeout = spec.read_timeout.unwrap_or(DEFAULT_READ_TIMEOUT);
        let tls = spec.tls.map(|tls| tls.resolved(&base)).unwrap_or_default();
        let server_name = tls.server_name.clone();
        for upstream in spec.upstreams.iter().filter(|u| u.tls) {
            if upstream.sni.is_empty() && server_name.is_none() {
                // pingora does not verify a peer without a name: never let that happen.
                errors.push(
                    name_at.clone(),
                    "upstreams",
                    format!("`{}` has no host name to verify", upstream.url),
                    Some(
                        "write the host name in the URL, or add `tls: { server_name: … }`"
                            .to_string(),
                    ),
                );
            }
            let by_address = upstream.sni.parse::<std::net::IpAddr>().is_ok();
            if by_address && server_name.is_none() && tls.verify {
                errors.push(
                    name_at.clone(),
                    "upstreams",
                    format!(
                        "`{}` names an IP address, but an https upstream is verified by the host name its certificate holds",
                        upstream.url
                    ),
                    Some(
                        "add `tls: { server_name: <the name in its certificate> }`, or use that name in the URL"
                            .to_string(),
                    ),
                );
            }
        }
        config.services.push(Arc::new(Service {
            name: name.value.clone(),
            targets: spec
                .upstreams
                .into_iter()
                .map(|u| Target {
                    url: u.url,
                    addr: u.addr,
                    host: u.host,
                    tls: u.tls,
                    sni: server_name.clone().unwrap_or(u.sni),
                })
                .collect(),
            health_check: spec.health_check.map(|h| HealthCheck {
                path: h.path,
                timeout: h
                    .timeout
                    .unwrap_or_else(|| DEFAULT_HEALTH_TIMEOUT.min(h.interval)),
                interval: h.interval,
            }),
            connect_timeout: spec.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            openapi: spec
                .openapi
                .and_then(|written| spec_source(written, &base, &file, errors)),
            read_timeout,
            idle_timeout: spec.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
            tls,
        }));
        for route in spec.routes {
            let at = Location {
                file: file.clone(),
                mark: Some(route.path.mark),
            };
            let field = format!("{}.path", route.field);
            let mut route = compile_route(route, &name.value, index, &config, &file, errors);
            route.index = placed.len();
            placed.push((at, field, Arc::new(route)));
        }
    }
    check_routes(&placed, &config.services, errors);
    config.routes = placed.into_iter().map(|(_, _, route)| route).collect();
    config
}

fn compile_route(
    spec: RouteSpec,
    service: &str,
    index: usize,
    config: &Config,
    file: &Arc<Path>,
    errors: &mut ConfigErrors,
) -> Route {
    let at = |mark| Location {
        file: file.clone(),
        mark: Some(mark),
    };
    let auth = &config.auth;
    // Closed by default: a route says `auth: none` to be public.
    let level = spec.auth.as_ref().map_or(AuthLevel::Jwt, |a| a.value);
    if matches!(level, AuthLevel::Jwt | AuthLevel::Any) && !auth.jwt_written {
        let (mark, how) = match &spec.auth {
            Some(written) => (written.mark, "this route asks for a JWT"),
            None => (
                spec.path.mark,
                "this route needs a JWT (`auth: jwt` is the default)",
            ),
        };
        errors.push(
            at(mark),
            format!("{}.auth", spec.field),
            format!("{how}, but gateway.yaml has no `jwt` section"),
            Some("write `auth: none` for a public route or `auth: api_key` for service keys, or add a `jwt` section to gateway.yaml".to_string()),
        );
    }
    let mut min_role: Option<usize> = None;
    for (i, role) in spec.roles.iter().enumerate() {
        match auth.rank(&role.value) {
            Some(rank) => min_role = Some(min_role.map_or(rank, |m| m.min(rank))),
            None => errors.push(
                at(role.mark),
                format!("{}.roles[{i}]", spec.field),
                format!("`{}` is not a role", role.value),
                Some(format!(
                    "write one of {} (the `roles` of gateway.yaml)",
                    auth.roles.join(", ")
                )),
            ),
        }
    }
    if level == AuthLevel::None && (!spec.roles.is_empty() || !spec.scopes.is_empty()) {
        errors.push(
            at(spec.path.mark),
            format!("{}.auth", spec.field),
            "a public route (`auth: none`) cannot require roles or scopes",
            Some("remove `roles`/`scopes`, or set `auth: jwt`, `api_key` or `any`".to_string()),
        );
    }
    if spec.websocket && !spec.methods.contains(&http::Method::GET) {
        errors.push(
            at(spec.path.mark),
            format!("{}.websocket", spec.field),
            "a WebSocket handshake is a GET, which this route's `methods` leave out",
            Some("add GET to `methods`, or remove `websocket: true`".to_string()),
        );
    }
    Route {
        index: 0,
        id: spec
            .id
            .unwrap_or_else(|| format!("{service}:{}", spec.path.value.as_str())),
        service: index,
        pattern: spec.path.value,
        upstream_path: spec.upstream_path,
        methods: spec.methods,
        max_body: spec.max_body,
        auth: level,
        min_role,
        scopes: spec.scopes,
        forward_authorization: spec.forward_authorization,
        rate_limits: spec.rate_limits,
        encoded_slashes: spec.encoded_slashes.unwrap_or(config.encoded_slashes),
        cors: spec.cors.unwrap_or_else(|| config.cors.clone()),
        websocket: spec.websocket,
    }
}

/// Duplicate routes, shadowed routes (same shape, other parameter names) and repeated ids.
/// Routes are grouped by id and by shape, so the check stays linear in the number of routes.
fn check_routes(
    placed: &[(Location, String, Arc<Route>)],
    services: &[Arc<Service>],
    errors: &mut ConfigErrors,
) {
    let mut ids: HashMap<&str, &Location> = HashMap::new();
    let mut shapes: HashMap<Vec<Option<&str>>, Shape> = HashMap::new();
    for (at, field, route) in placed {
        if let Some(first_at) = ids.get(route.id.as_str()) {
            errors.push(
                at.clone(),
                field.replace(".path", ".id"),
                format!("route id `{}` is already used at {first_at}", route.id),
                Some("give one of the two routes its own `id:`".to_string()),
            );
        } else {
            ids.insert(&route.id, at);
        }
        let shape = route
            .pattern
            .segments()
            .iter()
            .map(|segment| match segment {
                Segment::Static(text) => Some(text.as_str()),
                Segment::Param(_) => None,
            })
            .collect();
        let group = shapes.entry(shape).or_default();
        let first = group
            .first_holders
            .iter()
            .map(|&index| &placed[index])
            .find(|(_, _, first)| route.methods.intersection(first.methods) != MethodSet::EMPTY);
        if let Some((first_at, _, first)) = first {
            errors.push(
                at.clone(),
                field.clone(),
                overlap_message(route, first, &services[first.service].name, first_at),
                Some(
                    if route.pattern.as_str() == first.pattern.as_str() {
                        "remove one, or give them methods that do not overlap"
                    } else {
                        "merge the two routes, or make their paths differ by a literal segment"
                    }
                    .to_string(),
                ),
            );
        }
        if route.methods.union(group.methods) != group.methods {
            group.methods = group.methods.union(route.methods);
            group.first_holders.push(route.index);
        }
    }
}

/// The routes of one shape seen so far: the methods they take, and the routes that were the
/// first to take one of them (at most one per method), which later routes are checked against.
struct Shape {
    methods: MethodSet,
    first_holders: Vec<usize>,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            methods: MethodSet::EMPTY,
            first_holders: Vec::new(),
        }
    }
}

fn overlap_message(
    route: &Route,
    first: &Route,
    first_service: &str,
    first_at: &Location,
) -> String {
    let shared = route.methods.intersection(first.methods);
    let shared = if shared == MethodSet::ALL {
        "every method".to_string()
    } else {
        shared.allow_header()
    };
    if route.pattern.as_str() == first.pattern.as_str() {
        format!(
            "duplicate route: `{}` for {shared} is already routed to service `{first_service}` at {first_at}",
            route.pattern.as_str(),
        )
    } else {
        format!(
            "shadowed route: `{}` matches the same requests as `{}` (service `{first_service}`, {first_at}) for {shared}, so one of them is never used",
            route.pattern.as_str(),
            first.pattern.as_str(),
        )
    }
}
