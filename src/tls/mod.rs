//! TLS: the listener's certificates (by SNI, reloaded with the configuration) and the settings
//! of https upstreams, loaded from the files the configuration names. What is loaded here is
//! checked as the configuration is: a bad file fails `check`, start and reload alike.

mod diagnosis;
pub mod files;
pub mod listener;
pub mod redirect;
pub mod upstream;

use std::sync::Arc;

use crate::config::{Config, ConfigErrors};
use listener::ServerCertificates;
use upstream::UpstreamMaterial;

/// What one configuration's TLS files hold.
pub struct Material {
    /// The TLS listener's certificates, when gateway.yaml has `tls:`.
    pub listener: Option<Arc<ServerCertificates>>,
    /// By service, in the order of [`Config::services`].
    pub upstreams: Vec<Arc<UpstreamMaterial>>,
}

/// Loads the certificate, key and authority files of `config`, with the warnings they call for
/// (a certificate expiring soon, an upstream not verified).
pub fn load(config: &Config, warnings: &mut Vec<String>) -> Result<Material, ConfigErrors> {
    let now = crate::auth::jwt::unix_now() as i64;
    let mut errors = ConfigErrors::default();
    let listener = config.tls.as_ref().and_then(|tls| {
        let mut pairs = Vec::new();
        for files in &tls.certificates {
            match files::read_pair(files, now, warnings) {
                Ok(pair) => pairs.push(pair),
                Err(more) => errors.0.extend(more),
            }
        }
        (pairs.len() == tls.certificates.len()).then(|| Arc::new(ServerCertificates::new(pairs)))
    });
    let mut upstreams = Vec::new();
    for service in &config.services {
        let has_https = service.targets.iter().any(|target| target.tls);
        match UpstreamMaterial::load(&service.tls, &service.name, has_https, now, warnings) {
            Ok(material) => upstreams.push(Arc::new(material)),
            Err(more) => errors.0.extend(more),
        }
    }
    if errors.is_empty() {
        Ok(Material {
            listener,
            upstreams,
        })
    } else {
        Err(errors)
    }
}

impl Material {
    /// Each certificate the gateway shows and when it expires (seconds since the Unix epoch):
    /// the listener's by name, the client certificates as `<service> client`.
    pub fn expiries(&self, config: &Config) -> Vec<(String, i64)> {
        let served = self
            .listener
            .iter()
            .flat_map(|certificates| certificates.served())
            .map(|served| (served.name.clone(), served.not_after));
        let clients =
            config
                .services
                .iter()
                .zip(&self.upstreams)
                .filter_map(|(service, material)| {
                    material
                        .client_not_after
                        .map(|at| (format!("{} client", service.name), at))
                });
        served.chain(clients).collect()
    }
}
