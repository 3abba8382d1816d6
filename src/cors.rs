//! Cross-origin requests from browsers: the policy a route answers with (gateway.yaml's `cors:`,
//! or the route's own), preflights answered by the gateway itself, and the fields every answer
//! to an allowed origin carries, set by `respond::stamp` so that the gateway's own errors get
//! them too.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;
use pingora::http::RequestHeader;

use crate::errors::GatewayError;
use crate::router::MethodSet;

/// A `cors:` section, ready to answer with.
#[derive(Debug)]
pub struct CorsPolicy {
    pub origins: Vec<OriginPattern>,
    /// `allow_methods`; `None`: the methods of the route (or gateway endpoint) asked about.
    pub methods: Option<MethodSet>,
    /// `allow_headers`, lower-case; `*` allows whatever a preflight asks for.
    pub allow_headers: Vec<String>,
    /// `expose_headers`, joined for the field; `None` when empty.
    pub expose_headers: Option<HeaderValue>,
    pub credentials: bool,
    pub max_age: Duration,
}

/// One entry of `allow_origins`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: every origin.
    Any,
    /// An origin as browsers write it, lower-case: `https://app.hackitech.example`.
    Exact(String),
    /// `https://*.hackitech.example`: one label or more in place of the `*`.
    Subdomains {
        /// `https://`
        scheme: String,
        /// `.hackitech.example`, with the port if one is written.
        suffix: String,
    },
}

/// Request fields a browser may list in a preflight that are allowed without being named.
const SAFELISTED: &[&str] = &["accept", "accept-language", "content-language"];

/// The upstream's own CORS fields, replaced by the gateway's on routes where CORS is on.
static UPSTREAM_FIELDS: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

impl OriginPattern {
    /// Reads one `allow_origins` entry; the error is what is wrong and what to write instead.
    pub fn parse(text: &str) -> Result<OriginPattern, (String, String)> {
        if text == "*" {
            return Ok(OriginPattern::Any);
        }
        let lower = text.to_ascii_lowercase();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return Err((
                format!("`{text}` has no scheme: an origin is scheme, host and port"),
                format!("write `https://{}`", text.trim_end_matches('/')),
            ));
        };
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
            && scheme
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !scheme_ok {
            return Err((
                format!("`{text}` has no valid scheme"),
                "write an origin such as https://app.hackitech.example".to_string(),
            ));
        }
        let bare = format!(
            "{scheme}://{}",
            rest.split(['/', '?', '#']).next().unwrap_or("")
        );
        if rest.ends_with('/') && !rest.trim_end_matches('/').contains(['/', '?', '#']) {
            return Err((
                format!("`{text}` ends with a slash, which an origin never does"),
                format!("write `{bare}`"),
            ));
        }
        if rest.contains(['/', '?', '#']) {
            return Err((
                format!("`{text}` has a path: an origin is scheme, host and port only"),
                format!("write `{bare}`"),
            ));
        }
        let (wildcard, authority) = match rest.strip_prefix("*.") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let valid = !authority.is_empty()
            && !authority.contains(['*', '@'])
            && authority.parse::<http::uri::Authority>().is_ok();
        if !valid {
            return Err((
                format!("`{text}` is not an origin"),
                "write scheme, host and port, such as https://app.hackitech.example; `*.` may only begin the host, as in https://*.hackitech.example".to_string(),
            ));
        }
        Ok(if wildcard {
            OriginPattern::Subdomains {
                scheme: format!("{scheme}://"),
                suffix: format!(".{authority}"),
            }
        } else {
            OriginPattern::Exact(lower)
        })
    }

    /// Whether an `Origin` field's bytes match; the patterns are ASCII, so bytes that are not
    /// never do.
    fn matches(&self, origin: &[u8]) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(exact) => origin.eq_ignore_ascii_case(exact.as_bytes()),
            OriginPattern::Subdomains { scheme, suffix } => {
                let Some(end) = origin
                    .len()
                    .checked_sub(suffix.len())
                    .filter(|end| *end > scheme.len())
                else {
                    return false;
                };
                let labels = &origin[scheme.len()..end];
                origin[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
                    && origin[end..].eq_ignore_ascii_case(suffix.as_bytes())
                    && !labels.starts_with(b".")
                    && !labels.ends_with(b".")
                    && labels
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.')
            }
        }
    }
}

impl std::fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginPattern::Any => f.write_str("*"),
            OriginPattern::Exact(origin) => f.write_str(origin),
            OriginPattern::Subdomains { scheme, suffix } => write!(f, "{scheme}*{suffix}"),
        }
    }
}

/// The method a preflight asks about: an OPTIONS request with `Origin` and
/// `Access-Control-Request-Method`. Any other request costs one comparison.
pub fn preflight_method(request: &RequestHeader) -> Option<Method> {
    if request.method != Method::OPTIONS || !request.headers.contains_key(header::ORIGIN) {
        return None;
    }
    let asked = request.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(asked.as_bytes()).ok()
}

impl CorsPolicy {
    fn any_origin(&self) -> bool {
        self.origins.contains(&OriginPattern::Any)
    }

    /// What `Access-Control-Allow-Origin` says to the request's `Origin`, when it is allowed:
    /// `*` for every origin without credentials, else the origin itself.
    pub fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        if self.any_origin() && !self.credentials {
            return Some(HeaderValue::from_static("*"));
        }
        self.origins
            .iter()
            .any(|pattern| pattern.matches(origin.as_bytes()))
            .then(|| origin.clone())
    }

    /// The fields of every answer on a route where CORS is on: an upstream's own CORS fields
    /// removed, then the gateway's for an allowed origin, and `Vary: Origin` unless every origin
    /// gets the same answer.
    pub fn stamp(&self, headers: &mut HeaderMap, allowed: Option<&HeaderValue>) {
        // One look at the names is cheaper than six removals that find nothing.
        if headers
            .keys()
            .any(|name| name.as_str().starts_with("access-control-"))
        {
            for name in &UPSTREAM_FIELDS {
                headers.remove(name);
            }
        }
        if let Some(origin) = allowed {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if self.credentials {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if let Some(expose) = &self.expose_headers {
                headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
        if allowed.is_none_or(|origin| origin != "*") {
            add_vary(headers, "origin", HeaderValue::from_static("Origin"));
        }
    }

    /// The answer to a preflight for `requested` on a route (or endpoint) taking `methods`:
    /// the fields of a 204, or why the browser must not send the request. The origin's own
    /// fields are added by [`CorsPolicy::stamp`].
    pub fn preflight(
        &self,
        request: &RequestHeader,
        requested: &Method,
        methods: MethodSet,
        allowed_origin: Option<&HeaderValue>,
    ) -> Result<HeaderMap, GatewayError> {
        if allowed_origin.is_none() {
            let origin = request
                .headers
                .get(header::ORIGIN)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                .unwrap_or_default();
            return Err(rejected(format!(
                "Requests from the origin `{origin}` are not allowed here."
            )));
        }
        let methods = self
            .methods
            .map_or(methods, |own| own.intersection(methods));
        if !methods.contains(requested) {
            return Err(rejected(format!(
                "{requested} is not allowed from other origins here; allowed: {}.",
                methods.allow_header()
            )));
        }
        let asked = request
            .headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .flat_map(|value| value.to_str().unwrap_or("").split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty());
        let mut echoed = Vec::new();
        for name in asked {
            let allowed = self.allow_headers.iter().any(|a| *a == name || a == "*")
                || SAFELISTED.contains(&name.as_str());
            if !allowed {
                return Err(rejected(format!(
                    "The request field `{name}` is not allowed from other origins here; allowed: {}.",
                    self.allow_headers.join(", ")
                )));
            }
            echoed.push(name);
        }
        let mut fields = HeaderMap::with_capacity(8);
        let field = |text: &str| HeaderValue::from_str(text).map_err(|_| INVALID_FIELD);
        fields.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            field(&methods.allow_header())?,
        );
        let headers = if self.allow_headers.iter().any(|a| a == "*") {
            echoed.join(", ")
        } else {
            // A browser lists a safelisted field only when its value is not safe: it must be
            // named in the answer too.
            let safelisted = echoed
                .iter()
                .filter(|name| !self.allow_headers.contains(name))
                .cloned();
            let mut named = self.allow_headers.clone();
            named.extend(safelisted);
            named.join(", ")
        };
        if !headers.is_empty() {
            fields.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, field(&headers)?);
        }
        fields.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(self.max_age.as_secs()),
        );
        add_vary(
            &mut fields,
            "access-control-request-method",
            HeaderValue::from_static(
                "Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        Ok(fields)
    }
}

const INVALID_FIELD: GatewayError = GatewayError::Internal("CORS fields are visible ASCII");

fn rejected(detail: String) -> GatewayError {
    GatewayError::CorsRejected(detail)
}

/// Adds `value` to `Vary` unless a `Vary` field already names `name` (lower-case) or `*`.
fn add_vary(headers: &mut HeaderMap, name: &str, value: HeaderValue) {
    let named = headers.get_all(header::VARY).iter().any(|field| {
        field.to_str().is_ok_and(|text| {
            text.split(',')
                .map(str::trim)
                .any(|item| item == "*" || item.eq_ignore_ascii_case(name))
        })
    });
    if !named {
        headers.append(header::VARY, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> OriginPattern {
        OriginPattern::parse(text).unwrap_or_else(|(message, _)| panic!("{message}"))
    }

    fn refusal(text: &str) -> (String, String) {
        OriginPattern::parse(text).expect_err(text)
    }

    #[test]
    fn origins_are_read_as_browsers_write_them() {
        assert_eq!(
            pattern("https://App.Hackitech.example"),
            OriginPattern::Exact("https://app.hackitech.example".to_string())
        );
        assert_eq!(pattern("*"), OriginPattern::Any);
        assert_eq!(
            pattern("http://localhost:5173"),
            OriginPattern::Exact("http://localhost:5173".to_string())
        );
        assert_eq!(
            pattern("https://*.hackitech.example").to_string(),
            "https://*.hackitech.example"
        );
    }

    #[test]
    fn origins_with_a_path_a_slash_or_no_scheme_are_refused_with_the_fix() {
        let (message, hint) = refusal("https://app.hackitech.example/");
        assert!(message.contains("ends with a slash"), "{message}");
        assert_eq!(hint, "write `https://app.hackitech.example`");
        let (message, hint) = refusal("https://app.hackitech.example/login");
        assert!(message.contains("has a path"), "{message}");
        assert_eq!(hint, "write `https://app.hackitech.example`");
        let (message, hint) = refusal("app.hackitech.example");
        assert!(message.contains("no scheme"), "{message}");
        assert_eq!(hint, "write `https://app.hackitech.example`");
        for bad in [
            "https://",
            "https://a.*.example",
            "https://user@app.example",
            "https://*",
        ] {
            refusal(bad);
        }
    }

    #[test]
    fn a_wildcard_takes_subdomains_of_its_scheme_and_port_only() {
        let wildcard = pattern("https://*.hackitech.example");
        for origin in [
            "https://app.hackitech.example",
            "https://a.b.hackitech.example",
            "HTTPS://App.Hackitech.Example",
        ] {
            assert!(wildcard.matches(origin.as_bytes()), "{origin}");
        }
        for origin in [
            "https://hackitech.example",
            "http://app.hackitech.example",
            "https://app.hackitech.example:8443",
            "https://evil.example/.hackitech.example",
            "https://apphackitech.example",
            "https://.hackitech.example",
            "https://evil.example?.hackitech.example",
        ] {
            assert!(!wildcard.matches(origin.as_bytes()), "{origin}");
        }
    }

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        CorsPolicy {
            origins: origins.iter().map(|o| pattern(o)).collect(),
            methods: None,
            allow_headers: vec!["authorization".to_string(), "content-type".to_string()],
            expose_headers: Some(HeaderValue::from_static("X-Request-Id")),
            credentials,
            max_age: Duration::from_secs(600),
        }
    }

    fn preflight_request(method: &str, headers: Option<&str>) -> RequestHeader {
        let mut request = RequestHeader::build("OPTIONS", b"/api/x", None).expect("head");
        request
            .insert_header("origin", "https://app.example")
            .expect("field");
        request
            .insert_header("access-control-request-method", method)
            .expect("field");
        if let Some(headers) = headers {
            request
                .insert_header("access-control-request-headers", headers)
                .expect("field");
        }
        request
    }

    #[test]
    fn the_origin_itself_is_allowed_and_star_only_without_credentials() {
        let origin = HeaderValue::from_static("https://app.example");
        let listed = policy(&["https://app.example"], true);
        assert_eq!(listed.allow_origin(Some(&origin)), Some(origin.clone()));
        let other = HeaderValue::from_static("https://evil.example");
        assert_eq!(listed.allow_origin(Some(&other)), None);
        assert_eq!(listed.allow_origin(None), None);
        let any = policy(&["*"], false);
        assert_eq!(any.allow_origin(Some(&other)).unwrap(), "*");
    }

    #[test]
    fn stamping_replaces_the_upstreams_fields_and_varies_on_origin() {
        let cors = policy(&["https://app.example"], true);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        let origin = HeaderValue::from_static("https://app.example");
        cors.stamp(&mut headers, Some(&origin));
        let all =
            |headers: &HeaderMap, name| headers.get_all(name).iter().cloned().collect::<Vec<_>>();
        assert_eq!(
            all(&headers, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            [&origin]
        );
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(
            headers[header::ACCESS_CONTROL_EXPOSE_HEADERS],
            "X-Request-Id"
        );
        assert_eq!(all(&headers, header::VARY), ["Accept-Encoding", "Origin"]);
        // Stamped twice (an error after a stamped head), nothing repeats.
        cors.stamp(&mut headers, Some(&origin));
        assert_eq!(all(&headers, header::VARY).len(), 2);

        let mut refused = HeaderMap::new();
        refused.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        cors.stamp(&mut refused, None);
        assert!(!refused.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(refused[header::VARY], "Origin");
    }

    #[test]
    fn a_preflight_is_answered_or_refused_saying_why() {
        let cors = policy(&["https://app.example"], false);
        let origin = HeaderValue::from_static("https://app.example");
        let methods = MethodSet::parse(["GET", "POST"]).expect("methods");
        let request = preflight_request("POST", Some("Authorization, content-type"));
        assert_eq!(preflight_method(&request), Some(Method::POST));
        let fields = cors
            .preflight(&request, &Method::POST, methods, Some(&origin))
            .expect("allowed");
        assert_eq!(
            fields[header::ACCESS_CONTROL_ALLOW_METHODS],
            "GET, HEAD, POST"
        );
        assert_eq!(
            fields[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, content-type"
        );
        assert_eq!(fields[header::ACCESS_CONTROL_MAX_AGE], "600");

        let refused = |request: &RequestHeader, method: &Method, origin| match cors
            .preflight(request, method, methods, origin)
        {
            Err(GatewayError::CorsRejected(detail)) => detail,
            other => panic!("{other:?}"),
        };
        let detail = refused(&request, &Method::POST, None);
        assert!(detail.contains("https://app.example"), "{detail}");
        let detail = refused(&request, &Method::DELETE, Some(&origin));
        assert!(detail.contains("DELETE"), "{detail}");
        let with_accept = preflight_request("GET", Some("accept"));
        let fields = cors
            .preflight(&with_accept, &Method::GET, methods, Some(&origin))
            .expect("a safelisted field is allowed");
        assert_eq!(
            fields[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, content-type, accept"
        );
        let detail = refused(
            &preflight_request("GET", Some("x-debug")),
            &Method::GET,
            Some(&origin),
        );
        assert!(detail.contains("x-debug"), "{detail}");
    }

    #[test]
    fn only_options_with_origin_and_a_method_is_a_preflight() {
        let mut plain = RequestHeader::build("OPTIONS", b"/api/x", None).expect("head");
        assert_eq!(preflight_method(&plain), None);
        plain
            .insert_header("access-control-request-method", "GET")
            .expect("field");
        assert_eq!(preflight_method(&plain), None);
        let mut get = preflight_request("GET", None);
        get.set_method(Method::GET);
        assert_eq!(preflight_method(&get), None);
    }
}
