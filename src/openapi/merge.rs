//! The merge: every documented operation that a route really exposes, under its public path,
//! with the components of all fragments side by side. Components that collide are renamed
//! `<service>.<Name>` and every `$ref` follows; identical ones are shared. Routes no fragment
//! documents get a placeholder operation and are reported as drift, as are documented
//! operations no route exposes (those are left out). The output is deterministic: paths and
//! components are sorted, so the same inputs give the same bytes.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write};
use std::sync::{Arc, OnceLock};

use http::Method;
use indexmap::IndexMap;
use openapiv3::{
    Components, Info, OpenAPI, Operation, PathItem, Paths, ReferenceOr, SecurityScheme, Server, Tag,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::convert::{self, escape};
use super::Problem;
use super::{annotate, answers, GATEWAY_TAG};
use crate::config::{Config, Route, SpecSource};
use crate::endpoints::Endpoint;
use crate::path;
use crate::router::{Lookup, Router, Segment};

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
/// Component sections that are merged; `securitySchemes` are the gateway's own.
const SECTIONS: [&str; 8] = [
    "schemas",
    "responses",
    "parameters",
    "examples",
    "requestBodies",
    "headers",
    "links",
    "callbacks",
];

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
    components.security_schemes = security_schemes();
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

/// For each fragment, the components it must rename: `(section, name) -> new name`.
/// Names whose definitions differ between fragments are renamed `<tag>.<Name>` in each of them
/// (the gateway's own keep theirs); renaming can make two definitions that referred to the
/// renamed ones differ too, so this repeats until nothing changes.
fn plan_renames(prepared: &[Prepared]) -> Vec<HashMap<(String, String), String>> {
    let mut renames: Vec<HashMap<(String, String), String>> = vec![HashMap::new(); prepared.len()];
    loop {
        let mut groups: BTreeMap<(String, String), Vec<(usize, Value)>> = BTreeMap::new();
        for (index, fragment) in prepared.iter().enumerate() {
            for (section, name, value) in components_of(&fragment.document) {
                let key = (section.to_string(), name.clone());
                let final_name = renames[index].get(&key).unwrap_or(name).clone();
                let mut value = value.clone();
                rewrite_refs(&mut value, &renames[index]);
                groups
                    .entry((section.to_string(), final_name))
                    .or_default()
                    .push((index, value));
            }
        }
        let mut changed = false;
        for ((section, name), members) in groups {
            if members.iter().all(|(_, value)| *value == members[0].1) {
                continue;
            }
            for (index, _) in members {
                let fragment = &prepared[index];
                if fragment.owner == Owner::Gateway {
                    continue;
                }
                renames[index].insert(
                    (section.clone(), name.clone()),
                    format!("{}.{name}", fragment.tag),
                );
                changed = true;
            }
        }
        if !changed {
            return renames;
        }
    }
}

/// Each component a fragment defines, in the merged sections: its section, name and definition.
fn components_of(document: &Value) -> impl Iterator<Item = (&'static str, &String, &Value)> {
    SECTIONS.into_iter().flat_map(move |section| {
        document
            .pointer(&format!("/components/{section}"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(move |(name, value)| (section, name, value))
    })
}

/// Rewrites every `#/components/<section>/<name>` reference according to `renames`.
fn rewrite_refs(value: &mut Value, renames: &HashMap<(String, String), String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("$ref") {
                if let Some((section, name, rest)) = split_ref(reference) {
                    if let Some(new) = renames.get(&(section.to_string(), name.clone())) {
                        *reference = format!("#/components/{section}/{}{rest}", escape(new));
                    }
                }
            }
            for child in map.values_mut() {
                rewrite_refs(child, renames);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|child| rewrite_refs(child, renames)),
        _ => {}
    }
}

/// Renames the component definitions themselves, keeping their order.
fn rename_components(document: &mut Value, renames: &HashMap<(String, String), String>) {
    for section in SECTIONS {
        let Some(Value::Object(entries)) = document.pointer_mut(&format!("/components/{section}"))
        else {
            continue;
        };
        *entries = std::mem::take(entries)
            .into_iter()
            .map(|(name, value)| {
                let key = (section.to_string(), name);
                let name = renames.get(&key).cloned().unwrap_or(key.1);
                (name, value)
            })
            .collect();
    }
}

/// `#/components/schemas/User/properties/id` → `("schemas", "User", "/properties/id")`.
fn split_ref(reference: &str) -> Option<(&str, String, &str)> {
    let rest = reference.strip_prefix("#/components/")?;
    let (section, rest) = rest.split_once('/')?;
    let (name, rest) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let name = name.replace("~1", "/").replace("~0", "~");
    Some((section, name, rest))
}

/// Every `$ref` inside `value`, with its pointer.
fn refs_in<'a>(value: &'a Value, pointer: &str, out: &mut Vec<(String, &'a str)>) {
    collect_refs(value, &mut pointer.to_string(), out);
}

/// [`refs_in`] with one pointer buffer for the whole walk: most nodes hold no reference, so a
/// pointer is written out only for those that do.
fn collect_refs<'a>(value: &'a Value, pointer: &mut String, out: &mut Vec<(String, &'a str)>) {
    let depth = pointer.len();
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                out.push((format!("{pointer}/$ref"), reference));
            }
            for (key, child) in map {
                pointer.push('/');
                pointer.push_str(&escape(key));
                collect_refs(child, pointer, out);
                pointer.truncate(depth);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                // Writing to a String cannot fail.
                let _ = write!(pointer, "/{index}");
                collect_refs(child, pointer, out);
                pointer.truncate(depth);
            }
        }
        _ => {}
    }
}

/// Adds a component in its typed form; the first of equal names wins (shared ones are equal).
fn insert_component(
    components: &mut Components,
    section: &str,
    name: &str,
    value: Value,
) -> Result<(), String> {
    fn typed<T: DeserializeOwned>(value: Value) -> Result<T, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }
    let name = name.to_string();
    match section {
        "schemas" => {
            components.schemas.entry(name).or_insert(typed(value)?);
        }
        "responses" => {
            components.responses.entry(name).or_insert(typed(value)?);
        }
        "parameters" => {
            components.parameters.entry(name).or_insert(typed(value)?);
        }
        "examples" => {
            components.examples.entry(name).or_insert(typed(value)?);
        }
        "requestBodies" => drop(
            components
                .request_bodies
                .entry(name)
                .or_insert(typed(value)?),
        ),
        "headers" => {
            components.headers.entry(name).or_insert(typed(value)?);
        }
        "links" => {
            components.links.entry(name).or_insert(typed(value)?);
        }
        _ => {
            components.callbacks.entry(name).or_insert(typed(value)?);
        }
    }
    Ok(())
}

/// A service's routes by the first segment of the path they send upstream: an operation is
/// matched only against the routes that could lead to it, not against all of them.
#[derive(Default)]
struct ServiceRoutes {
    by_first: HashMap<String, Vec<Arc<Route>>>,
    /// Routes whose upstream path starts with a parameter, or is `/`: they may lead anywhere.
    anywhere: Vec<Arc<Route>>,
}

impl ServiceRoutes {
    fn add(&mut self, route: &Arc<Route>) {
        let template = route
            .upstream_path
            .as_ref()
            .map_or(route.pattern.segments(), |t| t.segments());
        match template.first() {
            Some(Segment::Static(first)) => self
                .by_first
                .entry(first.clone())
                .or_default()
                .push(route.clone()),
            _ => self.anywhere.push(route.clone()),
        }
    }

    /// The routes that may lead to `fragment_path`, in configuration order.
    fn candidates(&self, fragment_path: &str) -> Vec<Arc<Route>> {
        let mut routes = self.anywhere.clone();
        if let Some(Part::Static(first)) = parts(fragment_path).into_iter().next() {
            routes.extend(self.by_first.get(&first).into_iter().flatten().cloned());
        }
        routes.sort_by_key(|route| route.index);
        routes
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
    /// The documented path of each shape (see [`shape_of`]), to find a path's twin at once.
    shapes: HashMap<String, String>,
    /// `(route index, method)` pairs some fragment documents.
    covered: HashSet<(usize, &'static str)>,
    problems: Vec<Problem>,
    drift: Vec<Drift>,
}

impl Merger<'_> {
    /// Adds the fragment's components that parse and whose references resolve; returns the
    /// names (`section/name`) an operation may refer to.
    fn components(&mut self, fragment: &Prepared, out: &mut Components) -> HashSet<String> {
        let mut defined: BTreeMap<String, (&str, String, &Value)> = BTreeMap::new();
        let mut broken: BTreeMap<String, String> = BTreeMap::new();
        for (section, name, value) in components_of(&fragment.document) {
            let key = format!("{section}/{name}");
            let original = fragment.original_names.get(&key).unwrap_or(name);
            let pointer = format!("/components/{section}/{}", escape(original));
            let mut scratch = Components::default();
            match insert_component(&mut scratch, section, name, value.clone()) {
                Ok(()) => {
                    let kept = serde_json::to_value(&scratch).unwrap_or_default();
                    let kept = kept.pointer(&format!("/{section}/{}", escape(name)));
                    self.report_lost(fragment, value, kept.unwrap_or(&Value::Null), &pointer);
                }
                Err(e) => {
                    broken.insert(
                        key.clone(),
                        format!("{pointer}: not a valid {section} entry: {e}"),
                    );
                }
            }
            defined.insert(key, (section, pointer, value));
        }
        // A component is usable when its references lead only to usable components.
        loop {
            let mut newly = Vec::new();
            for (key, (_, pointer, value)) in &defined {
                if broken.contains_key(key) {
                    continue;
                }
                let mut refs = Vec::new();
                refs_in(value, pointer, &mut refs);
                if let Some((at, target)) =
                    refs.iter().find(|(_, r)| !resolves(r, &defined, &broken))
                {
                    newly.push((key.clone(), format!("{at}: `{target}` does not resolve")));
                }
            }
            if newly.is_empty() {
                break;
            }
            broken.extend(newly);
        }
        for (key, why) in &broken {
            let pointer = &defined[key].1;
            self.problems.push(Problem::new(
                &fragment.source,
                pointer,
                &format!("left out: {why}"),
            ));
        }
        let mut usable = HashSet::new();
        for (key, (section, _, value)) in defined {
            if broken.contains_key(&key) {
                continue;
            }
            let name = key.split_once('/').map_or("", |(_, name)| name).to_string();
            // It parsed above, so this cannot fail.
            let _ = insert_component(out, section, &name, value.clone());
            usable.insert(key);
        }
        usable
    }

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

    fn service_operation(
        &mut self,
        fragment: &Prepared,
        service: usize,
        fragment_path: &str,
        method: &'static str,
        operation: Operation,
    ) {
        let routes = self.routes_of[service].candidates(fragment_path);
        let exposed = public_paths(self.config, self.router, &routes, fragment_path, method);
        if exposed.is_empty() {
            // The service's schema view (where `openapi:` fetches this fragment) is its own
            // business, not an operation the gateway forgot to route.
            let source = self.config.services[service].openapi.as_ref();
            if source.and_then(SpecSource::served_at) != Some(fragment_path) {
                self.drift.push(Drift::Unrouted {
                    source: fragment.source.clone(),
                    method: method.to_uppercase(),
                    path: fragment_path.to_string(),
                });
            }
            return;
        }
        for (public_path, route) in exposed {
            self.covered.insert((route.index, method));
            let mut operation = operation.clone();
            annotate::route_operation(
                &mut operation,
                &route,
                &public_path,
                self.config,
                &fragment.tag,
            );
            self.insert(fragment, fragment_path, public_path, method, operation);
        }
    }

    /// Places an operation of `fragment` (found at `fragment_path` there) at `public_path`.
    fn insert(
        &mut self,
        fragment: &Prepared,
        fragment_path: &str,
        public_path: String,
        method: &'static str,
        operation: Operation,
    ) {
        if let Err(why) = self.place(public_path, method, operation) {
            self.problems.push(Problem::new(
                &fragment.source,
                &format!("/paths/{}/{method}", escape(fragment_path)),
                &format!("left out: {why}"),
            ));
        }
    }

    /// Puts an operation at `public_path`. A path that differs from one already documented only
    /// in its parameter names is the same path to OpenAPI: the operation joins that one, its
    /// parameters renamed.
    fn place(
        &mut self,
        public_path: String,
        method: &'static str,
        mut operation: Operation,
    ) -> Result<(), String> {
        let path = match self.shapes.entry(shape_of(&public_path)) {
            Entry::Occupied(same) if *same.get() != public_path => {
                let existing = same.get().clone();
                rename_path_parameters(&mut operation, &public_path, &existing);
                existing
            }
            Entry::Occupied(_) => public_path,
            Entry::Vacant(shape) => shape.insert(public_path).clone(),
        };
        let operations = self.paths.entry(path.clone()).or_default();
        if operations.iter().any(|(placed, _)| *placed == method) {
            return Err(format!(
                "{} {path} is already documented",
                method.to_uppercase()
            ));
        }
        operations.push((method, self.document.then_some(operation)));
        Ok(())
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

fn resolves(
    reference: &str,
    defined: &BTreeMap<String, (&str, String, &Value)>,
    broken: &BTreeMap<String, String>,
) -> bool {
    split_ref(reference).is_some_and(|(section, name, _)| {
        let key = format!("{section}/{name}");
        defined.contains_key(&key) && !broken.contains_key(&key)
    })
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

/// Whether the gateway answers `public_path` itself, so no route's operation is reachable there.
fn answered_by_gateway(config: &Config, public_path: &str) -> bool {
    Endpoint::answered_at(public_path, config.auth.tokens.is_some()).is_some()
}

fn method_of(name: &str) -> Method {
    Method::from_bytes(name.to_uppercase().as_bytes()).unwrap_or(Method::GET)
}

fn operation_slot<'a>(item: &'a mut PathItem, method: &str) -> &'a mut Option<Operation> {
    match method {
        "get" => &mut item.get,
        "put" => &mut item.put,
        "post" => &mut item.post,
        "delete" => &mut item.delete,
        "options" => &mut item.options,
        "head" => &mut item.head,
        "patch" => &mut item.patch,
        _ => &mut item.trace,
    }
}

/// A path with its parameter names blanked: `/a/{id}/` and `/a/{slug}/` are the same path.
fn shape_of(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                "{}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Replaces references to path parameters by the parameters themselves: the gateway renames
/// path parameters and adds the ones only the route has, which needs their names at hand.
fn inline_path_parameters(operation: &mut Value, document: &Value) {
    let Some(Value::Array(parameters)) = operation.get_mut("parameters") else {
        return;
    };
    for parameter in parameters.iter_mut() {
        let target = parameter
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| document.pointer(pointer));
        if let Some(found) = target.filter(|p| p.get("in").and_then(Value::as_str) == Some("path"))
        {
            *parameter = found.clone();
        }
    }
}

/// Renames the path parameters of `operation` from the names in `from` to those at the same
/// positions in `to` (two paths of the same shape).
fn rename_path_parameters(operation: &mut Operation, from: &str, to: &str) {
    use openapiv3::Parameter;
    let names = |path: &str| -> Vec<String> {
        parts(path)
            .into_iter()
            .filter_map(|p| match p {
                Part::Param(name) => Some(name),
                Part::Static(_) => None,
            })
            .collect()
    };
    let renames: HashMap<String, String> = names(from).into_iter().zip(names(to)).collect();
    // Path parameters were inlined; references left are query, header or cookie ones.
    for parameter in &mut operation.parameters {
        if let ReferenceOr::Item(Parameter::Path { parameter_data, .. }) = parameter {
            if let Some(new) = renames.get(&parameter_data.name) {
                parameter_data.name = new.clone();
            }
        }
    }
}

/// One segment of a fragment path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Static(String),
    Param(String),
}

fn parts(path: &str) -> Vec<Part> {
    let inner = path.trim_start_matches('/');
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return Vec::new();
    }
    inner
        .split('/')
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => Part::Param(name.to_string()),
                None => Part::Static(s.to_string()),
            },
        )
        .collect()
}

/// The public paths under which `fragment_path` (a path as the service sees it) is reachable
/// with `method`, each with the route that takes it, among `routes` (the service's). A
/// candidate is kept only when the real router, given sample values, picks that very route and
/// sends the fragment's path upstream.
pub fn public_paths(
    config: &Config,
    router: &Router,
    routes: &[Arc<Route>],
    fragment_path: &str,
    method: &str,
) -> Vec<(String, Arc<Route>)> {
    let fragment = parts(fragment_path);
    let trailing_slash = fragment_path.len() > 1 && fragment_path.ends_with('/');
    let method = method_of(method);
    let mut found = Vec::new();
    for route in routes {
        let Some(public) = map_back(route, &fragment, trailing_slash) else {
            continue;
        };
        let samples = sample_values(&public);
        let sample_public = fill(&public, &samples);
        let sample_upstream = fill(fragment_path, &samples);
        let (Ok(request), Ok(upstream)) = (
            path::normalize(&sample_public),
            path::normalize(&sample_upstream),
        ) else {
            continue;
        };
        if answered_by_gateway(config, &request) {
            continue;
        }
        if let Lookup::Found(matched) = router.lookup(&request, &method) {
            if matched.route.index == route.index && matched.upstream_path() == upstream {
                found.push((public, route.clone()));
            }
        }
    }
    found
}

/// The public path of `fragment` through `route`, if the route's upstream path is a prefix of it.
fn map_back(route: &Route, fragment: &[Part], trailing_slash: bool) -> Option<String> {
    let pattern = route.pattern.segments();
    let template = route
        .upstream_path
        .as_ref()
        .map_or(pattern, |t| t.segments());
    if template.len() > fragment.len() {
        return None;
    }
    let mut bound: HashMap<&str, &Part> = HashMap::new();
    for (segment, part) in template.iter().zip(fragment) {
        match (segment, part) {
            (Segment::Static(a), Part::Static(b)) if a == b => {}
            (Segment::Param(name), part) => {
                if bound
                    .insert(name.as_str(), part)
                    .is_some_and(|earlier| earlier != part)
                {
                    return None;
                }
            }
            _ => return None,
        }
    }
    let mut public = String::new();
    for segment in pattern {
        public.push('/');
        match segment {
            Segment::Static(text) => public.push_str(text),
            Segment::Param(name) => match bound.get(name.as_str()) {
                Some(Part::Static(value)) => public.push_str(value),
                Some(Part::Param(fragment_name)) => {
                    public.push_str(&format!("{{{fragment_name}}}"))
                }
                None => {
                    // A parameter the route captures and does not forward: its name must not be
                    // one the fragment uses for another segment.
                    if fragment.contains(&Part::Param(name.clone())) {
                        return None;
                    }
                    public.push_str(&format!("{{{name}}}"));
                }
            },
        }
    }
    for part in &fragment[template.len()..] {
        public.push('/');
        match part {
            Part::Static(text) => public.push_str(text),
            Part::Param(name) => public.push_str(&format!("{{{name}}}")),
        }
    }
    if trailing_slash || public.is_empty() {
        public.push('/');
    }
    Some(public)
}

/// A distinct sample value for each parameter, so swapped parameters are noticed.
fn sample_values(path: &str) -> BTreeMap<String, String> {
    let mut samples = BTreeMap::new();
    for part in parts(path) {
        if let Part::Param(name) = part {
            let next = format!("{}", 101 + samples.len());
            samples.entry(name).or_insert(next);
        }
    }
    samples
}

fn fill(path: &str, samples: &BTreeMap<String, String>) -> String {
    let mut out = path.to_string();
    for (name, value) in samples {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

fn security_schemes() -> indexmap::IndexMap<String, ReferenceOr<SecurityScheme>> {
    let schemes = json!({
        "bearerAuth": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "An access token from POST /api/auth/token/"
        },
        "apiKeyAuth": {
            "type": "apiKey", "in": "header", "name": "X-API-Key",
            "description": "A service integration's API key (also accepted as `Authorization: Api-Key <key>`)"
        }
    });
    serde_json::from_value(schemes).unwrap_or_default()
}

fn sort_components(components: &mut Components) {
    components.schemas.sort_keys();
    components.responses.sort_keys();
    components.parameters.sort_keys();
    components.examples.sort_keys();
    components.request_bodies.sort_keys();
    components.headers.sort_keys();
    components.links.sort_keys();
    components.callbacks.sort_keys();
}

/// The path items of `paths` (a merged document holds no references there).
fn path_items(
    paths: &mut IndexMap<String, ReferenceOr<PathItem>>,
) -> impl Iterator<Item = &mut PathItem> {
    paths.values_mut().filter_map(|item| match item {
        ReferenceOr::Item(item) => Some(item),
        ReferenceOr::Reference { .. } => None,
    })
}

fn path_item(operations: Vec<(&'static str, Option<Operation>)>) -> PathItem {
    let mut item = PathItem::default();
    for (method, operation) in operations {
        *operation_slot(&mut item, method) = operation;
    }
    item
}

/// `operationId`s are unique: a repeated one gets its service's prefix, then a number.
fn unique_operation_ids<'a>(items: impl Iterator<Item = &'a mut PathItem>) {
    let mut seen = BTreeSet::new();
    for item in items {
        for method in METHODS {
            let Some(operation) = operation_slot(item, method).as_mut() else {
                continue;
            };
            let Some(id) = operation.operation_id.clone() else {
                continue;
            };
            let tag = operation.tags.first().cloned().unwrap_or_default();
            let mut unique = id.clone();
            let mut n = 1;
            while seen.contains(&unique) {
                unique = if n == 1 {
                    format!("{tag}_{id}")
                } else {
                    format!("{tag}_{id}_{n}")
                };
                n += 1;
            }
            seen.insert(unique.clone());
            operation.operation_id = Some(unique);
        }
    }
}

/// One tag per service, described by its fragment's title, the gateway's first.
fn tags(config: &Config, prepared: &[Prepared]) -> Vec<Tag> {
    let mut tags = vec![Tag {
        name: GATEWAY_TAG.to_string(),
        description: Some(
            "The gateway's own endpoints: tokens, keys, usage statistics".to_string(),
        ),
        ..Tag::default()
    }];
    let info_of: HashMap<&str, &Value> = prepared
        .iter()
        .filter(|p| p.owner != Owner::Gateway)
        .filter_map(|p| Some((p.tag.as_str(), p.document.get("info")?)))
        .collect();
    for service in &config.services {
        let info = info_of.get(service.name.as_str()).copied();
        let title = info.and_then(|i| i.get("title")).and_then(Value::as_str);
        let description = info
            .and_then(|i| i.get("description"))
            .and_then(Value::as_str);
        let text = match (title, description) {
            (Some(t), Some(d)) => format!("{t}: {d}"),
            (Some(t), None) => t.to_string(),
            (None, _) => format!("The {} service (no fragment)", service.name),
        };
        tags.push(Tag {
            name: service.name.clone(),
            description: Some(text),
            ..Tag::default()
        });
    }
    tags
}

#[cfg(test)]
mod tests;
