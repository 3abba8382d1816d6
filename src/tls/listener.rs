//! The TLS listener: its certificates, chosen on each handshake by the name the client asks for
//! (SNI: an exact name first, then a wildcard, else the first certificate), read from the
//! current snapshot so that a reload changes them for the next handshake, without touching
//! open connections.

use std::collections::HashMap;

use async_trait::async_trait;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{NameType, SslVersion};
use openssl::x509::X509;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::ALPN;
use pingora::tls::ext::{ssl_add_chain_cert, ssl_use_certificate, ssl_use_private_key};

use super::files::Pair;
use crate::config::{TlsListener, TlsVersion};
use crate::snapshot::Current;

/// One certificate the listener serves.
pub struct Served {
    /// Its first name (DNS name, else common name): the metrics label.
    pub name: String,
    /// Its first name that is a host name a URL can hold (not a wildcard): where a request
    /// without a host is redirected.
    pub host: Option<String>,
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    pub not_after: i64,
}

/// The listener's certificates and the names each one answers for.
pub struct ServerCertificates {
    served: Vec<Served>,
    /// Exact names, lower case: the index of the first certificate holding each.
    exact: HashMap<String, usize>,
    /// `*.example.com` as `example.com`: the index of the first certificate holding it.
    wildcard: HashMap<String, usize>,
}

impl ServerCertificates {
    /// The certificates in the order written; at least one.
    pub fn new(pairs: Vec<Pair>) -> ServerCertificates {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let served = pairs
            .into_iter()
            .enumerate()
            .map(|(index, pair)| {
                let names = names(&pair.chain[0]);
                for name in &names {
                    match name.strip_prefix("*.") {
                        Some(parent) => wildcard.entry(parent.to_string()).or_insert(index),
                        None => exact.entry(name.clone()).or_insert(index),
                    };
                }
                let host = names
                    .iter()
                    .find(|name| {
                        !name.starts_with("*.") && crate::wellformed::is_valid_host(name.as_bytes())
                    })
                    .cloned();
                Served {
                    host,
                    name: names.into_iter().next().unwrap_or_default(),
                    chain: pair.chain,
                    key: pair.key,
                    not_after: pair.not_after,
                }
            })
            .collect();
        ServerCertificates {
            served,
            exact,
            wildcard,
        }
    }

    /// The certificate for `server_name`: the one naming it exactly, else one whose wildcard
    /// covers it (one label deep), else the first.
    pub fn select(&self, server_name: Option<&str>) -> &Served {
        let index = server_name.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        &self.served[index.copied().unwrap_or(0)]
    }

    pub fn served(&self) -> &[Served] {
        &self.served
    }
}

/// The DNS names of a certificate, lower case; its common name when it has none.
fn names(certificate: &X509) -> Vec<String> {
    let dns: Vec<String> = certificate
        .subject_alt_names()
        .into_iter()
        .flatten()
        .filter_map(|name| name.dnsname().map(str::to_ascii_lowercase))
        .collect();
    if !dns.is_empty() {
        return dns;
    }
    certificate
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .filter_map(|entry| entry.data().to_string().ok())
        .map(|name| name.to_ascii_lowercase())
        .collect()
}

/// Gives each handshake the certificate the current snapshot holds for its name.
struct ChooseCertificate {
    current: Current,
}

#[async_trait]
impl TlsAccept for ChooseCertificate {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let snapshot = self.current.load();
        let Some(certificates) = &snapshot.tls.listener else {
            return;
        };
        let served = certificates.select(ssl.servername(NameType::HOST_NAME));
        let used = ssl_use_certificate(ssl, &served.chain[0])
            .and_then(|()| ssl_use_private_key(ssl, &served.key))
            .and_then(|()| {
                served.chain[1..]
                    .iter()
                    .try_for_each(|intermediate| ssl_add_chain_cert(ssl, intermediate))
            });
        if let Err(error) = used {
            tracing::error!(certificate = %served.name, %error, "cannot use the certificate in a handshake");
        }
    }
}

/// The listener's TLS settings: the certificates of the snapshot current at each handshake,
/// the lowest version, and ALPN (h2 before http/1.1, or http/1.1 only).
pub fn settings(listener: &TlsListener, current: Current) -> Result<TlsSettings, String> {
    let mut settings = TlsSettings::with_callbacks(Box::new(ChooseCertificate { current }))
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let lowest = match listener.min_version {
        TlsVersion::V1_2 => SslVersion::TLS1_2,
        TlsVersion::V1_3 => SslVersion::TLS1_3,
    };
    settings
        .set_min_proto_version(Some(lowest))
        .map_err(|e| format!("cannot set TLS {:?} as the lowest version: {e}", lowest))?;
    if listener.http2 {
        settings.enable_h2();
    } else {
        settings.set_alpn(ALPN::H1);
    }
    Ok(settings)
}
