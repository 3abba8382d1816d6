//! The two `tls:` sections as written: gateway.yaml's TLS listener (its certificates, versions,
//! HTTP/2, the redirect and HSTS) and a routes file's settings for its https upstreams. Only
//! the settings are read here; the files they name are loaded and checked in `crate::tls`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::decode::{Fields, Reader};
use super::yaml::Node;
use super::{Location, Setting};

/// `tls:` in gateway.yaml: the TLS listener beside the plain one.
#[derive(Clone, Debug)]
pub struct TlsListener {
    /// `listen:`, with where it is written.
    pub listen: super::Listen,
    /// Chosen by the name the client asks for (SNI); the first is the default.
    pub certificates: Vec<CertificateFiles>,
    pub min_version: TlsVersion,
    /// ALPN offers h2 before http/1.1.
    pub http2: bool,
    /// The plain listener answers 308 to the same URL on https.
    pub redirect_http: bool,
    /// `Strict-Transport-Security: max-age` on TLS answers; zero: none.
    pub hsts: Duration,
}

/// A certificate chain and its private key, PEM files resolved against gateway.yaml's folder.
#[derive(Clone, Debug)]
pub struct CertificateFiles {
    pub cert: Setting<PathBuf>,
    pub key: Setting<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// `tls:` in a routes file: how the service's https upstreams are verified, and the client
/// certificate the gateway shows them.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    /// PEM certificates of the authorities trusted; `None`: the system's bundle.
    pub ca: Option<Setting<PathBuf>>,
    /// Whether the upstream's certificate and host name are verified.
    pub verify: bool,
    /// The gateway's certificate for mutual TLS.
    pub client: Option<CertificateFiles>,
    /// The name sent in the handshake and verified, instead of the URL's host (needed when
    /// the URL names an IP address).
    pub server_name: Option<String>,
    /// Where the section is written, for the warning about `verify: false`.
    pub at: Location,
}

impl Default for UpstreamTls {
    fn default() -> UpstreamTls {
        UpstreamTls {
            ca: None,
            verify: true,
            client: None,
            server_name: None,
            at: Location {
                file: Path::new("").into(),
                mark: None,
            },
        }
    }
}

impl UpstreamTls {
    /// The same settings with the files named from `base`, gateway.yaml's folder.
    pub fn resolved(mut self, base: &Path) -> UpstreamTls {
        let files = self.ca.iter_mut().chain(
            self.client
                .iter_mut()
                .flat_map(|pair| [&mut pair.cert, &mut pair.key]),
        );
        for file in files {
            file.value = base.join(&file.value);
        }
        self
    }
}

const LISTENER_KEYS: &[&str] = &[
    "listen",
    "certificates",
    "min_version",
    "http2",
    "redirect_http",
    "hsts",
];
const CERTIFICATE_KEYS: &[&str] = &["cert", "key"];
const UPSTREAM_KEYS: &[&str] = &["ca", "verify", "client_cert", "client_key", "server_name"];

/// gateway.yaml's `tls:`; `base` is the folder the files are named from.
pub fn read_listener(node: &Node, field: &str, r: &mut Reader, base: &Path) -> Option<TlsListener> {
    let fields = r.fields(node, field, LISTENER_KEYS)?;
    let listen = match fields.get("listen") {
        Some((node, field)) => r.socket_addr(node, &field).map(|addr| super::Listen {
            addr: addr.value,
            at: Some(r.at(addr.mark)),
            field: "tls.listen",
        }),
        None => {
            missing(r, &fields, field, "listen", "add `listen: 0.0.0.0:8443`");
            None
        }
    };
    let certificates = match fields.get("certificates") {
        Some((node, field)) => {
            let list = r.list(
                node,
                &field,
                "[{cert: certs/api.pem, key: certs/api.key}]",
                |r, node, field| read_pair(node, field, r, base),
            );
            if list.as_ref().is_some_and(Vec::is_empty) {
                r.error(
                    node.mark,
                    &field,
                    "the list is empty",
                    "name at least one certificate: `[{cert: certs/api.pem, key: certs/api.key}]`",
                );
                return None;
            }
            list
        }
        None => {
            missing(
                r,
                &fields,
                field,
                "certificates",
                "add `certificates: [{cert: certs/api.pem, key: certs/api.key}]`",
            );
            None
        }
    };
    let min_version = match fields.get("min_version") {
        Some((node, field)) => r.parsed(
            node,
            &field,
            "a TLS version",
            "write \"1.2\" or \"1.3\"",
            |text| match text {
                "1.2" => Ok(TlsVersion::V1_2),
                "1.3" => Ok(TlsVersion::V1_3),
                other => Err(format!("`{other}` is not a TLS version the gateway offers")),
            },
        ),
        None => Some(TlsVersion::V1_2),
    };
    let flag = |r: &mut Reader, key: &str, default: bool| match fields.get(key) {
        Some((node, field)) => r.boolean(node, &field),
        None => Some(default),
    };
    let http2 = flag(r, "http2", true);
    let redirect_http = flag(r, "redirect_http", false);
    let hsts = match fields.get("hsts") {
        Some((node, field)) => read_hsts(node, &field, r),
        None => Some(Duration::ZERO),
    };
    Some(TlsListener {
        listen: listen?,
        certificates: certificates?,
        min_version: min_version?,
        http2: http2?,
        redirect_http: redirect_http?,
        hsts: hsts?,
    })
}

/// A routes file's `tls:`. The paths stay as written; `compile` resolves them.
pub fn read_upstream(node: &Node, field: &str, r: &mut Reader) -> Option<UpstreamTls> {
    let fields = r.fields(node, field, UPSTREAM_KEYS)?;
    let file = |r: &mut Reader, key: &str| {
        fields.get(key).map(|(node, field)| {
            r.string(node, &field).map(|path| Setting {
                value: PathBuf::from(path.value),
                at: r.at(path.mark),
                field,
            })
        })
    };
    let ca = file(r, "ca");
    let client_cert = file(r, "client_cert");
    let client_key = file(r, "client_key");
    let verify = match fields.get("verify") {
        Some((node, field)) => r.boolean(node, &field),
        None => Some(true),
    };
    let server_name = match fields.get("server_name") {
        Some((node, field)) => r
            .parsed(
                node,
                &field,
                "a host name",
                "write the name the upstream's certificate holds, such as courses.internal",
                |text| {
                    let valid = !text.is_empty()
                        && text.parse::<std::net::IpAddr>().is_err()
                        && text
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
                    if valid {
                        Ok(text.to_ascii_lowercase())
                    } else {
                        Err(format!("`{text}` is not a host name"))
                    }
                },
            )
            .map(Some),
        None => Some(None),
    };
    let client = match (client_cert, client_key) {
        (Some(cert), Some(key)) => Some(
            cert.zip(key)
                .map(|(cert, key)| CertificateFiles { cert, key }),
        ),
        (None, None) => Some(None),
        (Some(_), None) | (None, Some(_)) => {
            r.error(
                fields.mark,
                field,
                "`client_cert` and `client_key` go together",
                "name both the gateway's client certificate and its key, or neither",
            );
            None
        }
    };
    Some(UpstreamTls {
        ca: ca.map_or(Some(None), |ca| ca.map(Some))?,
        verify: verify?,
        client: client?,
        server_name: server_name?,
        at: r.at(fields.mark),
    })
}

/// `hsts:` — a duration up to two years (`1y` and `2y` are the usual values); `0s`: none.
fn read_hsts(node: &Node, field: &str, r: &mut Reader) -> Option<Duration> {
    const MOST: Duration = Duration::from_secs(2 * 366 * 24 * 3600);
    r.parsed(
        node,
        field,
        "a duration",
        "write a duration such as 180d or 1y, or 0s for no Strict-Transport-Security",
        |text| match humantime::parse_duration(text) {
            Ok(duration) if duration <= MOST => Ok(duration),
            Ok(_) => Err(format!("`{text}` is longer than two years")),
            Err(_) => Err(format!("`{text}` is not a duration")),
        },
    )
}

fn read_pair(node: &Node, field: &str, r: &mut Reader, base: &Path) -> Option<CertificateFiles> {
    let fields = r.fields(node, field, CERTIFICATE_KEYS)?;
    let mut file = |key: &str| match fields.get(key) {
        Some((node, field)) => r.string(node, &field).map(|path| Setting {
            value: base.join(path.value),
            at: r.at(path.mark),
            field,
        }),
        None => {
            missing(
                r,
                &fields,
                field,
                key,
                "write both files: `{cert: certs/api.pem, key: certs/api.key}`",
            );
            None
        }
    };
    let cert = file("cert");
    let key = file("key");
    Some(CertificateFiles {
        cert: cert?,
        key: key?,
    })
}

fn missing(r: &mut Reader, fields: &Fields, field: &str, key: &str, hint: &str) {
    r.error(
        fields.mark,
        &format!("{field}.{key}"),
        format!("missing `{key}`"),
        hint,
    );
}
