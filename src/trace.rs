//! W3C trace context: the `traceparent` sent upstream continues the client's trace (with the
//! gateway as the new parent) or starts one, so a request can be followed into the backends.

use http::{HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The trace a request belongs to and the gateway's span in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    pub span_id: String,
    /// The client's flags (sampled or not), kept as they came.
    pub flags: String,
}

impl TraceContext {
    /// Continues a well-formed `traceparent`, or starts a new, sampled trace.
    pub fn from_header(value: Option<&HeaderValue>) -> TraceContext {
        let span_id = random_hex(8);
        match value.and_then(|v| v.to_str().ok()).and_then(parse) {
            Some((trace_id, flags)) => TraceContext {
                trace_id: trace_id.to_string(),
                span_id,
                flags: flags.to_string(),
            },
            None => TraceContext {
                trace_id: random_hex(16),
                span_id,
                flags: "01".to_string(),
            },
        }
    }

    /// The `traceparent` for the upstream request.
    pub fn header(&self) -> String {
        ["00-", &self.trace_id, "-", &self.span_id, "-", &self.flags].concat()
    }
}

/// The trace id and flags of a version-00 `traceparent`, if it is well formed.
fn parse(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    valid.then_some((trace_id, flags))
}

/// `bytes` random bytes (at most 16) as lower-case hex, drawn at once, in one allocation.
fn random_hex(bytes: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    debug_assert!(bytes <= 16, "one draw gives 16 bytes");
    let random: u128 = rand::random();
    (0..bytes * 2)
        .map(|i| char::from(DIGITS[(random >> (4 * i) & 0xf) as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_parent() {
        let incoming =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let trace = TraceContext::from_header(Some(&incoming));
        assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(trace.span_id, "00f067aa0ba902b7");
        assert_eq!(
            trace.header(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", trace.span_id)
        );
    }

    #[test]
    fn missing_or_malformed_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            let trace = TraceContext::from_header(Some(&HeaderValue::from_str(bad).unwrap()));
            assert_eq!(trace.trace_id.len(), 32, "{bad}");
            assert!(parse(&trace.header()).is_some(), "{bad}");
            assert!(!bad.contains(&trace.trace_id) || bad.is_empty());
        }
        assert_eq!(TraceContext::from_header(None).flags, "01");
    }
}
