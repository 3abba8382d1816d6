//! Reading typed values out of the spanned YAML tree. Nothing stops at the first problem: every
//! bad value is recorded with its position and reading goes on, so `guichet check` can list them all.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::error::{ConfigErrors, Location};
use super::yaml::{Key, Mark, Node, NodeKind};

/// Longer durations are typos, and would overflow timers.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The file being read and the errors found so far.
pub struct Reader<'a> {
    pub file: Arc<Path>,
    pub errors: &'a mut ConfigErrors,
}

impl Reader<'_> {
    pub fn at(&self, mark: Mark) -> Location {
        Location {
            file: self.file.clone(),
            mark: Some(mark),
        }
    }

    pub fn error(&mut self, mark: Mark, field: &str, message: impl Into<String>, hint: &str) {
        let at = self.at(mark);
        let hint = (!hint.is_empty()).then(|| hint.to_string());
        self.errors.push(at, field, message, hint);
    }

    /// The node as a map whose keys must all be in `known`; unknown and repeated keys are reported.
    pub fn fields<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
        known: &'static [&'static str],
    ) -> Option<Fields<'n>> {
        let NodeKind::Map(entries) = &node.kind else {
            let found = node.describe();
            self.error(
                node.mark,
                field,
                format!("expected a map of settings, found {found}"),
                &format!("write `key: value` lines; known keys: {}", known.join(", ")),
            );
            return None;
        };
        // Which known keys were seen: a repeat is found without looking back over the map.
        let mut seen = vec![false; known.len()];
        for (key, _) in entries {
            let path = join(field, &key.name);
            let Some(position) = known.iter().position(|k| *k == key.name) else {
                let hint = suggest(&key.name, known).map_or_else(
                    || format!("known keys here: {}", known.join(", ")),
                    |close| {
                        format!(
                            "did you mean `{close}`? known keys here: {}",
                            known.join(", ")
                        )
                    },
                );
                self.error(
                    key.mark,
                    &path,
                    format!("unknown key `{}`", key.name),
                    &hint,
                );
                continue;
            };
            if std::mem::replace(&mut seen[position], true) {
                self.error(
                    key.mark,
                    &path,
                    format!("`{}` is set twice in this map", key.name),
                    "keep one",
                );
            }
        }
        Some(Fields {
            entries,
            path: field.to_string(),
            mark: node.mark,
        })
    }

    /// The node as a scalar's text, or an error saying what was expected.
    pub fn scalar<'n>(&mut self, node: &'n Node, field: &str, expected: &str) -> Option<&'n str> {
        match &node.kind {
            NodeKind::Scalar { text, .. } if !node.is_null() => Some(text),
            _ => {
                let found = node.describe();
                self.error(
                    node.mark,
                    field,
                    format!("expected {expected}, found {found}"),
                    "",
                );
                None
            }
        }
    }

    /// The node as a list, each item read by `item`; bad items are reported and skipped.
    pub fn list<T>(
        &mut self,
        node: &Node,
        field: &str,
        example: &str,
        mut item: impl FnMut(&mut Self, &Node, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let NodeKind::Seq(items) = &node.kind else {
            let found = node.describe();
            self.error(
                node.mark,
                field,
                format!("expected a list, found {found}"),
                &format!("write a list such as {example}"),
            );
            return None;
        };
        Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(index, node)| item(self, node, &format!("{field}[{index}]")))
                .collect(),
        )
    }

    /// Reads a scalar with `parse`, reporting `what is wrong (hint)` on failure.
    pub fn parsed<T>(
        &mut self,
        node: &Node,
        field: &str,
        expected: &str,
        hint: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.scalar(node, field, expected)?;
        match parse(text) {
            Ok(value) => Some(value),
            Err(why) => {
                self.error(node.mark, field, why, hint);
                None
            }
        }
    }

    pub fn string(&mut self, node: &Node, field: &str) -> Option<Spanned<String>> {
        let text = self.scalar(node, field, "a text value")?;
        Some(Spanned::new(text.to_string(), node.mark))
    }

    pub fn duration(&mut self, node: &Node, field: &str) -> Option<Duration> {
        self.duration_from(node, field, false)
    }

    /// As [`Reader::duration`], for settings where `0s` means "none".
    pub fn duration_or_zero(&mut self, node: &Node, field: &str) -> Option<Duration> {
        self.duration_from(node, field, true)
    }

    fn duration_from(&mut self, node: &Node, field: &str, zero: bool) -> Option<Duration> {
        self.parsed(
            node,
            field,
            "a duration",
            "write a duration such as 500ms, 5s, 1m or 1h",
            |text| match humantime::parse_duration(text) {
                Ok(d) if d.is_zero() && !zero => Err(format!("`{text}` is zero")),
                Ok(d) if d > MAX_DURATION => Err(format!("`{text}` is longer than a year")),
                Ok(d) => Ok(d),
                Err(_) => Err(format!("`{text}` is not a duration")),
            },
        )
    }

    pub fn size(&mut self, node: &Node, field: &str) -> Option<u64> {
        self.parsed(
            node,
            field,
            "a size",
            "write a size such as 512KiB, 10MiB, 1GB or a number of bytes",
            parse_size,
        )
    }

    pub fn socket_addr(&mut self, node: &Node, field: &str) -> Option<Spanned<SocketAddr>> {
        let addr = self.parsed(
            node,
            field,
            "an address",
            "write an IP address and port such as 127.0.0.1:8080 or [::]:8080",
            |text| {
                text.parse::<SocketAddr>()
                    .map_err(|_| format!("`{text}` is not an IP address and port"))
            },
        )?;
        Some(Spanned::new(addr, node.mark))
    }

    pub fn ip_net(&mut self, node: &Node, field: &str) -> Option<IpNet> {
        self.parsed(
            node,
            field,
            "an address or network",
            "write an address such as 10.0.0.1 or a network such as 10.0.0.0/8",
            |text| {
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{text}` is not an IP address or CIDR network"))
            },
        )
    }

    pub fn boolean(&mut self, node: &Node, field: &str) -> Option<bool> {
        self.parsed(
            node,
            field,
            "true or false",
            "write true or false",
            |text| match text {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!("`{text}` is not true or false")),
            },
        )
    }

    /// The node as a list of text values.
    pub fn strings(&mut self, node: &Node, field: &str, example: &str) -> Vec<Spanned<String>> {
        self.list(node, field, example, Reader::string)
            .unwrap_or_default()
    }

    /// A whole number from 1 to `max`.
    pub fn count(&mut self, node: &Node, field: &str, max: usize) -> Option<usize> {
        self.parsed(
            node,
            field,
            "a number",
            &format!("write a whole number from 1 to {max}"),
            |text| match text.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(format!("`{text}` is not a whole number from 1 to {max}")),
            },
        )
    }
}

/// The entries of one YAML map, for reading known keys.
pub struct Fields<'n> {
    entries: &'n [(Key, Node)],
    path: String,
    pub mark: Mark,
}

impl<'n> Fields<'n> {
    /// The node of `key`, if present and not null, with its dotted path.
    pub fn get(&self, key: &str) -> Option<(&'n Node, String)> {
        self.entries
            .iter()
            .find(|(k, node)| k.name == key && !node.is_null())
            .map(|(_, node)| (node, join(&self.path, key)))
    }

    /// The path this map sits at, such as `routes[0]`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A value and the position it was written at.
#[derive(Clone, Debug)]
pub struct Spanned<T> {
    pub value: T,
    pub mark: Mark,
}

impl<T> Spanned<T> {
    pub fn new(value: T, mark: Mark) -> Self {
        Spanned { value, mark }
    }
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Sizes such as `10MiB`, `1.5GB`, `512k` or `1024`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a size");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// The known key closest to a mistyped one, when one is close enough to be a typo.
fn suggest<'k>(typed: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(typed, k), *k))
        .filter(|(distance, k)| *distance <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512 kib"), Ok(512 * 1024));
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("-5MiB").is_err());
    }

    #[test]
    fn typos_get_a_suggestion() {
        let known = ["upstreams", "upstream_path", "methods"];
        assert_eq!(suggest("upstream", &known), Some("upstreams"));
        assert_eq!(suggest("method", &known), Some("methods"));
        assert_eq!(suggest("colour", &known), None);
    }
}
