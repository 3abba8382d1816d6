//! What a parsed request head must be for the gateway to serve it, checked once, before
//! routing: a valid `Host` (required by HTTP/1.1, RFC 9112 §3.2) and authority (HTTP/2's
//! `:authority`, or an absolute-form target), at most one credential
//! header of each kind, a transfer coding the gateway can frame (`chunked` only), and no
//! header the gateway vouches for named in `Connection` (such a nomination is dropped: the
//! gateway sets those headers itself).

use http::header::{AUTHORIZATION, CONNECTION, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Version};
use pingora::http::RequestHeader;

use crate::auth::identity::X_API_KEY;
use crate::errors::GatewayError;

/// The body length a request declares in `Content-Length`, when it is a number.
pub fn declared_length(request: &RequestHeader) -> Option<u64> {
    request
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Headers the gateway sets for the upstream; a client may not have them removed on the way.
const PROTECTED: [&str; 4] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Checks `request` and drops protected names from its `Connection` header.
pub fn check(request: &mut RequestHeader) -> Result<(), GatewayError> {
    let (mut hosts, mut authorizations, mut api_keys, mut codings) = (0, 0, 0, 0);
    let mut nominates_protected = false;
    let mut host = None;
    for (name, value) in &request.headers {
        if name == HOST {
            hosts += 1;
            host = Some(value.as_bytes());
        } else if name == AUTHORIZATION {
            authorizations += 1;
        } else if name == X_API_KEY {
            api_keys += 1;
        } else if name == TRANSFER_ENCODING {
            codings += 1;
            check_transfer_coding(value, request.version)?;
        } else if name == CONNECTION {
            nominates_protected |= nominations(value).any(is_protected);
        }
    }
    if hosts > 1 {
        return Err(bad("The request has more than one Host header."));
    }
    // HTTP/2 names the host in `:authority` (an absolute-form target too), which is checked
    // as a Host header is. One call site, so that the check stays inlined.
    let authority = request.uri.authority().map(|a| a.as_str().as_bytes());
    let named = [
        (host, "The Host header is not a valid host name and port."),
        (
            authority,
            "The request's authority is not a valid host name and port.",
        ),
    ];
    for (value, problem) in named {
        if value.is_some_and(|value| !is_valid_host(value)) {
            return Err(bad(problem));
        }
    }
    if hosts == 0 && request.version == Version::HTTP_11 && authority.is_none() {
        return Err(bad("An HTTP/1.1 request needs a Host header."));
    }
    if authorizations > 1 || api_keys > 1 {
        return Err(bad(
            "The request carries more than one Authorization or X-API-Key header.",
        ));
    }
    if codings > 1 {
        return Err(unsupported_coding());
    }
    if nominates_protected {
        drop_protected_nominations(request);
    }
    Ok(())
}

fn bad(detail: &str) -> GatewayError {
    GatewayError::BadRequest(detail.to_string())
}

fn unsupported_coding() -> GatewayError {
    GatewayError::NotImplemented(
        "Only the chunked transfer coding is supported; send the body chunked or with a Content-Length."
            .to_string(),
    )
}

/// `Transfer-Encoding` must be `chunked` alone: anything else (`identity, chunked`, `gzip`)
/// would be framed differently by the gateway and by the upstream. An HTTP/1.0 request cannot
/// carry one at all (RFC 9112 §6.1).
fn check_transfer_coding(value: &HeaderValue, version: Version) -> Result<(), GatewayError> {
    if version == Version::HTTP_10 {
        return Err(bad("An HTTP/1.0 request cannot use Transfer-Encoding."));
    }
    if value
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"chunked")
    {
        Ok(())
    } else {
        Err(unsupported_coding())
    }
}

/// The tokens of a `Connection` value, trimmed.
fn nominations(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

fn is_protected(token: &[u8]) -> bool {
    PROTECTED
        .iter()
        .any(|name| token.eq_ignore_ascii_case(name.as_bytes()))
}

/// Rewrites `Connection` without the protected names (pingora refuses to forward a request
/// that nominates them; the gateway replaces those headers anyway).
fn drop_protected_nominations(request: &mut RequestHeader) {
    let kept: Vec<Vec<u8>> = request
        .headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(nominations)
        .filter(|token| !is_protected(token))
        .map(<[u8]>::to_vec)
        .collect();
    request.remove_header(&CONNECTION);
    let value = kept.join(&b", "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        if !value.is_empty() {
            // Cannot fail: the name is a standard one and the value was one already.
            let _ = request.insert_header(CONNECTION, value);
        }
    }
}

/// `uri-host [":" port]` (RFC 9110 §7.2) as DNS names and IP literals are written: letters,
/// digits, `-`, `.` and `_`, or an IPv6 literal in brackets; a port of at most five digits.
/// Nothing else reaches the upstream as `X-Forwarded-Host`, from which backends build links.
pub fn is_valid_host(host: &[u8]) -> bool {
    let (name, port) = match host.first() {
        Some(b'[') => match host.iter().position(|b| *b == b']') {
            Some(end) => {
                let literal = &host[1..end];
                let valid = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
                if !valid {
                    return false;
                }
                (&host[..=end], &host[end + 1..])
            }
            None => return false,
        },
        _ => match host.iter().position(|b| *b == b':') {
            Some(colon) => (&host[..colon], &host[colon..]),
            None => (host, &[][..]),
        },
    };
    let name_ok = !name.is_empty()
        && name.len() <= 255
        && (name[0] == b'['
            || name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => {
            !digits.is_empty() && digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    name_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(version: Version, headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/api/x", None).unwrap();
        request.set_version(version);
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    fn code(version: Version, headers: &[(&str, &str)]) -> Option<u16> {
        check(&mut request(version, headers))
            .err()
            .map(|e| e.status())
    }

    #[test]
    fn host_names_and_ports_as_written_by_clients_are_valid() {
        for host in [
            "api.hackitech.example",
            "localhost:8080",
            "127.0.0.1",
            "[::1]:443",
            "[2001:db8::1]",
            "my_service.internal",
        ] {
            assert!(is_valid_host(host.as_bytes()), "{host}");
        }
        for host in [
            "",
            "x/api/private",
            "a b",
            "evil.example@good.example",
            "host:",
            "host:123456",
            "host:80:81",
            "[::1",
            "[zz]",
            "a\\b",
            "é.example",
        ] {
            assert!(!is_valid_host(host.as_bytes()), "{host}");
        }
    }

    #[test]
    fn http_1_1_needs_one_valid_host_and_http_1_0_may_have_none() {
        assert_eq!(code(Version::HTTP_11, &[("host", "a")]), None);
        assert_eq!(code(Version::HTTP_11, &[]), Some(400));
        assert_eq!(code(Version::HTTP_10, &[]), None);
        assert_eq!(code(Version::HTTP_11, &[("host", "")]), Some(400));
        assert_eq!(code(Version::HTTP_11, &[("host", "a b")]), Some(400));
        assert_eq!(
            code(Version::HTTP_11, &[("host", "a"), ("host", "b")]),
            Some(400)
        );
    }

    #[test]
    fn one_credential_of_each_kind() {
        let two = [
            ("host", "a"),
            ("authorization", "Bearer x"),
            ("authorization", "Bearer y"),
        ];
        assert_eq!(code(Version::HTTP_11, &two), Some(400));
        let keys = [("host", "a"), ("x-api-key", "k.1"), ("x-api-key", "k.2")];
        assert_eq!(code(Version::HTTP_11, &keys), Some(400));
        let both = [
            ("host", "a"),
            ("authorization", "Bearer x"),
            ("x-api-key", "k.1"),
        ];
        assert_eq!(code(Version::HTTP_11, &both), None);
    }

    #[test]
    fn only_chunked_alone_is_a_transfer_coding_the_gateway_frames() {
        let with = |te: &str| {
            code(
                Version::HTTP_11,
                &[("host", "a"), ("transfer-encoding", te)],
            )
        };
        assert_eq!(with("chunked"), None);
        assert_eq!(with(" Chunked "), None);
        assert_eq!(with("identity, chunked"), Some(501));
        assert_eq!(with("gzip"), Some(501));
        let twice = [
            ("host", "a"),
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(code(Version::HTTP_11, &twice), Some(501));
        assert_eq!(
            code(Version::HTTP_10, &[("transfer-encoding", "chunked")]),
            Some(400)
        );
    }

    #[test]
    fn protected_nominations_are_dropped_and_the_rest_kept() {
        let mut nominated = request(
            Version::HTTP_11,
            &[
                ("host", "a"),
                ("connection", "keep-alive, X-Forwarded-For, x-hop"),
            ],
        );
        assert_eq!(check(&mut nominated), Ok(()));
        assert_eq!(nominated.headers["connection"], "keep-alive, x-hop");
        let mut only = request(
            Version::HTTP_11,
            &[("host", "a"), ("connection", "X-Forwarded-Host")],
        );
        assert_eq!(check(&mut only), Ok(()));
        assert!(only.headers.get("connection").is_none());
    }

    proptest! {
        #[test]
        fn any_host_bytes_are_judged_without_panicking(host in proptest::collection::vec(any::<u8>(), 0..300)) {
            let valid = is_valid_host(&host);
            if valid {
                prop_assert!(host.iter().all(|b| b.is_ascii_graphic()));
            }
        }
    }
}
