//! The errors the gateway answers itself, and the one JSON body they all share (written by
//! `respond`):
//! `{"detail": "...", "code": "...", "request_id": "..."}`.

use bytes::Bytes;
use serde::Serialize;

use crate::router::MethodSet;

/// A response the gateway makes instead of forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayError {
    BadRequest(String),
    /// 401 with a `WWW-Authenticate` challenge.
    Unauthorized {
        detail: &'static str,
        code: &'static str,
        challenge: String,
    },
    PermissionDenied,
    /// 403: a preflight for an origin, method or request field that CORS does not allow.
    CorsRejected(String),
    /// 400: an upgrade to WebSocket on a route without `websocket: true`.
    WebSocketNotAllowed,
    NotFound,
    MethodNotAllowed {
        method: String,
        allowed: MethodSet,
    },
    PayloadTooLarge {
        limit: u64,
    },
    /// None of the representations the request accepts is served; the text names those that are.
    NotAcceptable(String),
    /// The request head did not arrive within `client.header_timeout`.
    RequestTimeout,
    /// The request line is over `client.max_request_line`.
    UriTooLong {
        limit: usize,
    },
    /// The head is over `client.max_header_size` or has more than `client.max_headers` fields.
    HeaderFieldsTooLarge(String),
    /// A transfer coding other than `chunked`: the body's framing cannot be trusted.
    NotImplemented(String),
    /// A request line with another major version than HTTP/1.
    VersionNotSupported,
    BadGateway,
    NoHealthyUpstream {
        service: String,
    },
    AuthStoreUnavailable,
    /// A store the gateway needs for its own answer (usage statistics) is down.
    StoreUnavailable,
    /// 429 with `Retry-After`.
    Throttled {
        retry_after: u64,
    },
    /// The shared rate limiter is down and `on_store_error: deny`.
    RateLimiterUnavailable,
    /// 503 with `Retry-After`: as many password checks are pending as `jwt.max_pending_logins`
    /// allows. Never a 401: the password was not looked at.
    LoginBusy {
        retry_after: u64,
    },
    UpstreamTimeout,
    /// A bug: the invariant named broke. The client sees a generic 500; the error line names it.
    Internal(&'static str),
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::BadRequest(_) => 400,
            GatewayError::Unauthorized { .. } => 401,
            GatewayError::PermissionDenied | GatewayError::CorsRejected(_) => 403,
            GatewayError::WebSocketNotAllowed => 400,
            GatewayError::NotFound => 404,
            GatewayError::MethodNotAllowed { .. } => 405,
            GatewayError::PayloadTooLarge { .. } => 413,
            GatewayError::NotAcceptable(_) => 406,
            GatewayError::RequestTimeout => 408,
            GatewayError::UriTooLong { .. } => 414,
            GatewayError::HeaderFieldsTooLarge(_) => 431,
            GatewayError::Internal(_) => 500,
            GatewayError::NotImplemented(_) => 501,
            GatewayError::VersionNotSupported => 505,
            GatewayError::BadGateway => 502,
            GatewayError::Throttled { .. } => 429,
            GatewayError::NoHealthyUpstream { .. }
            | GatewayError::AuthStoreUnavailable
            | GatewayError::StoreUnavailable
            | GatewayError::RateLimiterUnavailable
            | GatewayError::LoginBusy { .. } => 503,
            GatewayError::UpstreamTimeout => 504,
        }
    }

    /// The invariant a 500 says broke, for the error line.
    pub fn invariant(&self) -> Option<&'static str> {
        match self {
            GatewayError::Internal(invariant) => Some(invariant),
            _ => None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::Unauthorized { code, .. } => code,
            GatewayError::PermissionDenied => "permission_denied",
            GatewayError::CorsRejected(_) => "cors_rejected",
            GatewayError::WebSocketNotAllowed => "websocket_not_allowed",
            GatewayError::NotFound => "not_found",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::PayloadTooLarge { .. } => "payload_too_large",
            GatewayError::NotAcceptable(_) => "not_acceptable",
            GatewayError::RequestTimeout => "request_timeout",
            GatewayError::UriTooLong { .. } => "uri_too_long",
            GatewayError::HeaderFieldsTooLarge(_) => "request_header_fields_too_large",
            GatewayError::NotImplemented(_) => "not_implemented",
            GatewayError::VersionNotSupported => "http_version_not_supported",
            GatewayError::Internal(_) => "internal_error",
            GatewayError::BadGateway => "bad_gateway",
            GatewayError::NoHealthyUpstream { .. } => "service_unavailable",
            GatewayError::AuthStoreUnavailable => "auth_store_unavailable",
            GatewayError::StoreUnavailable => "store_unavailable",
            GatewayError::Throttled { .. } => "throttled",
            GatewayError::RateLimiterUnavailable => "rate_limiter_unavailable",
            GatewayError::LoginBusy { .. } => "login_busy",
            GatewayError::UpstreamTimeout => "upstream_timeout",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            GatewayError::BadRequest(detail) => detail.clone(),
            GatewayError::Unauthorized { detail, .. } => (*detail).to_string(),
            GatewayError::PermissionDenied => {
                "You do not have permission to perform this action.".to_string()
            }
            GatewayError::CorsRejected(detail) => detail.clone(),
            GatewayError::WebSocketNotAllowed => {
                "This route does not take WebSocket connections.".to_string()
            }
            GatewayError::NotFound => "Not found.".to_string(),
            GatewayError::MethodNotAllowed { method, .. } => {
                format!("Method \"{method}\" not allowed.")
            }
            GatewayError::PayloadTooLarge { limit } => {
                format!("Request body is larger than this route's limit of {limit} bytes.")
            }
            GatewayError::RequestTimeout => {
                "The request head was not received in time.".to_string()
            }
            GatewayError::UriTooLong { limit } => {
                format!("The request line is longer than {limit} bytes.")
            }
            GatewayError::HeaderFieldsTooLarge(detail)
            | GatewayError::NotImplemented(detail)
            | GatewayError::NotAcceptable(detail) => detail.clone(),
            GatewayError::VersionNotSupported => {
                "Only HTTP/1.0 and HTTP/1.1 requests are served here.".to_string()
            }
            GatewayError::Internal(_) => "The gateway failed to handle the request.".to_string(),
            GatewayError::BadGateway => "The upstream service could not be reached.".to_string(),
            GatewayError::NoHealthyUpstream { service } => {
                format!("Service \"{service}\" has no healthy upstream.")
            }
            GatewayError::AuthStoreUnavailable => {
                "The authentication store is unavailable; try again shortly.".to_string()
            }
            GatewayError::StoreUnavailable => {
                "The store is unavailable; try again shortly.".to_string()
            }
            GatewayError::Throttled { retry_after } => {
                format!("Request was throttled. Expected available in {retry_after} seconds.")
            }
            GatewayError::RateLimiterUnavailable => {
                "The rate limiter is unavailable; try again shortly.".to_string()
            }
            GatewayError::LoginBusy { retry_after } => format!(
                "Too many logins are being checked. Expected available in {retry_after} seconds."
            ),
            GatewayError::UpstreamTimeout => {
                "The upstream service did not answer in time.".to_string()
            }
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    detail: &'a str,
    code: &'a str,
    request_id: &'a str,
}

/// The JSON error body.
pub fn error_body(detail: &str, code: &str, request_id: &str) -> Bytes {
    let body = ErrorBody {
        detail,
        code,
        request_id,
    };
    // Serialising three strings cannot fail; an empty object is still valid JSON if it did.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec()))
}
