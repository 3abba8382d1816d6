//! https upstreams: the authorities a service's targets are verified against, the client
//! certificate the gateway shows them, the pingora peer that carries both (never with an empty
//! SNI: pingora would not verify at all), and the diagnosis that names why a verification
//! failed, which pingora's error does not say.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::ssl::{HandshakeError, SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509VerifyResult, X509};
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::CertKey;

use super::files;
use crate::config::{ConfigError, Target, UpstreamTls};

/// How long a diagnosis stands for a target before a new failure makes another handshake.
const DIAGNOSIS_LIFETIME: Duration = Duration::from_secs(10);

/// What a service's https targets are verified with, loaded from its `tls:` files.
pub struct UpstreamMaterial {
    /// The authorities from `ca:`; `None`: the system's bundle.
    ca: Option<Arc<CaType>>,
    client: Option<Arc<CertKey>>,
    verify: bool,
    /// Keeps pooled connections of services that trust different authorities apart: pingora's
    /// pool tells peers apart by address, SNI, client certificate and verification, not by CA.
    group_key: u64,
    /// When the client certificate expires, in seconds since the Unix epoch.
    pub client_not_after: Option<i64>,
    /// The last diagnosis of each target (by URL), and when it was made.
    diagnoses: Mutex<Vec<(String, Instant, Arc<str>)>>,
}

impl UpstreamMaterial {
    /// Loads the files `settings` names; warns when verification is off or a certificate expires soon.
    pub fn load(
        settings: &UpstreamTls,
        service: &str,
        now: i64,
        warnings: &mut Vec<String>,
    ) -> Result<UpstreamMaterial, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let ca = match &settings.ca {
            Some(file) => match files::read_certificates(file) {
                Ok(certificates) => Some(certificates),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            None => None,
        };
        let client = match &settings.client {
            Some(files) => match files::read_pair(files, now, warnings) {
                Ok(pair) => Some(pair),
                Err(more) => {
                    errors.extend(more);
                    None
                }
            },
            None => None,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        if !settings.verify {
            warnings.push(format!(
                "{}: tls.verify: false: the certificates of service `{service}`'s https upstreams are not verified; anyone on the path can pose as them",
                settings.at
            ));
        }
        let mut hasher = DefaultHasher::new();
        for certificate in ca.iter().flatten() {
            certificate.to_der().unwrap_or_default().hash(&mut hasher);
        }
        Ok(UpstreamMaterial {
            group_key: hasher.finish(),
            ca: ca.map(|certificates| Arc::new(certificates.into_boxed_slice())),
            client_not_after: client.as_ref().map(|pair| pair.not_after),
            client: client.map(|pair| Arc::new(CertKey::new(pair.chain, pair.key))),
            verify: settings.verify,
            diagnoses: Mutex::default(),
        })
    }

    /// The pingora peer of `target`: plain, or TLS with these settings and the target's name.
    pub fn peer(&self, target: &Target) -> HttpPeer {
        let mut peer = HttpPeer::new(target.addr, target.tls, target.sni.clone());
        if target.tls {
            debug_assert!(!target.sni.is_empty(), "an https target always has a name");
            peer.options.verify_cert = self.verify;
            peer.options.verify_hostname = self.verify;
            peer.options.ca.clone_from(&self.ca);
            peer.client_cert_key.clone_from(&self.client);
            peer.group_key = self.group_key;
        }
        peer
    }

    /// Why `target`'s certificate fails verification ("certificate has expired", "hostname
    /// mismatch", "unable to get local issuer certificate"), found by a handshake of the
    /// gateway's own; at most one such handshake per target every ten seconds.
    pub async fn diagnose(&self, target: &Target, timeout: Duration) -> Option<Arc<str>> {
        if let Some(recent) = self.recent_diagnosis(&target.url) {
            return Some(recent);
        }
        let store = self.ca.clone();
        let (addr, name) = (target.addr, target.sni.clone());
        let found = tokio::task::spawn_blocking(move || {
            verification_failure(addr, &name, store.as_deref().map(|ca| &ca[..]), timeout)
        })
        .await
        .ok()
        .flatten()?;
        let found: Arc<str> = Arc::from(found);
        let mut diagnoses = self.diagnoses.lock().unwrap_or_else(|e| e.into_inner());
        diagnoses.retain(|(url, _, _)| url != &target.url);
        diagnoses.push((target.url.clone(), Instant::now(), found.clone()));
        Some(found)
    }

    fn recent_diagnosis(&self, url: &str) -> Option<Arc<str>> {
        let diagnoses = self.diagnoses.lock().unwrap_or_else(|e| e.into_inner());
        diagnoses
            .iter()
            .find(|(seen, at, _)| seen == url && at.elapsed() < DIAGNOSIS_LIFETIME)
            .map(|(_, _, why)| why.clone())
    }
}

/// A blocking handshake with `addr` that verifies its certificate for `name` against `ca` (or
/// the system's bundle) and returns OpenSSL's reason when verification fails.
fn verification_failure(
    addr: SocketAddr,
    name: &str,
    ca: Option<&[X509]>,
    timeout: Duration,
) -> Option<String> {
    let mut builder = SslConnector::builder(SslMethod::tls()).ok()?;
    match ca {
        Some(certificates) => {
            let mut store = X509StoreBuilder::new().ok()?;
            for certificate in certificates {
                store.add_cert(certificate.clone()).ok()?;
            }
            builder.set_verify_cert_store(store.build()).ok()?;
        }
        None => builder.set_default_verify_paths().ok()?,
    }
    builder.set_verify(SslVerifyMode::PEER);
    let stream = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    match builder.build().connect(name, stream) {
        Err(HandshakeError::Failure(handshake)) => {
            let result = handshake.ssl().verify_result();
            (result != X509VerifyResult::OK).then(|| result.error_string().to_string())
        }
        _ => None,
    }
}
