//! The merge: every documented operation that a route really exposes, under its public path,
//! with the components of all fragments side by side. Components that collide are renamed
//! `<service>.<Name>` and every `$ref` follows; identical ones are shared. Routes no fragment
//! documents get a placeholder operation and are reported as drift, as are documented
//! operations no route exposes (those are left out). The output is deterministic: paths and
//! components are sorted, so the same inputs give the same bytes.
//!
//! This file owns the merger's walk: fragments in, each operation read and checked, the
//! placeholders, the parts out. Which components are renamed and usable is `components`'s;
//! where an operation is exposed, proven with the router, is `paths`'s; the document made from
//! the parts is `assemble`'s.

mod assemble;
mod components;
mod paths;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write};
use std::sync::OnceLock;

use http::Method;
use indexmap::IndexMap;
use openapiv3::{Components, Info, OpenAPI, Operation, PathItem, Paths, ReferenceOr, Server};
use serde::Deserialize;
use serde_json::{json, Value};

use self::assemble::{
    path_item, path_items, security_schemes, sort_components, tags, unique_operation_ids,
};
use self::components::{plan_renames, refs_in, rename_components, rewrite_refs, split_ref};
use self::paths::{answered_by_gateway, inline_path_parameters, method_of, ServiceRoutes};
use super::convert::{self, escape};
use super::Problem;
use super::{annotate, answers, GATEWAY_TAG};
use crate::config::Config;
use crate::router::Router;

/// One service's fragment as loaded, before conversion.
pub struct Fragment {
    /// Index into [`Config::services`].
    pub service: usize,
    /// The file or URL, for reports.
    pub source: String,
    pub document: Value,
}

/// Documentation and routing disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    /// A route's method that no fragment documents; the document shows a placeholder for it.
    Undocumented {
        route: String,
        method: String,
        path: String,
    },
    /// A documented operation that no route exposes; it is left out of the document.
    Unrouted {
        source: String,
        method: String,
        path: String,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::Undocumented {
                route,
                method,
                path,
            } => write!(
                f,
                "route `{route}`: {method} {path} is routed but no fragment documents it"
            ),
            Drift::Unrouted {
                source,
                method,
                path,
            } => write!(
                f,
                "{source}: {method} {path} is documented but no route exposes it (left out)"
            ),
        }
    }
}

pub struct Merged {
    pub document: OpenAPI,
    pub problems: Vec<Problem>,
    pub drift: Vec<Drift>,
}

/// The operation fields of a path item, in the order the document lists them.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
/// What a placeholder documents for a route that accepts every method.
const PLACEHOLDER_METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Whose fragment it is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    Gateway,
    Service(usize),
}

struct Prepared {
    owner: Owner,
    tag: String,
    source: String,
    document: Value,
    /// `section/current name` → the name the fragment wrote, for renamed components.
    original_names: HashMap<String, String>,
}

/// The description of the gateway's own endpoints, parsed once.
fn gateway_fragment() -> &'static Value {
    static FRAGMENT: OnceLock<Value> = OnceLock::new();
    FRAGMENT.get_or_init(|| {
        serde_yaml::from_str(include_str!("gateway.yaml")).unwrap_or_else(|_| json!({}))
    })
}

/// Merges `fragments` into the document of everything `config` exposes.
pub fn merge(config: &Config, router: &Router, fragments: Vec<Fragment>) -> Merged {
    let Parts {
        prepared,
        mut components,
        paths,
        problems,
        drift,
    } = merge_parts(config, router, fragments, true);
    components.security_schemes = security_schemes(config);
    sort_components(&mut components);
    let mut paths: IndexMap<String, ReferenceOr<PathItem>> = paths
        .into_iter()
        .map(|(path, operations)| (path, ReferenceOr::Item(path_item(operations))))
        .collect();
    answers::add_to_routes(path_items(&mut paths), &components, config);
    unique_operation_ids(path_items(&mut paths));
    let document = OpenAPI {
        openapi: "3.0.3".to_string(),
        info: Info {
            title: config.docs.title.clone(),
            version: config.docs.version.clone(),
            description: (!config.docs.description.is_empty())
                .then(|| config.docs.description.clone()),
            ..Info::default()
        },
        servers: vec![Server {
            url: config.public_url.clone(),
            ..Server::default()
        }],
        paths: Paths {
            paths,
            ..Paths::default()
        },
        components: Some(components),
        tags: tags(config, &prepared),
        ..OpenAPI::default()
    };
    Merged {
        document,
        problems,
        drift,
    }
}

/// What [`merge`] reports, without assembling the document: what `guichet check` needs, in a
/// fraction of the memory (a path item of the document takes almost 9 KiB).
pub fn report(
    config: &Config,
    router: &Router,
    fragments: Vec<Fragment>,
) -> (Vec<Problem>, Vec<Drift>) {
    let parts = merge_parts(config, router, fragments, false);
    (parts.problems, parts.drift)
}

/// The merge before the document is assembled.
struct Parts {
    prepared: Vec<Prepared>,
    components: Components,
    paths: BTreeMap<String, Vec<(&'static str, Option<Operation>)>>,
    problems: Vec<Problem>,
    drift: Vec<Drift>,
}

/// Everything [`merge`] does but assemble the document; the operations are kept for it only
/// when `document` says so.
fn merge_parts(
    config: &Config,
    router: &Router,
    fragments: Vec<Fragment>,
    document: bool,
) -> Parts {
    let mut problems = Vec::new();
    let mut prepared = vec![Prepared {
        owner: Owner::Gateway,
        tag: GATEWAY_TAG.to_string(),
        source: "the gateway's endpoints".to_string(),
        document: gateway_fragment().clone(),
        original_names: HashMap::new(),
    }];
    for mut fragment in fragments {
        match convert::to_3_0(&mut fragment.document, &fragment.source, &mut problems) {
            Ok(()) => prepared.push(Prepared {
                owner: Owner::Service(fragment.service),
                tag: config.services[fragment.service].name.clone(),
                source: fragment.source,
                document: fragment.document,
                original_names: HashMap::new(),
            }),
            Err(e) => problems.push(Problem::new(&fragment.source, "/openapi", &e)),
        }
    }
    let renames = plan_renames(&prepared);
    for (fragment, renames) in prepared.iter_mut().zip(&renames) {
        rewrite_refs(&mut fragment.document, renames);
        rename_components(&mut fragment.document, renames);
        fragment.original_names = renames
            .iter()
            .map(|((section, name), new)| (format!("{section}/{new}"), name.clone()))
            .collect();
    }

    let mut routes_of: Vec<ServiceRoutes> = config
        .services
        .iter()
        .map(|_| ServiceRoutes::default())
        .collect();
    for route in &config.routes {
        routes_of[route.service].add(route);
    }
    let mut merger = Merger {
        config,
        router,
        routes_of,
        paths: BTreeMap::new(),
        document,
        shapes: HashMap::new(),
        covered: HashSet::new(),
        problems,
        drift: Vec::new(),
    };
    let mut components = Components::default();
    for fragment in &mut prepared {
        let usable = merger.components(fragment, &mut components);
        merger.operations(fragment, &usable);
        // Placed: what is left to do needs the fragment's info, not its paths.
        if let Value::Object(document) = &mut fragment.document {
            document.shift_remove("paths");
        }
    }
    merger.placeholders();
    let Merger {
        paths,
        mut problems,
        drift,
        ..
    } = merger;
    problems.sort_by(|a, b| (&a.source, &a.pointer).cmp(&(&b.source, &b.pointer)));
    Parts {
        prepared,
        components,
        paths,
        problems,
        drift,
    }
}

struct Merger<'a> {
    config: &'a Config,
    router: &'a Router,
    /// Each service's routes, so an operation is matched against its own service's only.
    routes_of: Vec<ServiceRoutes>,
    /// The operations of each documented path, by method; made path items only at the end,
    /// as a path item takes almost 9 KiB. Only the methods are kept when no document is made.
    paths: BTreeMap<String, Vec<(&'static str, Option<Operation>)>>,
    /// Whether the document is made, or only what the merge reports.
    document: bool,
    /// The documented path of each shape (see [`paths::shape_of`]), to find a path's twin at
    /// once.
    shapes: HashMap<String, String>,
    /// `(route index, method)` pairs some fragment documents.
    covered: HashSet<(usize, &'static str)>,
    problems: Vec<Problem>,
    drift: Vec<Drift>,
}

impl Merger<'_> {
    fn operations(&mut self, fragment: &Prepared, usable: &HashSet<String>) {
        let Some(Value::Object(paths)) = fragment.document.get("paths") else {
            return;
        };
        for (fragment_path, item) in paths {
            let item_pointer = format!("/paths/{}", escape(fragment_path));
            let Value::Object(item) = item else { continue };
            if item.contains_key("$ref") {
                self.problems.push(Problem::new(
                    &fragment.source,
                    &item_pointer,
                    "left out: path item references are not supported; write the operations inline",
                ));
                continue;
            }
            for method in METHODS {
                let Some(operation) = item.get(method) else {
                    continue;
                };
                let pointer = format!("{item_pointer}/{method}");
                let Some(operation) = self.operation(fragment, operation, item, &pointer, usable)
                else {
                    continue;
                };
                match fragment.owner {
                    Owner::Gateway => {
                        if answered_by_gateway(self.config, fragment_path) {
                            let mut operation = operation;
                            annotate::gateway_endpoint(&mut operation, fragment_path, self.config);
                            let public_path = fragment_path.clone();
                            self.insert(fragment, fragment_path, public_path, method, operation);
                        }
                    }
                    Owner::Service(service) => {
                        self.service_operation(fragment, service, fragment_path, method, operation);
                    }
                }
            }
        }
    }

    /// The operation with what its path item says for all its operations (parameters, summary,
    /// description), if it parses and its references resolve.
    fn operation(
        &mut self,
        fragment: &Prepared,
        operation: &Value,
        item: &serde_json::Map<String, Value>,
        pointer: &str,
        usable: &HashSet<String>,
    ) -> Option<Operation> {
        let mut operation = operation.clone();
        if let Value::Object(map) = &mut operation {
            for key in ["summary", "description"] {
                if let Some(text) = item.get(key) {
                    map.entry(key).or_insert_with(|| text.clone());
                }
            }
        }
        let shared_parameters = item.get("parameters").and_then(Value::as_array);
        if let (Some(shared), Value::Object(map)) = (shared_parameters, &mut operation) {
            let own = map.entry("parameters").or_insert_with(|| json!([]));
            if let Value::Array(own) = own {
                let key = |p: &Value| {
                    (
                        p.get("name").cloned(),
                        p.get("in").cloned(),
                        p.get("$ref").cloned(),
                    )
                };
                let present: Vec<_> = own.iter().map(key).collect();
                own.extend(
                    shared
                        .iter()
                        .filter(|p| !present.contains(&key(p)))
                        .cloned(),
                );
            }
        }
        inline_path_parameters(&mut operation, &fragment.document);
        let mut refs = Vec::new();
        refs_in(&operation, pointer, &mut refs);
        let unresolved = refs.iter().find(|(_, r)| {
            !split_ref(r)
                .is_some_and(|(section, name, _)| usable.contains(&format!("{section}/{name}")))
        });
        if let Some((at, target)) = unresolved {
            self.problems.push(Problem::new(
                &fragment.source,
                pointer,
                &format!("left out: {at}: `{target}` does not resolve"),
            ));
            return None;
        }
        match Operation::deserialize(&operation) {
            Ok(parsed) => {
                let kept = serde_json::to_value(&parsed).unwrap_or_default();
                self.report_lost(fragment, &operation, &kept, pointer);
                Some(parsed)
            }
            Err(e) => {
                self.problems.push(Problem::new(
                    &fragment.source,
                    pointer,
                    &format!("left out: not a valid operation: {e}"),
                ));
                None
            }
        }
    }

    /// Reports the fields of `input` that its typed reading did not keep (fields OpenAPI 3.0
    /// does not define, other than `x-` extensions); fields at their default value are not lost.
    fn report_lost(&mut self, fragment: &Prepared, input: &Value, kept: &Value, pointer: &str) {
        let mut lost = Vec::new();
        lost_fields(input, kept, pointer, &mut lost);
        for at in lost {
            self.problems.push(Problem::new(
                &fragment.source,
                &at,
                "not an OpenAPI 3.0 field; left out",
            ));
        }
    }

    /// A placeholder operation, and a drift report, for each route method no fragment documents.
    fn placeholders(&mut self) {
        for route in &self.config.routes {
            let every = route.methods == crate::router::MethodSet::ALL;
            let listed: Vec<&'static str> = METHODS
                .into_iter()
                .filter(|m| route.methods.contains(&method_of(m)))
                .filter(|m| !(*m == "head" && route.methods.contains(&Method::GET)))
                .collect();
            let missing: Vec<&'static str> = if every {
                if listed
                    .iter()
                    .any(|m| self.covered.contains(&(route.index, *m)))
                {
                    continue;
                }
                PLACEHOLDER_METHODS.to_vec()
            } else {
                listed
                    .into_iter()
                    .filter(|m| !self.covered.contains(&(route.index, *m)))
                    .collect()
            };
            if every && !missing.is_empty() {
                self.drift.push(Drift::Undocumented {
                    route: route.id.clone(),
                    method: "any method".to_string(),
                    path: route.pattern.as_str().to_string(),
                });
            }
            for method in missing {
                if !every {
                    self.drift.push(Drift::Undocumented {
                        route: route.id.clone(),
                        method: method.to_uppercase(),
                        path: route.pattern.as_str().to_string(),
                    });
                }
                // The route's own path may be one the gateway answers itself (`/api/`).
                if answered_by_gateway(self.config, route.pattern.as_str()) {
                    continue;
                }
                let service = &self.config.service_of(route).name;
                let mut operation = annotate::placeholder(route, method, service);
                annotate::route_operation(
                    &mut operation,
                    route,
                    route.pattern.as_str(),
                    self.config,
                    service,
                );
                // A method some other route's documentation already fills is not lost.
                let _ = self.place(route.pattern.as_str().to_string(), method, operation);
            }
        }
    }
}

/// The pointers of fields in `input` missing from `kept`, where they mattered (not `false`,
/// `null` or empty).
fn lost_fields(input: &Value, kept: &Value, pointer: &str, out: &mut Vec<String>) {
    collect_lost(input, kept, &mut pointer.to_string(), out);
}

/// [`lost_fields`] with one pointer buffer for the whole walk, written out only for a loss.
fn collect_lost(input: &Value, kept: &Value, pointer: &mut String, out: &mut Vec<String>) {
    let depth = pointer.len();
    match (input, kept) {
        (Value::Object(input), Value::Object(kept)) => {
            for (key, value) in input {
                pointer.push('/');
                pointer.push_str(&escape(key));
                match kept.get(key) {
                    Some(kept) => collect_lost(value, kept, pointer, out),
                    None => {
                        let default = match value {
                            Value::Bool(b) => !b,
                            Value::Null => true,
                            Value::Array(a) => a.is_empty(),
                            Value::Object(o) => o.is_empty(),
                            _ => false,
                        };
                        if !default {
                            out.push(pointer.clone());
                        }
                    }
                }
                pointer.truncate(depth);
            }
        }
        (Value::Array(input), Value::Array(kept)) => {
            for (index, (value, kept)) in input.iter().zip(kept).enumerate() {
                // Writing to a String cannot fail.
                let _ = write!(pointer, "/{index}");
                collect_lost(value, kept, pointer, out);
                pointer.truncate(depth);
            }
        }
        _ => {}
    }
}
