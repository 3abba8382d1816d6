//! https upstreams: the authorities a service's targets are verified against, the client
//! certificate the gateway shows them, and the pingora peer that carries both (never with an
//! empty SNI: pingora would not verify at all).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::CertKey;

use super::diagnosis::Diagnoses;
use super::files;
use crate::config::{ConfigError, Target, UpstreamTls};

/// What a service's https targets are verified with, loaded from its `tls:` files.
pub struct UpstreamMaterial {
    /// The authorities from `ca:`; `None`: the system's bundle.
    ca: Option<Arc<CaType>>,
    client: Option<Arc<CertKey>>,
    verify: bool,
    /// Keeps pooled connections of services that trust different authorities, or show
    /// different client certificates, apart (see `load`).
    group_key: u64,
    /// When the client certificate expires, in seconds since the Unix epoch.
    pub client_not_after: Option<i64>,
    diagnoses: Diagnoses,
}

impl UpstreamMaterial {
    /// Loads the files `settings` names; warns when verification is off for the service's
    /// https targets (`has_https`) or a certificate expires soon.
    pub fn load(
        settings: &UpstreamTls,
        service: &str,
        has_https: bool,
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
        if !settings.verify && has_https {
            warnings.push(format!(
                "{}: tls.verify: false: the certificates of service `{service}`'s https upstreams are not verified; anyone on the path can pose as them",
                settings.at
            ));
        }
        // pingora's pool tells client certificates apart by serial number only, which two
        // authorities may well repeat: the whole chains go into the key.
        let mut hasher = DefaultHasher::new();
        let client_chain = client.iter().flat_map(|pair| &pair.chain);
        for certificate in ca.iter().flatten().chain(client_chain) {
            certificate.to_der().unwrap_or_default().hash(&mut hasher);
        }
        Ok(UpstreamMaterial {
            group_key: hasher.finish(),
            ca: ca.map(|certificates| Arc::new(certificates.into_boxed_slice())),
            client_not_after: client.as_ref().map(|pair| pair.not_after),
            client: client.map(|pair| Arc::new(CertKey::new(pair.chain, pair.key))),
            verify: settings.verify,
            diagnoses: Diagnoses::default(),
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

    /// Why `target`'s certificate fails verification (see [`Diagnoses::explain`]).
    pub async fn diagnose(&self, target: &Target, timeout: Duration) -> Option<Arc<str>> {
        self.diagnoses
            .explain(target, self.ca.clone(), timeout)
            .await
    }
}
