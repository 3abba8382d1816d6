//! Request path normalisation, done once before routing: percent-encoded unreserved characters
//! decoded, duplicate slashes collapsed, dot-segments resolved. The result is both what routes
//! match against and what is forwarded, so a request can never reach a route it did not match.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BadPath {
    NotAbsolute,
    BadPercentEncoding,
    EncodedNul,
}

impl BadPath {
    pub fn detail(&self) -> &'static str {
        match self {
            BadPath::NotAbsolute => "The request path must start with /.",
            BadPath::BadPercentEncoding => "The request path has an invalid percent-encoding.",
            BadPath::EncodedNul => "The request path contains an encoded NUL byte.",
        }
    }
}

/// The normal form of `path` (the part of the target before `?`).
pub fn normalize(path: &str) -> Result<Cow<'_, str>, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath::NotAbsolute);
    }
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded[1..].split('/') {
        trailing_slash = false;
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// Whether a normalised path holds an encoded slash or backslash (`%2F`, `%5C`) or a raw
/// backslash: not separators to the router, but a backend that decodes them, or treats `\` as
/// `/`, would see other segments than the ones the request was routed on.
pub fn has_encoded_separator(normal: &str) -> bool {
    let bytes = normal.as_bytes();
    memchr::memchr2_iter(b'%', b'\\', bytes)
        .any(|at| bytes[at] == b'\\' || matches!(bytes.get(at + 1..at + 3), Some(b"2F" | b"5C")))
}

/// True when normalising would change nothing: the common case, answered in one pass over the
/// bytes, without allocating. `path` starts with `/`.
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut segment_start = 1;
    for (i, &byte) in bytes.iter().enumerate().skip(1) {
        match byte {
            b'%' => return false,
            b'/' => {
                if matches!(&bytes[segment_start..i], b"" | b"." | b"..") {
                    return false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    !matches!(&bytes[segment_start..], b"." | b"..")
}

/// Decodes `%XX` for unreserved characters (RFC 3986 §6.2.2.2) and upper-cases the hex of the rest.
fn decode_unreserved(path: &str) -> Result<String, BadPath> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let next = path[i..].find('%').map_or(bytes.len(), |offset| i + offset);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let value = match bytes.get(i + 1..i + 3) {
            Some(&[high, low]) => hex_value(high)
                .zip(hex_value(low))
                .map(|(high, low)| (high << 4) | low),
            _ => None,
        }
        .ok_or(BadPath::BadPercentEncoding)?;
        match value {
            0 => return Err(BadPath::EncodedNul),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(value as char)
            }
            _ => {
                out.push('%');
                out.push_str(&format!("{value:02X}"));
            }
        }
        i += 3;
    }
    Ok(out)
}

/// The value of one hex digit. `u8::from_str_radix` would also take a sign: `%+1` as `%01`.
fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> String {
        normalize(path).unwrap().into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for path in ["/", "/api/courses/", "/api/courses/12", "/a.b/c..d/.e"] {
            assert!(matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path));
        }
    }

    #[test]
    fn duplicate_slashes_collapse() {
        assert_eq!(norm("//api///courses//1"), "/api/courses/1");
        assert_eq!(norm("/api/courses//"), "/api/courses/");
    }

    #[test]
    fn dot_segments_resolve_and_never_climb_above_root() {
        assert_eq!(norm("/api/courses/../admin"), "/api/admin");
        assert_eq!(norm("/api/./courses/."), "/api/courses/");
        assert_eq!(norm("/api/courses/.."), "/api/");
        assert_eq!(norm("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(norm("/.."), "/");
    }

    #[test]
    fn encoded_dots_are_dot_segments_too() {
        assert_eq!(norm("/api/courses/%2e%2e/admin"), "/api/admin");
        assert_eq!(norm("/api/%2E/x"), "/api/x");
        assert_eq!(norm("/%7Euser/%41"), "/~user/A");
    }

    #[test]
    fn encoded_slashes_stay_encoded_and_hex_is_upper_cased() {
        assert_eq!(norm("/api/a%2fb"), "/api/a%2Fb");
        assert_eq!(norm("/api/%c3%a9"), "/api/%C3%A9");
    }

    #[test]
    fn malformed_paths_are_refused() {
        assert_eq!(normalize("api"), Err(BadPath::NotAbsolute));
        assert_eq!(normalize("*"), Err(BadPath::NotAbsolute));
        assert_eq!(normalize("/a%zz"), Err(BadPath::BadPercentEncoding));
        assert_eq!(normalize("/a%2"), Err(BadPath::BadPercentEncoding));
        assert_eq!(normalize("/a%+1"), Err(BadPath::BadPercentEncoding));
        assert_eq!(normalize("/a%é"), Err(BadPath::BadPercentEncoding));
        assert_eq!(normalize("/a%00b"), Err(BadPath::EncodedNul));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for path in [
            "/a//b/../c/./d/",
            "/%2e%2E/x%2fy",
            "/x/%7e/..",
            "/a/b/c/../../",
        ] {
            let once = norm(path);
            assert_eq!(norm(&once), once, "{path}");
        }
    }
}

#[cfg(test)]
mod properties {
    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::normalize;

    fn raw_path() -> impl Strategy<Value = String> {
        let segment = prop::sample::select(vec![
            "a", "b", ".", "..", "", "%2e", "%2E%2e", "%41", "%2f", "%7e",
        ]);
        prop::collection::vec(segment, 0..8).prop_map(|segs| format!("/{}", segs.join("/")))
    }

    /// Anything a client could send as a path: pieces that matter to the parser, stray bytes of
    /// every kind (control characters, multi-byte characters), with or without the leading `/`.
    fn any_path() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            prop::sample::select(vec![
                "/", "//", ".", "..", "%", "%2", "%2e", "%2E", "%2f", "%5C", "%00", "%+1", "%-1",
                "%zz", "%%", "\\", "a", "é", "?", "#", " ",
            ])
            .prop_map(str::to_string),
            any::<char>().prop_map(String::from),
            prop::char::range('\0', '\u{1f}').prop_map(String::from),
        ];
        (any::<bool>(), prop::collection::vec(piece, 0..12)).prop_map(|(rooted, pieces)| {
            format!("{}{}", if rooted { "/" } else { "" }, pieces.concat())
        })
    }

    /// What the parser must accept: a rooted path whose every `%` starts a pair of hex digits
    /// that is not `00`.
    fn acceptable(path: &str) -> bool {
        let bytes = path.as_bytes();
        path.starts_with('/')
            && bytes.iter().enumerate().all(|(i, &b)| {
                b != b'%'
                    || matches!(bytes.get(i + 1..i + 3), Some(hex)
                        if hex.iter().all(u8::is_ascii_hexdigit) && hex != b"00")
            })
    }

    fn assert_normal(normal: &str) -> Result<(), TestCaseError> {
        prop_assert!(normal.starts_with('/'));
        prop_assert!(!normal.contains("//"), "{}", normal);
        let inner = normal.trim_start_matches('/').trim_end_matches('/');
        if !inner.is_empty() {
            for segment in inner.split('/') {
                prop_assert!(
                    !segment.is_empty() && segment != "." && segment != "..",
                    "{}",
                    normal
                );
            }
        }
        prop_assert_eq!(normalize(normal), Ok(Cow::Borrowed(normal)));
        Ok(())
    }

    proptest! {
        #[test]
        fn normal_form_has_no_dot_segments_or_empty_segments_and_is_stable(path in raw_path()) {
            assert_normal(&normalize(&path).unwrap())?;
        }

        #[test]
        fn any_input_is_refused_or_normal_and_never_panics(path in any_path()) {
            match normalize(&path) {
                Ok(normal) => {
                    prop_assert!(acceptable(&path), "accepted {:?} as {:?}", path, normal);
                    assert_normal(&normal)?;
                }
                Err(_) => prop_assert!(!acceptable(&path), "refused {:?}", path),
            }
        }
    }
}
