//! Reading configuration files: no input panics, every error has a position.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::decode::Reader;
use super::error::ConfigErrors;
use super::model::{GatewayFile, ServiceFile};
use super::yaml;

/// Parses and reads `text` both as gateway.yaml and as a routes file, returning the errors.
fn read_both(text: &str) -> ConfigErrors {
    let mut errors = ConfigErrors::default();
    if let Ok(node) = yaml::parse(text) {
        let file: Arc<Path> = Arc::from(Path::new("x.yaml"));
        let mut reader = Reader {
            file,
            errors: &mut errors,
        };
        GatewayFile::read(
            &node,
            &mut reader,
            Path::new("."),
            super::KeyFiles::ReadOnly,
        );
        ServiceFile::read(&node, &mut reader);
    }
    errors
}

proptest! {
    #[test]
    fn no_input_makes_reading_panic(text in "[a-z_:\\[\\]{}, \\-\\n/.*&!|>'\"#0-9~]{0,200}") {
        read_both(&text);
    }

    #[test]
    fn every_reported_error_has_a_position(text in "(listen|include|routes|path|service|upstreams|max_body|methods|x): ?(\\[|\\{)?[a-z0-9/:.]{0,12}(\\]|\\})?\\n{1,3}") {
        for error in read_both(&text).0 {
            prop_assert!(error.at.mark.is_some(), "{}", error);
        }
    }
}

#[test]
fn a_routes_file_with_everything_reads_cleanly() {
    let text = "service: courses
upstreams: [http://127.0.0.1:8001]
health_check: { path: /healthz, interval: 2s, timeout: 1s }
timeouts: { connect: 1s, read: 30s }
routes:
  - id: catalogue
    path: /api/courses/{id}/
    upstream_path: /courses/{id}/
    methods: [GET, POST]
    max_body: 10MiB
";
    let errors = read_both(text);
    // As a gateway.yaml every key is unknown; as a routes file none is.
    assert!(
        errors
            .0
            .iter()
            .all(|e| e.message.starts_with("unknown key")),
        "{errors}"
    );
    assert_eq!(errors.0.len(), 5);
}

/// Reads `text` as a `rate_limits` section, returning the policy and each error as text.
fn read_rate_limits(text: &str) -> (crate::ratelimit::RatePolicy, Vec<String>) {
    let mut errors = ConfigErrors::default();
    let node = yaml::parse(text).unwrap();
    let mut reader = Reader {
        file: Arc::from(Path::new("gateway.yaml")),
        errors: &mut errors,
    };
    let policy = super::limits::read_policy(&node, "rate_limits", &mut reader, &[]);
    (policy, errors.0.iter().map(ToString::to_string).collect())
}

#[test]
fn the_limiter_state_keys_default_and_read() {
    let (policy, errors) = read_rate_limits("anonymous: 100/day\n");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(policy.max_tracked_keys, 1_000_000);
    assert_eq!(policy.ipv6_prefix, 64);
    let (policy, errors) = read_rate_limits("max_tracked_keys: 50000\nipv6_prefix: 128\n");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(policy.max_tracked_keys, 50_000);
    assert_eq!(policy.ipv6_prefix, 128);
}

#[test]
fn bad_limiter_state_keys_name_their_position_and_the_fix() {
    let (policy, errors) =
        read_rate_limits("max_tracked_keys: 0\nipv6_prefix: 129\nmax_tracked_key: 5\n");
    assert_eq!(
        errors,
        [
            "gateway.yaml:3:1: rate_limits.max_tracked_key: unknown key `max_tracked_key` (did you mean `max_tracked_keys`? known keys here: anonymous, user, api_key, roles, login, on_store_error, max_tracked_keys, ipv6_prefix)",
            "gateway.yaml:1:19: rate_limits.max_tracked_keys: `0` is not a whole number from 1 to 100000000 (write a whole number from 1 to 100000000; the default, 1000000, takes about 42 MiB)",
            "gateway.yaml:2:14: rate_limits.ipv6_prefix: `129` is not a prefix length from 1 to 128 (write 64 to count each /64 network as one client, the default; 128 to count each address; or another length from 1 to 128)",
        ]
    );
    // A refused value leaves the default in place.
    assert_eq!(policy.max_tracked_keys, 1_000_000);
    assert_eq!(policy.ipv6_prefix, 64);
    let (_, errors) = read_rate_limits("ipv6_prefix: /64\nmax_tracked_keys: 1e6\n");
    assert_eq!(errors.len(), 2, "{errors:?}");
}
