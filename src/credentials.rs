//! What credentials and the names that identify callers look like: pure checks, with no key
//! material and no store, shared by `config` (which checks roles and seed data as it reads
//! them) and `auth` (which checks what requests present and what tokens carry).

use argon2::password_hash::PasswordHash;

/// True when `text` can be an identity header's value: no control character (CR, LF, NUL, tab,
/// DEL, C1). Most of them cannot be in a header value at all (the request would fail), and the
/// others would mislead whatever prints or logs the value. The CLI checks names and roles with
/// this where it creates them; tokens and API keys are checked again where they are used.
pub fn fits_a_header(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

/// An API key, `<prefix>.<secret>`, split in two, if it has that shape.
pub fn split_api_key(presented: &str) -> Option<(&str, &str)> {
    let (prefix, secret) = presented.trim().split_once('.')?;
    let valid_prefix = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (valid_prefix && !secret.is_empty() && secret.len() <= 256).then_some((prefix, secret))
}

/// Whether `text` is an argon2 PHC string, for config checks.
pub fn is_argon2_hash(text: &str) -> bool {
    PasswordHash::new(text).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_header_value_holds_no_control_character() {
        for text in ["demo", "zoë", "Jean-Luc Picard", "grades:write", ""] {
            assert!(fits_a_header(text), "{text:?}");
        }
        for text in [
            "a\rb",
            "a\nb",
            "a\0",
            "a\tb",
            "a\u{7f}",
            "a\u{85}",
            "\u{1b}[31m",
        ] {
            assert!(!fits_a_header(text), "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn split_never_panics_and_returns_only_a_well_formed_pair(presented in any::<String>()) {
            if let Some((prefix, secret)) = split_api_key(&presented) {
                prop_assert!(!prefix.is_empty() && prefix.len() <= 64);
                prop_assert!(prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
                prop_assert!(!secret.is_empty() && secret.len() <= 256);
                let joined = format!("{prefix}.{secret}");
                prop_assert_eq!(presented.trim(), joined);
            }
        }

        #[test]
        fn keys_shaped_like_generated_ones_split_back(
            prefix in "gk_[a-z0-9]{10}",
            secret in "[A-Za-z0-9_-]{43}",
            padding in "[ \t]{0,3}",
        ) {
            let key = format!("{padding}{prefix}.{secret}{padding}");
            prop_assert_eq!(split_api_key(&key), Some((prefix.as_str(), secret.as_str())));
        }
    }
}
