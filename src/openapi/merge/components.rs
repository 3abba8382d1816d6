//! The fragments' components side by side: which names collide and are renamed
//! `<service>.<Name>`, every `$ref` rewritten to follow, and which components are usable (they
//! parse, and their references lead only to usable ones).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use openapiv3::Components;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Merger, Owner, Prepared};
use crate::openapi::convert::escape;
use crate::openapi::Problem;

/// Component sections that are merged; `securitySchemes` are the gateway's own.
const SECTIONS: [&str; 8] = [
    "schemas",
    "responses",
    "parameters",
    "examples",
    "requestBodies",
    "headers",
    "links",
    "callbacks",
];

/// For each fragment, the components it must rename: `(section, name) -> new name`.
/// Names whose definitions differ between fragments are renamed `<tag>.<Name>` in each of them
/// (the gateway's own keep theirs); renaming can make two definitions that referred to the
/// renamed ones differ too, so this repeats until nothing changes.
pub(super) fn plan_renames(prepared: &[Prepared]) -> Vec<HashMap<(String, String), String>> {
    let mut renames: Vec<HashMap<(String, String), String>> = vec![HashMap::new(); prepared.len()];
    loop {
        let mut groups: BTreeMap<(String, String), Vec<(usize, Value)>> = BTreeMap::new();
        for (index, fragment) in prepared.iter().enumerate() {
            for (section, name, value) in components_of(&fragment.document) {
                let key = (section.to_string(), name.clone());
                let final_name = renames[index].get(&key).unwrap_or(name).clone();
                let mut value = value.clone();
                rewrite_refs(&mut value, &renames[index]);
                groups
                    .entry((section.to_string(), final_name))
                    .or_default()
                    .push((index, value));
            }
        }
        let mut changed = false;
        for ((section, name), members) in groups {
            if members.iter().all(|(_, value)| *value == members[0].1) {
                continue;
            }
            for (index, _) in members {
                let fragment = &prepared[index];
                if fragment.owner == Owner::Gateway {
                    continue;
                }
                renames[index].insert(
                    (section.clone(), name.clone()),
                    format!("{}.{name}", fragment.tag),
                );
                changed = true;
            }
        }
        if !changed {
            return renames;
        }
    }
}

/// Each component a fragment defines, in the merged sections: its section, name and definition.
fn components_of(document: &Value) -> impl Iterator<Item = (&'static str, &String, &Value)> {
    SECTIONS.into_iter().flat_map(move |section| {
        document
            .pointer(&format!("/components/{section}"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(move |(name, value)| (section, name, value))
    })
}

/// Rewrites every `#/components/<section>/<name>` reference according to `renames`.
pub(super) fn rewrite_refs(value: &mut Value, renames: &HashMap<(String, String), String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("$ref") {
                if let Some((section, name, rest)) = split_ref(reference) {
                    if let Some(new) = renames.get(&(section.to_string(), name.clone())) {
                        *reference = format!("#/components/{section}/{}{rest}", escape(new));
                    }
                }
            }
            for child in map.values_mut() {
                rewrite_refs(child, renames);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|child| rewrite_refs(child, renames)),
        _ => {}
    }
}

/// Renames the component definitions themselves, keeping their order.
pub(super) fn rename_components(document: &mut Value, renames: &HashMap<(String, String), String>) {
    for section in SECTIONS {
        let Some(Value::Object(entries)) = document.pointer_mut(&format!("/components/{section}"))
        else {
            continue;
        };
        *entries = std::mem::take(entries)
            .into_iter()
            .map(|(name, value)| {
                let key = (section.to_string(), name);
                let name = renames.get(&key).cloned().unwrap_or(key.1);
                (name, value)
            })
            .collect();
    }
}

/// `#/components/schemas/User/properties/id` → `("schemas", "User", "/properties/id")`.
pub(super) fn split_ref(reference: &str) -> Option<(&str, String, &str)> {
    let rest = reference.strip_prefix("#/components/")?;
    let (section, rest) = rest.split_once('/')?;
    let (name, rest) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let name = name.replace("~1", "/").replace("~0", "~");
    Some((section, name, rest))
}

/// Every `$ref` inside `value`, with its pointer.
pub(super) fn refs_in<'a>(value: &'a Value, pointer: &str, out: &mut Vec<(String, &'a str)>) {
    collect_refs(value, &mut pointer.to_string(), out);
}

/// [`refs_in`] with one pointer buffer for the whole walk: most nodes hold no reference, so a
/// pointer is written out only for those that do.
fn collect_refs<'a>(value: &'a Value, pointer: &mut String, out: &mut Vec<(String, &'a str)>) {
    let depth = pointer.len();
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                out.push((format!("{pointer}/$ref"), reference));
            }
            for (key, child) in map {
                pointer.push('/');
                pointer.push_str(&escape(key));
                collect_refs(child, pointer, out);
                pointer.truncate(depth);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                // Writing to a String cannot fail.
                let _ = write!(pointer, "/{index}");
                collect_refs(child, pointer, out);
                pointer.truncate(depth);
            }
        }
        _ => {}
    }
}

/// Adds a component in its typed form; the first of equal names wins (shared ones are equal).
fn insert_component(
    components: &mut Components,
    section: &str,
    name: &str,
    value: Value,
) -> Result<(), serde_json::Error> {
    fn typed<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
        serde_json::from_value(value)
    }
    let name = name.to_string();
    match section {
        "schemas" => {
            components.schemas.entry(name).or_insert(typed(value)?);
        }
        "responses" => {
            components.responses.entry(name).or_insert(typed(value)?);
        }
        "parameters" => {
            components.parameters.entry(name).or_insert(typed(value)?);
        }
        "examples" => {
            components.examples.entry(name).or_insert(typed(value)?);
        }
        "requestBodies" => drop(
            components
                .request_bodies
                .entry(name)
                .or_insert(typed(value)?),
        ),
        "headers" => {
            components.headers.entry(name).or_insert(typed(value)?);
        }
        "links" => {
            components.links.entry(name).or_insert(typed(value)?);
        }
        _ => {
            components.callbacks.entry(name).or_insert(typed(value)?);
        }
    }
    Ok(())
}

impl Merger<'_> {
    /// Adds the fragment's components that parse and whose references resolve; returns the
    /// names (`section/name`) an operation may refer to.
    pub(super) fn components(
        &mut self,
        fragment: &Prepared,
        out: &mut Components,
    ) -> HashSet<String> {
        let mut defined: BTreeMap<String, (&str, String, &Value)> = BTreeMap::new();
        let mut broken: BTreeMap<String, String> = BTreeMap::new();
        for (section, name, value) in components_of(&fragment.document) {
            let key = format!("{section}/{name}");
            let original = fragment.original_names.get(&key).unwrap_or(name);
            let pointer = format!("/components/{section}/{}", escape(original));
            let mut scratch = Components::default();
            match insert_component(&mut scratch, section, name, value.clone()) {
                Ok(()) => {
                    let kept = serde_json::to_value(&scratch).unwrap_or_default();
                    let kept = kept.pointer(&format!("/{section}/{}", escape(name)));
                    self.report_lost(fragment, value, kept.unwrap_or(&Value::Null), &pointer);
                }
                Err(e) => {
                    broken.insert(
                        key.clone(),
                        format!("{pointer}: not a valid {section} entry: {e}"),
                    );
                }
            }
            defined.insert(key, (section, pointer, value));
        }
        // A component is usable when its references lead only to usable components.
        loop {
            let mut newly = Vec::new();
            for (key, (_, pointer, value)) in &defined {
                if broken.contains_key(key) {
                    continue;
                }
                let mut refs = Vec::new();
                refs_in(value, pointer, &mut refs);
                if let Some((at, target)) =
                    refs.iter().find(|(_, r)| !resolves(r, &defined, &broken))
                {
                    newly.push((key.clone(), format!("{at}: `{target}` does not resolve")));
                }
            }
            if newly.is_empty() {
                break;
            }
            broken.extend(newly);
        }
        for (key, why) in &broken {
            let pointer = &defined[key].1;
            self.problems.push(Problem::new(
                &fragment.source,
                pointer,
                &format!("left out: {why}"),
            ));
        }
        let mut usable = HashSet::new();
        for (key, (section, _, value)) in defined {
            if broken.contains_key(&key) {
                continue;
            }
            let name = key.split_once('/').map_or("", |(_, name)| name).to_string();
            // It parsed above, so this cannot fail.
            let _ = insert_component(out, section, &name, value.clone());
            usable.insert(key);
        }
        usable
    }
}

fn resolves(
    reference: &str,
    defined: &BTreeMap<String, (&str, String, &Value)>,
    broken: &BTreeMap<String, String>,
) -> bool {
    split_ref(reference).is_some_and(|(section, name, _)| {
        let key = format!("{section}/{name}");
        defined.contains_key(&key) && !broken.contains_key(&key)
    })
}
