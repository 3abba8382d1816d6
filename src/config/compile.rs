//! From files to a [`Config`]: reads `gateway.yaml`, expands `include`, reads each routes file,
//! then checks what no single value shows (one file per service, no duplicate or shadowed
//! routes, unique route ids) and builds the snapshot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::decode::{Reader, Spanned};
use super::error::{ConfigErrors, Location};
use super::model::{GatewayFile, RouteSpec, ServiceFile, SpecWritten};
use super::yaml::{self, Node};
use super::{AuthLevel, Config, HealthCheck, KeyFiles, Listen, Route, Service, SpecSource, Target};
use crate::router::MethodSet;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

pub fn load(path: &Path, key_files: KeyFiles) -> Result<Config, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let gateway_file: Arc<Path> = Arc::from(path);
    let base = gateway_file.parent().unwrap_or(Path::new("")).to_path_buf();
    let gateway = match read_tree(&gateway_file, &mut errors) {
        Some(node) => GatewayFile::read(
            &node,
            &mut Reader {
                file: gateway_file.clone(),
                errors: &mut errors,
            },
            &base,
            key_files,
        ),
        None => return Err(errors),
    };
    let mut services = Vec::new();
    for file in expand_includes(&gateway_file, &gateway, &mut errors) {
        let file: Arc<Path> = Arc::from(file.as_path());
        if let Some(node) = read_tree(&file, &mut errors) {
            let mut reader = Reader {
                file: file.clone(),
                errors: &mut errors,
            };
            if let Some(service) = ServiceFile::read(&node, &mut reader) {
                services.push((file, service));
            }
        }
    }
    let config = build(path, gateway, services, &mut errors);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors.sorted())
    }
}

fn read_tree(file: &Arc<Path>, errors: &mut ConfigErrors) -> Option<Node> {
    let whole_file = Location {
        file: file.clone(),
        mark: None,
    };
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            errors.push(
                whole_file,
                "",
                format!("cannot read the file: {e}"),
                Some("check the path and its permissions".to_string()),
            );
            return None;
        }
    };
    match yaml::parse(&text) {
        Ok(node) => Some(node),
        Err(e) => {
            errors.push(
                Location {
                    file: file.clone(),
                    mark: Some(e.mark),
                },
                "",
                format!("invalid YAML: {}", e.message),
                None,
            );
            None
        }
    }
}

/// The routes files named by `include`, relative to the folder of `gateway.yaml`, each once.
fn expand_includes(
    gateway_file: &Arc<Path>,
    gateway: &GatewayFile,
    errors: &mut ConfigErrors,
) -> Vec<PathBuf> {
    let base = gateway_file.parent().unwrap_or(Path::new(""));
    let mut files: Vec<PathBuf> = Vec::new();
    for (index, pattern) in gateway.include.iter().enumerate() {
        let at = Location {
            file: gateway_file.clone(),
            mark: Some(pattern.mark),
        };
        let field = format!("include[{index}]");
        let full = base.join(&pattern.value);
        let matches = match glob::glob(&full.to_string_lossy()) {
            Ok(paths) => paths.filter_map(Result::ok).collect::<Vec<_>>(),
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
                at,
                field,
                format!("`{}` matches no file", pattern.value),
                Some(format!(
                    "patterns are relative to the folder of {}; check the name, or remove the entry",
                    gateway_file.display()
                )),
            );
        }
        for file in matches {
            if !files.contains(&file) && file.as_path() != &**gateway_file {
                files.push(file);
            }
        }
    }
    files
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
        listen: listen(gateway.listen, super::DEFAULT_LISTEN, "listen"),
        admin_listen: listen(
            gateway.admin_listen,
            super::DEFAULT_ADMIN_LISTEN,
            "admin_listen",
        ),
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
        client: gateway.client,
        encoded_slashes: gateway.encoded_slashes,
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
                name_at,
                "service",
                format!("service `{}` is already defined at {first}", name.value),
                Some("keep each service in one routes file, or rename this one".to_string()),
            );
        } else {
            service_files.insert(name.value.clone(), name_at);
        }
        let index = config.services.len();
        let read_timeout = spec.read_timeout.unwrap_or(DEFAULT_READ_TIMEOUT);
        config.services.push(Arc::new(Service {
            name: name.value.clone(),
            targets: spec
                .upstreams
                .into_iter()
                .map(|u| Target {
                    url: u.url,
                    addr: u.addr,
                    host: u.host,
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
    }
}

/// Duplicate routes, shadowed routes (same shape, other parameter names) and repeated ids.
fn check_routes(
    placed: &[(Location, String, Arc<Route>)],
    services: &[Arc<Service>],
    errors: &mut ConfigErrors,
) {
    for (index, (at, field, route)) in placed.iter().enumerate() {
        for (first_at, _, first) in &placed[..index] {
            let first_service = &services[first.service].name;
            if route.id == first.id {
                errors.push(
                    at.clone(),
                    field.replace(".path", ".id"),
                    format!("route id `{}` is already used at {first_at}", route.id),
                    Some("give one of the two routes its own `id:`".to_string()),
                );
            }
            if !route.pattern.same_shape(&first.pattern)
                || route.methods.intersection(first.methods) == MethodSet::EMPTY
            {
                continue;
            }
            let shared = route.methods.intersection(first.methods);
            let shared = if shared == MethodSet::ALL {
                "every method".to_string()
            } else {
                shared.allow_header()
            };
            let (message, hint) = if route.pattern.as_str() == first.pattern.as_str() {
                (
                    format!(
                        "duplicate route: `{}` for {} is already routed to service `{first_service}` at {first_at}",
                        route.pattern.as_str(),
                        shared
                    ),
                    "remove one, or give them methods that do not overlap",
                )
            } else {
                (
                    format!(
                        "shadowed route: `{}` matches the same requests as `{}` (service `{first_service}`, {first_at}) for {}, so one of them is never used",
                        route.pattern.as_str(),
                        first.pattern.as_str(),
                        shared
                    ),
                    "merge the two routes, or make their paths differ by a literal segment",
                )
            };
            errors.push(at.clone(), field.clone(), message, Some(hint.to_string()));
        }
    }
}
