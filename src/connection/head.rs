//! A request head's bytes, looked at before pingora parses them: where the head ends, whether
//! its request line, its size and its number of fields stay within `client:`, and its HTTP
//! version. A minor version above 1 (`HTTP/1.2`) is read as `HTTP/1.1`, as RFC 9112 §2.3
//! asks; another major version is refused.

use crate::config::ClientLimits;
use crate::errors::GatewayError;

/// What the bytes of one head have shown so far. Fed the head's bytes from its first one,
/// more of them each time, it looks at each byte once.
#[derive(Debug, Default)]
pub struct HeadScan {
    /// Bytes looked at: everything before is known.
    scanned: usize,
    /// Where the request line starts, once a byte other than CR or LF arrived (empty lines
    /// before a request line are ignored, RFC 9112 §2.2).
    line_start: Option<usize>,
    /// Where the request line ends (its LF), once it has.
    request_line_end: Option<usize>,
    /// Where the line being read starts.
    current_line: usize,
    /// Field lines ended so far.
    fields: usize,
}

/// Where a head stands after its latest bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed.
    Incomplete,
    /// The head ends after this many bytes (what follows is the body or the next request).
    Complete(usize),
    /// The head breaks a limit; it is answered with this error, unparsed.
    Refused(GatewayError),
}

impl HeadScan {
    /// Looks at the bytes of `head` not seen yet. `head` holds the head from its first byte;
    /// a request line's `HTTP/1.x` (x from 2 to 9) is rewritten in place to `HTTP/1.1`.
    pub fn advance(&mut self, head: &mut [u8], limits: &ClientLimits) -> Progress {
        while self.scanned < head.len() {
            let Some(start) = self.line_start else {
                match head[self.scanned..]
                    .iter()
                    .position(|b| *b != b'\r' && *b != b'\n')
                {
                    Some(offset) => {
                        self.line_start = Some(self.scanned + offset);
                        self.current_line = self.scanned + offset;
                        self.scanned += offset;
                        continue;
                    }
                    None => {
                        self.scanned = head.len();
                        break;
                    }
                }
            };
            let Some(offset) = memchr::memchr(b'\n', &head[self.scanned..]) else {
                self.scanned = head.len();
                break;
            };
            let end = self.scanned + offset;
            self.scanned = end + 1;
            let line_start = std::mem::replace(&mut self.current_line, end + 1);
            if self.request_line_end.is_none() {
                self.request_line_end = Some(end);
                if end - start > limits.max_request_line {
                    return Progress::Refused(GatewayError::UriTooLong {
                        limit: limits.max_request_line,
                    });
                }
                if let Some(refused) = read_version(&mut head[start..end]) {
                    return Progress::Refused(refused);
                }
                continue;
            }
            let line = &head[line_start..end];
            if line.is_empty() || line == b"\r" {
                return Progress::Complete(end + 1);
            }
            self.fields += 1;
            if self.fields > limits.max_headers {
                return Progress::Refused(GatewayError::HeaderFieldsTooLarge(format!(
                    "The request has more than {} header fields.",
                    limits.max_headers
                )));
            }
        }
        if let (Some(start), None) = (self.line_start, self.request_line_end) {
            if head.len() - start > limits.max_request_line {
                return Progress::Refused(GatewayError::UriTooLong {
                    limit: limits.max_request_line,
                });
            }
        }
        if head.len() > limits.max_header_size {
            return Progress::Refused(GatewayError::HeaderFieldsTooLarge(format!(
                "The request head is larger than {} bytes.",
                limits.max_header_size
            )));
        }
        Progress::Incomplete
    }

    /// The request line (as much of it as arrived), for the log line of a refused head.
    pub fn request_line<'h>(&self, head: &'h [u8]) -> Option<&'h [u8]> {
        let start = self.line_start?;
        let end = self.request_line_end.unwrap_or(head.len()).min(head.len());
        let line = head.get(start..end)?;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// A request line's method and target.
pub fn method_and_target(line: &[u8]) -> (&[u8], &[u8]) {
    let mut words = line.split(|b| *b == b' ');
    let method = words.next().unwrap_or(b"");
    (method, words.next().unwrap_or(b""))
}

/// Reads `HTTP/1.2` … `HTTP/1.9` as `HTTP/1.1`; refuses `HTTP/2.0` and other major versions.
/// Anything else is left for the parser to judge.
fn read_version(line: &mut [u8]) -> Option<GatewayError> {
    let line = match line.last() {
        Some(b'\r') => {
            let end = line.len() - 1;
            &mut line[..end]
        }
        _ => line,
    };
    let at = line.len().checked_sub(9)?;
    let version = &mut line[at..];
    if version[0] != b' ' || &version[1..6] != b"HTTP/" || version[7] != b'.' {
        return None;
    }
    let (major, minor) = (version[6], version[8]);
    if !major.is_ascii_digit() || !minor.is_ascii_digit() {
        return None;
    }
    if major != b'1' {
        return Some(GatewayError::VersionNotSupported);
    }
    if minor > b'1' {
        version[8] = b'1';
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> ClientLimits {
        ClientLimits::default()
    }

    /// Feeds `bytes` in pieces of `step` bytes, as reads would bring them.
    fn scan(bytes: &[u8], step: usize, limits: &ClientLimits) -> (Progress, Vec<u8>) {
        let mut scan = HeadScan::default();
        let mut head = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            head.extend_from_slice(piece);
            match scan.advance(&mut head, limits) {
                Progress::Incomplete => {}
                done => return (done, head),
            }
        }
        (Progress::Incomplete, head)
    }

    #[test]
    fn a_head_ends_at_its_empty_line_whatever_the_reads() {
        let request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nBODY";
        for step in 1..request.len() {
            let (progress, _) = scan(request, step, &limits());
            assert_eq!(
                progress,
                Progress::Complete(request.len() - 4),
                "step {step}"
            );
        }
        let bare_lf = b"GET /a HTTP/1.1\nHost: x\n\n";
        assert_eq!(
            scan(bare_lf, 3, &limits()).0,
            Progress::Complete(bare_lf.len())
        );
        let leading = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(
            scan(leading, 1, &limits()).0,
            Progress::Complete(leading.len())
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nHost: x\r\n", 5, &limits()).0,
            Progress::Incomplete
        );
    }

    #[test]
    fn a_minor_version_above_one_is_read_as_http_1_1() {
        let (progress, head) = scan(b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 4, &limits());
        assert!(matches!(progress, Progress::Complete(_)));
        assert!(head.starts_with(b"GET / HTTP/1.1\r\n"));
        let (_, head) = scan(b"GET / HTTP/1.0\r\n\r\n", 4, &limits());
        assert!(head.starts_with(b"GET / HTTP/1.0\r\n"));
        let (_, head) = scan(b"GET / HTTP/1.9\n\n", 100, &limits());
        assert!(head.starts_with(b"GET / HTTP/1.1\n"));
    }

    #[test]
    fn another_major_version_is_refused() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(
            scan(preface, 7, &limits()).0,
            Progress::Refused(GatewayError::VersionNotSupported)
        );
    }

    #[test]
    fn limits_are_answered_414_and_431_before_the_head_is_whole() {
        let small = ClientLimits {
            max_request_line: 64,
            max_header_size: 256,
            max_headers: 3,
            ..ClientLimits::default()
        };
        let long_line = [b"GET /".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(
            scan(&long_line, 10, &small).0,
            Progress::Refused(GatewayError::UriTooLong { limit: 64 })
        );
        let many = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n";
        assert!(matches!(
            scan(many, 5, &small).0,
            Progress::Refused(GatewayError::HeaderFieldsTooLarge(_))
        ));
        let big = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 300]].concat();
        assert!(matches!(
            scan(&big, 50, &small).0,
            Progress::Refused(GatewayError::HeaderFieldsTooLarge(_))
        ));
        let fits = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
        assert_eq!(scan(fits, 5, &small).0, Progress::Complete(fits.len()));
    }

    #[test]
    fn the_request_line_is_told_for_the_log() {
        let mut scan = HeadScan::default();
        let mut head = b"POST /api/x?q=1 HTTP/1.1\r\nHost".to_vec();
        assert_eq!(scan.advance(&mut head, &limits()), Progress::Incomplete);
        let line = scan.request_line(&head).unwrap();
        assert_eq!(line, b"POST /api/x?q=1 HTTP/1.1");
        assert_eq!(
            method_and_target(line),
            (b"POST".as_slice(), b"/api/x?q=1".as_slice())
        );
        assert_eq!(HeadScan::default().request_line(b""), None);
    }

    proptest! {
        #[test]
        fn any_bytes_in_any_pieces_never_panic_and_only_the_version_digit_changes(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            step in 1usize..64,
        ) {
            let small = ClientLimits { max_request_line: 200, max_header_size: 400, max_headers: 8, ..ClientLimits::default() };
            let (progress, head) = scan(&bytes, step, &small);
            prop_assert_eq!(head.len(), bytes.len().min(head.len()));
            let changed: Vec<usize> = head.iter().zip(&bytes).enumerate()
                .filter(|(_, (a, b))| a != b).map(|(i, _)| i).collect();
            prop_assert!(changed.len() <= 1);
            if let Some(&i) = changed.first() {
                prop_assert_eq!(head[i], b'1');
                prop_assert_eq!(&head[i - 7..i], b"HTTP/1.");
            }
            if let Progress::Complete(end) = progress {
                prop_assert!(end <= head.len());
                prop_assert_eq!(head[end - 1], b'\n');
            }
        }

        #[test]
        fn a_head_found_complete_in_pieces_is_found_complete_at_once(
            fields in proptest::collection::vec("[a-z]{1,8}: [ -~]{0,20}", 0..6),
            step in 1usize..40,
        ) {
            let head = format!("GET /p HTTP/1.1\r\n{}\r\n", fields.iter().map(|f| format!("{f}\r\n")).collect::<String>());
            let whole = scan(head.as_bytes(), head.len(), &limits()).0;
            prop_assert_eq!(&whole, &Progress::Complete(head.len()));
            prop_assert_eq!(scan(head.as_bytes(), step, &limits()).0, whole);
        }
    }
}
