//! Loading a service's fragment: a file next to the configuration, or `GET` on the service's
//! schema URL asking for JSON or YAML (drf-spectacular and FastAPI serve one or both).

use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::config::SpecSource;

/// Fragments larger than this are refused rather than read whole.
const MAX_FRAGMENT: usize = 8 * 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT: &str = "application/vnd.oai.openapi+json, application/json;q=0.9, \
                      application/vnd.oai.openapi;q=0.8, application/yaml;q=0.8, */*;q=0.1";

/// Reads or fetches a fragment and parses it as JSON or YAML.
pub async fn load(source: &SpecSource) -> Result<Value, String> {
    let text = match source {
        SpecSource::File(path) => tokio::fs::read(path)
            .await
            .map_err(|e| format!("cannot read the file: {e}"))?,
        SpecSource::Url(uri) => tokio::time::timeout(FETCH_TIMEOUT, fetch(uri))
            .await
            .map_err(|_| format!("no answer within {}s", FETCH_TIMEOUT.as_secs()))??,
    };
    parse(&text)
}

/// JSON first (the cheaper and stricter reading), then YAML, which also covers JSON.
pub fn parse(text: &[u8]) -> Result<Value, String> {
    if let Ok(value @ Value::Object(_)) = serde_json::from_slice::<Value>(text) {
        return Ok(value);
    }
    match serde_yaml::from_slice::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err("the document is not a JSON or YAML object".to_string()),
        Err(e) => Err(format!("neither JSON nor YAML: {e}")),
    }
}

async fn fetch(uri: &http::Uri) -> Result<Vec<u8>, String> {
    let authority = uri.host().ok_or("the URL has no host")?;
    // `[::1]` in a URL is `::1` to the resolver.
    let host = authority.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    let authority = match uri.port_u16() {
        Some(port) => format!("{authority}:{port}"),
        None => authority.to_string(),
    };
    let headers = [
        (http::header::HOST, authority.as_str()),
        (http::header::ACCEPT, ACCEPT),
        (http::header::USER_AGENT, "guichet-openapi"),
    ];
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let response = crate::upstream::get_once(stream, path, &headers).await?;
    if !response.status().is_success() {
        return Err(format!("the service answered {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_FRAGMENT)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok(body.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn json_and_yaml_are_both_read_and_scalars_refused() {
        let json = parse(br#"{"openapi": "3.0.3", "paths": {}}"#).expect("json");
        let yaml = parse(b"openapi: 3.0.3\npaths: {}\n").expect("yaml");
        assert_eq!(json, yaml);
        assert!(parse(b"just text").is_err());
        assert!(parse(b"openapi: [unclosed").is_err());
    }
}
