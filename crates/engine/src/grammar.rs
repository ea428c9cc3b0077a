//! Constrained decoding: a JSON schema compiled into a byte-level matcher, and the per-step mask
//! of the tokens that keep the output on a path the schema accepts.
//!
//! The matcher is a pushdown automaton over the output's bytes. Its state is a small set of
//! stacks of frames (more than one only while `anyOf` alternatives share a prefix). Feeding a byte
//! writes the successor state into a caller's buffer, so the mask walks a trie of the vocabulary
//! depth-first with one buffer per depth and no allocation per token. Inside a string, where most
//! tokens are plain text, the tokens without quotes, backslashes, control bytes or split UTF-8
//! are admitted wholesale and only the others are walked.
//!
//! Compiled schemas keep the order of `properties`: objects are written in that order, optional
//! properties may be skipped, and required ones must appear.

use std::sync::Arc;

use serde_json::Value;

use crate::regex::{self, Dfa};
use crate::Token;

type NodeId = u32;

/// The deepest nesting the output may reach (objects and arrays inside one another).
const MAX_DEPTH: usize = 64;
/// The longest run of whitespace between JSON tokens (small models otherwise loop on newlines).
const MAX_WHITESPACE: u8 = 16;
/// The longest number literal, in bytes.
const MAX_NUMBER_BYTES: u8 = 24;
/// `anyOf` alternatives followed at once; beyond it the latest are dropped.
const MAX_STACKS: usize = 32;
/// Nodes one schema may compile into, and choices one `enum` or object may list.
const MAX_NODES: usize = 4096;
const MAX_CHOICES: usize = 64;

/// A schema feature that cannot be enforced, with where it was met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at {path})")]
pub struct SchemaError {
    pub path: String,
    pub message: String,
}

#[derive(Clone, Debug)]
enum Node {
    /// One of fixed JSON texts (`enum`, `const`, `null`, `true`/`false`).
    Literals(Vec<Vec<u8>>),
    /// An integer within bounds (inclusive).
    Integer {
        min: i64,
        max: i64,
    },
    /// A number, within bounds when the schema gives some (then written without an exponent).
    Number {
        bounds: Option<Bounds>,
    },
    /// A string of `min..=max` code points, matching `pattern` when there is one (`pattern` or a
    /// `format`).
    String {
        min: u32,
        max: u32,
        pattern: Option<Arc<Dfa>>,
    },
    /// Declared properties in order; `extra` is the value schema of free keys (maps, or any
    /// object), allowed only when there are no declared properties.
    Object {
        props: Vec<Prop>,
        extra: Option<NodeId>,
        last_required: Option<usize>,
    },
    Array {
        items: NodeId,
        min: u32,
        max: u32,
    },
    AnyOf(Vec<NodeId>),
    /// Not compiled yet (a `$ref` target being compiled).
    Pending,
}

#[derive(Clone, Debug)]
struct Prop {
    /// `"key"` as JSON text, quotes included.
    key: Vec<u8>,
    value: NodeId,
    required: bool,
}

/// What the output looks like around the JSON value: tool calls wrap it in markup and may repeat.
#[derive(Clone, Debug, Default)]
pub struct Framing {
    pub prefix: Vec<u8>,
    pub suffix: Vec<u8>,
    /// Between repeated items; `None`: exactly one item.
    pub separator: Option<Vec<u8>>,
    /// The most items when repeating.
    pub max_items: u32,
}

/// A compiled schema: what output is allowed.
#[derive(Clone, Debug)]
pub struct Grammar {
    nodes: Vec<Node>,
    root: NodeId,
    framing: Framing,
}

impl Grammar {
    /// Any JSON object (`response_format: json_object`, Ollama's `format: "json"`).
    pub fn json_object() -> Grammar {
        let mut c = Compiler::new(&Value::Null);
        let any = c.any();
        let root = c.push(Node::Object { props: Vec::new(), extra: Some(any), last_required: None });
        Grammar { nodes: c.nodes, root, framing: Framing::default() }
    }

    /// A JSON schema, or a clear error naming the first feature it cannot enforce.
    pub fn from_schema(schema: &Value) -> Result<Grammar, SchemaError> {
        let mut c = Compiler::new(schema);
        let root = c.compile(schema, "#")?;
        check_progress(&c.nodes)?;
        Ok(Grammar { nodes: c.nodes, root, framing: Framing::default() })
    }

    /// The same value wrapped in `framing` (tool-call markup).
    pub fn framed(mut self, framing: Framing) -> Grammar {
        self.framing = framing;
        self
    }

    /// A grammar whose value is any one of `choices`' values (each a compiled grammar's root);
    /// used for "call one of these tools".
    pub fn any_of(choices: Vec<Grammar>) -> Grammar {
        let mut nodes = Vec::new();
        let roots = choices.into_iter().map(|grammar| append(&mut nodes, grammar)).collect();
        nodes.push(Node::AnyOf(roots));
        Grammar { root: nodes.len() as NodeId - 1, nodes, framing: Framing::default() }
    }

    /// An object with these properties in order, all required; each value a compiled grammar
    /// (tool calls: `{"name": <const>, "arguments": <schema>}`).
    pub fn object(props: Vec<(String, Grammar)>) -> Grammar {
        let mut nodes = Vec::new();
        let out: Vec<Prop> = props.into_iter().map(|(key, grammar)| Prop { key: serde_json::to_vec(&key).expect("a string serializes"), value: append(&mut nodes, grammar), required: true }).collect();
        let last_required = out.len().checked_sub(1);
        nodes.push(Node::Object { props: out, extra: None, last_required });
        Grammar { root: nodes.len() as NodeId - 1, nodes, framing: Framing::default() }
    }

    /// Exactly this JSON value.
    pub fn constant(value: &Value) -> Grammar {
        Grammar { nodes: vec![Node::Literals(vec![serde_json::to_vec(value).expect("JSON serializes")])], root: 0, framing: Framing::default() }
    }

    /// The matcher at the start of the output.
    pub fn start(self: &Arc<Self>) -> Matcher {
        let mut state = State::default();
        if self.framing.prefix.is_empty() {
            // No markup: the value starts at once.
            state.frames.extend([Frame::Root { phase: RootPhase::Value, pos: 0, items: 0 }, Frame::Value { node: self.root }]);
        } else {
            state.frames.push(Frame::Root { phase: RootPhase::Prefix, pos: 0, items: 0 });
        }
        state.end_stack();
        Matcher { grammar: self.clone(), state, scratch: State::default() }
    }
}

/// Refuses `$ref`/`anyOf` cycles that never reach a value (`{"$ref": "#"}`): choosing among
/// alternatives must always end at a concrete node, or the matcher would loop.
fn check_progress(nodes: &[Node]) -> Result<(), SchemaError> {
    // 0 unvisited, 1 on the current path, 2 known to end.
    let mut mark = vec![0u8; nodes.len()];
    fn visit(nodes: &[Node], mark: &mut [u8], id: usize) -> bool {
        match mark[id] {
            1 => return false,
            2 => return true,
            _ => {}
        }
        mark[id] = 1;
        let ok = match &nodes[id] {
            Node::AnyOf(list) => list.iter().all(|n| visit(nodes, mark, *n as usize)),
            Node::Pending => false,
            _ => true,
        };
        mark[id] = if ok { 2 } else { 1 };
        ok
    }
    for id in 0..nodes.len() {
        if !visit(nodes, &mut mark, id) {
            return Err(SchemaError { path: "#".into(), message: "the schema refers to itself without ever describing a value".into() });
        }
    }
    Ok(())
}

/// Moves `grammar`'s nodes to the end of `nodes`; returns where its root landed.
fn append(nodes: &mut Vec<Node>, grammar: Grammar) -> NodeId {
    let offset = nodes.len() as NodeId;
    nodes.extend(grammar.nodes.into_iter().map(|node| shift(node, offset)));
    grammar.root + offset
}

fn shift(node: Node, offset: NodeId) -> Node {
    match node {
        Node::Object { props, extra, last_required } => Node::Object { props: props.into_iter().map(|p| Prop { value: p.value + offset, ..p }).collect(), extra: extra.map(|e| e + offset), last_required },
        Node::Array { items, min, max } => Node::Array { items: items + offset, min, max },
        Node::AnyOf(list) => Node::AnyOf(list.into_iter().map(|n| n + offset).collect()),
        other => other,
    }
}

struct Compiler<'a> {
    nodes: Vec<Node>,
    root: &'a Value,
    /// `$ref` targets already compiled (or being compiled: recursion).
    refs: Vec<(String, NodeId)>,
    any: Option<NodeId>,
}

/// Keywords that only describe and never constrain.
const ANNOTATIONS: &[&str] = &["title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly", "$defs", "definitions", "strict"];

impl<'a> Compiler<'a> {
    fn new(root: &'a Value) -> Self {
        Compiler { nodes: Vec::new(), root, refs: Vec::new(), any: None }
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        (self.nodes.len() - 1) as NodeId
    }

    /// Any JSON value: null, booleans, numbers, strings, objects with any keys, arrays.
    fn any(&mut self) -> NodeId {
        if let Some(id) = self.any {
            return id;
        }
        let id = self.push(Node::Pending);
        self.any = Some(id);
        let literals = self.push(Node::Literals(vec![b"null".to_vec(), b"true".to_vec(), b"false".to_vec()]));
        let number = self.push(Node::Number { bounds: None });
        let string = self.push(Node::String { min: 0, max: u32::MAX, pattern: None });
        let object = self.push(Node::Object { props: Vec::new(), extra: Some(id), last_required: None });
        let array = self.push(Node::Array { items: id, min: 0, max: u32::MAX });
        self.nodes[id as usize] = Node::AnyOf(vec![literals, number, string, object, array]);
        id
    }

    fn error(path: &str, message: impl Into<String>) -> SchemaError {
        SchemaError { path: path.to_owned(), message: message.into() }
    }

    fn compile(&mut self, schema: &Value, path: &str) -> Result<NodeId, SchemaError> {
        if self.nodes.len() > MAX_NODES {
            return Err(Self::error(path, "the schema is too large"));
        }
        let map = match schema {
            Value::Bool(true) => return Ok(self.any()),
            Value::Bool(false) => return Err(Self::error(path, "a false schema accepts nothing")),
            Value::Object(map) => map,
            _ => return Err(Self::error(path, "a schema must be an object or a boolean")),
        };
        for key in map.keys() {
            let known = ANNOTATIONS.contains(&key.as_str())
                || key.starts_with("x-")
                || matches!(
                    key.as_str(),
                    "type"
                        | "properties"
                        | "required"
                        | "additionalProperties"
                        | "items"
                        | "enum"
                        | "const"
                        | "anyOf"
                        | "oneOf"
                        | "allOf"
                        | "$ref"
                        | "minLength"
                        | "maxLength"
                        | "minItems"
                        | "maxItems"
                        | "nullable"
                        | "minimum"
                        | "maximum"
                        | "exclusiveMinimum"
                        | "exclusiveMaximum"
                        | "pattern"
                        | "format"
                );
            if !known {
                return Err(Self::error(path, format!("the schema keyword {key:?} is not supported")));
            }
        }
        if let Some(reference) = map.get("$ref") {
            if map.keys().any(|k| !ANNOTATIONS.contains(&k.as_str()) && k != "$ref" && !k.starts_with("x-")) {
                return Err(Self::error(path, "$ref next to other constraints is not supported"));
            }
            let reference = reference.as_str().ok_or_else(|| Self::error(path, "$ref must be a string"))?;
            return self.reference(reference, path);
        }
        if map.contains_key("oneOf") {
            return Err(Self::error(path, "oneOf is not supported (its exclusivity cannot be enforced while decoding); use anyOf"));
        }
        if let Some(all) = map.get("allOf") {
            match all.as_array().map(Vec::as_slice) {
                Some([only]) if map.keys().all(|k| k == "allOf" || ANNOTATIONS.contains(&k.as_str())) => return self.compile(only, &format!("{path}/allOf/0")),
                _ => return Err(Self::error(path, "allOf is supported only with a single schema")),
            }
        }
        if let Some(any) = map.get("anyOf") {
            let list = any.as_array().filter(|l| !l.is_empty()).ok_or_else(|| Self::error(path, "anyOf must be a non-empty array"))?;
            if list.len() > MAX_CHOICES {
                return Err(Self::error(path, format!("anyOf may list at most {MAX_CHOICES} schemas")));
            }
            if map.keys().any(|k| !ANNOTATIONS.contains(&k.as_str()) && k != "anyOf" && !k.starts_with("x-")) {
                return Err(Self::error(path, "anyOf next to other constraints is not supported; move them into each alternative"));
            }
            let mut ids = Vec::new();
            for (i, alternative) in list.iter().enumerate() {
                ids.push(self.compile(alternative, &format!("{path}/anyOf/{i}"))?);
            }
            return Ok(self.push(Node::AnyOf(ids)));
        }
        let literal_list = match (map.get("enum"), map.get("const")) {
            (Some(_), Some(_)) => return Err(Self::error(path, "enum and const together are not supported")),
            (Some(Value::Array(values)), None) if !values.is_empty() && values.len() <= MAX_CHOICES => Some(values.clone()),
            (Some(_), None) => return Err(Self::error(path, format!("enum must be a non-empty array of at most {MAX_CHOICES} values"))),
            (None, Some(value)) => Some(vec![value.clone()]),
            (None, None) => None,
        };
        let mut types: Vec<String> = match map.get("type") {
            None => Vec::new(),
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(list)) => list.iter().map(|t| t.as_str().map(str::to_owned).ok_or_else(|| Self::error(path, "type must be a string or an array of strings"))).collect::<Result<_, _>>()?,
            Some(_) => return Err(Self::error(path, "type must be a string or an array of strings")),
        };
        if map.get("nullable") == Some(&Value::Bool(true)) && !types.is_empty() && !types.iter().any(|t| t == "null") {
            types.push("null".into());
        }
        if let Some(values) = literal_list {
            let fits = |v: &Value| types.is_empty() || types.iter().any(|t| type_matches(t, v));
            let literals: Vec<Vec<u8>> = values.iter().filter(|v| fits(v)).map(|v| serde_json::to_vec(v).expect("JSON serializes")).collect();
            if literals.is_empty() {
                return Err(Self::error(path, "no enum value has the schema's type"));
            }
            return Ok(self.push(Node::Literals(literals)));
        }
        if types.is_empty() {
            // Inferred from the keywords present; none of them: any value.
            if map.contains_key("properties") || map.contains_key("additionalProperties") || map.contains_key("required") {
                types.push("object".into());
            } else if map.contains_key("items") || map.contains_key("minItems") || map.contains_key("maxItems") {
                types.push("array".into());
            } else if ["minLength", "maxLength", "pattern", "format"].iter().any(|k| map.contains_key(*k)) {
                types.push("string".into());
            } else if ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"].iter().any(|k| map.contains_key(*k)) {
                types.push("number".into());
            } else {
                return Ok(self.any());
            }
        }
        let mut ids = Vec::new();
        for t in &types {
            ids.push(self.compile_type(t, map, path)?);
        }
        Ok(if ids.len() == 1 { ids[0] } else { self.push(Node::AnyOf(ids)) })
    }

    fn compile_type(&mut self, kind: &str, map: &serde_json::Map<String, Value>, path: &str) -> Result<NodeId, SchemaError> {
        let count = |key: &str| -> Result<Option<u32>, SchemaError> {
            match map.get(key) {
                None => Ok(None),
                Some(v) => v.as_u64().filter(|n| *n <= u32::MAX as u64 / 2).map(|n| Some(n as u32)).ok_or_else(|| Self::error(path, format!("{key} must be a non-negative integer"))),
            }
        };
        Ok(match kind {
            "null" => self.push(Node::Literals(vec![b"null".to_vec()])),
            "boolean" => self.push(Node::Literals(vec![b"true".to_vec(), b"false".to_vec()])),
            "integer" => {
                let bound = |key: &str| -> Result<Option<f64>, SchemaError> {
                    match map.get(key) {
                        None => Ok(None),
                        Some(v) => v.as_f64().filter(|n| n.is_finite()).map(Some).ok_or_else(|| Self::error(path, format!("{key} must be a number"))),
                    }
                };
                // Bounds past 18 digits are no bounds: integers are written with at most 18.
                let limit = MAX_INTEGER as f64;
                let mut min = -limit;
                let mut max = limit;
                if let Some(v) = bound("minimum")? {
                    min = min.max(v.ceil());
                }
                if let Some(v) = bound("exclusiveMinimum")? {
                    min = min.max(v.floor() + 1.0);
                }
                if let Some(v) = bound("maximum")? {
                    max = max.min(v.floor());
                }
                if let Some(v) = bound("exclusiveMaximum")? {
                    max = max.min(v.ceil() - 1.0);
                }
                if min > max {
                    return Err(Self::error(path, "no integer lies within the bounds"));
                }
                self.push(Node::Integer { min: min as i64, max: max as i64 })
            }
            "number" => {
                let bound = |key: &str| -> Result<Option<f64>, SchemaError> {
                    match map.get(key) {
                        None => Ok(None),
                        Some(v) => v.as_f64().filter(|n| n.is_finite()).map(Some).ok_or_else(|| Self::error(path, format!("{key} must be a number"))),
                    }
                };
                let mut b = Bounds { min: f64::NEG_INFINITY, min_open: false, max: f64::INFINITY, max_open: false };
                if let Some(v) = bound("minimum")? {
                    b.min = v;
                }
                if let Some(v) = bound("exclusiveMinimum")? {
                    if v >= b.min {
                        b = Bounds { min: v, min_open: true, ..b };
                    }
                }
                if let Some(v) = bound("maximum")? {
                    b.max = v;
                }
                if let Some(v) = bound("exclusiveMaximum")? {
                    if v <= b.max {
                        b = Bounds { max: v, max_open: true, ..b };
                    }
                }
                if b.min > b.max || (b.min == b.max && (b.min_open || b.max_open)) {
                    return Err(Self::error(path, "no number lies within the bounds"));
                }
                let bounded = b.min.is_finite() || b.max.is_finite();
                self.push(Node::Number { bounds: bounded.then_some(b) })
            }
            "string" => {
                let (min, max) = (count("minLength")?.unwrap_or(0), count("maxLength")?.unwrap_or(u32::MAX));
                if min > max {
                    return Err(Self::error(path, "minLength exceeds maxLength"));
                }
                let pattern = match (map.get("pattern"), map.get("format")) {
                    (Some(_), Some(_)) => return Err(Self::error(path, "pattern and format together are not supported")),
                    (Some(pattern), None) => {
                        let pattern = pattern.as_str().ok_or_else(|| Self::error(path, "pattern must be a string"))?;
                        Some(regex::compile(pattern).map_err(|err| Self::error(path, format!("pattern {pattern:?}: {err}")))?)
                    }
                    (None, Some(format)) => {
                        let format = format.as_str().ok_or_else(|| Self::error(path, "format must be a string"))?;
                        let pattern = regex::format_pattern(format).ok_or_else(|| Self::error(path, format!("format {format:?} is not supported (date, time, date-time, uuid, email, ipv4, hostname and uri are)")))?;
                        Some(regex::compile(&pattern).map_err(|err| Self::error(path, format!("format {format:?}: {err}")))?)
                    }
                    (None, None) => None,
                };
                self.push(Node::String { min, max, pattern: pattern.map(Arc::new) })
            }
            "array" => {
                let (min, max) = (count("minItems")?.unwrap_or(0), count("maxItems")?.unwrap_or(u32::MAX));
                if min > max {
                    return Err(Self::error(path, "minItems exceeds maxItems"));
                }
                let items = match map.get("items") {
                    None => self.any(),
                    Some(items) => self.compile(items, &format!("{path}/items"))?,
                };
                self.push(Node::Array { items, min, max })
            }
            "object" => {
                let required: Vec<&str> = match map.get("required") {
                    None => Vec::new(),
                    Some(Value::Array(list)) => list.iter().map(|k| k.as_str().ok_or_else(|| Self::error(path, "required must list strings"))).collect::<Result<_, _>>()?,
                    Some(_) => return Err(Self::error(path, "required must be an array")),
                };
                let mut props = Vec::new();
                if let Some(properties) = map.get("properties") {
                    let properties = properties.as_object().ok_or_else(|| Self::error(path, "properties must be an object"))?;
                    if properties.len() > MAX_CHOICES {
                        return Err(Self::error(path, format!("an object may declare at most {MAX_CHOICES} properties")));
                    }
                    for (key, schema) in properties {
                        let value = self.compile(schema, &format!("{path}/properties/{key}"))?;
                        props.push(Prop { key: serde_json::to_vec(key).expect("a string serializes"), value, required: required.contains(&key.as_str()) });
                    }
                }
                if let Some(missing) = required.iter().find(|k| !props.iter().any(|p| p.key == serde_json::to_vec(k).expect("a string serializes"))) {
                    return Err(Self::error(path, format!("required property {missing:?} is not declared in properties")));
                }
                // Free keys are generated only for maps (no declared properties); next to declared
                // properties, extra keys are merely not produced, which every schema accepts.
                let extra = match map.get("additionalProperties") {
                    Some(Value::Bool(false)) => None,
                    None | Some(Value::Bool(true)) => props.is_empty().then(|| self.any()),
                    Some(schema) if props.is_empty() => Some(self.compile(schema, &format!("{path}/additionalProperties"))?),
                    Some(_) => None,
                };
                let last_required = props.iter().rposition(|p| p.required);
                self.push(Node::Object { props, extra, last_required })
            }
            other => return Err(Self::error(path, format!("unknown type {other:?}"))),
        })
    }

    fn reference(&mut self, reference: &str, path: &str) -> Result<NodeId, SchemaError> {
        if let Some((_, id)) = self.refs.iter().find(|(r, _)| r == reference) {
            return Ok(*id);
        }
        let target = if reference == "#" {
            self.root
        } else {
            let pointer = reference.strip_prefix('#').ok_or_else(|| Self::error(path, format!("only local references (#/...) are supported, not {reference:?}")))?;
            self.root.pointer(pointer).ok_or_else(|| Self::error(path, format!("$ref {reference:?} points at nothing")))?
        };
        // Reserve the node first, so recursive schemas refer back to it.
        let id = self.push(Node::Pending);
        self.refs.push((reference.to_owned(), id));
        let compiled = self.compile(target, reference)?;
        self.nodes[id as usize] = Node::AnyOf(vec![compiled]);
        Ok(id)
    }
}

fn type_matches(kind: &str, value: &Value) -> bool {
    match kind {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RootPhase {
    Prefix,
    Value,
    Suffix,
    /// After an item: the separator, when items repeat.
    Between,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    Root {
        phase: RootPhase,
        pos: u32,
        items: u32,
    },
    /// Before a value: whitespace, then its first byte decides.
    Value {
        node: NodeId,
    },
    /// Matching the literals of a `Literals` node still alive after `pos` bytes.
    Literal {
        node: NodeId,
        alive: u64,
        pos: u32,
    },
    /// Inside a string: code points so far, escape progress (0 none, 1 after `\`, 2..=5 hex
    /// digits of `\u`, 6 the second digit after a `d`), and the byte range the next UTF-8 continuation byte must fall in.
    Str {
        node: NodeId,
        chars: u32,
        escape: u8,
        cont_left: u8,
        cont_lo: u8,
        cont_hi: u8,
        dfa: u16,
    },
    /// A number: its lexer phase and length; for integers and bounded numbers the sign, the
    /// digits so far as one integer, how many of them are fraction digits, and how many in all.
    Num {
        node: NodeId,
        integer: bool,
        phase: u8,
        len: u8,
        negative: bool,
        magnitude: i64,
        scale: u8,
        digits: u8,
    },
    /// An object: the next declared property, the one whose value is being written, and phase
    /// (0 after `{`, 1 before `:`, 2 in a value, 3 after a value, 4 after `,`).
    Obj {
        node: NodeId,
        next: u16,
        phase: u8,
    },
    /// A declared key being matched: candidates alive (bits over the object's properties).
    Key {
        node: NodeId,
        alive: u64,
        pos: u32,
    },
    /// An array: items so far and phase (0 after `[`, 1 in an item, 2 after an item).
    Arr {
        node: NodeId,
        count: u32,
        phase: u8,
    },
}

/// A set of stacks, flattened: stack `i` is `frames[bounds[i]..bounds[i + 1]]` (with an implicit
/// leading 0).
#[derive(Clone, Debug, Default)]
pub(crate) struct State {
    frames: Vec<Frame>,
    bounds: Vec<u32>,
    whitespace: u8,
    /// Newlines in that run.
    newlines: u8,
    open: u32,
}

impl State {
    fn clear(&mut self) {
        self.frames.clear();
        self.bounds.clear();
    }

    fn stacks(&self) -> impl Iterator<Item = &[Frame]> {
        let mut start = 0;
        self.bounds.iter().map(move |end| {
            let stack = &self.frames[start..*end as usize];
            start = *end as usize;
            stack
        })
    }

    fn begin_stack(&mut self) {
        self.open = self.frames.len() as u32;
    }

    fn end_stack(&mut self) {
        self.bounds.push(self.frames.len() as u32);
    }

    /// Drops the stack being built.
    fn abandon_stack(&mut self) {
        self.frames.truncate(self.open as usize);
    }

    fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }
}

/// One output's progress through a grammar.
#[derive(Clone, Debug)]
pub struct Matcher {
    grammar: Arc<Grammar>,
    state: State,
    scratch: State,
}

impl Matcher {
    /// Feeds the bytes of one token; `false` (and no change) if the grammar rejects them.
    pub fn advance(&mut self, bytes: &[u8]) -> bool {
        let mut current = self.state.clone();
        for byte in bytes {
            if !feed(&self.grammar, &current, *byte, &mut self.scratch) {
                return false;
            }
            std::mem::swap(&mut current, &mut self.scratch);
        }
        self.state = current;
        true
    }

    /// Whether the output may end here.
    pub fn can_end(&self) -> bool {
        self.state.stacks().any(|stack| can_end(&self.grammar, stack))
    }

    /// Whether the output is complete and nothing more may follow.
    pub fn is_finished(&self) -> bool {
        self.state.stacks().all(|stack| matches!(stack, [Frame::Root { phase: RootPhase::Done, .. }]))
    }

    /// Marks in `allowed` (one bit per token) every token whose bytes the grammar accepts next.
    /// End-of-generation tokens are not included: see `can_end`.
    fn allowed(&self, vocab: &VocabIndex, allowed: &mut Vec<u64>, buffers: &mut Vec<State>) {
        allowed.clear();
        allowed.resize(vocab.n_vocab.div_ceil(64), 0);
        let set = |allowed: &mut Vec<u64>, token: Token| allowed[token as usize / 64] |= 1 << (token % 64);
        // Plain text inside a free string: admitted by its code point count alone.
        let mut stacks = self.state.stacks();
        let plain_string = match (stacks.next(), stacks.next()) {
            (Some(stack), None) => match stack.last() {
                Some(Frame::Str { node, chars, escape: 0, cont_left: 0, .. }) if string_pattern(&self.grammar, *node).is_none() => Some(string_bounds(&self.grammar, *node).1.saturating_sub(*chars)),
                _ => None,
            },
            _ => None,
        };
        let trie = match plain_string {
            Some(room) => {
                for (token, chars) in &vocab.plain {
                    if (*chars as u32) <= room {
                        set(allowed, *token);
                    }
                }
                &vocab.special
            }
            None => &vocab.all,
        };
        if buffers.len() < vocab.max_len + 1 {
            buffers.resize_with(vocab.max_len + 1, State::default);
        }
        buffers[0].clone_from(&self.state);
        // Depth-first over the trie: (node, depth, index of the next child to try).
        let mut path: Vec<(u32, usize)> = vec![(0, 0)];
        while let Some((node, next_child)) = path.last().copied() {
            let depth = path.len() - 1;
            let children = &trie.nodes[node as usize].children;
            if next_child >= children.len() {
                path.pop();
                continue;
            }
            let (byte, child) = children[next_child];
            path[depth].1 += 1;
            let (before, after) = buffers.split_at_mut(depth + 1);
            if feed(&self.grammar, &before[depth], byte, &mut after[0]) {
                for token in &trie.nodes[child as usize].tokens {
                    set(allowed, *token);
                }
                path.push((child, 0));
            }
        }
    }
}

/// Whether a stack may stop here: pending numbers and literals that are complete close.
fn can_end(grammar: &Grammar, stack: &[Frame]) -> bool {
    let mut stack = stack.to_vec();
    loop {
        match stack.last().copied() {
            Some(Frame::Root { phase: RootPhase::Done | RootPhase::Between, .. }) => return true,
            Some(Frame::Num { node, phase, negative, magnitude, scale, .. }) if number_accepting(phase) && number_within(grammar, node, negative, magnitude, scale) => {
                stack.pop();
                if !complete_value(grammar, &mut stack) {
                    return false;
                }
            }
            Some(Frame::Literal { node, alive, pos }) if literal_complete(grammar, node, alive, pos) => {
                stack.pop();
                if !complete_value(grammar, &mut stack) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// A string node's pattern, if it has one.
fn string_pattern(grammar: &Grammar, node: NodeId) -> Option<&Dfa> {
    match grammar.nodes.get(node as usize) {
        Some(Node::String { pattern, .. }) => pattern.as_deref(),
        _ => None,
    }
}

/// Sets the top frame and keeps the stack (a `step` exit for match arms that finish early).
fn set_and_accept(out: &mut State, frame: Frame) {
    *out.frames.last_mut().expect("non-empty") = frame;
    out.end_stack();
}

/// A string node's length bounds in code points (free object keys have none).
fn string_bounds(grammar: &Grammar, node: NodeId) -> (u32, u32) {
    match grammar.nodes.get(node as usize) {
        Some(Node::String { min, max, .. }) => (*min, *max),
        _ => (0, u32::MAX),
    }
}

/// The largest integer magnitude written (18 digits).
const MAX_INTEGER: i64 = 999_999_999_999_999_999;

fn integer_bounds(grammar: &Grammar, node: NodeId) -> Option<(i64, i64)> {
    match grammar.nodes.get(node as usize) {
        Some(Node::Integer { min, max }) => Some((*min, *max)),
        _ => None,
    }
}

/// A number's bounds; open ends exclude their value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Bounds {
    min: f64,
    min_open: bool,
    max: f64,
    max_open: bool,
}

impl Bounds {
    fn contains(&self, x: f64) -> bool {
        (if self.min_open { x > self.min } else { x >= self.min }) && (if self.max_open { x < self.max } else { x <= self.max })
    }

    /// The bounds of `-x`.
    fn mirrored(&self) -> Bounds {
        Bounds { min: -self.max, min_open: self.max_open, max: -self.min, max_open: self.min_open }
    }

    /// Whether some value of `[lo, hi)` lies within.
    fn meets(&self, lo: f64, hi: f64) -> bool {
        let lower = lo.max(self.min);
        let upper = hi.min(self.max);
        lower < upper || (lower == upper && lower >= lo && lower < hi && self.contains(lower))
    }
}

fn number_bounds(grammar: &Grammar, node: NodeId) -> Option<Bounds> {
    match grammar.nodes.get(node as usize) {
        Some(Node::Number { bounds }) => *bounds,
        _ => None,
    }
}

/// The most digits of a bounded number: its value stays exact in an f64 (below 2^53), so the
/// bound checks agree with any parser's.
const MAX_BOUNDED_DIGITS: u8 = 15;

/// Whether a finished number lies within its node's bounds.
fn number_within(grammar: &Grammar, node: NodeId, negative: bool, magnitude: i64, scale: u8) -> bool {
    if let Some((min, max)) = integer_bounds(grammar, node) {
        return (min..=max).contains(&if negative { -magnitude } else { magnitude });
    }
    number_bounds(grammar, node).is_none_or(|b| {
        let value = magnitude as f64 / 10f64.powi(i32::from(scale));
        b.contains(if negative { -value } else { value })
    })
}

/// Whether a bounded number being written can still end within its bounds: the magnitudes its
/// continuations reach form intervals `[lo, hi)` (more integer digits, or any fraction).
fn number_reachable(grammar: &Grammar, node: NodeId, negative: bool, magnitude: i64, scale: u8, digits: u8, phase: u8) -> bool {
    let Some(bounds) = number_bounds(grammar, node) else { return true };
    let bounds = if negative { bounds.mirrored() } else { bounds };
    let v = magnitude as f64;
    match phase {
        1 => bounds.meets(0.0, f64::INFINITY),
        2 => bounds.meets(0.0, 1.0),
        3 => (0..=MAX_BOUNDED_DIGITS.saturating_sub(digits)).any(|m| {
            let p = 10f64.powi(i32::from(m));
            bounds.meets(v * p, (v + 1.0) * p)
        }),
        4 | 5 => {
            let p = 10f64.powi(i32::from(scale));
            bounds.meets(v / p, (v + 1.0) / p)
        }
        _ => true,
    }
}

/// Whether an integer being written can still end within its bounds: after `phase` (1 after the
/// sign, 2 after a leading zero, 3 in digits), some count of further digits reaches the range.
fn integer_reachable(grammar: &Grammar, node: NodeId, negative: bool, magnitude: i64, phase: u8) -> bool {
    let Some((min, max)) = integer_bounds(grammar, node) else { return true };
    let digits = if magnitude == 0 { 0 } else { magnitude.ilog10() + 1 };
    let more = if phase == 2 { 0 } else { 18 - digits.min(18) };
    let (mut lo, mut hi) = (magnitude, magnitude);
    for extra in 0..=more {
        if extra > 0 {
            lo *= 10;
            hi = hi * 10 + 9;
        }
        // A sign with no digit yet is no number; negative zero is not written.
        if phase == 1 && extra == 0 {
            continue;
        }
        let (a, b) = if negative { (-hi, -lo.max(1)) } else { (lo, hi) };
        if a <= b && a <= max && b >= min {
            return true;
        }
    }
    false
}

fn number_accepting(phase: u8) -> bool {
    matches!(phase, 2 | 3 | 5 | 8 | 9)
}

fn literals(grammar: &Grammar, node: NodeId) -> &[Vec<u8>] {
    match &grammar.nodes[node as usize] {
        Node::Literals(list) => list,
        _ => &[],
    }
}

fn literal_complete(grammar: &Grammar, node: NodeId, alive: u64, pos: u32) -> bool {
    literals(grammar, node).iter().enumerate().any(|(i, lit)| alive & (1 << i) != 0 && lit.len() == pos as usize)
}

fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\n' | b'\t' | b'\r')
}

/// Feeds one byte to every stack of `state`, writing the survivors into `out`.
fn feed(grammar: &Grammar, state: &State, byte: u8, out: &mut State) -> bool {
    out.clear();
    out.whitespace = if is_whitespace(byte) { state.whitespace.saturating_add(1) } else { 0 };
    out.newlines = match byte {
        b'\n' => state.newlines.saturating_add(1),
        _ if is_whitespace(byte) => state.newlines,
        _ => 0,
    };
    for stack in state.stacks() {
        out.begin_stack();
        out.frames.extend_from_slice(stack);
        step(grammar, out, byte);
    }
    if out.bounds.len() > 1 {
        dedup_stacks(out);
    }
    !out.is_empty()
}

/// Removes repeated stacks and keeps at most `MAX_STACKS`.
fn dedup_stacks(state: &mut State) {
    let stacks: Vec<Vec<Frame>> = state.stacks().map(<[Frame]>::to_vec).collect();
    state.clear();
    let mut kept: Vec<&Vec<Frame>> = Vec::new();
    for stack in &stacks {
        if kept.len() < MAX_STACKS && !kept.contains(&stack) {
            kept.push(stack);
            state.frames.extend_from_slice(stack);
            state.bounds.push(state.frames.len() as u32);
        }
    }
}

/// Applies `byte` to the stack being built at the end of `out` (from `out.open`); closes it with
/// `end_stack` when the byte is accepted (possibly several stacks, for `anyOf`), or drops it.
fn step(grammar: &Grammar, out: &mut State, byte: u8) {
    let base = out.open as usize;
    let top = *out.frames.last().expect("stacks are never empty");
    let depth = out.frames.len() - base;
    let framing = &grammar.framing;
    macro_rules! reject {
        () => {{
            out.abandon_stack();
            return;
        }};
    }
    macro_rules! accept {
        () => {{
            out.end_stack();
            return;
        }};
    }
    let set_top = |out: &mut State, frame: Frame| *out.frames.last_mut().expect("non-empty") = frame;
    match top {
        Frame::Root { phase, pos, items } => match phase {
            RootPhase::Prefix => {
                if framing.prefix.get(pos as usize) != Some(&byte) {
                    reject!();
                }
                if pos as usize + 1 == framing.prefix.len() {
                    set_top(out, Frame::Root { phase: RootPhase::Value, pos: 0, items });
                    out.frames.push(Frame::Value { node: grammar.root });
                } else {
                    set_top(out, Frame::Root { phase, pos: pos + 1, items });
                }
                accept!();
            }
            RootPhase::Suffix => {
                if framing.suffix.get(pos as usize) != Some(&byte) {
                    reject!();
                }
                let next = if pos as usize + 1 == framing.suffix.len() { after_item(framing, items + 1) } else { Frame::Root { phase, pos: pos + 1, items } };
                set_top(out, next);
                accept!();
            }
            RootPhase::Between => {
                let separator = framing.separator.as_deref().unwrap_or_default();
                let (matched, len) = if (pos as usize) < separator.len() {
                    (separator[pos as usize] == byte, separator.len() + framing.prefix.len())
                } else {
                    (framing.prefix.get(pos as usize - separator.len()) == Some(&byte), separator.len() + framing.prefix.len())
                };
                if !matched {
                    reject!();
                }
                if pos as usize + 1 == len {
                    set_top(out, Frame::Root { phase: RootPhase::Value, pos: 0, items });
                    out.frames.push(Frame::Value { node: grammar.root });
                } else {
                    set_top(out, Frame::Root { phase, pos: pos + 1, items });
                }
                accept!();
            }
            RootPhase::Value | RootPhase::Done => reject!(),
        },
        Frame::Value { node } => {
            if is_whitespace(byte) {
                // Nothing before the top-level value (it starts the output, or follows markup);
                // one space after a colon.
                let after_colon = matches!(out.frames.get(out.frames.len().wrapping_sub(2)), Some(Frame::Obj { .. }));
                if depth == 2 || (after_colon && (byte != b' ' || out.whitespace > 1)) || !layout_ok(out) {
                    reject!();
                }
                accept!();
            }
            out.frames.pop();
            start_value(grammar, out, node, byte, depth);
        }
        Frame::Literal { node, alive, pos } => {
            let list = literals(grammar, node);
            let mut next = 0u64;
            for (i, lit) in list.iter().enumerate() {
                if alive & (1 << i) != 0 && lit.get(pos as usize) == Some(&byte) {
                    next |= 1 << i;
                }
            }
            if next == 0 {
                // A complete literal (a number among longer ones) ends before this byte.
                if literal_complete(grammar, node, alive, pos) {
                    out.frames.pop();
                    if complete_value(grammar, &mut out.frames) {
                        step(grammar, out, byte);
                        return;
                    }
                }
                reject!();
            }
            let pos = pos + 1;
            let longer = list.iter().enumerate().any(|(i, lit)| next & (1 << i) != 0 && lit.len() > pos as usize);
            if !longer {
                out.frames.pop();
                if !complete_value(grammar, &mut out.frames) {
                    reject!();
                }
            } else {
                set_top(out, Frame::Literal { node, alive: next, pos });
            }
            accept!();
        }
        Frame::Str { node, chars, escape, cont_left, cont_lo, cont_hi, dfa } => {
            let (min, max) = string_bounds(grammar, node);
            let pattern = string_pattern(grammar, node);
            let frame = |chars, escape, cont_left, cont_lo, cont_hi, dfa| Frame::Str { node, chars, escape, cont_left, cont_lo, cont_hi, dfa };
            // A pattern steps once per character: ASCII by its byte, anything else as `OTHER`.
            // A state from which no match fits in the length left is as dead as no state.
            let step_pattern = |symbol: usize| match pattern {
                Some(p) => {
                    let next = p.step(dfa, symbol);
                    if next != regex::DEAD && (chars + 1).saturating_add(p.distance(next)) <= max {
                        next
                    } else {
                        regex::DEAD
                    }
                }
                None => dfa,
            };
            let next = if cont_left > 0 {
                if !(cont_lo..=cont_hi).contains(&byte) {
                    reject!();
                }
                let left = cont_left - 1;
                frame(if left == 0 { chars + 1 } else { chars }, 0, left, 0x80, 0xbf, dfa)
            } else if escape == 1 {
                let decoded = match byte {
                    b'"' | b'\\' | b'/' => byte,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    // `\uXXXX` is not followed through a pattern; UTF-8 says the same.
                    b'u' if pattern.is_none() => return set_and_accept(out, frame(chars, 2, 0, 0, 0, dfa)),
                    _ => reject!(),
                };
                let state = step_pattern(decoded as usize);
                if state == regex::DEAD {
                    reject!();
                }
                frame(chars + 1, 0, 0, 0, 0, state)
            } else if escape >= 2 {
                // `\uXXXX` outside the surrogates (D800-DFFF): a lone one breaks strict parsers,
                // and any character can be written as UTF-8 instead of a pair.
                match (escape, byte) {
                    (2, b'd' | b'D') => frame(chars, 6, 0, 0, 0, dfa),
                    (6, b'0'..=b'7') => frame(chars, 4, 0, 0, 0, dfa),
                    (5, _) if byte.is_ascii_hexdigit() => frame(chars + 1, 0, 0, 0, 0, dfa),
                    (2..=4, _) if byte.is_ascii_hexdigit() => frame(chars, escape + 1, 0, 0, 0, dfa),
                    _ => reject!(),
                }
            } else {
                let symbol = match byte {
                    0x20..=0x7f => byte as usize,
                    _ => regex::OTHER,
                };
                match byte {
                    b'"' => {
                        if chars < min || pattern.is_some_and(|p| !p.accepts(dfa)) {
                            reject!();
                        }
                        out.frames.pop();
                        if !complete_value(grammar, &mut out.frames) {
                            reject!();
                        }
                        accept!();
                    }
                    _ if chars >= max => reject!(),
                    // Under a pattern, an escape only where some escaped character can follow.
                    b'\\' if pattern.is_some() && [b'"', b'\\', b'/', 0x08, 0x0c, b'\n', b'\r', b'\t'].iter().all(|c| step_pattern(*c as usize) == regex::DEAD) => reject!(),
                    b'\\' => frame(chars, 1, 0, 0, 0, dfa),
                    0x00..=0x1f => reject!(),
                    _ if byte >= 0x20 && step_pattern(symbol) == regex::DEAD => reject!(),
                    0x20..=0x7f => frame(chars + 1, 0, 0, 0, 0, step_pattern(symbol)),
                    0xc2..=0xdf => frame(chars, 0, 1, 0x80, 0xbf, step_pattern(symbol)),
                    0xe0 => frame(chars, 0, 2, 0xa0, 0xbf, step_pattern(symbol)),
                    0xed => frame(chars, 0, 2, 0x80, 0x9f, step_pattern(symbol)),
                    0xe1..=0xef => frame(chars, 0, 2, 0x80, 0xbf, step_pattern(symbol)),
                    0xf0 => frame(chars, 0, 3, 0x90, 0xbf, step_pattern(symbol)),
                    0xf4 => frame(chars, 0, 3, 0x80, 0x8f, step_pattern(symbol)),
                    0xf1..=0xf3 => frame(chars, 0, 3, 0x80, 0xbf, step_pattern(symbol)),
                    _ => reject!(),
                }
            };
            set_top(out, next);
            accept!();
        }
        Frame::Num { node, integer, phase, len, negative, magnitude, scale, digits } => {
            let digit = byte.is_ascii_digit();
            let bounded = number_bounds(grammar, node).is_some();
            let next = match (phase, byte) {
                (0, b'-') => Some(1),
                (0, b'0') => Some(2),
                // `-0` reads as a float in some parsers: not an integer.
                (1, b'0') if !integer => Some(2),
                (0 | 1, b'1'..=b'9') => Some(3),
                (3, _) if digit => Some(3),
                (2 | 3, b'.') if !integer => Some(4),
                (2 | 3 | 5, b'e' | b'E') if !integer && !bounded => Some(6),
                (4 | 5, _) if digit => Some(5),
                (6, b'+' | b'-') => Some(7),
                (6 | 7, _) if digit => Some(8),
                // At most two exponent digits: parsers overflow on larger ones.
                (8, _) if digit => Some(9),
                _ => None,
            };
            match next {
                // Integers stay within 64 bits (18 digits), which every parser reads exactly.
                Some(next) if len < if integer { 18 + u8::from(negative || byte == b'-') } else { MAX_NUMBER_BYTES } && !(bounded && digit && digits >= MAX_BOUNDED_DIGITS) => {
                    let (negative, magnitude) = match byte {
                        b'-' => (true, 0),
                        b'0'..=b'9' if integer || bounded => (negative, magnitude.saturating_mul(10).saturating_add(i64::from(byte - b'0'))),
                        _ => (negative, magnitude),
                    };
                    let scale = scale + u8::from(next == 5);
                    let digits = digits + u8::from(digit);
                    if integer && !integer_reachable(grammar, node, negative, magnitude, next) {
                        reject!();
                    }
                    if bounded && !number_reachable(grammar, node, negative, magnitude, scale, digits, next) {
                        reject!();
                    }
                    set_top(out, Frame::Num { node, integer, phase: next, len: len + 1, negative, magnitude, scale, digits });
                    accept!();
                }
                Some(_) => reject!(),
                None if number_accepting(phase) && number_within(grammar, node, negative, magnitude, scale) => {
                    out.frames.pop();
                    if complete_value(grammar, &mut out.frames) {
                        step(grammar, out, byte);
                        return;
                    }
                    reject!();
                }
                None => reject!(),
            }
        }
        Frame::Obj { node, next, phase } => {
            let Node::Object { props, extra, last_required } = &grammar.nodes[node as usize] else { reject!() };
            let may_close = last_required.is_none_or(|r| r < next as usize);
            match (phase, byte) {
                // None between a key and its colon.
                (0 | 3 | 4, _) if is_whitespace(byte) => {
                    if !layout_ok(out) {
                        reject!();
                    }
                    accept!();
                }
                (0 | 4, b'"') => {
                    if props.is_empty() {
                        if extra.is_none() {
                            reject!();
                        }
                        // A free key: any string.
                        out.frames.push(Frame::Str { node: u32::MAX, chars: 0, escape: 0, cont_left: 0, cont_lo: 0, cont_hi: 0, dfa: 0 });
                        accept!();
                    }
                    let mut alive = 0u64;
                    for (i, prop) in props.iter().enumerate().skip(next as usize) {
                        alive |= 1 << i;
                        if prop.required {
                            break;
                        }
                    }
                    if alive == 0 {
                        reject!();
                    }
                    out.frames.push(Frame::Key { node, alive, pos: 1 });
                    accept!();
                }
                (0 | 3, b'}') if may_close => {
                    out.frames.pop();
                    if !complete_value(grammar, &mut out.frames) {
                        reject!();
                    }
                    accept!();
                }
                (1, b':') => {
                    let value = if props.is_empty() { extra.expect("free keys only with a value schema") } else { props[next as usize - 1].value };
                    set_top(out, Frame::Obj { node, next, phase: 2 });
                    out.frames.push(Frame::Value { node: value });
                    accept!();
                }
                (3, b',') if (next as usize) < props.len() || (props.is_empty() && extra.is_some()) => {
                    set_top(out, Frame::Obj { node, next, phase: 4 });
                    accept!();
                }
                _ => reject!(),
            }
        }
        Frame::Key { node, alive, pos } => {
            let Node::Object { props, .. } = &grammar.nodes[node as usize] else { reject!() };
            let mut next = 0u64;
            for (i, prop) in props.iter().enumerate() {
                if alive & (1 << i) != 0 && prop.key.get(pos as usize) == Some(&byte) {
                    next |= 1 << i;
                }
            }
            if next == 0 {
                reject!();
            }
            let pos = pos + 1;
            // Keys end with a quote, so no key is a prefix of another: a complete one is unique.
            if let Some(i) = props.iter().enumerate().position(|(i, p)| next & (1 << i) != 0 && p.key.len() == pos as usize) {
                out.frames.pop();
                set_top(out, Frame::Obj { node, next: i as u16 + 1, phase: 1 });
            } else {
                set_top(out, Frame::Key { node, alive: next, pos });
            }
            accept!();
        }
        Frame::Arr { node, count, phase } => {
            let Node::Array { items, min, max } = grammar.nodes[node as usize] else { reject!() };
            match (phase, byte) {
                (0 | 2, _) if is_whitespace(byte) => {
                    if !layout_ok(out) {
                        reject!();
                    }
                    accept!();
                }
                (0 | 2, b']') if count >= min => {
                    out.frames.pop();
                    if !complete_value(grammar, &mut out.frames) {
                        reject!();
                    }
                    accept!();
                }
                (0, _) if max > 0 => {
                    set_top(out, Frame::Arr { node, count, phase: 1 });
                    out.frames.push(Frame::Value { node: items });
                    step(grammar, out, byte);
                }
                (2, b',') if count < max => {
                    set_top(out, Frame::Arr { node, count, phase: 1 });
                    out.frames.push(Frame::Value { node: items });
                    accept!();
                }
                _ => reject!(),
            }
        }
    }
}

/// Whitespace between JSON tokens stays layout: a bounded run with at most one line break (small
/// models otherwise drift into blank lines).
fn layout_ok(state: &State) -> bool {
    state.whitespace <= MAX_WHITESPACE && state.newlines <= 1
}

/// The first byte of a value of `node` (its `Value` frame already popped).
fn start_value(grammar: &Grammar, out: &mut State, node: NodeId, byte: u8, depth: usize) {
    let frame = match &grammar.nodes[node as usize] {
        Node::AnyOf(alternatives) => {
            // Each alternative continues as its own stack.
            let stack: Vec<Frame> = out.frames[out.open as usize..].to_vec();
            out.abandon_stack();
            for alternative in alternatives {
                out.begin_stack();
                out.frames.extend_from_slice(&stack);
                start_value(grammar, out, *alternative, byte, depth);
            }
            return;
        }
        Node::Pending => {
            out.abandon_stack();
            return;
        }
        Node::Literals(list) => {
            let alive = (0..list.len()).fold(0u64, |mask, i| mask | 1 << i);
            Frame::Literal { node, alive, pos: 0 }
        }
        Node::Integer { .. } => Frame::Num { node, integer: true, phase: 0, len: 0, negative: false, magnitude: 0, scale: 0, digits: 0 },
        Node::Number { .. } => Frame::Num { node, integer: false, phase: 0, len: 0, negative: false, magnitude: 0, scale: 0, digits: 0 },
        Node::String { .. } => return open(out, byte == b'"', Frame::Str { node, chars: 0, escape: 0, cont_left: 0, cont_lo: 0, cont_hi: 0, dfa: 0 }),
        Node::Object { .. } => return open(out, byte == b'{' && depth <= MAX_DEPTH, Frame::Obj { node, next: 0, phase: 0 }),
        Node::Array { .. } => return open(out, byte == b'[' && depth <= MAX_DEPTH, Frame::Arr { node, count: 0, phase: 0 }),
    };
    // Literals and numbers take the byte themselves.
    out.frames.push(frame);
    step(grammar, out, byte);
}

/// A string, object or array starts with its opening byte: pushes its frame, or drops the stack.
fn open(out: &mut State, opens: bool, frame: Frame) {
    if opens {
        out.frames.push(frame);
        out.end_stack();
    } else {
        out.abandon_stack();
    }
}

/// The root frame after `items` complete items.
fn after_item(framing: &Framing, items: u32) -> Frame {
    match &framing.separator {
        Some(_) if items < framing.max_items => Frame::Root { phase: RootPhase::Between, pos: 0, items },
        _ => Frame::Root { phase: RootPhase::Done, pos: 0, items },
    }
}

/// A value just ended (its frame popped): advances the frame below. `false` if that frame cannot
/// take a value here.
fn complete_value(grammar: &Grammar, frames: &mut [Frame]) -> bool {
    let Some(top) = frames.last_mut() else { return false };
    match *top {
        Frame::Root { phase: RootPhase::Value, items, .. } => {
            *top = if grammar.framing.suffix.is_empty() { after_item(&grammar.framing, items + 1) } else { Frame::Root { phase: RootPhase::Suffix, pos: 0, items } };
            true
        }
        Frame::Obj { node, next, phase: 0 | 4 } => {
            // A free key ended.
            *top = Frame::Obj { node, next: next.max(1), phase: 1 };
            true
        }
        Frame::Obj { node, next, phase: 2 } => {
            *top = Frame::Obj { node, next, phase: 3 };
            true
        }
        Frame::Arr { node, count, phase: 1 } => {
            *top = Frame::Arr { node, count: count + 1, phase: 2 };
            true
        }
        _ => false,
    }
}

/// The vocabulary as tries of token bytes, built once per model.
pub struct VocabIndex {
    n_vocab: usize,
    max_len: usize,
    all: Trie,
    /// Tokens that are not plain string text.
    special: Trie,
    /// Plain string text: no quote, backslash or control byte, complete UTF-8; with its code
    /// point count.
    plain: Vec<(Token, u16)>,
}

#[derive(Default)]
struct Trie {
    nodes: Vec<TrieNode>,
}

#[derive(Default)]
struct TrieNode {
    children: Vec<(u8, u32)>,
    tokens: Vec<Token>,
}

impl Trie {
    fn insert(&mut self, bytes: &[u8], token: Token) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut node = 0usize;
        for byte in bytes {
            node = match self.nodes[node].children.binary_search_by_key(byte, |(b, _)| *b) {
                Ok(i) => self.nodes[node].children[i].1 as usize,
                Err(i) => {
                    let id = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[node].children.insert(i, (*byte, id as u32));
                    id
                }
            };
        }
        self.nodes[node].tokens.push(token);
    }
}

impl VocabIndex {
    /// Indexes every token's bytes (tokens with none, the control tokens, are never allowed).
    pub fn new(tokens: impl IntoIterator<Item = Vec<u8>>) -> VocabIndex {
        let mut index = VocabIndex { n_vocab: 0, max_len: 0, all: Trie::default(), special: Trie::default(), plain: Vec::new() };
        index.all.nodes.push(TrieNode::default());
        index.special.nodes.push(TrieNode::default());
        for (id, bytes) in tokens.into_iter().enumerate() {
            index.n_vocab = id + 1;
            if bytes.is_empty() {
                continue;
            }
            let token = id as Token;
            index.max_len = index.max_len.max(bytes.len());
            index.all.insert(&bytes, token);
            match std::str::from_utf8(&bytes) {
                Ok(text) if !text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) => index.plain.push((token, text.chars().count().min(u16::MAX as usize) as u16)),
                _ => index.special.insert(&bytes, token),
            }
        }
        index
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }
}

/// Scratch buffers for computing masks (one set per engine thread).
#[derive(Default)]
pub struct MaskScratch {
    pub(crate) bits: Vec<u64>,
    pub(crate) buffers: Vec<State>,
}

impl Matcher {
    /// `allowed` into the scratch's bit set; returns it.
    pub fn mask<'s>(&self, vocab: &VocabIndex, scratch: &'s mut MaskScratch) -> &'s [u64] {
        self.allowed(vocab, &mut scratch.bits, &mut scratch.buffers);
        &scratch.bits
    }
}

/// Whether bit `token` is set.
pub fn is_allowed(bits: &[u64], token: Token) -> bool {
    bits.get(token as usize / 64).is_some_and(|word| word & (1 << (token % 64)) != 0)
}

#[cfg(test)]
mod tests;
