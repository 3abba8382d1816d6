//! The token keys, built from the plain `jwt` settings when the gateway starts, reloads or is
//! checked: the signing key read from its file (a missing demo key generated, and written only
//! by `serve`) or the HS256 secret taken from the environment, then the public keys of earlier
//! signing keys. What is wrong is reported at the setting's position, like the reader's errors.

use std::path::Path;

use jsonwebtoken::Algorithm;

use super::bearer::Foreign;
use super::issuers::{IssuerRules, TrustedIssuer};
use super::jwks::Jwks;
use super::jwt::{self, unix_now, Keys, Tokens};
use super::legacy::LegacyTokens;
use crate::config::source::{read_bounded, ReadError, MAX_CONFIG_FILE};
use crate::config::{
    ConfigError, ConfigErrors, IssuerSettings, JwksSource, LegacySettings, SigningKey,
    TokenSettings,
};

/// Whether a missing demo key file may be created (`serve`) or only read (`check`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFiles {
    ReadOnly,
    CreateMissing,
}

/// The keys and token settings of `settings`; every error, when there are some.
pub fn tokens(settings: &TokenSettings, key_files: KeyFiles) -> Result<Tokens, ConfigErrors> {
    let mut keys = signing_keys(settings, key_files).map_err(|e| ConfigErrors(vec![e]))?;
    let mut errors = ConfigErrors::default();
    for file in &settings.verification_keys {
        let accepted = read_bounded(&file.value, MAX_CONFIG_FILE)
            .map_err(|e| format!("{}: {e}", file.value.display()))
            .and_then(|pem| keys.accept_public_pem(&pem).map_err(|e| e.to_string()));
        if let Err(why) = accepted {
            errors
                .0
                .push(file.error(why, "list PEM public keys of earlier signing keys"));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Tokens::new(
        keys,
        &settings.issuer,
        &settings.audience,
        settings.access_ttl,
        settings.refresh_ttl,
        settings.leeway,
    ))
}

/// The trusted issuers (a `jwks_file` read now; a `jwks_url` is fetched by the running gateway)
/// and the legacy window (its secret taken from the environment), with the warnings they call
/// for: a legacy window still open, a JWKS address fetched without TLS.
pub fn foreign(
    settings: &TokenSettings,
    roles: &[String],
    warnings: &mut Vec<String>,
) -> Result<Foreign, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let mut issuers = Vec::new();
    for entry in &settings.trusted_issuers {
        match issuer_keys(entry, warnings) {
            Ok(jwks) => {
                let rules = IssuerRules {
                    issuer: entry.issuer.clone(),
                    audience: entry.audience.clone(),
                    algorithms: entry.algorithms.clone(),
                    claims: entry.claims.clone(),
                    roles: entry.roles.clone(),
                    hierarchy: roles.to_vec(),
                    leeway: settings.leeway.as_secs(),
                };
                issuers.push(std::sync::Arc::new(TrustedIssuer::new(rules, jwks)));
            }
            Err(e) => errors.0.push(e),
        }
    }
    let legacy = settings.legacy.as_ref().and_then(|legacy| {
        match legacy_tokens(legacy, settings, warnings) {
            Ok(tokens) => Some(std::sync::Arc::new(tokens)),
            Err(e) => {
                errors.0.push(e);
                None
            }
        }
    });
    if errors.is_empty() {
        Ok(Foreign { issuers, legacy })
    } else {
        Err(errors)
    }
}

fn issuer_keys(entry: &IssuerSettings, warnings: &mut Vec<String>) -> Result<Jwks, ConfigError> {
    match &entry.jwks {
        JwksSource::Url(url) => {
            let loopback = url.value.host().is_some_and(|host| {
                host == "localhost"
                    || host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if url.value.scheme_str() == Some("http") && !loopback {
                warnings.push(format!(
                    "{}: {}: the keys of `{}` are fetched without TLS, so anyone on the path can sign tokens for it; use the provider's https address",
                    url.at, url.field, entry.issuer
                ));
            }
            Jwks::from_url(url.value.clone()).map_err(|why| url.error(why, "check the TLS set-up"))
        }
        JwksSource::File(file) => read_bounded(&file.value, MAX_CONFIG_FILE)
            .map_err(|e| format!("{}: {e}", file.value.display()))
            .and_then(|document| {
                Jwks::from_document(document.into())
                    .map_err(|e| format!("{}: {e}", file.value.display()))
            })
            .map_err(|why| {
                file.error(
                    why,
                    "save the provider's JWKS document (its `jwks_uri`) in this file",
                )
            }),
    }
}

fn legacy_tokens(
    legacy: &LegacySettings,
    settings: &TokenSettings,
    warnings: &mut Vec<String>,
) -> Result<LegacyTokens, ConfigError> {
    let name = &legacy.secret_env;
    let secret = std::env::var(&name.value).unwrap_or_default();
    if secret.is_empty() {
        return Err(name.error(
            format!("the environment variable {} is not set", name.value),
            "set it to the Django app's SECRET_KEY (or SIMPLE_JWT's SIGNING_KEY), which signed its tokens",
        ));
    }
    let until = &legacy.accept_until;
    let shown = humantime::format_rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(until.value),
    );
    if unix_now() < until.value {
        warnings.push(format!(
            "{}: {}: the Django app's tokens are accepted until {shown}; remove `legacy_simplejwt` once that date has passed",
            until.at, until.field
        ));
    } else {
        warnings.push(format!(
            "{}: {}: the window closed at {shown} and legacy tokens are refused; remove `legacy_simplejwt`",
            until.at, until.field
        ));
    }
    Ok(LegacyTokens::new(
        secret.as_bytes(),
        until.value,
        settings.leeway.as_secs(),
    ))
}

fn signing_keys(settings: &TokenSettings, key_files: KeyFiles) -> Result<Keys, ConfigError> {
    let algorithm = settings.algorithm;
    match &settings.signing {
        SigningKey::SecretEnv(name) => {
            let secret = std::env::var(&name.value).unwrap_or_default();
            Keys::from_secret(secret.as_bytes()).map_err(|why| {
                let why = if secret.is_empty() {
                    format!("the environment variable {} is not set", name.value)
                } else {
                    why.to_string()
                };
                name.error(why, "set it to at least 32 random bytes, such as the output of `openssl rand -base64 48`")
            })
        }
        SigningKey::File {
            path,
            generate_if_missing,
        } => read_or_generate_key(&path.value, algorithm, *generate_if_missing, key_files)
            .and_then(|pem| {
                Keys::from_private_pem(algorithm, pem.as_bytes()).map_err(|e| e.to_string())
            })
            .map_err(|why| {
                path.error(
                    format!("{}: {why}", path.value.display()),
                    &key_hint(algorithm),
                )
            }),
    }
}

fn key_hint(algorithm: Algorithm) -> String {
    match algorithm {
        Algorithm::EdDSA => "create one with `openssl genpkey -algorithm ed25519 -out keys/jwt-ed25519.pem`, or set `generate_key_if_missing: true` for a demo".to_string(),
        Algorithm::ES256 => "create one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out keys/jwt-es256.pem`".to_string(),
        _ => "create one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out keys/jwt-rs256.pem`".to_string(),
    }
}

/// The key file's text; a missing EdDSA key is generated when allowed (written only by `serve`).
fn read_or_generate_key(
    path: &Path,
    algorithm: Algorithm,
    generate: bool,
    key_files: KeyFiles,
) -> Result<String, String> {
    match read_bounded(path, MAX_CONFIG_FILE) {
        Ok(pem) => String::from_utf8(pem).map_err(|_| "the key file is not PEM text".to_string()),
        Err(e) if e.is_not_found() && generate && algorithm == Algorithm::EdDSA => {
            let pem = jwt::generate_ed25519_pem();
            if key_files == KeyFiles::CreateMissing {
                write_private(path, &pem)
                    .map_err(|e| format!("cannot create the key file: {e}"))?;
                tracing::warn!(path = %path.display(), "generated a new JWT signing key (demo only: replicas must share one key)");
            }
            Ok(pem)
        }
        Err(ReadError::Io(e)) => Err(format!("cannot read the key file: {e}")),
        Err(e) => Err(format!("the key file: {e}")),
    }
}

fn write_private(path: &Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(pem.as_bytes())
}
