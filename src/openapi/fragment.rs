//! Loading a service's fragment: a file next to the configuration, or `GET` on the service's
//! schema URL asking for JSON or YAML (drf-spectacular and FastAPI serve one or both). Both are
//! bounded in size and nesting, so a fragment cannot stall `check` or the docs refresh.

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::config::source::{read_bounded, ReadError};
use crate::config::yaml::{self, Limits, SyntaxError};
use crate::config::SpecSource;
use crate::upstream::GetError;

/// Fragments larger than this are refused rather than read whole.
const MAX_FRAGMENT: usize = 8 * 1024 * 1024;
/// Nesting as deep as serde_json allows (128), and aliases as generous as for configuration.
const YAML_LIMITS: Limits = Limits {
    depth: 128,
    copies: yaml::CONFIG.copies,
};
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT: &str = "application/vnd.oai.openapi+json, application/json;q=0.9, \
                      application/vnd.oai.openapi;q=0.8, application/yaml;q=0.8, */*;q=0.1";

/// Why a fragment was not loaded. Its source (the file or URL) is told beside it, in the log
/// line, the docs status or `check`'s problem.
#[derive(Debug, thiserror::Error)]
pub enum FragmentError {
    #[error("{0}")]
    Read(#[source] ReadError),
    /// The thread that reads the file panicked or was cancelled.
    #[error("reading the file: {0}")]
    Reader(#[source] tokio::task::JoinError),
    #[error("the document is not a JSON or YAML object")]
    NotAnObject,
    /// Where the YAML reading stopped, and why (the text is the whole story: no source).
    #[error("neither JSON nor YAML: {0}")]
    Syntax(SyntaxError),
    #[error("the URL has no host")]
    NoHost,
    #[error("connect to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Get(#[from] GetError),
    #[error("the service answered {0}")]
    Status(http::StatusCode),
    #[error("reading the body: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within {}s", FETCH_TIMEOUT.as_secs())]
    Timeout,
}

/// Reads or fetches a fragment and parses it as JSON or YAML.
pub async fn load(source: &SpecSource) -> Result<Value, FragmentError> {
    match source {
        SpecSource::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_file(&path))
                .await
                .map_err(FragmentError::Reader)?
        }
        SpecSource::Url(uri) => {
            let text = tokio::time::timeout(FETCH_TIMEOUT, fetch(uri))
                .await
                .map_err(|_| FragmentError::Timeout)??;
            parse(&text)
        }
    }
}

/// Reads and parses a fragment file.
pub fn read_file(path: &Path) -> Result<Value, FragmentError> {
    let text = read_bounded(path, MAX_FRAGMENT as u64).map_err(FragmentError::Read)?;
    parse(&text)
}

/// JSON first (the cheaper and stricter reading, at most 128 levels deep), then YAML, which
/// also covers JSON, within `YAML_LIMITS`.
pub fn parse(text: &[u8]) -> Result<Value, FragmentError> {
    if let Ok(value @ Value::Object(_)) = serde_json::from_slice::<Value>(text) {
        return Ok(value);
    }
    match yaml::to_json(text, YAML_LIMITS) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(FragmentError::NotAnObject),
        Err(e) => Err(FragmentError::Syntax(e)),
    }
}

async fn fetch(uri: &http::Uri) -> Result<Vec<u8>, FragmentError> {
    let authority = uri.host().ok_or(FragmentError::NoHost)?;
    // `[::1]` in a URL is `::1` to the resolver.
    let host = authority.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let connected = TcpStream::connect((host, port)).await;
    let stream = connected.map_err(|source| FragmentError::Connect {
        host: host.to_string(),
        port,
        source,
    })?;
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
        return Err(FragmentError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_FRAGMENT)
        .collect()
        .await
        .map_err(FragmentError::Body)?;
    Ok(body.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::{fetch, parse, read_file, FragmentError};

    #[test]
    fn json_and_yaml_are_both_read_and_scalars_refused() {
        let json = parse(br#"{"openapi": "3.0.3", "paths": {}}"#).expect("json");
        let yaml = parse(b"openapi: 3.0.3\npaths: {}\n").expect("yaml");
        assert_eq!(json, yaml);
        assert!(parse(b"just text").is_err());
        assert!(parse(b"openapi: [unclosed").is_err());
    }

    #[test]
    fn deep_nesting_and_alias_bombs_are_refused_with_their_position() {
        let deep_json = "{\"a\":".repeat(100_000) + "1" + &"}".repeat(100_000);
        let error = parse(deep_json.as_bytes()).unwrap_err().to_string();
        assert!(error.contains("1:"), "{error}");
        let deep_yaml = "- ".repeat(100_000) + "x\n";
        let error = parse(deep_yaml.as_bytes()).unwrap_err().to_string();
        assert!(
            error.contains("1:257: nested deeper than 128 levels"),
            "{error}"
        );
        let mut bomb = "openapi: 3.0.3\na0: &a0 [x, x, x, x, x, x, x, x, x]\n".to_string();
        for level in 1..9 {
            let items = vec![format!("*a{}", level - 1); 9].join(", ");
            bomb.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        let error = parse(bomb.as_bytes()).unwrap_err().to_string();
        assert!(error.contains("copy more than 100000 nodes"), "{error}");
    }

    #[test]
    fn fragment_files_are_bounded() {
        let error = read_file(std::path::Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a regular file"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; 8 * 1024 * 1024 + 1]).unwrap();
        let error = read_file(&big).unwrap_err().to_string();
        assert!(error.contains("larger than 8 MiB"), "{error}");
    }

    #[tokio::test]
    async fn a_failed_fetch_names_where_and_keeps_its_cause() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("address").port();
        drop(closed);
        let uri: http::Uri = format!("http://127.0.0.1:{port}/openapi.json")
            .parse()
            .expect("uri");
        let error = fetch(&uri).await.expect_err("nothing listens");
        assert!(matches!(error, FragmentError::Connect { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("connect to 127.0.0.1:{port}: ")),
            "{error}"
        );
        let cause = std::error::Error::source(&error).expect("a cause");
        assert!(cause.is::<std::io::Error>(), "{error:?}");
    }
}
