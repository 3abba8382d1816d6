//! The render step, as river has it: the configuration read from its files (plain data), and
//! what the running gateway builds from it that plain data cannot hold: the token keys (key
//! files, the HS256 secret's environment variable, trusted issuers' saved JWKS documents, the
//! Django secret of legacy tokens), the store's URL (`GUICHET_REDIS_URL`) and
//! the TLS certificates.

use std::path::Path;
use std::sync::Arc;

use crate::auth::bearer::Foreign;
use crate::auth::jwt::Tokens;
use crate::auth::keys::KeyFiles;
use crate::config::{self, Config, ConfigErrors, StoreBackend};
use crate::tls::Material;

/// A configuration and what is built from it.
pub struct Loaded {
    pub config: Config,
    /// `None` without a `jwt` section.
    pub tokens: Option<Arc<Tokens>>,
    /// Trusted issuers and the legacy window, from the same `jwt` section.
    pub foreign: Foreign,
    pub tls: Material,
    /// What works but deserves the operator's attention (a certificate expiring soon, an
    /// upstream not verified), each naming its file and line.
    pub warnings: Vec<String>,
}

/// Loads the configuration and builds what authentication needs beyond its plain data: the
/// token keys, the store's URL (checked here, taken again where the store is opened) and the
/// TLS files. `check`, `serve` and a reload report the errors of all in one list.
pub fn load(path: &Path, key_files: KeyFiles) -> Result<Loaded, ConfigErrors> {
    let mut warnings = Vec::new();
    let (config, (tokens, foreign, tls)) = config::load_with(path, |config| {
        let mut errors = ConfigErrors::default();
        if let StoreBackend::Redis(settings) = &config.auth.store {
            if let Err(e) = crate::store::redis_target(settings) {
                errors.0.push(e);
            }
        }
        let tokens = config.auth.tokens.as_ref().and_then(|settings| {
            crate::auth::keys::tokens(settings, key_files)
                .map_err(|more| errors.0.extend(more.0))
                .ok()
        });
        let foreign = match &config.auth.tokens {
            Some(settings) => {
                crate::auth::keys::foreign(settings, &config.auth.roles, &mut warnings)
                    .map_err(|more| errors.0.extend(more.0))
                    .unwrap_or_default()
            }
            None => Foreign::default(),
        };
        let tls = crate::tls::load(config, &mut warnings)
            .map_err(|more| errors.0.extend(more.0))
            .ok();
        match tls {
            Some(tls) if errors.is_empty() => Ok((tokens.map(Arc::new), foreign, tls)),
            _ => Err(errors),
        }
    })?;
    Ok(Loaded {
        config,
        tokens,
        foreign,
        tls,
        warnings,
    })
}
