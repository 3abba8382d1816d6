//! `redirect_http: true`: the plain listener sends every request to the same URL on https.

use http::header::{self, HeaderValue};
use pingora::http::RequestHeader;

use crate::config::Config;

/// Where a plain-HTTP request goes on https: the authority of an `https://` `public_url` (the
/// URL clients use, whatever port the TLS listener binds behind a load balancer), else the
/// request's host on the TLS listener's port (left out when 443); then the same path and query.
pub fn https_location(request: &RequestHeader, config: &Config) -> Option<HeaderValue> {
    let tls = config.tls.as_ref()?;
    let public = config
        .public_url
        .strip_prefix("https://")
        .map(|rest| rest.split('/').next().unwrap_or(rest).to_string());
    let authority = match public {
        Some(authority) => authority,
        None => {
            let host = request
                .headers
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .or_else(|| request.uri.host())?;
            let name = match host.strip_prefix('[') {
                Some(rest) => &host[..rest.find(']')? + 2],
                None => host.split(':').next().unwrap_or(host),
            };
            match tls.listen.addr.port() {
                443 => name.to_string(),
                port => format!("{name}:{port}"),
            }
        }
    };
    let target = request
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str());
    HeaderValue::from_str(&format!("https://{authority}{target}")).ok()
}
