//! One API document for the whole platform: each service's OpenAPI fragment ([`fragment`]),
//! brought to 3.0.3 ([`convert`]), merged under the public paths the routes expose
//! ([`merge`]), annotated with what the gateway enforces and answers itself ([`annotate`],
//! `answers`), and published with Swagger UI and ReDoc ([`publish`], [`pages`]) in the
//! rendering a request asks for ([`negotiate`]).

use std::fmt;

pub mod annotate;
mod answers;
pub mod convert;
pub mod fragment;
pub mod merge;
pub mod negotiate;
pub mod pages;
pub mod publish;

/// The tag and component prefix of the gateway's own endpoints.
pub const GATEWAY_TAG: &str = "guichet";

/// Something in a fragment that could not be merged, and where: the fragment's file or URL and
/// a JSON pointer into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub source: String,
    pub pointer: String,
    pub message: String,
}

impl Problem {
    pub fn new(source: &str, pointer: &str, message: &str) -> Problem {
        Problem {
            source: source.to_string(),
            pointer: pointer.to_string(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}: {}", self.source, self.pointer, self.message)
    }
}
