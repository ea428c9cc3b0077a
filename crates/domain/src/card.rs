//! Model and dataset cards: the YAML front matter of `README.md`, checked the way the Hub's
//! `validate-yaml` does before an upload.

/// What validating a card found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CardCheck {
    /// Problems that make the card invalid.
    pub errors: Vec<String>,
    /// Things worth telling the uploader that do not block.
    pub warnings: Vec<String>,
}

/// The largest card checked; the Hub's own limit is far below this.
const MAX_CARD_BYTES: usize = 1024 * 1024;

/// Extracts the front matter text between a leading `---` line and the next `---` line.
pub fn front_matter(content: &str) -> Option<&str> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let rest = content.strip_prefix("---\n").or_else(|| content.strip_prefix("---\r\n"))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some(&rest[..offset]);
        }
        offset += line.len();
    }
    None
}

/// Checks a card: front matter, if any, must be a YAML mapping whose `license` is a string or a
/// list. The YAML comes from anyone who can push a README (and from anonymous `validate-yaml`
/// calls), so it is walked as a stream of parser events under a budget and never built into a
/// tree: aliases are not expanded but their expanded size is counted, so a "billion laughs"
/// document is refused after a few hundred events instead of exhausting memory.
pub fn check_card(content: &str) -> CardCheck {
    let mut check = CardCheck::default();
    if content.len() > MAX_CARD_BYTES {
        check.errors.push(format!("README.md is larger than {MAX_CARD_BYTES} bytes"));
        return check;
    }
    let Some(yaml) = front_matter(content) else {
        if content.starts_with("---") {
            check.errors.push("the metadata block opened with '---' is never closed".to_owned());
        } else {
            check.warnings.push("empty or missing yaml metadata in repo card".to_owned());
        }
        return check;
    };
    match walk(yaml) {
        Err(err) => check.errors.push(err),
        Ok(Shape::Empty) => check.warnings.push("empty or missing yaml metadata in repo card".to_owned()),
        Ok(Shape::NotMapping) => check.errors.push("the metadata block must be a YAML mapping (key: value)".to_owned()),
        Ok(Shape::Mapping { license_ok: false }) => check.errors.push("\"license\" must be a string or a list of strings".to_owned()),
        Ok(Shape::Mapping { license_ok: true }) => {}
    }
    check
}

/// The most parser events one metadata block may produce.
const MAX_EVENTS: usize = 100_000;
/// The most nodes the block may stand for once every alias is expanded.
const MAX_EXPANDED_NODES: u64 = 100_000;
/// The deepest nesting of sequences and mappings.
const MAX_DEPTH: usize = 64;

/// What the first document of a metadata block is.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    Empty,
    NotMapping,
    Mapping { license_ok: bool },
}

/// The kind of a YAML node, as far as the card check cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Null,
    Scalar,
    Sequence,
    Mapping,
}

/// One open sequence or mapping: its anchor, its expanded node count so far, and how many of
/// its direct children are complete (keys and values alternate in a mapping).
struct Frame {
    anchor: usize,
    kind: Kind,
    nodes: u64,
    children: usize,
}

/// Walks the events of `yaml` under the budget and reports the shape of its first document.
fn walk(yaml: &str) -> Result<Shape, String> {
    use yaml_rust2::parser::{Event, Parser};
    let too_complex = |what: &str| format!("the metadata block is too complex: {what}");
    let mut parser = Parser::new_from_str(yaml);
    // Per anchor: its node's kind and expanded node count.
    let mut anchors: std::collections::HashMap<usize, (Kind, u64)> = std::collections::HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut expanded: u64 = 0;
    let mut events = 0;
    let mut root: Option<Kind> = None;
    // Whether the last complete key of the root mapping was `license`.
    let mut license_key_pending = false;
    let mut license_ok = true;
    let mut documents = 0;
    loop {
        let (event, mark) = parser.next_token().map_err(|err| format!("invalid YAML in the metadata block: {err}"))?;
        events += 1;
        if events > MAX_EVENTS {
            return Err(too_complex(&format!("more than {MAX_EVENTS} YAML events")));
        }
        // A complete node: its kind, expanded size and anchor (0 for none), what it adds to the
        // expanded total that was not counted yet, and its text if it is a scalar.
        let (kind, nodes, anchor, fresh, text) = match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                continue;
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::Scalar(value, style, anchor, _) => {
                let plain_null = style == yaml_rust2::scanner::TScalarStyle::Plain && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL");
                (if plain_null { Kind::Null } else { Kind::Scalar }, 1, anchor, 1, Some(value))
            }
            Event::Alias(id) => {
                let (kind, nodes) = *anchors.get(&id).ok_or_else(|| format!("invalid YAML in the metadata block: unknown anchor at line {}", mark.line()))?;
                (kind, nodes, 0, nodes, None)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(too_complex(&format!("nested deeper than {MAX_DEPTH} levels")));
                }
                let kind = if matches!(event, Event::SequenceStart(..)) { Kind::Sequence } else { Kind::Mapping };
                stack.push(Frame { anchor, kind, nodes: 1, children: 0 });
                expanded += 1;
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = stack.pop().ok_or_else(|| "invalid YAML in the metadata block: unbalanced collection".to_owned())?;
                // Its own node and its children were counted as they came.
                (frame.kind, frame.nodes, frame.anchor, 0, None)
            }
        };
        expanded = expanded.saturating_add(fresh);
        if expanded > MAX_EXPANDED_NODES {
            return Err(too_complex(&format!("more than {MAX_EXPANDED_NODES} nodes once aliases are expanded")));
        }
        if anchor != 0 {
            anchors.insert(anchor, (kind, nodes));
        }
        if let Some(parent) = stack.last_mut() {
            parent.nodes = parent.nodes.saturating_add(nodes);
            parent.children += 1;
        }
        if documents != 1 {
            continue; // only the first document is the card's metadata
        }
        match stack.as_slice() {
            [] => root = root.or(Some(kind)),
            [map] if map.kind == Kind::Mapping => {
                if map.children % 2 == 1 {
                    license_key_pending = kind == Kind::Scalar && text.as_deref() == Some("license");
                } else if std::mem::take(&mut license_key_pending) {
                    license_ok &= matches!(kind, Kind::Scalar | Kind::Sequence);
                }
            }
            _ => {}
        }
    }
    Ok(match root {
        None | Some(Kind::Null) => Shape::Empty,
        Some(Kind::Mapping) => Shape::Mapping { license_ok },
        Some(Kind::Scalar | Kind::Sequence) => Shape::NotMapping,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(content: &str, errors: usize, warnings: usize) {
        let got = check_card(content);
        assert_eq!((got.errors.len(), got.warnings.len()), (errors, warnings), "{content:?}: {got:?}");
    }

    #[test]
    fn cards() {
        check("---\nlicense: apache-2.0\ntags: [a, b]\n---\n# Model\n", 0, 0);
        check("# No metadata\n", 0, 1);
        check("---\n---\ntext", 0, 1);
        check("---\nlicense: [unclosed\n---\n", 1, 0);
        check("---\n- a list\n---\n", 1, 0);
        check("---\nlicense: {a: 1}\n---\n", 1, 0);
        check("---\nlicense: mit\n", 1, 0);
        check("\u{feff}---\r\nlicense: mit\r\n---\r\n", 0, 0);
        check("---\nlicense:\n  - mit\n  - apache-2.0\ntags: {a: [1, 2]}\n---\n", 0, 0);
        check("---\nbase: &b {x: 1}\nlicense: *b\n---\n", 1, 0);
        check("---\nname: &n mit\nlicense: *n\n---\n", 0, 0);
        check("---\nlicense: *nothing\n---\n", 1, 0);
        check("---\n\"license\": [mit]\nother: {license: {a: 1}}\n---\n", 0, 0);
        check("---\n~\n---\n", 0, 1);
    }

    #[test]
    fn r11_alias_bombs_and_deep_nesting_are_refused_quickly() {
        // "Billion laughs": nine levels of ten aliases each stand for 10^9 nodes in 600 bytes.
        let mut bomb = String::from("---\na0: &a0 [lol]\n");
        for level in 1..10 {
            bomb.push_str(&format!("a{level}: &a{level} [{}]\n", vec![format!("*a{}", level - 1); 10].join(", ")));
        }
        bomb.push_str("license: mit\n---\n");
        let got = check_card(&bomb);
        assert!(got.errors.iter().any(|e| e.contains("aliases are expanded")), "{got:?}");
        let deep = format!("---\nlicense: mit\nx: {}{}\n---\n", "[".repeat(200), "]".repeat(200));
        assert!(check_card(&deep).errors.iter().any(|e| e.contains("deeper") || e.contains("recursion")), "{:?}", check_card(&deep));
        let block_deep: String = (0..100).map(|i| format!("{}k:\n", "  ".repeat(i))).collect();
        assert!(!check_card(&format!("---\n{block_deep}---\n")).errors.is_empty());
        let wide = format!("---\nlicense: mit\nx: [{}]\n---\n", vec!["1"; 120_000].join(","));
        assert!(check_card(&wide).errors.iter().any(|e| e.contains("too complex")));
    }
}
