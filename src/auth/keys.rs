//! The token keys, built from the plain `jwt` settings when the gateway starts, reloads or is
//! checked: the signing key read from its file (a missing demo key generated, and written only
//! by `serve`) or the HS256 secret taken from the environment, then the public keys of earlier
//! signing keys. What is wrong is reported at the setting's position, like the reader's errors.

use std::path::Path;

use jsonwebtoken::Algorithm;

use super::jwt::{self, Keys, Tokens};
use crate::config::source::{read_bounded, ReadError, MAX_CONFIG_FILE};
use crate::config::{ConfigError, ConfigErrors, SigningKey, TokenSettings};

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
