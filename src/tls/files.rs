//! Certificate and key files: read as PEM and checked (the key belongs to the certificate, the
//! certificate is valid now), each problem reported at the setting that names the file.

use std::path::PathBuf;

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::config::{CertificateFiles, ConfigError, Setting};

/// Files larger than this are not certificates or keys.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// A certificate expiring sooner than this is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// A checked certificate chain (leaf first) and its key.
pub struct Pair {
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    /// When the leaf certificate expires, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Reads the certificates of a PEM file, in order.
pub fn read_certificates(file: &Setting<PathBuf>) -> Result<Vec<X509>, ConfigError> {
    let bytes = read(file)?;
    match X509::stack_from_pem(&bytes) {
        Ok(chain) if !chain.is_empty() => Ok(chain),
        _ => Err(file.error(
            format!("{} holds no PEM certificate", file.value.display()),
            "name a PEM file that starts with -----BEGIN CERTIFICATE-----",
        )),
    }
}

/// Reads a certificate chain and its key, and checks that they belong together and that the
/// certificate is valid now. One expiring within [`EXPIRY_WARNING_DAYS`] adds a warning.
pub fn read_pair(
    files: &CertificateFiles,
    now: i64,
    warnings: &mut Vec<String>,
) -> Result<Pair, Vec<ConfigError>> {
    let chain = read_certificates(&files.cert);
    let key = read_key(&files.key);
    let (chain, key) = match (chain, key) {
        (Ok(chain), Ok(key)) => (chain, key),
        (chain, key) => return Err(chain.err().into_iter().chain(key.err()).collect()),
    };
    let leaf = &chain[0];
    let matches = leaf.public_key().is_ok_and(|public| public.public_eq(&key));
    if !matches {
        return Err(vec![files.key.error(
            format!(
                "{} is not the key of the certificate in {}",
                files.key.value.display(),
                files.cert.value.display()
            ),
            "name the private key the certificate was issued for: its public key is the one in the certificate",
        )]);
    }
    let shown = files.cert.value.display();
    let (Some(not_before), Some(not_after)) =
        (unix_time(leaf.not_before()), unix_time(leaf.not_after()))
    else {
        return Err(vec![files.cert.error(
            format!("the validity dates of the certificate in {shown} cannot be read"),
            "name a certificate with well-formed dates",
        )]);
    };
    if not_after <= now {
        return Err(vec![files.cert.error(
            format!("the certificate in {shown} expired on {}", leaf.not_after()),
            "renew it, and reload the gateway with the new file",
        )]);
    }
    if not_before > now {
        return Err(vec![files.cert.error(
            format!(
                "the certificate in {shown} is not valid before {}",
                leaf.not_before()
            ),
            "check the clock of the machine that issued it, or wait until it is valid",
        )]);
    }
    let days_left = (not_after - now) / 86_400;
    if days_left < EXPIRY_WARNING_DAYS {
        warnings.push(format!(
            "{}: {}: the certificate in {shown} expires on {}, in {days_left} days; renew it",
            files.cert.at,
            files.cert.field,
            leaf.not_after()
        ));
    }
    Ok(Pair {
        chain,
        key,
        not_after,
    })
}

fn read_key(file: &Setting<PathBuf>) -> Result<PKey<Private>, ConfigError> {
    let bytes = read(file)?;
    // A pass phrase is refused, not asked for: OpenSSL would prompt on the terminal.
    let no_pass_phrase = |_: &mut [u8]| Err(openssl::error::ErrorStack::get());
    PKey::private_key_from_pem_callback(&bytes, no_pass_phrase).map_err(|_| {
        file.error(
            format!("{} holds no unencrypted PEM private key", file.value.display()),
            "name an unencrypted PEM key (RSA or ECDSA) that starts with -----BEGIN; decrypt one with `openssl pkey -in KEY -out KEY.pem`",
        )
    })
}

fn read(file: &Setting<PathBuf>) -> Result<Vec<u8>, ConfigError> {
    let shown = file.value.display();
    let read = std::fs::File::open(&file.value).and_then(|opened| {
        use std::io::Read;
        let mut bytes = Vec::new();
        opened.take(MAX_PEM_FILE + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    match read {
        Ok(bytes) if bytes.len() as u64 > MAX_PEM_FILE => Err(file.error(
            format!("{shown} is larger than 1 MiB"),
            "name a PEM certificate or key file",
        )),
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(file.error(
            format!("{shown} does not exist"),
            "check the path; it is relative to the folder of gateway.yaml",
        )),
        Err(e) => Err(file.error(
            format!("{shown} cannot be read: {e}"),
            "let the gateway's user read it",
        )),
    }
}

/// Seconds since the Unix epoch of an ASN.1 time.
fn unix_time(time: &Asn1TimeRef) -> Option<i64> {
    let diff = Asn1Time::from_unix(0)
        .and_then(|epoch| epoch.diff(time))
        .ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}
