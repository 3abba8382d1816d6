//! `X-Request-Id`: taken from the client when well-formed, generated otherwise.

use http::{HeaderName, HeaderValue};

pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-supplied id kept.
const MAX_LEN: usize = 128;

/// A request's id, kept as the header value it is sent upstream and answered with (made once
/// per request: the client's own value is shared, not copied), and read as text by the logs.
#[derive(Clone, Debug)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// No id yet: the context's value until the request is identified.
    pub const NONE: RequestId = RequestId(HeaderValue::from_static(""));

    pub fn as_str(&self) -> &str {
        // Well-formed ids and UUIDs are visible ASCII: never the empty fallback.
        self.0.to_str().unwrap_or_default()
    }

    pub fn header(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The client's id if it is 1–128 characters of letters, digits and `-_.:`, else a fresh UUID.
pub fn from_client_or_new(value: Option<&HeaderValue>) -> RequestId {
    match value {
        Some(client) if client.to_str().is_ok_and(is_well_formed) => RequestId(client.clone()),
        _ => RequestId(generate()),
    }
}

fn is_well_formed(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn generate() -> HeaderValue {
    let mut buffer = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned();
    // A UUID is always a valid field value.
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_client_ids_are_kept() {
        let id = HeaderValue::from_static("req-42_a.b:c");
        assert_eq!(from_client_or_new(Some(&id)).as_str(), "req-42_a.b:c");
    }

    #[test]
    fn malformed_or_missing_ids_are_replaced_by_a_uuid() {
        for bad in ["", "has space", "semi;colon", &"x".repeat(129)] {
            let value = HeaderValue::from_str(bad).unwrap();
            let id = from_client_or_new(Some(&value));
            assert_ne!(id.as_str(), bad);
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok(), "{id}");
        }
        assert!(uuid::Uuid::parse_str(from_client_or_new(None).as_str()).is_ok());
    }
}
