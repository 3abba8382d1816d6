//! Configuration errors: each one names the file, line, column and field, says what is wrong
//! and what to write instead.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::yaml::Mark;

/// Where a value came from: a file and, when known, a position in it.
#[derive(Clone, Debug)]
pub struct Location {
    pub file: Arc<Path>,
    pub mark: Option<Mark>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mark {
            Some(mark) => write!(f, "{}:{}:{}", self.file.display(), mark.line, mark.col),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// One thing wrong with the configuration.
#[derive(Clone, Debug)]
pub struct ConfigError {
    pub at: Location,
    /// The dotted field path, such as `routes[2].upstream_path`; empty for the whole file.
    pub field: String,
    pub message: String,
    /// What to write instead.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.at)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Every error found in one load, in file and line order.
#[derive(Debug, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn push(
        &mut self,
        at: Location,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.0.push(ConfigError {
            at,
            field: field.into(),
            message: message.into(),
            hint,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn sorted(mut self) -> Self {
        self.0.sort_by(|a, b| {
            (&a.at.file, a.at.mark.map(|m| (m.line, m.col)))
                .cmp(&(&b.at.file, b.at.mark.map(|m| (m.line, m.col))))
        });
        self
    }
}

/// Errors listed before the rest are only counted: a generated file with thousands of bad
/// routes gets a readable answer, and the first ones are what to fix first.
pub const MAX_LISTED: usize = 100;

impl ConfigErrors {
    /// Each error as a line, the first `MAX_LISTED`, then how many more there are.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .0
            .iter()
            .take(MAX_LISTED)
            .map(ToString::to_string)
            .collect();
        if self.0.len() > MAX_LISTED {
            lines.push(format!("… and {} more", self.0.len() - MAX_LISTED));
        }
        lines
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.lines() {
            writeln!(f, "{line}")?;
        }
        let count = self.0.len();
        write!(
            f,
            "{count} error{} in the configuration",
            if count == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for ConfigErrors {}
