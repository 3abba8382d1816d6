//! Who the client is and the `X-Forwarded-*` headers sent upstream. Headers that claim to say
//! where a request came from are believed only from `trusted_proxies`.

use std::net::IpAddr;

use http::header;
use ipnet::IpNet;
use pingora::http::RequestHeader;

/// What the gateway knows about where a request came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The address of the TCP peer.
    pub peer: IpAddr,
    /// The client as far as trusted proxies can tell: the right-most untrusted address.
    pub client: IpAddr,
    pub peer_trusted: bool,
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
        Origin {
            peer,
            client,
            peer_trusted,
        }
    }

    /// `X-Forwarded-For` for the upstream: appended to a trusted proxy's list, else replaced.
    pub fn forwarded_for(&self, existing: Option<&str>) -> String {
        match existing.filter(|list| self.peer_trusted && !list.trim().is_empty()) {
            Some(list) => format!("{}, {}", list.trim(), self.peer),
            None => self.peer.to_string(),
        }
    }

    /// A client-supplied `X-Forwarded-Proto` or `-Host` value, kept only from a trusted proxy.
    pub fn trusted_value<'a>(&self, claimed: Option<&'a str>) -> Option<&'a str> {
        claimed.filter(|_| self.peer_trusted)
    }
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// Every `X-Forwarded-For` value of a request, joined as one list.
pub fn forwarded_for_list(request: &RequestHeader) -> Option<String> {
    let values: Vec<&str> = request
        .headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Sets `Host` to the upstream's and the `X-Forwarded-*` headers to what the gateway vouches for.
pub fn rewrite_upstream_headers(
    request: &mut RequestHeader,
    origin: &Origin,
    upstream_host: &str,
) -> pingora::Result<()> {
    let text = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let forwarded_for = origin.forwarded_for(forwarded_for_list(request).as_deref());
    let proto = origin
        .trusted_value(text(X_FORWARDED_PROTO).as_deref())
        .unwrap_or("http")
        .to_string();
    let client_host = text(X_FORWARDED_HOST)
        .filter(|_| origin.peer_trusted)
        .or_else(|| text(header::HOST.as_str()))
        .or_else(|| request.uri.authority().map(|a| a.to_string()));
    request.insert_header(X_FORWARDED_FOR, forwarded_for)?;
    request.insert_header(X_FORWARDED_PROTO, proto)?;
    match client_host {
        Some(host) => request.insert_header(X_FORWARDED_HOST, host)?,
        None => drop(request.remove_header(X_FORWARDED_HOST)),
    }
    request.insert_header(header::HOST, upstream_host)?;
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
        assert_eq!(origin.forwarded_for(Some("1.2.3.4")), "203.0.113.9");
        assert_eq!(origin.trusted_value(Some("https")), None);
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
            origin.forwarded_for(Some("6.6.6.6, 198.51.100.7, 10.0.0.9")),
            "6.6.6.6, 198.51.100.7, 10.0.0.9, 10.0.0.2"
        );
        assert_eq!(origin.trusted_value(Some("https")), Some("https"));
    }

    #[test]
    fn garbage_in_the_list_stops_the_walk() {
        let trusted = nets(&["10.0.0.0/8"]);
        let origin = Origin::new(ip("10.0.0.2"), Some("1.1.1.1, not-an-ip"), &trusted);
        assert_eq!(origin.client, ip("10.0.0.2"));
        let origin = Origin::new(ip("10.0.0.2"), None, &trusted);
        assert_eq!(origin.client, ip("10.0.0.2"));
        assert_eq!(origin.forwarded_for(None), "10.0.0.2");
    }
}
