//! A YAML document as a tree whose every node remembers its line and column, so that every
//! configuration error can point at the text that caused it. Reading is bounded: the text is
//! checked first (`text`), then each parser event against [`Limits`] (`bounds`), so no file
//! can make the reader hang or allocate without end.

mod bounds;
mod json;
mod text;

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

pub use bounds::{Limits, CONFIG};

/// A position in a file, 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Mark {
    fn from(marker: Marker) -> Self {
        Mark {
            line: marker.line(),
            col: marker.col() + 1,
        }
    }
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    /// A scalar as written; `plain` is false for quoted and block scalars.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; keys are scalars (other keys are reported while building).
    Map(Vec<(Key, Node)>),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: NodeKind,
    pub mark: Mark,
}

#[derive(Clone, Debug)]
pub struct Key {
    pub name: String,
    pub mark: Mark,
}

impl Node {
    /// `~`, `null` and an empty plain scalar are YAML's null.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, plain: true }
            if text.is_empty() || text == "~" || text == "null" || text == "Null" || text == "NULL")
    }

    /// What the node is, for messages such as "expected a list, found a map".
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "nothing",
            NodeKind::Scalar { .. } => "a single value",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a map",
        }
    }
}

/// Something that stops a file from being read, with where.
#[derive(Debug)]
pub struct SyntaxError {
    pub mark: Mark,
    pub message: String,
    /// What to write instead, when there is more to say than the message.
    pub hint: Option<String>,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.mark.line, self.mark.col, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Parses one YAML document within the configuration [`CONFIG`] limits. An empty file is an
/// empty map.
pub fn parse(bytes: &[u8]) -> Result<Node, SyntaxError> {
    parse_into::<Tree>(bytes, CONFIG)
}

/// Parses one YAML document within `limits` as JSON, its plain scalars typed as serde_yaml
/// would type them: for documents that are not configuration (OpenAPI fragments).
pub fn to_json(bytes: &[u8], limits: Limits) -> Result<serde_json::Value, SyntaxError> {
    parse_into::<json::Json>(bytes, limits)
}

fn parse_into<B: Build>(bytes: &[u8], limits: Limits) -> Result<B::Node, SyntaxError> {
    let mut builder = TreeBuilder::<B>::default();
    each_event(bytes, limits, |event, mark| builder.on_event(event, mark))?;
    Ok(builder
        .root
        .unwrap_or_else(|| B::map(Vec::new(), Mark { line: 1, col: 1 })))
}

/// Runs the parser over the text of `bytes`, each event checked against `limits` before
/// `on_event` takes it; stops at the first error. The parser is driven event by event, never
/// through its recursive `load`, which nests as deep as the document.
fn each_event(
    bytes: &[u8],
    limits: Limits,
    mut on_event: impl FnMut(Event, Mark) -> Result<(), SyntaxError>,
) -> Result<(), SyntaxError> {
    let text = text::decode(bytes)?;
    let mut parser = Parser::new_from_str(text);
    let mut bounds = bounds::Bounds::new(limits);
    loop {
        let (event, marker) = parser.next_token().map_err(|e| SyntaxError {
            mark: (*e.marker()).into(),
            message: format!("invalid YAML: {}", e.info()),
            hint: None,
        })?;
        if event == Event::StreamEnd {
            return Ok(());
        }
        let mark = Mark::from(marker);
        bounds.check(&event, mark)?;
        on_event(event, mark)?;
    }
}

/// What a document is built into: the spanned tree of configuration files, or JSON.
trait Build {
    type Node: Clone;
    fn scalar(text: String, plain: bool, mark: Mark) -> Self::Node;
    fn seq(items: Vec<Self::Node>, mark: Mark) -> Self::Node;
    fn map(entries: Vec<(Key, Self::Node)>, mark: Mark) -> Self::Node;
    /// The copy an alias makes of an anchored node, placed where the alias is.
    fn copy(anchored: &Self::Node, mark: Mark) -> Self::Node;
    /// A map key written as an alias or a container, ending at `mark`.
    fn key(node: Self::Node, mark: Mark) -> Result<Key, SyntaxError>;
}

/// The spanned tree of configuration files.
struct Tree;

impl Build for Tree {
    type Node = Node;

    fn scalar(text: String, plain: bool, mark: Mark) -> Node {
        Node {
            kind: NodeKind::Scalar { text, plain },
            mark,
        }
    }

    fn seq(items: Vec<Node>, mark: Mark) -> Node {
        Node {
            kind: NodeKind::Seq(items),
            mark,
        }
    }

    fn map(entries: Vec<(Key, Node)>, mark: Mark) -> Node {
        Node {
            kind: NodeKind::Map(entries),
            mark,
        }
    }

    fn copy(anchored: &Node, mark: Mark) -> Node {
        Node {
            mark,
            ..anchored.clone()
        }
    }

    fn key(node: Node, _: Mark) -> Result<Key, SyntaxError> {
        match node.kind {
            NodeKind::Scalar { text, plain } => key_of(text, plain, node.mark),
            _ => Err(not_a_key(node.mark)),
        }
    }
}

/// A container being filled while events arrive: its items or entries, its position and
/// anchor, and for a map the key waiting for its value.
enum Open<N> {
    Seq(Vec<N>, Mark, usize),
    Map(Vec<(Key, N)>, Mark, usize, Option<Key>),
}

struct TreeBuilder<B: Build> {
    stack: Vec<Open<B::Node>>,
    root: Option<B::Node>,
    anchors: HashMap<usize, B::Node>,
}

impl<B: Build> Default for TreeBuilder<B> {
    fn default() -> Self {
        TreeBuilder {
            stack: Vec::new(),
            root: None,
            anchors: HashMap::new(),
        }
    }
}

impl<B: Build> TreeBuilder<B> {
    /// Whether the next value is a key of the innermost map.
    fn wants_key(&self) -> bool {
        matches!(self.stack.last(), Some(Open::Map(_, _, _, None)))
    }

    fn push_value(&mut self, node: B::Node, anchor: usize, mark: Mark) -> Result<(), SyntaxError> {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq(items, _, _)) => items.push(node),
            Some(Open::Map(entries, _, _, pending)) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => *pending = Some(B::key(node, mark)?),
            },
        }
        Ok(())
    }

    fn on_event(&mut self, event: Event, mark: Mark) -> Result<(), SyntaxError> {
        match event {
            Event::Scalar(text, style, anchor, _) => {
                let plain = style == TScalarStyle::Plain;
                // A key is kept as written, and made a node only when an alias may copy it.
                if self.wants_key() && anchor == 0 {
                    let key = key_of(text, plain, mark)?;
                    if let Some(Open::Map(_, _, _, pending)) = self.stack.last_mut() {
                        *pending = Some(key);
                    }
                    return Ok(());
                }
                return self.push_value(B::scalar(text, plain, mark), anchor, mark);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Open::Seq(Vec::new(), mark, anchor)),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Open::Map(Vec::new(), mark, anchor, None))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Open::Seq(items, at, anchor)) => (B::seq(items, at), anchor),
                    Some(Open::Map(entries, at, anchor, _)) => (B::map(entries, at), anchor),
                    None => return Ok(()),
                };
                return self.push_value(node, anchor, mark);
            }
            Event::Alias(anchor) => {
                let Some(anchored) = self.anchors.get(&anchor) else {
                    return Err(SyntaxError {
                        mark,
                        message: "alias to an unknown anchor".to_string(),
                        hint: None,
                    });
                };
                let copy = B::copy(anchored, mark);
                return self.push_value(copy, 0, mark);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
        Ok(())
    }
}

fn not_a_key(mark: Mark) -> SyntaxError {
    SyntaxError {
        mark,
        message: "a map key must be a plain name, not a list or a map".to_string(),
        hint: None,
    }
}

/// A map key written as a scalar, unless it is YAML 1.1's merge key, which this reader does not
/// apply.
fn key_of(text: String, plain: bool, mark: Mark) -> Result<Key, SyntaxError> {
    if plain && text == "<<" {
        return Err(SyntaxError {
            mark,
            message: "merge keys (`<<`) are not supported".to_string(),
            hint: Some(
                "write the keys out; an alias (`key: *name`) can stand for a whole map".to_string(),
            ),
        });
    }
    Ok(Key { name: text, mark })
}

#[cfg(test)]
mod tests;
