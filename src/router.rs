//! The route table: path patterns with `{param}` segments, method sets, and matching a normalised
//! request path to the route with the longest matching prefix.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;

use crate::config::Route;

#[cfg(test)]
mod tests;

/// The methods a route accepts, as a bit set over the standard methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodSet(u16);

const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];

impl MethodSet {
    pub const ALL: MethodSet = MethodSet((1 << METHODS.len()) - 1);
    pub const EMPTY: MethodSet = MethodSet(0);

    fn bit(method: &Method) -> u16 {
        METHODS
            .iter()
            .position(|m| m == method)
            .map_or(0, |index| 1 << index)
    }

    /// The set of the methods named; GET brings HEAD with it, as HTTP expects.
    /// Returns the first name that is not a standard method as the error.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<MethodSet, &'a str> {
        let mut set = MethodSet::EMPTY;
        for name in names {
            let method = METHODS.iter().find(|m| m.as_str() == name).ok_or(name)?;
            set.0 |= Self::bit(method);
            if *method == Method::GET {
                set.0 |= Self::bit(&Method::HEAD);
            }
        }
        Ok(set)
    }

    pub fn contains(self, method: &Method) -> bool {
        self.0 & Self::bit(method) != 0
    }

    pub fn intersection(self, other: MethodSet) -> MethodSet {
        MethodSet(self.0 & other.0)
    }

    pub fn union(self, other: MethodSet) -> MethodSet {
        MethodSet(self.0 | other.0)
    }

    /// The value of an `Allow` header: `GET, HEAD, POST`.
    pub fn allow_header(self) -> String {
        self.names().collect::<Vec<_>>().join(", ")
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        METHODS
            .iter()
            .filter(move |m| self.contains(m))
            .map(Method::as_str)
    }
}

/// One segment of a route path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Static(String),
    Param(String),
}

/// A route path such as `/api/users/{id}/courses/`, matched as a prefix on segment boundaries.
#[derive(Clone, Debug)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
}

/// Why a route path or upstream path cannot be used, and what to write instead.
#[derive(Debug, PartialEq, Eq)]
pub struct PatternError {
    pub message: String,
    pub hint: String,
}

fn pattern_error(message: impl Into<String>, hint: impl Into<String>) -> PatternError {
    PatternError {
        message: message.into(),
        hint: hint.into(),
    }
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<PathPattern, PatternError> {
        let segments = parse_segments(text)?;
        let mut seen: Vec<&str> = Vec::new();
        for segment in &segments {
            if let Segment::Param(name) = segment {
                if seen.contains(&name.as_str()) {
                    return Err(pattern_error(
                        format!("parameter `{{{name}}}` appears twice in `{text}`"),
                        "give each parameter its own name",
                    ));
                }
                seen.push(name);
            }
        }
        Ok(PathPattern {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Two patterns with the same shape match exactly the same requests.
    pub fn same_shape(&self, other: &PathPattern) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (Segment::Static(a), Segment::Static(b)) => a == b,
                    (Segment::Param(_), Segment::Param(_)) => true,
                    _ => false,
                })
    }

    fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Param(p) if p == name))
    }
}

/// An `upstream_path` such as `/users/{id}/`: the matched prefix is replaced by it.
#[derive(Clone, Debug)]
pub struct PathTemplate {
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// Parses `text`, whose parameters must all be captured by `pattern`.
    pub fn parse(text: &str, pattern: &PathPattern) -> Result<PathTemplate, PatternError> {
        let segments = parse_segments(text)?;
        for segment in &segments {
            if let Segment::Param(name) = segment {
                if !pattern.has_param(name) {
                    return Err(pattern_error(
                        format!(
                            "`{{{name}}}` is not a parameter of the route path `{}`",
                            pattern.as_str()
                        ),
                        "use only parameters that the route's `path` defines",
                    ));
                }
            }
        }
        Ok(PathTemplate { segments })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
}

/// Splits and checks a pattern: absolute, normal form, parameters as whole segments.
fn parse_segments(text: &str) -> Result<Vec<Segment>, PatternError> {
    let Some(rest) = text.strip_prefix('/') else {
        return Err(pattern_error(
            format!("`{text}` does not start with /"),
            "write an absolute path such as /api/courses/",
        ));
    };
    if text.contains(['?', '#']) {
        return Err(pattern_error(
            format!("`{text}` contains a query or fragment"),
            "write only the path; query strings are forwarded as they come",
        ));
    }
    let trimmed = rest.strip_suffix('/').unwrap_or(rest);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let mut segments = Vec::new();
    for segment in trimmed.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            let normal = crate::path::normalize(text).map(|p| p.into_owned());
            return Err(pattern_error(
                format!("`{text}` is not in normal form, and normalised requests never match it"),
                match normal {
                    Ok(normal) => format!("write {normal}"),
                    Err(_) => "remove empty, `.` and `..` segments".to_string(),
                },
            ));
        }
        if let Some(inner) = segment.strip_prefix('{') {
            let Some(name) = inner.strip_suffix('}') else {
                return Err(bad_param(segment));
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(bad_param(segment));
            }
            segments.push(Segment::Param(name.to_string()));
        } else if segment.contains(['{', '}']) {
            return Err(bad_param(segment));
        } else {
            if crate::path::normalize(&format!("/{segment}")).map(|p| p.len())
                != Ok(segment.len() + 1)
            {
                return Err(pattern_error(
                    format!("segment `{segment}` is not in normal form"),
                    "write unreserved characters (letters, digits, -._~) unencoded and other percent-encodings in upper case",
                ));
            }
            segments.push(Segment::Static(segment.to_string()));
        }
    }
    Ok(segments)
}

fn bad_param(segment: &str) -> PatternError {
    pattern_error(
        format!("`{segment}` is not a valid parameter segment"),
        "a parameter is a whole segment such as {id} or {course_id}: letters, digits and _",
    )
}

/// The result of looking a request up in the table.
pub enum Lookup<'a> {
    Found(RouteMatch<'a>),
    /// Some route has this path but none accepts this method: the methods they accept, and
    /// the most specific of them (whose CORS policy answers).
    MethodNotAllowed(MethodSet, &'a Arc<Route>),
    NotFound,
}

/// A matched route and what the match captured.
pub struct RouteMatch<'a> {
    pub route: &'a Arc<Route>,
    path: &'a str,
}

impl RouteMatch<'_> {
    /// The path to send upstream: the route's `upstream_path` in place of the matched prefix,
    /// with parameters filled in, or the request path unchanged when there is none.
    pub fn upstream_path(&self) -> String {
        let Some(template) = &self.route.upstream_path else {
            return self.path.to_string();
        };
        let pattern = self.route.pattern.segments();
        let captured: Vec<&str> = self.path[1..].split('/').take(pattern.len()).collect();
        // Past the matched segments and the slashes between them; "/" matches nothing.
        let matched_len = if captured.is_empty() {
            0
        } else {
            captured.iter().map(|s| s.len()).sum::<usize>() + captured.len()
        };
        let rest = self.path.get(matched_len..).unwrap_or("");
        let mut out = String::with_capacity(self.path.len() + 16);
        for segment in &template.segments {
            out.push('/');
            match segment {
                Segment::Static(text) => out.push_str(text),
                Segment::Param(name) => {
                    let index = pattern
                        .iter()
                        .position(|s| matches!(s, Segment::Param(p) if p == name));
                    out.push_str(index.and_then(|i| captured.get(i)).unwrap_or(&""));
                }
            }
        }
        out.push_str(rest);
        if out.is_empty() {
            out.push('/');
        }
        out
    }
}

/// A segment trie over all routes. Static children are tried before the parameter child, so
/// at equal depth the more literal route wins. They are kept in a B-tree: a few comparisons of
/// short segments cost less than hashing them.
#[derive(Default)]
struct Node {
    routes: Vec<Arc<Route>>,
    statics: BTreeMap<String, Node>,
    param: Option<Box<Node>>,
}

/// The compiled route table.
pub struct Router {
    root: Node,
}

impl Router {
    pub fn new(routes: &[Arc<Route>]) -> Router {
        let mut root = Node::default();
        for route in routes {
            let mut node = &mut root;
            for segment in route.pattern.segments() {
                node = match segment {
                    Segment::Static(text) => node.statics.entry(text.clone()).or_default(),
                    Segment::Param(_) => node.param.get_or_insert_with(Default::default),
                };
            }
            node.routes.push(route.clone());
        }
        Router { root }
    }

    /// Finds the route for a normalised path: the longest matching prefix that accepts the method.
    pub fn lookup<'a>(&'a self, path: &'a str, method: &Method) -> Lookup<'a> {
        let inner = path[1..].strip_suffix('/').unwrap_or(&path[1..]);
        let mut candidates: Vec<(usize, &'a [Arc<Route>])> = Vec::new();
        let segments = (!inner.is_empty()).then(|| inner.split('/'));
        collect(&self.root, segments, 0, &mut candidates);
        // Deeper first; the sort is stable, so at equal depth static-first trie order is kept.
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        let mut allowed = MethodSet::EMPTY;
        for (_, routes) in &candidates {
            if let Some(route) = routes.iter().find(|r| r.methods.contains(method)) {
                return Lookup::Found(RouteMatch { route, path });
            }
            allowed = routes.iter().fold(allowed, |set, r| set.union(r.methods));
        }
        match candidates.first().and_then(|(_, routes)| routes.first()) {
            Some(nearest) => Lookup::MethodNotAllowed(allowed, nearest),
            None => Lookup::NotFound,
        }
    }
}

fn collect<'a>(
    node: &'a Node,
    mut segments: Option<std::str::Split<'a, char>>,
    depth: usize,
    out: &mut Vec<(usize, &'a [Arc<Route>])>,
) {
    if !node.routes.is_empty() {
        out.push((depth, &node.routes));
    }
    let Some(segment) = segments.as_mut().and_then(Iterator::next) else {
        return;
    };
    if let Some(child) = node.statics.get(segment) {
        collect(child, segments.clone(), depth + 1, out);
    }
    if let Some(child) = &node.param {
        collect(child, segments, depth + 1, out);
    }
}
