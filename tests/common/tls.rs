//! A test certificate authority made with OpenSSL: certificates for any names, valid now,
//! expired, or expiring soon, written as PEM files where a configuration names them; and TLS
//! streams for test upstreams and clients.

use std::path::Path;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Name, X509};

/// A certificate and its key.
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Issued {
    /// Writes `<stem>.pem` (the certificate) and `<stem>.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) {
        let pem = self.cert.to_pem().expect("certificate PEM");
        std::fs::write(dir.join(format!("{stem}.pem")), pem).expect("write certificate");
        let key = self.key.private_key_to_pem_pkcs8().expect("key PEM");
        std::fs::write(dir.join(format!("{stem}.key")), key).expect("write key");
    }

    pub fn cert_pem(&self) -> String {
        String::from_utf8(self.cert.to_pem().expect("PEM")).expect("text")
    }

    /// The serial number, as lower-case hex without leading zeros (as `served_serial` reads
    /// it): tells two certificates for the same name apart.
    pub fn serial(&self) -> String {
        let hex = self
            .cert
            .serial_number()
            .to_bn()
            .and_then(|bn| bn.to_hex_str().map(|hex| hex.to_string()))
            .expect("serial");
        hex.trim_start_matches('0').to_lowercase()
    }
}

/// A certificate authority of its own (P-256 keys throughout).
pub struct TestCa {
    pub root: Issued,
}

/// When a certificate is valid, in days from now.
#[derive(Clone, Copy)]
pub struct Validity {
    pub from_days: i64,
    pub to_days: i64,
}

impl Validity {
    pub const NOW: Validity = Validity {
        from_days: -1,
        to_days: 30,
    };
    pub const EXPIRED: Validity = Validity {
        from_days: -30,
        to_days: -1,
    };
    pub const EXPIRING: Validity = Validity {
        from_days: -1,
        to_days: 5,
    };
}

/// The kind of key a certificate is issued for.
#[derive(Clone, Copy)]
pub enum KeyKind {
    EcdsaP256,
    Rsa2048,
}

fn key(kind: KeyKind) -> PKey<Private> {
    match kind {
        KeyKind::EcdsaP256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
            PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("key")
        }
        KeyKind::Rsa2048 => {
            PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("RSA key")).expect("key")
        }
    }
}

fn time(days: i64) -> Asn1Time {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    Asn1Time::from_unix(now + days * 86_400).expect("time")
}

fn name(common_name: &str) -> X509Name {
    let mut name = X509Name::builder().expect("name");
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)
        .expect("CN");
    name.build()
}

fn serial() -> Asn1Integer {
    let mut serial = BigNum::new().expect("bn");
    serial
        .rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .expect("random serial");
    serial.to_asn1_integer().expect("serial")
}

impl TestCa {
    pub fn new(common_name: &str) -> TestCa {
        let key = key(KeyKind::EcdsaP256);
        let mut builder = X509::builder().expect("builder");
        builder.set_version(2).expect("v3");
        builder.set_serial_number(&serial()).expect("serial");
        let subject = name(common_name);
        builder.set_subject_name(&subject).expect("subject");
        builder.set_issuer_name(&subject).expect("issuer");
        builder.set_pubkey(&key).expect("public key");
        builder.set_not_before(&time(-1)).expect("not before");
        builder.set_not_after(&time(365)).expect("not after");
        builder
            .append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("extension");
        builder.sign(&key, MessageDigest::sha256()).expect("sign");
        TestCa {
            root: Issued {
                cert: builder.build(),
                key,
            },
        }
    }

    /// A certificate for `names` (DNS names; the first is also the common name), ECDSA P-256.
    pub fn issue(&self, names: &[&str], validity: Validity) -> Issued {
        self.issue_for(names, validity, KeyKind::EcdsaP256)
    }

    /// An intermediate authority signed by this one: what it issues chains to this one.
    pub fn intermediate(&self, common_name: &str) -> TestCa {
        let key = key(KeyKind::EcdsaP256);
        let mut builder = X509::builder().expect("builder");
        builder.set_version(2).expect("v3");
        builder.set_serial_number(&serial()).expect("serial");
        builder
            .set_subject_name(&name(common_name))
            .expect("subject");
        builder
            .set_issuer_name(self.root.cert.subject_name())
            .expect("issuer");
        builder.set_pubkey(&key).expect("public key");
        builder.set_not_before(&time(-1)).expect("not before");
        builder.set_not_after(&time(180)).expect("not after");
        builder
            .append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("extension");
        builder
            .sign(&self.root.key, MessageDigest::sha256())
            .expect("sign");
        TestCa {
            root: Issued {
                cert: builder.build(),
                key,
            },
        }
    }

    /// A certificate for `names` with a key of `kind`.
    pub fn issue_for(&self, names: &[&str], validity: Validity, kind: KeyKind) -> Issued {
        let key = key(kind);
        let mut builder = X509::builder().expect("builder");
        builder.set_version(2).expect("v3");
        builder.set_serial_number(&serial()).expect("serial");
        builder.set_subject_name(&name(names[0])).expect("subject");
        builder
            .set_issuer_name(self.root.cert.subject_name())
            .expect("issuer");
        builder.set_pubkey(&key).expect("public key");
        builder
            .set_not_before(&time(validity.from_days))
            .expect("not before");
        builder
            .set_not_after(&time(validity.to_days))
            .expect("not after");
        let mut alternative = SubjectAlternativeName::new();
        for name in names {
            match name.parse::<std::net::IpAddr>() {
                Ok(_) => alternative.ip(name),
                Err(_) => alternative.dns(name),
            };
        }
        let extension = alternative
            .build(&builder.x509v3_context(Some(&self.root.cert), None))
            .expect("SAN");
        builder.append_extension(extension).expect("extension");
        builder
            .sign(&self.root.key, MessageDigest::sha256())
            .expect("sign");
        Issued {
            cert: builder.build(),
            key,
        }
    }
}

/// A server's TLS settings for `issued`; with `clients_of`, it demands a client certificate
/// signed by that authority (mutual TLS).
pub fn acceptor(issued: &Issued, clients_of: Option<&TestCa>) -> SslAcceptor {
    let mut builder =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor builder");
    builder.set_certificate(&issued.cert).expect("certificate");
    builder.set_private_key(&issued.key).expect("key");
    if let Some(ca) = clients_of {
        let mut store = openssl::x509::store::X509StoreBuilder::new().expect("store");
        store.add_cert(ca.root.cert.clone()).expect("CA");
        builder
            .set_verify_cert_store(store.build())
            .expect("verify store");
        builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    builder.build()
}

/// A client that trusts `ca` only and offers `alpn` (wire format, such as b"\x02h2").
pub fn connector(ca: &TestCa, alpn: &[u8]) -> SslConnector {
    let mut builder = SslConnector::builder(SslMethod::tls()).expect("connector builder");
    let mut store = openssl::x509::store::X509StoreBuilder::new().expect("store");
    store.add_cert(ca.root.cert.clone()).expect("CA");
    builder
        .set_verify_cert_store(store.build())
        .expect("verify store");
    builder.set_alpn_protos(alpn).expect("ALPN");
    builder.build()
}
