//! A YAML document built as JSON, for OpenAPI fragments: plain scalars typed as serde_yaml
//! types them (YAML 1.2's core schema), so that one bounded pass replaces a check followed by a
//! second, unbounded parser. Tags are not applied.

use serde_json::{Map, Number, Value};

use super::{not_a_key, Build, Key, Mark, SyntaxError};

pub struct Json;

impl Build for Json {
    type Node = Value;

    fn scalar(text: String, plain: bool, _: Mark) -> Value {
        if plain {
            plain_scalar(text)
        } else {
            Value::String(text)
        }
    }

    fn seq(items: Vec<Value>, _: Mark) -> Value {
        Value::Array(items)
    }

    /// Keys are kept as written (`200:` is the key "200"); a repeated key keeps its last value.
    fn map(entries: Vec<(Key, Value)>, _: Mark) -> Value {
        Value::Object(
            entries
                .into_iter()
                .map(|(key, value)| (key.name, value))
                .collect::<Map<String, Value>>(),
        )
    }

    fn copy(anchored: &Value, _: Mark) -> Value {
        anchored.clone()
    }

    /// An alias of a scalar as a key: its text (the text as written is gone once typed).
    fn key(node: Value, mark: Mark) -> Result<Key, SyntaxError> {
        let name = match node {
            Value::String(text) => text,
            Value::Number(number) => number.to_string(),
            Value::Bool(boolean) => boolean.to_string(),
            Value::Null => "null".to_string(),
            Value::Array(_) | Value::Object(_) => return Err(not_a_key(mark)),
        };
        Ok(Key { name, mark })
    }
}

fn plain_scalar(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        // JSON has no infinity or NaN; serde_json turns them into null too.
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => Value::Null,
        number => match integer(number).or_else(|| float(number)) {
            Some(number) => Value::Number(number),
            None => Value::String(text),
        },
    }
}

/// Decimal, or `0x`, `0o`, `0b` with an optional sign; leading zeros make a string.
fn integer(text: &str) -> Option<Number> {
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = match unsigned.get(..2) {
        Some("0x") => (16, &unsigned[2..]),
        Some("0o") => (8, &unsigned[2..]),
        Some("0b") => (2, &unsigned[2..]),
        _ if leading_zero(unsigned) => return None,
        _ => (10, unsigned),
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if !negative {
        return Some(Number::from(magnitude));
    }
    match i64::try_from(magnitude) {
        Ok(value) => Some(Number::from(-value)),
        Err(_) if magnitude == i64::MIN.unsigned_abs() => Some(Number::from(i64::MIN)),
        Err(_) => None,
    }
}

fn float(text: &str) -> Option<Number> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if leading_zero(unsigned) || unsigned.starts_with(['+', '-']) {
        return None;
    }
    let value: f64 = text.strip_prefix('+').unwrap_or(text).parse().ok()?;
    value.is_finite().then(|| Number::from_f64(value)).flatten()
}

/// `0123`: digits after a leading zero are a string in YAML 1.2.
fn leading_zero(unsigned: &str) -> bool {
    unsigned.len() > 1 && unsigned.starts_with('0') && unsigned.bytes().all(|b| b.is_ascii_digit())
}
