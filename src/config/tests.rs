//! Reading configuration files: no input panics, every error has a position.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::decode::Reader;
use super::error::ConfigErrors;
use super::gateway_file::GatewayFile;
use super::routes_file::ServiceFile;
use super::yaml;

/// Parses and reads `text` both as gateway.yaml and as a routes file, returning the errors.
fn read_both(text: &str) -> ConfigErrors {
    read_bytes(text.as_bytes())
}

fn read_bytes(bytes: &[u8]) -> ConfigErrors {
    let mut errors = ConfigErrors::default();
    if let Ok(node) = yaml::parse(bytes) {
        let file: Arc<Path> = Arc::from(Path::new("x.yaml"));
        let mut reader = Reader {
            file,
            errors: &mut errors,
        };
        GatewayFile::read(&node, &mut reader, Path::new("."));
        ServiceFile::read(&node, &mut reader);
    }
    errors
}

/// The repository's own configuration, the seeds of the mutations below.
const REPO_FILES: [&[u8]; 3] = [
    include_bytes!("../../gateway.yaml"),
    include_bytes!("../../routes/courses.yaml"),
    include_bytes!("../../routes/accounts.yaml"),
];

/// One change to a file's bytes; positions and lengths are taken modulo the file's length.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    /// Copies a span (start, length) to a position.
    Duplicate(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that mean something to YAML come more often than chance would bring them.
    let byte = prop_oneof![
        prop::sample::select(b"&*[]{}:-,#!|>'\"<%@ \n\t\r\0".to_vec()),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip(at, 1 << bit)),
        (any::<usize>(), byte).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), 1usize..4096, any::<usize>())
            .prop_map(|(from, n, to)| Mutation::Duplicate(from, n, to)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len().max(1);
        match *mutation {
            Mutation::Flip(at, mask) => {
                if let Some(byte) = bytes.get_mut(at % len) {
                    *byte ^= mask;
                }
            }
            Mutation::Insert(at, byte) => bytes.insert(at % (bytes.len() + 1), byte),
            Mutation::Delete(at, n) => {
                let start = at % len;
                let end = (start + n).min(bytes.len());
                bytes.drain(start.min(end)..end);
            }
            Mutation::Duplicate(from, n, to) => {
                let start = from % len;
                let end = (start + n).min(bytes.len());
                let span = bytes.get(start..end).unwrap_or_default().to_vec();
                let at = to % (bytes.len() + 1);
                bytes.splice(at..at, span);
            }
        }
    }
    bytes
}

proptest! {
    /// The reader never panics on a damaged configuration, and finishes: its bounds (depth,
    /// copies, one document, text only) make each input cost at most a multiple of its size,
    /// so a hang would show as this test timing out.
    #[test]
    fn mutations_of_the_repository_config_are_read_or_refused_with_a_position(
        seed in 0..REPO_FILES.len(),
        mutations in prop::collection::vec(mutation(), 1..12),
    ) {
        let bytes = mutate(REPO_FILES[seed].to_vec(), &mutations);
        // A carriage return alone ends a line too, for YAML.
        let lines = bytes.iter().filter(|b| matches!(b, b'\n' | b'\r')).count() + 1;
        match yaml::parse(&bytes) {
            Ok(_) => {
                for error in read_bytes(&bytes).0 {
                    let mark = error.at.mark;
                    prop_assert!(mark.is_some_and(|m| m.line <= lines), "{}", error);
                }
            }
            // The parser may stop just past the end of a file whose last line has no line end.
            Err(error) => prop_assert!(
                (1..=lines + 1).contains(&error.mark.line) && error.mark.col >= 1,
                "{:?}",
                error
            ),
        }
    }

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
    let node = yaml::parse(text.as_bytes()).unwrap();
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
