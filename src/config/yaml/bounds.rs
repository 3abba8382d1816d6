//! What reading one YAML document may cost, checked on each parser event before anything is
//! built: how deep containers nest, how many nodes anchors and aliases copy (an alias bomb of
//! 400 bytes expands to billions of nodes), and that the file holds a single document.

use std::collections::HashMap;

use yaml_rust2::parser::Event;

use super::{Mark, SyntaxError};

/// The most a document may cost.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Containers inside containers.
    pub depth: usize,
    /// Nodes copied by anchors (`&name`) and aliases (`*name`), all together.
    pub copies: usize,
}

/// Configuration files: no real configuration nests past a dozen levels or copies more than a
/// few hundred nodes.
pub const CONFIG: Limits = Limits {
    depth: 64,
    copies: 100_000,
};

pub struct Bounds {
    limits: Limits,
    /// Nodes in the document so far, copies included.
    nodes: usize,
    copies: usize,
    /// For each open container: its anchor and `nodes` when it opened.
    open: Vec<(usize, usize)>,
    /// The node count of each anchored node.
    anchored: HashMap<usize, usize>,
    documents: usize,
}

impl Bounds {
    pub fn new(limits: Limits) -> Bounds {
        Bounds {
            limits,
            nodes: 0,
            copies: 0,
            open: Vec::new(),
            anchored: HashMap::new(),
            documents: 0,
        }
    }

    /// Refuses the event if taking it would go past a limit.
    pub fn check(&mut self, event: &Event, mark: Mark) -> Result<(), SyntaxError> {
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(SyntaxError {
                        mark,
                        message: "a second YAML document starts here; a file holds one".to_string(),
                        hint: Some("remove the `---` line and what follows it, or move that document into a file of its own".to_string()),
                    });
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.open.len() >= self.limits.depth {
                    return Err(SyntaxError {
                        mark,
                        message: format!("nested deeper than {} levels", self.limits.depth),
                        hint: Some("check the brackets and the indentation".to_string()),
                    });
                }
                self.nodes += 1;
                self.open.push((*anchor, self.nodes));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, first)) = self.open.pop() {
                    self.anchor(anchor, self.nodes + 1 - first, mark)?;
                }
            }
            Event::Scalar(_, _, anchor, _) => {
                self.nodes += 1;
                self.anchor(*anchor, 1, mark)?;
            }
            Event::Alias(anchor) => {
                let size = self.anchored.get(anchor).copied().unwrap_or(0);
                self.nodes += size;
                self.copy(size, mark)?;
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    /// Records the size of an anchored node, which is copied once to be kept for its aliases.
    fn anchor(&mut self, anchor: usize, size: usize, mark: Mark) -> Result<(), SyntaxError> {
        if anchor == 0 {
            return Ok(());
        }
        self.anchored.insert(anchor, size);
        self.copy(size, mark)
    }

    fn copy(&mut self, size: usize, mark: Mark) -> Result<(), SyntaxError> {
        self.copies = self.copies.saturating_add(size);
        if self.copies > self.limits.copies {
            return Err(SyntaxError {
                mark,
                message: format!(
                    "anchors and aliases copy more than {} nodes by here",
                    self.limits.copies
                ),
                hint: Some(
                    "an alias bomb? write the values out, or alias fewer and smaller parts"
                        .to_string(),
                ),
            });
        }
        Ok(())
    }
}
