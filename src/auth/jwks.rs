//! A trusted issuer's published keys: its JWKS document read into verification keys (public
//! signing keys only, each knowing which algorithms it can verify), fetched over HTTP(S) with a
//! timeout and a size bound, and kept with when it was fetched, how long it may be kept
//! (`Cache-Control: max-age`), and the last error. A failed fetch keeps the last good copy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use openssl::ssl::{SslConnector, SslMethod};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::verified::verifier_id;

/// A provider that stays silent this long is unreachable for this attempt.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set is a few KiB; more is not a JWKS document.
const MAX_DOCUMENT: usize = 1024 * 1024;
/// Kept this long when the provider says nothing usable about caching (`no-cache` included).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// `max-age` is honoured within these bounds: the floor spares the provider, the ceiling lets
/// a removed key go within a day.
const MIN_LIFETIME: Duration = Duration::from_secs(5);
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// After a failed fetch, the next try.
const RETRY_AFTER: Duration = Duration::from_secs(30);
const NO_USABLE_KEY: &str =
    "the document has no public signing key (RSA, EC P-256/P-384 or Ed25519)";
/// A token naming a `kid` the cached set lacks fetches the set again at most this often.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(60);

/// The kind of a public key, which decides the algorithms it verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn verifies(self, algorithm: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(algorithm, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => algorithm == ES256,
            KeyKind::P384 => algorithm == ES384,
            KeyKind::Ed25519 => algorithm == EdDSA,
        }
    }
}

/// One published signing key.
pub struct PublishedKey {
    pub decoding: DecodingKey,
    kind: KeyKind,
    /// The key's own `alg`, when the provider pins it.
    algorithm: Option<String>,
}

impl PublishedKey {
    /// Whether a token signed with `algorithm` may be checked with this key: the key's type
    /// must fit the algorithm, and a key that names its algorithm allows only that one.
    pub fn verifies(&self, algorithm: Algorithm) -> bool {
        self.kind.verifies(algorithm)
            && self
                .algorithm
                .as_deref()
                .is_none_or(|pinned| pinned == format!("{algorithm:?}"))
    }
}

/// The keys of one fetched document.
pub struct KeySet {
    /// A provider may publish several keys under one `kid` (one per algorithm).
    by_kid: HashMap<String, Vec<PublishedKey>>,
    /// Keys published without a `kid`.
    unnamed: Vec<PublishedKey>,
    /// Changes whenever the document does: tokens remembered as verified by an earlier set are
    /// verified again, so a key the provider withdrew stops working.
    pub verifier: u64,
    document: Bytes,
}

impl KeySet {
    fn empty() -> KeySet {
        KeySet {
            by_kid: HashMap::new(),
            unnamed: Vec::new(),
            verifier: verifier_id(),
            document: Bytes::new(),
        }
    }

    /// Reads a JWKS document. Keys for encryption, symmetric keys and keys of a type the
    /// gateway does not verify with are skipped, so the set may be empty.
    pub fn parse(document: Bytes) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<Value>,
        }
        let parsed: Document = serde_json::from_slice(&document)
            .map_err(|e| format!("not a JWKS document (a JSON object with `keys`): {e}"))?;
        let mut set = KeySet {
            document,
            ..KeySet::empty()
        };
        for key in parsed.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(key) else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(ref used) if *used != PublicKeyUse::Signature)
            {
                continue;
            }
            let kind = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => KeyKind::Rsa,
                AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                    EllipticCurve::P256 => KeyKind::P256,
                    EllipticCurve::P384 => KeyKind::P384,
                    _ => continue,
                },
                AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                    KeyKind::Ed25519
                }
                _ => continue,
            };
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let key = PublishedKey {
                decoding,
                kind,
                algorithm: jwk.common.key_algorithm.map(|a| format!("{a:?}")),
            };
            match jwk.common.key_id {
                Some(kid) => set.by_kid.entry(kid).or_default().push(key),
                None => set.unnamed.push(key),
            }
        }
        Ok(set)
    }

    /// Whether the document names a key `kid`.
    pub fn has(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// The key named `kid` that can verify `algorithm`.
    pub fn named(&self, kid: &str, algorithm: Algorithm) -> Option<&PublishedKey> {
        self.by_kid
            .get(kid)?
            .iter()
            .find(|key| key.verifies(algorithm))
    }

    /// For a token without a `kid`: the one key that can verify `algorithm`, if exactly one can.
    pub fn only_key_for(&self, algorithm: Algorithm) -> Option<&PublishedKey> {
        let mut fitting = self
            .by_kid
            .values()
            .flatten()
            .chain(&self.unnamed)
            .filter(|key| key.verifies(algorithm));
        let only = fitting.next()?;
        fitting.next().is_none().then_some(only)
    }

    pub fn len(&self) -> usize {
        self.by_kid.values().map(Vec::len).sum::<usize>() + self.unnamed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What is known about the document's freshness.
#[derive(Default)]
struct Freshness {
    fetched_at: Option<SystemTime>,
    /// When the next scheduled fetch is due.
    due: Option<Instant>,
    last_error: Option<String>,
    /// When a token with an unknown `kid` last caused a fetch.
    unknown_kid_fetch: Option<Instant>,
    /// Fetches started.
    started: u64,
    failures: u64,
}

/// A trusted issuer's keys, from a URL (refreshed) or a file (read once).
pub struct Jwks {
    /// Where the document is fetched from; `None` for a saved one.
    remote: Option<Remote>,
    keys: ArcSwap<KeySet>,
    freshness: Mutex<Freshness>,
    /// One fetch at a time; requests that need one wait for it rather than starting another.
    fetching: tokio::sync::Mutex<()>,
}

/// A JWKS address and the TLS client that reaches it.
struct Remote {
    url: Uri,
    tls: SslConnector,
}

impl Jwks {
    /// Keys fetched from `url`; none until the first fetch.
    pub fn from_url(url: Uri) -> Result<Jwks, String> {
        let remote = Remote {
            url,
            tls: tls_connector()?,
        };
        Ok(Jwks::new(Some(remote), KeySet::empty()))
    }

    /// Keys read from a saved document, never fetched.
    pub fn from_document(document: Bytes) -> Result<Jwks, String> {
        let keys = KeySet::parse(document)?;
        if keys.is_empty() {
            return Err(NO_USABLE_KEY.to_string());
        }
        let jwks = Jwks::new(None, keys);
        jwks.lock().fetched_at = Some(SystemTime::now());
        Ok(jwks)
    }

    fn new(remote: Option<Remote>, keys: KeySet) -> Jwks {
        Jwks {
            remote,
            keys: ArcSwap::from_pointee(keys),
            freshness: Mutex::new(Freshness::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Freshness> {
        self.freshness.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// The verifier id of the current key set.
    pub fn verifier(&self) -> u64 {
        self.keys.load().verifier
    }

    /// Whether a scheduled fetch is due: never fetched, past the document's lifetime, or past
    /// the retry time after a failure.
    pub fn due(&self) -> bool {
        self.remote.is_some() && self.lock().due.is_none_or(|due| due <= Instant::now())
    }

    /// Fetches the document again, unless a fetch that started after this call already has (a
    /// fetch on its way when the call came may predate what the caller needs).
    pub async fn refresh(&self) {
        let Some(Remote { url, tls }) = &self.remote else {
            return;
        };
        let asked = self.lock().started;
        let _one_at_a_time = self.fetching.lock().await;
        if self.lock().started != asked {
            return;
        }
        self.lock().started += 1;
        // A document that reads as a JWKS is the provider's word, even with no key the gateway
        // can use: it replaces the old keys (refusing every token) and says so in `last_error`.
        let fetched = fetch(url, tls).await.and_then(|(document, lifetime)| {
            if self.keys.load().document != document {
                self.keys.store(Arc::new(KeySet::parse(document)?));
            }
            Ok(lifetime)
        });
        let mut freshness = self.lock();
        match fetched {
            Ok(lifetime) => {
                freshness.fetched_at = Some(SystemTime::now());
                freshness.due = Some(Instant::now() + lifetime);
                freshness.last_error = self.keys.load().is_empty().then(|| {
                    tracing::warn!(url = %url, "{NO_USABLE_KEY}: the issuer's tokens are refused");
                    NO_USABLE_KEY.to_string()
                });
            }
            Err(error) => {
                tracing::warn!(url = %url, %error, "cannot refresh a trusted issuer's keys; the last good copy stays in use");
                freshness.due = Some(Instant::now() + RETRY_AFTER);
                freshness.last_error = Some(error);
                freshness.failures += 1;
            }
        }
    }

    /// For a token whose `kid` the cached set lacks: fetches again, at most once per
    /// [`UNKNOWN_KID_INTERVAL`], or waits for a fetch already on its way (at start, or another
    /// request's). The caller reads the keys again afterwards.
    pub async fn refresh_for_unknown_kid(&self) {
        if self.remote.is_none() {
            return;
        }
        let now = Instant::now();
        let allowed = {
            let mut freshness = self.lock();
            let allowed = freshness
                .unknown_kid_fetch
                .is_none_or(|last| now.duration_since(last) >= UNKNOWN_KID_INTERVAL);
            if allowed {
                freshness.unknown_kid_fetch = Some(now);
            }
            allowed
        };
        if allowed {
            self.refresh().await;
        } else {
            drop(self.fetching.lock().await);
        }
    }

    /// Seconds since the last good fetch, if there was one (a saved document has no age).
    pub fn age(&self) -> Option<f64> {
        self.remote.as_ref()?;
        let fetched = self.lock().fetched_at?;
        Some(
            SystemTime::now()
                .duration_since(fetched)
                .unwrap_or_default()
                .as_secs_f64(),
        )
    }

    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    pub fn failures(&self) -> u64 {
        self.lock().failures
    }

    /// The state `/readyz` shows.
    pub fn status(&self) -> Value {
        let age = self.age().map(|age| (age * 10.0).round() / 10.0);
        json!({
            "source": self.remote.as_ref().map_or_else(|| "file".to_string(), |r| r.url.to_string()),
            "keys": self.keys().len(),
            "age_seconds": age,
            "last_error": self.last_error(),
        })
    }
}

/// A client for https JWKS addresses: the system's trust store (found as native TLS clients do),
/// or `SSL_CERT_FILE`.
fn tls_connector() -> Result<SslConnector, String> {
    let mut builder =
        SslConnector::builder(SslMethod::tls_client()).map_err(|e| format!("TLS: {e}"))?;
    if std::env::var_os("SSL_CERT_FILE").is_none() {
        if let Some(bundle) = openssl_probe::probe().cert_file {
            builder
                .set_ca_file(&bundle)
                .map_err(|e| format!("TLS: cannot read {}: {e}", bundle.display()))?;
        }
    }
    Ok(builder.build())
}

/// GETs the document and reads how long it may be kept.
async fn fetch(url: &Uri, tls: &SslConnector) -> Result<(Bytes, Duration), String> {
    let host = url.host().ok_or("the URL has no host")?;
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let request = Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, url.authority().map_or(host, |a| a.as_str()))
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "guichet")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        if https {
            let ssl = tls
                .configure()
                .and_then(|c| c.into_ssl(host.trim_matches(['[', ']'])))
                .map_err(|e| format!("TLS: {e}"))?;
            let mut stream =
                tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| format!("TLS: {e}"))?;
            std::pin::Pin::new(&mut stream)
                .connect()
                .await
                .map_err(|e| format!("TLS handshake with {host}: {e}"))?;
            get(stream, request).await
        } else {
            get(tcp, request).await
        }
    };
    let response = tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {} s", FETCH_TIMEOUT.as_secs()))??;
    Ok(response)
}

async fn get<S>(stream: S, request: Request<Empty<Bytes>>) -> Result<(Bytes, Duration), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("answered {}", response.status()));
    }
    let lifetime = lifetime(response.headers().get(header::CACHE_CONTROL));
    let body = Limited::new(response.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| format!("reading the document: {e}"))?
        .to_bytes();
    Ok((body, lifetime))
}

/// How long a fetched document may be kept, from its `Cache-Control`.
fn lifetime(cache_control: Option<&http::HeaderValue>) -> Duration {
    let max_age = cache_control
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value.split(',').find_map(|directive| {
                let (name, seconds) = directive.trim().split_once('=')?;
                name.eq_ignore_ascii_case("max-age")
                    .then(|| seconds.trim().trim_matches('"').parse::<u64>().ok())?
            })
        });
    match max_age {
        Some(seconds) => Duration::from_secs(seconds).clamp(MIN_LIFETIME, MAX_LIFETIME),
        None => DEFAULT_LIFETIME,
    }
}

#[cfg(test)]
mod tests;
