//! Why an upstream's certificate was refused. pingora's error says only that verification
//! failed; the gateway repeats the handshake with its own verification, which keeps OpenSSL's
//! reason ("certificate has expired", "hostname mismatch", "unable to get local issuer
//! certificate"), at most once per target every ten seconds whatever the traffic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::ssl::{HandshakeError, SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509VerifyResult, X509};
use pingora::protocols::tls::CaType;

use crate::config::Target;

/// How long a diagnosis (or one under way) stands for a target.
const LIFETIME: Duration = Duration::from_secs(10);

/// One target's last diagnosis: when it started, whether it still runs, and what it found
/// (`None` while it runs, or when the handshake found nothing to blame on the certificate).
struct Diagnosis {
    started: Instant,
    running: bool,
    found: Option<Arc<str>>,
}

/// The last diagnosis of each target, by URL.
#[derive(Default)]
pub struct Diagnoses(Mutex<HashMap<String, Diagnosis>>);

impl Diagnoses {
    /// The reason `target`'s certificate fails verification against `ca` (or the system's
    /// bundle). A diagnosis that runs, or ended less than ten seconds after it started, is
    /// answered from memory (`None` while it runs); otherwise this request makes the handshake,
    /// on a blocking thread, within `timeout` for each step.
    pub async fn explain(
        &self,
        target: &Target,
        ca: Option<Arc<CaType>>,
        timeout: Duration,
    ) -> Option<Arc<str>> {
        let started = Instant::now();
        {
            let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(last) = known.get(&target.url) {
                if last.running || last.started.elapsed() < LIFETIME {
                    return last.found.clone();
                }
            }
            let diagnosis = Diagnosis {
                started,
                running: true,
                found: None,
            };
            known.insert(target.url.clone(), diagnosis);
        }
        let (addr, name) = (target.addr, target.sni.clone());
        let found = tokio::task::spawn_blocking(move || {
            verification_failure(addr, &name, ca.as_deref().map(|ca| &ca[..]), timeout)
        })
        .await
        .ok()
        .flatten()
        .map(Arc::<str>::from);
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = known.get_mut(&target.url) {
            last.running = false;
            last.found.clone_from(&found);
        }
        found
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
