//! `gateway.yaml` as written, and its reader: each value is checked on its own here (the
//! authentication sections in `auth`, the limits in `limits`); checks across values and files
//! live in `compile`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::auth::AuthSections;
use super::decode::{Reader, Spanned};
use super::yaml::Node;
use super::{AuthConfig, ClientLimits, Docs, EncodedSlashes, TlsListener};
use crate::cors::CorsPolicy;
use crate::ratelimit::RatePolicy;

/// `gateway.yaml`.
pub struct GatewayFile {
    pub listen: Option<Spanned<SocketAddr>>,
    pub admin_listen: Option<Spanned<SocketAddr>>,
    pub tls: Option<TlsListener>,
    pub public_url: Option<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub include: Vec<Spanned<String>>,
    pub watch: bool,
    pub threads: Option<usize>,
    pub shutdown_grace_period: Option<Duration>,
    pub shutdown_delay: Option<Duration>,
    pub pid_file: Option<Spanned<String>>,
    pub upgrade_socket: Option<Spanned<String>>,
    pub client: ClientLimits,
    pub encoded_slashes: EncodedSlashes,
    pub cors: Option<Arc<CorsPolicy>>,
    pub auth: AuthConfig,
    pub rate_limits: RatePolicy,
    pub record_metrics: bool,
    pub record_usage: bool,
    pub docs: Docs,
}

/// The longest path a unix socket address holds (`sun_path` less its final NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The longest path Linux opens (`PATH_MAX` less its final NUL).
const PATH_MAX: usize = 4095;

const GATEWAY_KEYS: &[&str] = &[
    "listen",
    "admin_listen",
    "tls",
    "public_url",
    "trusted_proxies",
    "include",
    "watch",
    "threads",
    "shutdown_grace_period",
    "shutdown_delay",
    "pid_file",
    "upgrade_socket",
    "client",
    "encoded_slashes",
    "cors",
    "store",
    "jwt",
    "roles",
    "seed",
    "rate_limits",
    "observability",
    "docs",
];
const CLIENT_KEYS: &[&str] = &[
    "header_timeout",
    "keepalive_timeout",
    "max_header_size",
    "max_headers",
    "max_request_line",
];
const DOCS_KEYS: &[&str] = &["title", "version", "description", "refresh"];
const OBSERVABILITY_KEYS: &[&str] = &["metrics", "usage"];

impl GatewayFile {
    pub fn read(node: &Node, r: &mut Reader, base: &Path) -> GatewayFile {
        let fields = r.fields(node, "", GATEWAY_KEYS);
        let section = |key: &str| fields.as_ref().and_then(|f| f.get(key));
        let sections = AuthSections {
            store: section("store"),
            jwt: section("jwt"),
            roles: section("roles"),
            seed: section("seed"),
        };
        let mut file = GatewayFile {
            listen: None,
            admin_listen: None,
            tls: None,
            public_url: None,
            trusted_proxies: Vec::new(),
            include: Vec::new(),
            watch: false,
            threads: None,
            shutdown_grace_period: None,
            shutdown_delay: None,
            pid_file: None,
            upgrade_socket: None,
            client: ClientLimits::default(),
            encoded_slashes: EncodedSlashes::default(),
            cors: None,
            auth: super::auth::compile(sections, r, base),
            rate_limits: RatePolicy::default(),
            record_metrics: true,
            record_usage: true,
            docs: Docs::default(),
        };
        let Some(fields) = fields else {
            return file;
        };
        if let Some((node, field)) = fields.get("docs") {
            file.docs = read_docs(node, &field, r);
        }
        if let Some((node, field)) = fields.get("observability") {
            if let Some(section) = r.fields(node, &field, OBSERVABILITY_KEYS) {
                if let Some((node, field)) = section.get("metrics") {
                    file.record_metrics = r.boolean(node, &field).unwrap_or(true);
                }
                if let Some((node, field)) = section.get("usage") {
                    file.record_usage = r.boolean(node, &field).unwrap_or(true);
                }
            }
        }
        if let Some((node, field)) = fields.get("rate_limits") {
            file.rate_limits = super::limits::read_policy(node, &field, r, &file.auth.roles);
        }
        if let Some((node, field)) = fields.get("listen") {
            file.listen = r.socket_addr(node, &field);
        }
        if let Some((node, field)) = fields.get("admin_listen") {
            file.admin_listen = r.socket_addr(node, &field);
        }
        if let Some((node, field)) = fields.get("tls") {
            file.tls = super::tls::read_listener(node, &field, r, base);
        }
        if let Some((node, field)) = fields.get("public_url") {
            file.public_url = r.parsed(
                node,
                &field,
                "a URL",
                "write the URL clients use, such as https://api.hackitech.example",
                |text| match text.parse::<http::Uri>() {
                    Ok(uri)
                        if matches!(uri.scheme_str(), Some("http" | "https"))
                            && uri.host().is_some() =>
                    {
                        Ok(text.trim_end_matches('/').to_string())
                    }
                    _ => Err(format!("`{text}` is not an absolute http(s) URL")),
                },
            );
        }
        if let Some((node, field)) = fields.get("trusted_proxies") {
            file.trusted_proxies = r
                .list(node, &field, "[10.0.0.0/8, 127.0.0.1]", Reader::ip_net)
                .unwrap_or_default();
        }
        if let Some((node, field)) = fields.get("include") {
            file.include = r
                .list(node, &field, "[routes/*.yaml]", Reader::string)
                .unwrap_or_default();
        }
        if let Some((node, field)) = fields.get("watch") {
            file.watch = r.boolean(node, &field).unwrap_or(false);
        }
        if let Some((node, field)) = fields.get("threads") {
            file.threads = r.count(node, &field, 1024);
        }
        if let Some((node, field)) = fields.get("shutdown_grace_period") {
            file.shutdown_grace_period = r.duration(node, &field);
        }
        if let Some((node, field)) = fields.get("shutdown_delay") {
            file.shutdown_delay = r.duration_or_zero(node, &field);
        }
        if let Some((node, field)) = fields.get("pid_file") {
            file.pid_file =
                read_runtime_path(node, &field, r, PATH_MAX, "/run/guichet/guichet.pid");
        }
        if let Some((node, field)) = fields.get("upgrade_socket") {
            file.upgrade_socket = read_runtime_path(
                node,
                &field,
                r,
                MAX_SOCKET_PATH,
                "/run/guichet/upgrade.sock",
            );
        }
        if let Some((node, field)) = fields.get("client") {
            file.client = read_client(node, &field, r);
        }
        if let Some((node, field)) = fields.get("encoded_slashes") {
            file.encoded_slashes = read_encoded_slashes(node, &field, r).unwrap_or_default();
        }
        if let Some((node, field)) = fields.get("cors") {
            file.cors = super::cors::read(node, &field, r).flatten();
        }
        file
    }
}

/// `client:`: the limits on a client's request head and idle connection.
fn read_client(node: &Node, field: &str, r: &mut Reader) -> ClientLimits {
    let mut limits = ClientLimits::default();
    let Some(fields) = r.fields(node, field, CLIENT_KEYS) else {
        return limits;
    };
    for (key, slot) in [
        ("header_timeout", &mut limits.header_timeout),
        ("keepalive_timeout", &mut limits.keepalive_timeout),
    ] {
        if let Some(duration) = fields.get(key).and_then(|(n, f)| r.duration(n, &f)) {
            *slot = duration;
        }
    }
    // pingora reads at most 1 MiB of head and 256 header lines whatever is set here.
    let sizes = [
        (
            "max_header_size",
            &mut limits.max_header_size,
            1024,
            1024 * 1024,
        ),
        (
            "max_request_line",
            &mut limits.max_request_line,
            256,
            1024 * 1024,
        ),
    ];
    for (key, slot, least, most) in sizes {
        let Some((node, field)) = fields.get(key) else {
            continue;
        };
        match r.size(node, &field) {
            Some(size) if (least..=most).contains(&size) => *slot = size as usize,
            Some(size) => r.error(
                node.mark,
                &field,
                format!("{size} bytes is outside what a request head can be limited to"),
                &format!("write a size from {least} bytes to 1MiB, such as 32KiB"),
            ),
            None => {}
        }
    }
    if let Some(count) = fields
        .get("max_headers")
        .and_then(|(n, f)| r.count(n, &f, 256))
    {
        limits.max_headers = count;
    }
    if limits.max_request_line > limits.max_header_size {
        if let Some((node, field)) = fields.get("max_request_line") {
            r.error(
                node.mark,
                &field,
                format!(
                    "the request line limit ({} bytes) is larger than the whole head's ({} bytes)",
                    limits.max_request_line, limits.max_header_size
                ),
                "make `max_request_line` at most `max_header_size`",
            );
        }
    }
    limits
}

/// `pid_file:` and `upgrade_socket:`: a path of at most `limit` bytes (a unix socket's is short).
fn read_runtime_path(
    node: &Node,
    field: &str,
    r: &mut Reader,
    limit: usize,
    example: &str,
) -> Option<Spanned<String>> {
    let path = r.parsed(
        node,
        field,
        "a file path",
        &format!(
            "write a path of at most {limit} bytes in a directory only the gateway's user can \
             write, such as {example}"
        ),
        |text| match text.len() {
            0 => Err("the path is empty".to_string()),
            n if n <= limit => Ok(text.to_string()),
            n => Err(format!(
                "a path here has at most {limit} bytes; this one has {n}"
            )),
        },
    )?;
    Some(Spanned::new(path, node.mark))
}
/// `encoded_slashes: reject | keep`.
pub(super) fn read_encoded_slashes(
    node: &Node,
    field: &str,
    r: &mut Reader,
) -> Option<EncodedSlashes> {
    r.parsed(
        node,
        field,
        "reject or keep",
        "write reject (400 for %2F, %5C and \\ in paths) or keep (route and forward them as they are)",
        |text| match text {
            "reject" => Ok(EncodedSlashes::Reject),
            "keep" => Ok(EncodedSlashes::Keep),
            other => Err(format!("`{other}` is not reject or keep")),
        },
    )
}

fn read_docs(node: &Node, field: &str, r: &mut Reader) -> Docs {
    let mut docs = Docs::default();
    let Some(fields) = r.fields(node, field, DOCS_KEYS) else {
        return docs;
    };
    for (key, slot) in [
        ("title", &mut docs.title),
        ("version", &mut docs.version),
        ("description", &mut docs.description),
    ] {
        if let Some(value) = fields.get(key).and_then(|(n, f)| r.string(n, &f)) {
            *slot = value.value;
        }
    }
    if let Some(every) = fields.get("refresh").and_then(|(n, f)| r.duration(n, &f)) {
        docs.refresh = every;
    }
    docs
}
