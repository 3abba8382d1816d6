//! `redirect_http: true`: the plain listener sends every request to the same URL on https.

use http::header::{self, HeaderValue};
use pingora::http::RequestHeader;

use crate::config::Config;

/// Where a plain-HTTP request goes on https: the authority of an `https://` `public_url` (the
/// URL clients use, whatever port the TLS listener binds behind a load balancer), else the
/// request's host (or, without one, `default_name`: the default certificate's first host name) on the TLS
/// listener's port (left out when 443); then the same path and query.
pub fn https_location(
    request: &RequestHeader,
    config: &Config,
    default_name: Option<&str>,
) -> Option<HeaderValue> {
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
                .or_else(|| request.uri.host())
                .or(default_name)?;
            on_port(host, tls.listen.addr.port())?
        }
    };
    let target = request
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str());
    HeaderValue::from_str(&format!("https://{authority}{target}")).ok()
}

/// `host` (a name or an IP literal, with or without a port) on `port`, left out when 443.
fn on_port(host: &str, port: u16) -> Option<String> {
    let name = match host.strip_prefix('[') {
        Some(rest) => &host[..rest.find(']')? + 2],
        None => host.split(':').next().unwrap_or(host),
    };
    Some(match port {
        443 => name.to_string(),
        port => format!("{name}:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::on_port;

    #[test]
    fn the_host_keeps_its_name_and_takes_the_tls_port() {
        assert_eq!(on_port("api.test", 443).as_deref(), Some("api.test"));
        assert_eq!(on_port("api.test:80", 443).as_deref(), Some("api.test"));
        assert_eq!(
            on_port("api.test:80", 8443).as_deref(),
            Some("api.test:8443")
        );
        assert_eq!(on_port("[::1]:80", 8443).as_deref(), Some("[::1]:8443"));
        assert_eq!(on_port("[::1]", 443).as_deref(), Some("[::1]"));
        assert_eq!(on_port("[::1", 443), None);
    }
}
