//! What the gateway adds to each operation from its own configuration: the service's tag, the
//! security the route's `auth` demands, the rate limits (`x-ratelimit`), the required roles and
//! scopes, and the route parameters the service never sees. The answers the gateway can give
//! itself are added once the components are merged (`answers`).

use indexmap::IndexMap;
use openapiv3::{
    Operation, Parameter, ParameterData, ParameterSchemaOrContent, ReferenceOr, Response,
    Responses, SecurityRequirement, StatusCode,
};
use serde_json::{json, Value};

use super::GATEWAY_TAG;
use crate::config::{AuthLevel, Config, Route};
use crate::endpoints::Endpoint;
use crate::router::Segment;

const BEARER: &str = "bearerAuth";
const API_KEY: &str = "apiKeyAuth";

fn requirement(scheme: &str) -> SecurityRequirement {
    IndexMap::from_iter([(scheme.to_string(), Vec::new())])
}

fn security(level: AuthLevel) -> Vec<SecurityRequirement> {
    match level {
        AuthLevel::None => Vec::new(),
        AuthLevel::Jwt => vec![requirement(BEARER)],
        AuthLevel::ApiKey => vec![requirement(API_KEY)],
        AuthLevel::Any => vec![requirement(BEARER), requirement(API_KEY)],
    }
}

/// Adds `status` as a reference to the gateway's response, unless the service documents it.
fn respond(operation: &mut Operation, status: u16, component: &str) {
    operation
        .responses
        .responses
        .entry(StatusCode::Code(status))
        .or_insert_with(|| ReferenceOr::ref_(&format!("#/components/responses/{component}")));
}

/// The roles that pass a route's `roles:`: the least privileged one and every role above it.
fn roles_admitted<'a>(route: &Route, config: &'a Config) -> &'a [String] {
    route
        .min_role
        .and_then(|rank| config.auth.roles.get(rank..))
        .unwrap_or(&[])
}

/// The `auth` of a route as the configuration and the root view write it.
pub fn auth_name(level: AuthLevel) -> &'static str {
    match level {
        AuthLevel::None => "none",
        AuthLevel::Jwt => "jwt",
        AuthLevel::ApiKey => "api_key",
        AuthLevel::Any => "any",
    }
}

/// The route's limits and the consumer tiers that can apply on it, as `x-ratelimit`.
pub(super) fn rate_limits(route: &Route, config: &Config) -> Option<Value> {
    let policy = &config.rate_limits;
    let mut tiers = serde_json::Map::new();
    let anonymous = route.auth == AuthLevel::None;
    let users = matches!(
        route.auth,
        AuthLevel::None | AuthLevel::Jwt | AuthLevel::Any
    );
    let keys = matches!(
        route.auth,
        AuthLevel::None | AuthLevel::ApiKey | AuthLevel::Any
    );
    for (name, applies, rate) in [
        ("anonymous", anonymous, policy.anonymous),
        ("user", users, policy.user),
        ("api_key", keys, policy.api_key),
    ] {
        if let (true, Some(rate)) = (applies, rate) {
            tiers.insert(name.to_string(), json!(rate.to_string()));
        }
    }
    if users {
        let mut roles: Vec<_> = policy.roles.iter().collect();
        roles.sort_by(|a, b| a.0.cmp(b.0));
        for (role, rate) in roles {
            tiers.insert(format!("role:{role}"), json!(rate.to_string()));
        }
    }
    let per_route: Vec<Value> = route
        .rate_limits
        .iter()
        .map(|r| json!(r.to_string()))
        .collect();
    if tiers.is_empty() && per_route.is_empty() {
        return None;
    }
    Some(json!({ "tiers": tiers, "route": per_route }))
}

/// What the gateway enforces on a route, in words, for the operation's description.
fn enforced(route: &Route, config: &Config) -> String {
    let mut text = match route.auth {
        AuthLevel::None => "No credentials needed".to_string(),
        AuthLevel::Jwt => "Requires a user's access token (JWT)".to_string(),
        AuthLevel::ApiKey => "Requires a service's API key".to_string(),
        AuthLevel::Any => "Requires a user's access token (JWT) or a service's API key".to_string(),
    };
    let roles = roles_admitted(route, config);
    if !roles.is_empty() {
        let names: Vec<String> = roles.iter().map(|r| format!("`{r}`")).collect();
        text.push_str(&format!("; role {}", names.join(" or ")));
    }
    if !route.scopes.is_empty() {
        let names: Vec<String> = route.scopes.iter().map(|s| format!("`{s}`")).collect();
        text.push_str(&format!("; API key scopes {}", names.join(" and ")));
    }
    if !route.rate_limits.is_empty() {
        let rates: Vec<String> = route.rate_limits.iter().map(|r| r.to_string()).collect();
        text.push_str(&format!(
            "; at most {} per consumer on this route",
            rates.join(" and ")
        ));
    }
    if let Some(limit) = route.max_body {
        text.push_str(&format!("; bodies up to {limit} bytes"));
    }
    format!("**Through the gateway** (route `{}`): {text}.", route.id)
}

/// Annotates an operation a route exposes at `public_path`.
pub fn route_operation(
    operation: &mut Operation,
    route: &Route,
    public_path: &str,
    config: &Config,
    tag: &str,
) {
    let own_tags = std::mem::replace(&mut operation.tags, vec![tag.to_string()]);
    if !own_tags.is_empty() {
        operation
            .extensions
            .insert("x-service-tags".to_string(), json!(own_tags));
    }
    operation.security = Some(security(route.auth));
    // Calls go through the gateway (the document's `servers`), never to the service itself.
    operation.servers.clear();
    if let Some(limits) = rate_limits(route, config) {
        operation
            .extensions
            .insert("x-ratelimit".to_string(), limits);
    }
    operation
        .extensions
        .insert("x-guichet-route".to_string(), json!(route.id));
    let note = enforced(route, config);
    operation.description = Some(match operation.description.take() {
        Some(own) if !own.is_empty() => format!("{own}\n\n{note}"),
        _ => note,
    });
    add_route_parameters(operation, route, public_path);
}

/// Path parameters of the public path the service's fragment does not declare (a route that
/// captures a segment it does not forward, for one).
fn add_route_parameters(operation: &mut Operation, route: &Route, public_path: &str) {
    let declared: Vec<String> = operation
        .parameters
        .iter()
        .filter_map(|p| match p {
            ReferenceOr::Item(Parameter::Path { parameter_data, .. }) => {
                Some(parameter_data.name.clone())
            }
            _ => None,
        })
        .collect();
    for segment in public_path.split('/') {
        let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
            continue;
        };
        if declared.iter().any(|d| d == name) {
            continue;
        }
        let from_route = route
            .pattern
            .segments()
            .iter()
            .any(|s| matches!(s, Segment::Param(p) if p == name));
        let description = from_route.then(|| format!("Captured by the route `{}`", route.id));
        operation
            .parameters
            .push(ReferenceOr::Item(Parameter::Path {
                parameter_data: ParameterData {
                    name: name.to_string(),
                    description,
                    required: true,
                    deprecated: None,
                    format: ParameterSchemaOrContent::Schema(ReferenceOr::Item(string_schema())),
                    example: None,
                    examples: IndexMap::new(),
                    explode: None,
                    extensions: IndexMap::new(),
                },
                style: Default::default(),
            }));
    }
}

fn string_schema() -> openapiv3::Schema {
    serde_json::from_value(json!({"type": "string"})).unwrap_or_else(|_| openapiv3::Schema {
        schema_data: Default::default(),
        schema_kind: openapiv3::SchemaKind::Any(Default::default()),
    })
}

/// The security of the gateway's own endpoints: the token endpoints are public, the usage
/// report takes an admin's token or key.
pub fn gateway_endpoint(operation: &mut Operation, public_path: &str, config: &Config) {
    operation.tags = vec![GATEWAY_TAG.to_string()];
    if Endpoint::at(public_path) == Some(Endpoint::Usage) {
        operation.security = Some(security(AuthLevel::Any));
        respond(operation, 401, "Unauthorized");
        respond(operation, 403, "PermissionDenied");
        let admin = config.auth.roles.last().map_or("admin", String::as_str);
        let note =
            format!("**Through the gateway**: requires the `{admin}` role (JWT or API key).");
        operation.description = Some(match operation.description.take() {
            Some(own) => format!("{own}\n\n{note}"),
            None => note,
        });
    } else {
        operation.security = Some(Vec::new());
    }
}

/// The operation shown for a route method that no fragment documents.
pub fn placeholder(route: &Route, method: &str, service: &str) -> Operation {
    let responses = Responses {
        default: Some(ReferenceOr::Item(Response {
            description: format!("Whatever the {service} service answers"),
            ..Response::default()
        })),
        ..Responses::default()
    };
    let mut operation = Operation {
        summary: Some(format!(
            "{} {} (not documented by the service)",
            method.to_uppercase(),
            route.pattern.as_str()
        )),
        operation_id: Some(format!(
            "{}_{method}",
            route.id.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        )),
        responses,
        ..Operation::default()
    };
    operation
        .extensions
        .insert("x-guichet-undocumented".to_string(), json!(true));
    operation
}
