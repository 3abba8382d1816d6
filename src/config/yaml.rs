//! A YAML document as a tree whose every node remembers its line and column, so that every
//! configuration error can point at the text that caused it. Reading is bounded: the text is
//! checked first ([`text`]), then each parser event against [`Limits`] ([`bounds`]), so no file
//! can make the reader hang or allocate without end.

mod bounds;
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
    let mut builder = TreeBuilder::default();
    each_event(bytes, CONFIG, |event, mark| builder.on_event(event, mark))?;
    Ok(builder.root.unwrap_or(Node {
        kind: NodeKind::Map(Vec::new()),
        mark: Mark { line: 1, col: 1 },
    }))
}

/// Checks that `bytes` is one YAML document within `limits`, building nothing: for documents
/// another reader then parses (OpenAPI fragments).
pub fn check(bytes: &[u8], limits: Limits) -> Result<(), SyntaxError> {
    each_event(bytes, limits, |_, _| Ok(()))
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

/// A container being filled while events arrive.
enum Open {
    Seq(Node, usize),
    Map(Node, usize, Option<Key>),
}

#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Open>,
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
}

impl TreeBuilder {
    fn push_value(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq(seq, _)) => {
                if let NodeKind::Seq(items) = &mut seq.kind {
                    items.push(node);
                }
            }
            Some(Open::Map(map, _, pending)) => match pending.take() {
                Some(key) => {
                    if let NodeKind::Map(entries) = &mut map.kind {
                        entries.push((key, node));
                    }
                }
                None => *pending = Some(key_of(node)?),
            },
        }
        Ok(())
    }

    fn on_event(&mut self, event: Event, mark: Mark) -> Result<(), SyntaxError> {
        let node = |kind| Node { kind, mark };
        match event {
            Event::Scalar(text, style, anchor, _) => {
                let plain = style == TScalarStyle::Plain;
                return self.push_value(node(NodeKind::Scalar { text, plain }), anchor);
            }
            Event::SequenceStart(anchor, _) => self
                .stack
                .push(Open::Seq(node(NodeKind::Seq(Vec::new())), anchor)),
            Event::MappingStart(anchor, _) => {
                self.stack
                    .push(Open::Map(node(NodeKind::Map(Vec::new())), anchor, None))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(Open::Seq(node, anchor) | Open::Map(node, anchor, _)) = self.stack.pop()
                {
                    return self.push_value(node, anchor);
                }
            }
            Event::Alias(anchor) => {
                let Some(anchored) = self.anchors.get(&anchor) else {
                    return Err(SyntaxError {
                        mark,
                        message: "alias to an unknown anchor".to_string(),
                        hint: None,
                    });
                };
                let mut copy = anchored.clone();
                copy.mark = mark;
                return self.push_value(copy, 0);
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

/// A map key: a scalar, and not YAML 1.1's merge key, which this reader does not apply.
fn key_of(node: Node) -> Result<Key, SyntaxError> {
    match node.kind {
        NodeKind::Scalar { text, plain: true } if text == "<<" => Err(SyntaxError {
            mark: node.mark,
            message: "merge keys (`<<`) are not supported".to_string(),
            hint: Some(
                "write the keys out; an alias (`key: *name`) can stand for a whole map".to_string(),
            ),
        }),
        NodeKind::Scalar { text, .. } => Ok(Key {
            name: text,
            mark: node.mark,
        }),
        _ => Err(SyntaxError {
            mark: node.mark,
            message: "a map key must be a plain name, not a list or a map".to_string(),
            hint: None,
        }),
    }
}

#[cfg(test)]
mod tests;
