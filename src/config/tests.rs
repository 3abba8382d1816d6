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
