//! `X-Request-Id`: taken from the client when well-formed, generated otherwise.

use http::{HeaderName, HeaderValue};

pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-supplied id kept.
const MAX_LEN: usize = 128;

/// The client's id if it is 1–128 characters of letters, digits and `-_.:`, else a fresh UUID.
pub fn from_client_or_new(value: Option<&HeaderValue>) -> String {
    value
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_well_formed(id))
        .map_or_else(generate, str::to_string)
}

fn is_well_formed(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn generate() -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_client_ids_are_kept() {
        let id = HeaderValue::from_static("req-42_a.b:c");
        assert_eq!(from_client_or_new(Some(&id)), "req-42_a.b:c");
    }

    #[test]
    fn malformed_or_missing_ids_are_replaced_by_a_uuid() {
        for bad in ["", "has space", "semi;colon", &"x".repeat(129)] {
            let value = HeaderValue::from_str(bad).unwrap();
            let id = from_client_or_new(Some(&value));
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        }
        assert!(uuid::Uuid::parse_str(&from_client_or_new(None)).is_ok());
    }
}
