//! A YAML document as a tree whose every node remembers its line and column, so that every
//! configuration error can point at the text that caused it.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

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

/// A syntax error, with where the parser stopped.
#[derive(Debug)]
pub struct SyntaxError {
    pub mark: Mark,
    pub message: String,
}

/// Parses one YAML document. An empty file is an empty map.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        mark: (*e.marker()).into(),
        message: e.info().to_string(),
    })?;
    if let Some(error) = builder.error {
        return Err(error);
    }
    Ok(builder.root.unwrap_or(Node {
        kind: NodeKind::Map(Vec::new()),
        mark: Mark { line: 1, col: 1 },
    }))
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
    error: Option<SyntaxError>,
}

impl TreeBuilder {
    fn push_value(&mut self, node: Node, anchor: usize) {
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
                None => match node.kind {
                    NodeKind::Scalar { text, .. } => {
                        *pending = Some(Key {
                            name: text,
                            mark: node.mark,
                        })
                    }
                    _ => {
                        // Keep going so the rest of the document is consumed; report once.
                        self.error.get_or_insert(SyntaxError {
                            mark: node.mark,
                            message: "a map key must be a plain name, not a list or a map"
                                .to_string(),
                        });
                        *pending = Some(Key {
                            name: String::new(),
                            mark: node.mark,
                        });
                    }
                },
            },
        }
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        let mark = Mark::from(marker);
        match event {
            Event::Scalar(text, style, anchor, _) => {
                let plain = style == TScalarStyle::Plain;
                self.push_value(
                    Node {
                        kind: NodeKind::Scalar { text, plain },
                        mark,
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Open::Seq(
                Node {
                    kind: NodeKind::Seq(Vec::new()),
                    mark,
                },
                anchor,
            )),
            Event::MappingStart(anchor, _) => self.stack.push(Open::Map(
                Node {
                    kind: NodeKind::Map(Vec::new()),
                    mark,
                },
                anchor,
                None,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(Open::Seq(node, anchor) | Open::Map(node, anchor, _)) = self.stack.pop()
                {
                    self.push_value(node, anchor);
                }
            }
            Event::Alias(anchor) => {
                let node = self.anchors.get(&anchor).cloned().map(|mut node| {
                    node.mark = mark;
                    node
                });
                match node {
                    Some(node) => self.push_value(node, 0),
                    None => {
                        self.error.get_or_insert(SyntaxError {
                            mark,
                            message: "alias to an unknown anchor".to_string(),
                        });
                    }
                }
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_entries(node: &Node) -> &[(Key, Node)] {
        match &node.kind {
            NodeKind::Map(entries) => entries,
            other => panic!("expected a map, got {other:?}"),
        }
    }

    #[test]
    fn keys_and_values_carry_their_line_and_column() {
        let doc =
            parse("service: courses\nroutes:\n  - path: /api/\n    methods: [GET]\n").unwrap();
        let entries = map_entries(&doc);
        assert_eq!(entries[0].0.name, "service");
        assert_eq!(entries[0].0.mark, Mark { line: 1, col: 1 });
        assert_eq!(entries[0].1.mark, Mark { line: 1, col: 10 });
        let NodeKind::Seq(routes) = &entries[1].1.kind else {
            panic!("routes is a list")
        };
        let route = map_entries(&routes[0]);
        assert_eq!(route[1].0.name, "methods");
        assert_eq!(route[1].0.mark, Mark { line: 4, col: 5 });
    }

    #[test]
    fn quoted_scalars_are_not_null() {
        let doc = parse("a: ~\nb: \"\"\nc:\n").unwrap();
        let entries = map_entries(&doc);
        assert!(entries[0].1.is_null());
        assert!(!entries[1].1.is_null());
        assert!(entries[2].1.is_null());
    }

    #[test]
    fn aliases_expand_to_their_anchor() {
        let doc = parse("a: &t { read: 1s }\nb: *t\n").unwrap();
        let entries = map_entries(&doc);
        assert_eq!(map_entries(&entries[1].1)[0].0.name, "read");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let error = parse("a: [1, 2\nb: c\n").unwrap_err();
        assert!(error.mark.line >= 1, "{error:?}");
        assert!(!error.message.is_empty());
    }

    #[test]
    fn empty_document_is_an_empty_map() {
        assert!(map_entries(&parse("").unwrap()).is_empty());
        assert!(map_entries(&parse("# only a comment\n").unwrap()).is_empty());
    }
}
