//! Who a request is: the credential it carries (`Authorization: Bearer`, `Authorization:
//! Api-Key`, `X-API-Key`), what checking it found, and the identity headers the upstream gets,
//! with every client header that could pass for one removed.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::{ErrorType, OrErr};

use std::sync::Arc;

use super::api_key::{ApiKeys, KeyCheck};
use super::bearer::BearerTokens;
use crate::credentials::fits_a_header;

// Header names are parsed once; a name given as text is parsed again at every lookup.
pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
static X_USER_NAME: HeaderName = HeaderName::from_static("x-user-name");
static X_USER_ROLE: HeaderName = HeaderName::from_static("x-user-role");
static X_CONSUMER: HeaderName = HeaderName::from_static("x-consumer");
static X_AUTH_METHOD: HeaderName = HeaderName::from_static("x-auth-method");
static X_USER_ISSUER: HeaderName = HeaderName::from_static("x-user-issuer");

/// Headers only the gateway may set; whatever a client sends under these names, or under a
/// look-alike name with `_` for `-`, is removed.
pub static IDENTITY_HEADERS: [&HeaderName; 6] = [
    &X_USER_ID,
    &X_USER_NAME,
    &X_USER_ROLE,
    &X_CONSUMER,
    &X_AUTH_METHOD,
    &X_USER_ISSUER,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Jwt,
    ApiKey,
    Anonymous,
}

impl AuthMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Anonymous => "anonymous",
        }
    }
}

/// Who made the request, as far as the gateway could verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub method: AuthMethod,
    /// A Guichet user's number, or the subject a trusted issuer gave.
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub role: Option<String>,
    /// The trusted issuer that vouched for the user; `None` for Guichet's own users.
    pub issuer: Option<Arc<str>>,
    /// The API key's name.
    pub consumer: Option<String>,
    /// The API key's prefix, which identifies it (names need not be unique).
    pub key_id: Option<String>,
    pub scopes: Vec<String>,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity {
            method: AuthMethod::Anonymous,
            user_id: None,
            username: None,
            role: None,
            issuer: None,
            consumer: None,
            key_id: None,
            scopes: Vec::new(),
        }
    }

    /// One of Guichet's users, signed in by token.
    pub fn user(user_id: u64, username: String, role: String) -> Identity {
        Identity {
            method: AuthMethod::Jwt,
            user_id: Some(user_id.to_string()),
            username: Some(username),
            role: Some(role),
            ..Identity::anonymous()
        }
    }
}

/// The credential a request presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
    /// Nothing, or an `Authorization` scheme the gateway does not take.
    None,
}

pub fn credential(request: &RequestHeader) -> Credential<'_> {
    let header = |name: &HeaderName| request.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(value) = header(&AUTHORIZATION) {
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return Credential::Bearer(rest);
        }
        if scheme.eq_ignore_ascii_case("api-key") && !rest.is_empty() {
            return Credential::ApiKey(rest);
        }
    }
    match header(&X_API_KEY) {
        Some(key) if !key.trim().is_empty() => Credential::ApiKey(key.trim()),
        _ => Credential::None,
    }
}

/// What checking the credential found.
#[derive(Debug)]
pub enum Authentication {
    None,
    Verified(Identity),
    InvalidToken,
    InvalidKey,
    /// An API key that could not be checked because the store is down.
    StoreUnavailable,
}

/// Checks the credential. Guichet's own tokens and trusted issuers' are verified without any
/// store round trip; a legacy token's user is looked up.
pub async fn authenticate(
    credential: Credential<'_>,
    bearer: Option<&BearerTokens>,
    api_keys: &ApiKeys,
) -> Authentication {
    match credential {
        Credential::None => Authentication::None,
        Credential::Bearer(token) => match bearer {
            Some(bearer) => bearer.authenticate(token).await,
            None => Authentication::InvalidToken,
        },
        Credential::ApiKey(key) => match api_keys.check(key).await {
            // Stored by a version that did not refuse such names: refused rather than a 500.
            KeyCheck::Valid(key) if !fits_a_header(&key.name) || !fits_a_header(&key.role) => {
                Authentication::InvalidKey
            }
            KeyCheck::Valid(key) => Authentication::Verified(Identity {
                method: AuthMethod::ApiKey,
                role: Some(key.role),
                consumer: Some(key.name),
                key_id: Some(key.prefix),
                scopes: key.scopes,
                ..Identity::anonymous()
            }),
            KeyCheck::Invalid => Authentication::InvalidKey,
            KeyCheck::StoreUnavailable => Authentication::StoreUnavailable,
        },
    }
}

/// Removes what clients may not claim, then states who the gateway verified.
pub fn set_upstream_headers(
    headers: &mut HeaderMap,
    identity: &Identity,
    forward_authorization: bool,
) -> pingora::Result<()> {
    // One pass over the client's few headers finds the ones to strip; removing every name
    // blindly would hash each of them. WSGI, Rack and PHP read `X_User_Role` as `X-User-Role`
    // (both become `HTTP_X_USER_ROLE`), so look-alikes go too.
    let stripped = |name: &HeaderName| {
        let name = name.as_str();
        IDENTITY_HEADERS.iter().any(|h| passes_for(name, h))
            || (!forward_authorization
                && (passes_for(name, &AUTHORIZATION) || passes_for(name, &X_API_KEY)))
    };
    let present: Vec<HeaderName> = headers.keys().filter(|n| stripped(n)).cloned().collect();
    for name in present {
        headers.remove(name);
    }
    let values = [
        (&X_USER_ID, identity.user_id.as_deref()),
        (&X_USER_NAME, identity.username.as_deref()),
        (&X_USER_ROLE, identity.role.as_deref()),
        (&X_CONSUMER, identity.consumer.as_deref()),
        (&X_USER_ISSUER, identity.issuer.as_deref()),
    ];
    for (name, value) in values {
        if let Some(value) = value {
            let value = HeaderValue::from_str(value)
                .or_err(ErrorType::InvalidHTTPHeader, "identity header value")?;
            headers.insert(name, value);
        }
    }
    headers.insert(
        &X_AUTH_METHOD,
        HeaderValue::from_static(identity.method.as_str()),
    );
    Ok(())
}

/// True when a client header `name` is `header`, or would be read as it once each `_` became
/// `-` (header names are lower case already).
fn passes_for(name: &str, header: &HeaderName) -> bool {
    let header = header.as_str();
    name.len() == header.len()
        && name
            .bytes()
            .zip(header.bytes())
            .all(|(n, h)| n == h || (n == b'_' && h == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    #[test]
    fn credentials_are_read_from_the_usual_places() {
        let bearer = request(&[("authorization", "Bearer abc.def.ghi")]);
        assert_eq!(credential(&bearer), Credential::Bearer("abc.def.ghi"));
        let api_key = request(&[("authorization", "Api-Key gk_a.s")]);
        assert_eq!(credential(&api_key), Credential::ApiKey("gk_a.s"));
        let header = request(&[("x-api-key", "gk_b.t")]);
        assert_eq!(credential(&header), Credential::ApiKey("gk_b.t"));
        let basic = request(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(credential(&basic), Credential::None);
        assert_eq!(credential(&request(&[])), Credential::None);
        assert_eq!(
            credential(&request(&[("authorization", "Bearer ")])),
            Credential::None
        );
    }

    #[test]
    fn spoofed_identity_headers_are_replaced_and_credentials_dropped() {
        let mut upstream: HeaderMap = [
            ("x-user-id", "1"),
            ("x-user-role", "admin"),
            ("x-consumer", "spoofed"),
            ("x-user-issuer", "https://spoofed.example"),
            ("authorization", "Bearer t"),
        ]
        .into_iter()
        .map(|(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        })
        .collect();
        let identity = Identity::user(7, "ada".to_string(), "student".to_string());
        let mut guichet_user = upstream.clone();
        set_upstream_headers(&mut guichet_user, &identity, false).unwrap();
        let get = |map: &HeaderMap, name| map.get(name).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(get(&guichet_user, "x-user-id").as_deref(), Some("7"));
        assert_eq!(
            get(&guichet_user, "x-user-role").as_deref(),
            Some("student")
        );
        assert_eq!(get(&guichet_user, "x-consumer"), None);
        assert_eq!(get(&guichet_user, "x-user-issuer"), None);
        assert_eq!(get(&guichet_user, "x-auth-method").as_deref(), Some("jwt"));
        assert_eq!(get(&guichet_user, "authorization"), None);

        let provider_user = Identity {
            user_id: Some("f81d4fae-7dec".to_string()),
            issuer: Some("https://sso.example/realms/main".into()),
            ..identity
        };
        set_upstream_headers(&mut upstream, &provider_user, false).unwrap();
        assert_eq!(
            get(&upstream, "x-user-id").as_deref(),
            Some("f81d4fae-7dec")
        );
        assert_eq!(
            get(&upstream, "x-user-issuer").as_deref(),
            Some("https://sso.example/realms/main")
        );
    }

    fn client_headers(names: &[&str]) -> HeaderMap {
        names
            .iter()
            .map(|name| {
                (
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_static("spoofed"),
                )
            })
            .collect()
    }

    #[test]
    fn underscored_look_alikes_go_and_other_underscored_headers_stay() {
        let names = [
            "X_User_Role",
            "x_user_id",
            "X-User_Name",
            "x_consumer",
            "X_AUTH_METHOD",
            "x_user_issuer",
            "X_API_Key",
            "x_course_id",
            "x_user_roles",
        ];
        for forward_authorization in [false, true] {
            let mut upstream = client_headers(&names);
            set_upstream_headers(&mut upstream, &Identity::anonymous(), forward_authorization)
                .unwrap();
            let mut kept: Vec<&str> = upstream.keys().map(HeaderName::as_str).collect();
            kept.sort_unstable();
            let mut expected = vec!["x-auth-method", "x_course_id", "x_user_roles"];
            if forward_authorization {
                expected.insert(1, "x_api_key");
            }
            assert_eq!(
                kept, expected,
                "forward_authorization: {forward_authorization}"
            );
        }
    }
}
