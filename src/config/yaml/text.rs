//! The bytes of a YAML file as text. UTF-8 only (a leading byte-order mark is skipped), and none
//! of the control characters YAML forbids: the parser takes a NUL for the end of the input and
//! would silently drop everything after it.

use super::{Mark, SyntaxError};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The text of `bytes`, or the position of the first byte or character that cannot be in it.
pub fn decode(bytes: &[u8]) -> Result<&str, SyntaxError> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        let message = match (bytes.get(e.valid_up_to()), e.error_len()) {
            (Some(byte), Some(_)) => format!("not UTF-8 text: byte {byte:#04X} is not valid here"),
            _ => "not UTF-8 text: the file ends inside a character".to_string(),
        };
        SyntaxError {
            mark: mark_after(std::str::from_utf8(valid).unwrap_or_default()),
            message,
            hint: Some("save the file as UTF-8".to_string()),
        }
    })?;
    match text.char_indices().find(|(_, c)| forbidden(*c)) {
        Some((at, c)) => Err(SyntaxError {
            mark: mark_after(&text[..at]),
            message: format!(
                "control character U+{:04X}{} is not allowed in YAML",
                u32::from(c),
                if c == '\0' { " (NUL)" } else { "" }
            ),
            hint: Some(
                "remove it; tab, line feed and carriage return are the only control characters a YAML file may hold"
                    .to_string(),
            ),
        }),
        None => Ok(text),
    }
}

fn forbidden(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// The position just after `before`, counted as the parser counts: lines from 1, columns in
/// characters from 1.
fn mark_after(before: &str) -> Mark {
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    Mark {
        line: before.matches('\n').count() + 1,
        col: before[line_start..].chars().count() + 1,
    }
}
