//! Where a service's operation is exposed: its path mapped back through each of the service's
//! routes to a public path, kept only when the real router, given sample values, picks that
//! route and sends the operation's path upstream. Also the shapes of paths (two paths that
//! differ only in parameter names are one to OpenAPI) and their parameters.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::Method;
use openapiv3::{Operation, ReferenceOr};
use serde_json::Value;

use super::{Drift, Merger, Prepared};
use crate::config::{Config, Route, SpecSource};
use crate::endpoints::Endpoint;
use crate::openapi::convert::escape;
use crate::openapi::{annotate, Problem};
use crate::path;
use crate::router::{Lookup, Router, Segment};

/// A service's routes by the first segment of the path they send upstream: an operation is
/// matched only against the routes that could lead to it, not against all of them.
#[derive(Default)]
pub(super) struct ServiceRoutes {
    by_first: HashMap<String, Vec<Arc<Route>>>,
    /// Routes whose upstream path starts with a parameter, or is `/`: they may lead anywhere.
    anywhere: Vec<Arc<Route>>,
}

impl ServiceRoutes {
    pub(super) fn add(&mut self, route: &Arc<Route>) {
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

impl Merger<'_> {
    pub(super) fn service_operation(
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
    pub(super) fn insert(
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
    pub(super) fn place(
        &mut self,
        public_path: String,
        method: &'static str,
        mut operation: Operation,
    ) -> Result<(), AlreadyDocumented> {
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
            return Err(AlreadyDocumented { method, path });
        }
        operations.push((method, self.document.then_some(operation)));
        Ok(())
    }
}

/// Two operations for one method at one public path: the later one is left out.
#[derive(Debug, thiserror::Error)]
#[error("{} {path} is already documented", .method.to_uppercase())]
pub(super) struct AlreadyDocumented {
    method: &'static str,
    path: String,
}

/// Whether the gateway answers `public_path` itself, so no route's operation is reachable there.
pub(super) fn answered_by_gateway(config: &Config, public_path: &str) -> bool {
    Endpoint::answered_at(public_path, config.auth.tokens.is_some()).is_some()
}

pub(super) fn method_of(name: &str) -> Method {
    Method::from_bytes(name.to_uppercase().as_bytes()).unwrap_or(Method::GET)
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
pub(super) fn inline_path_parameters(operation: &mut Value, document: &Value) {
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
fn public_paths(
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
