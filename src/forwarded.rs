//! Who the client is and the `X-Forwarded-*` headers sent upstream. Headers that claim to say
//! where a request came from are believed only from `trusted_proxies`.

use std::net::IpAddr;

use http::request::Parts;
use http::{header, HeaderName, HeaderValue};
use ipnet::IpNet;
use pingora::http::RequestHeader;
use pingora::ErrorType::InvalidHTTPHeader;
use pingora::OrErr;

/// What the gateway knows about where a request came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The address of the TCP peer.
    pub peer: IpAddr,
    /// The client as far as trusted proxies can tell: the right-most untrusted address.
    pub client: IpAddr,
    pub peer_trusted: bool,
    /// The `X-Forwarded-For` the upstream gets: the peer appended to a trusted proxy's list,
    /// else the peer alone.
    pub forwarded_for: String,
    /// Whether the request came over the TLS listener.
    pub tls: bool,
}

impl Origin {
    pub fn new(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> Origin {
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
        let peer_trusted = is_trusted(&peer);
        let mut client = peer;
        if peer_trusted {
            for hop in forwarded_for.unwrap_or("").rsplit(',') {
                let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                    break;
                };
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
        }
        let forwarded_for = match forwarded_for.filter(|l| peer_trusted && !l.trim().is_empty()) {
            Some(list) => format!("{}, {}", list.trim(), ip_text(peer)),
            None => ip_text(peer),
        };
        Origin {
            peer,
            client,
            peer_trusted,
            forwarded_for,
            tls: false,
        }
    }
}

/// An address as text, written digit by digit: this runs for every request, and the
/// formatting machinery costs several times more for an IPv4 address.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (index, octet) in v4.octets().into_iter().enumerate() {
        if index > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether a trusted proxy in front says the client's connection was https: the first value
/// of `X-Forwarded-Proto`, which proxies that append leave as the client's.
pub fn came_over_https(request: &RequestHeader, origin: &Origin) -> bool {
    let first = |proto: &HeaderValue| {
        let client_side = proto
            .as_bytes()
            .split(|b| *b == b',')
            .next()
            .unwrap_or_default();
        client_side.trim_ascii().eq_ignore_ascii_case(b"https")
    };
    origin.peer_trusted && request.headers.get(&X_FORWARDED_PROTO).is_some_and(first)
}

/// Every `X-Forwarded-For` value of a request, joined as one list.
pub fn forwarded_for_list(request: &RequestHeader) -> Option<String> {
    let values: Vec<&str> = request
        .headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Sets `Host` to the upstream's and the `X-Forwarded-*` headers to what the gateway vouches for.
pub fn rewrite_upstream_headers(
    request: &mut Parts,
    origin: &Origin,
    upstream_host: &str,
) -> pingora::Result<()> {
    let headers = &mut request.headers;
    // Values are cloned (a reference count, not a copy) to be set again on the same request.
    let trusted = |name: &HeaderName| headers.get(name).filter(|_| origin.peer_trusted).cloned();
    let own = if origin.tls { "https" } else { "http" };
    let proto = trusted(&X_FORWARDED_PROTO).unwrap_or(HeaderValue::from_static(own));
    let client_host = trusted(&X_FORWARDED_HOST)
        .or_else(|| headers.get(header::HOST).cloned())
        .or_else(|| {
            let authority = request.uri.authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
    let forwarded_for = HeaderValue::from_str(&origin.forwarded_for)
        .or_err(InvalidHTTPHeader, "X-Forwarded-For")?;
    let host = HeaderValue::from_str(upstream_host).or_err(InvalidHTTPHeader, "upstream host")?;
    headers.insert(&X_FORWARDED_FOR, forwarded_for);
    headers.insert(&X_FORWARDED_PROTO, proto);
    match client_host {
        Some(host) => headers.insert(&X_FORWARDED_HOST, host),
        None => headers.remove(&X_FORWARDED_HOST),
    };
    headers.insert(header::HOST, host);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_and_its_list_is_replaced() {
        let origin = Origin::new(ip("203.0.113.9"), Some("1.2.3.4"), &nets(&["10.0.0.0/8"]));
        assert_eq!(origin.client, ip("203.0.113.9"));
        assert_eq!(origin.forwarded_for, "203.0.113.9");
        assert!(!origin.peer_trusted);
    }

    #[test]
    fn a_trusted_peer_appends_and_the_client_is_the_rightmost_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        let origin = Origin::new(
            ip("10.0.0.2"),
            Some("6.6.6.6, 198.51.100.7, 10.0.0.9"),
            &trusted,
        );
        assert_eq!(origin.client, ip("198.51.100.7"));
        assert_eq!(
            origin.forwarded_for,
            "6.6.6.6, 198.51.100.7, 10.0.0.9, 10.0.0.2"
        );
        assert!(origin.peer_trusted);
    }

    #[test]
    fn garbage_in_the_list_stops_the_walk() {
        let trusted = nets(&["10.0.0.0/8"]);
        let origin = Origin::new(ip("10.0.0.2"), Some("1.1.1.1, not-an-ip"), &trusted);
        assert_eq!(origin.client, ip("10.0.0.2"));
        let origin = Origin::new(ip("10.0.0.2"), None, &trusted);
        assert_eq!(origin.client, ip("10.0.0.2"));
        assert_eq!(origin.forwarded_for, "10.0.0.2");
    }

    #[test]
    fn addresses_are_written_as_the_standard_library_writes_them() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            assert_eq!(ip_text(ip(text)), ip(text).to_string());
        }
        for octet in 0..=255u8 {
            let address = IpAddr::from([octet, 0, 99, octet]);
            assert_eq!(ip_text(address), address.to_string());
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A header value as a client may send it: visible ASCII, tabs and bytes above 127 (what a
    /// header value can hold), often with addresses and list separators in it.
    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            any::<IpAddr>().prop_map(|ip| ip.to_string().into_bytes()),
            prop::sample::select(vec![",", ", ", " ", "\t", "unknown", "[::1]", "1.2.3.4:80"])
                .prop_map(|s| s.as_bytes().to_vec()),
            prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..8),
        ];
        prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
    }

    fn trusted() -> impl Strategy<Value = Vec<IpNet>> {
        prop::sample::select(vec![
            vec![],
            vec!["10.0.0.0/8"],
            vec!["10.0.0.0/8", "fd00::/8"],
            vec!["0.0.0.0/0", "::/0"],
        ])
        .prop_map(|nets| nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn peer() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<IpAddr>(),
            (0u8..3).prop_map(|last| IpAddr::from([10, 0, 0, last])),
        ]
    }

    proptest! {
        #[test]
        fn any_forwarded_for_gives_a_client_it_names_or_the_peer(
            peer in peer(),
            list in prop::option::of(".{0,40}|[0-9a-f.:, ]{0,40}"),
            trusted in trusted(),
        ) {
            let origin = Origin::new(peer, list.as_deref(), &trusted);
            let named = |ip: &IpAddr| {
                list.as_deref().unwrap_or("").split(',').any(|hop| hop.trim().parse() == Ok(*ip))
            };
            prop_assert!(origin.client == peer || named(&origin.client));
            prop_assert!(origin.forwarded_for.ends_with(&ip_text(peer)));
            if !origin.peer_trusted {
                prop_assert_eq!(origin.client, peer);
                prop_assert_eq!(origin.forwarded_for, ip_text(peer));
            }
        }

        #[test]
        fn any_client_headers_are_rewritten_without_failing_or_trusting_a_stranger(
            peer in peer(),
            forwarded_for in prop::collection::vec(header_value(), 0..3),
            proto in prop::option::of(header_value()),
            forwarded_host in prop::option::of(header_value()),
            host in prop::option::of(header_value()),
            trusted in trusted(),
        ) {
            let mut request = RequestHeader::build("GET", b"/", None).unwrap();
            let value = |bytes: &[u8]| HeaderValue::from_bytes(bytes).unwrap();
            for list in &forwarded_for {
                request.append_header(&X_FORWARDED_FOR, value(list)).unwrap();
            }
            let claims = [
                (&X_FORWARDED_PROTO, &proto),
                (&X_FORWARDED_HOST, &forwarded_host),
                (&header::HOST, &host),
            ];
            for (name, claimed) in claims {
                if let Some(claimed) = claimed {
                    request.insert_header(name, value(claimed)).unwrap();
                }
            }
            let origin = Origin::new(peer, forwarded_for_list(&request).as_deref(), &trusted);
            let mut parts = request.as_owned_parts();
            prop_assert!(rewrite_upstream_headers(&mut parts, &origin, "app.internal").is_ok());
            let sent = |name: &HeaderName| parts.headers.get(name).map(|v| v.as_bytes().to_vec());
            prop_assert_eq!(sent(&X_FORWARDED_FOR), Some(origin.forwarded_for.clone().into_bytes()));
            prop_assert_eq!(sent(&header::HOST), Some(b"app.internal".to_vec()));
            if !origin.peer_trusted {
                prop_assert_eq!(sent(&X_FORWARDED_PROTO), Some(b"http".to_vec()));
                prop_assert_eq!(sent(&X_FORWARDED_HOST), host);
            }
        }
    }
}
