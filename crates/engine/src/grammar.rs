//! Constrained decoding on `llguidance` (what llama.cpp, vLLM and SGLang use): a JSON schema, a
//! regex or a Lark grammar becomes a token mask before every sample, computed against the
//! model's own vocabulary.
//!
//! A [`Grammar`] is checked when a request is parsed (against a byte-level vocabulary, so a bad
//! schema is a 400 before any model is chosen); a model's [`Vocabulary`] is built once, on its
//! first constrained request, from its token bytes; a [`Constraint`] follows one sequence.
//! JSON is written with layout-only whitespace: `", "` between items and `": "` after keys,
//! nothing else, which keeps small models from drifting into blank lines. Tool calls are a Lark
//! grammar around JSON values (`%json`), so the framing markup is exact.

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::ParserFactory;
use serde_json::{json, Value};

use crate::Token;

/// Why a schema or grammar cannot be enforced: where (a JSON pointer into the schema) and what.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemaError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at {})", self.message, self.path)
    }
}

impl std::error::Error for SchemaError {}

/// JSON Schema keywords of the drafts that llguidance does not enforce: a schema using one is
/// refused, naming it and where it is, rather than served loosely.
const UNSUPPORTED: &[&str] = &[
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "propertyNames",
    "contains",
    "minContains",
    "maxContains",
    "uniqueItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contentSchema",
    "$dynamicRef",
    "$dynamicAnchor",
    "$recursiveRef",
    "$recursiveAnchor",
];

/// Keywords whose value is one subschema, a list of them, or a map of them.
const SUBSCHEMA: &[&str] = &["additionalProperties", "additionalItems", "items"];
const SUBSCHEMA_LISTS: &[&str] = &["anyOf", "oneOf", "allOf", "prefixItems", "items"];
const SUBSCHEMA_MAPS: &[&str] = &["properties", "patternProperties", "$defs", "definitions"];

/// The deepest schema nesting walked (llguidance has its own limits on the grammar it builds).
const MAX_DEPTH: usize = 64;

/// What output is allowed: a JSON schema (with Mantle's layout options), or a Lark grammar whose
/// JSON values are `%json` schemas (tool calls).
#[derive(Clone, Debug)]
pub struct Grammar {
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    Schema(Value),
    Lark(String),
}

impl Grammar {
    /// Any JSON object (`response_format: json_object`, Ollama's `format: "json"`).
    pub fn json_object() -> Grammar {
        Grammar::from_schema(&json!({ "type": "object" })).expect("the object schema compiles")
    }

    /// A JSON schema, or an error naming the first keyword it cannot enforce and where.
    pub fn from_schema(schema: &Value) -> Result<Grammar, SchemaError> {
        let grammar = Grammar { source: Source::Schema(with_layout(schema)?) };
        match grammar.check() {
            Ok(()) => Ok(grammar),
            // llguidance does not say where; a pattern or format it refuses is found by trying each.
            Err(err) => {
                let mut budget = LOCATE_BUDGET;
                Err(locate(schema, "#".into(), 0, &mut budget).map(|path| SchemaError { path, message: err.message.clone() }).unwrap_or(err))
            }
        }
    }

    /// Forced tool calls: each call is `open`, a JSON object `{"name": <one of the names>,
    /// "arguments": <that function's parameters>}` and `close`; with `max_calls` above one, up to
    /// that many calls separated by a line break. `name` comes first, so the name can be told
    /// while the arguments are still being written.
    pub fn tool_calls(functions: &[(String, Value)], open: &str, close: &str, max_calls: u32) -> Result<Grammar, SchemaError> {
        if functions.is_empty() {
            return Err(SchemaError { path: "#".into(), message: "no function to call".into() });
        }
        let mut alternatives = Vec::with_capacity(functions.len());
        for (name, parameters) in functions {
            let call = json!({
                "type": "object",
                "properties": { "name": { "const": name }, "arguments": parameters },
                "required": ["name", "arguments"],
                "additionalProperties": false,
            });
            let call = with_layout(&call).map_err(|err| SchemaError { path: format!("{name}: {}", err.path), message: err.message })?;
            alternatives.push(format!("%json {call}"));
        }
        let call = format!("{} ({}) {}", lark_string(open), alternatives.join(" | "), lark_string(close));
        let lark = if max_calls > 1 { format!("start: call (\"\\n\" call){{0,{}}}\ncall: {call}\n", max_calls - 1) } else { format!("start: {call}\n") };
        let grammar = Grammar { source: Source::Lark(lark) };
        grammar.check()?;
        Ok(grammar)
    }

    /// Free text in which a `[` opens only a citation of one of `sources` numbered sources
    /// (`[1]` to `[sources]`): the model can cite nothing it was not given.
    pub fn citations(sources: usize) -> Result<Grammar, SchemaError> {
        if sources == 0 {
            return Err(SchemaError { path: "#".into(), message: "no source to cite".into() });
        }
        let numbers: Vec<String> = (1..=sources).map(|n| n.to_string()).collect();
        let grammar = Grammar { source: Source::Lark(format!("start: /([^\\[]|\\[({})\\])*/\n", numbers.join("|"))) };
        grammar.check()?;
        Ok(grammar)
    }

    fn top_level(&self) -> TopLevelGrammar {
        match &self.source {
            Source::Schema(schema) => TopLevelGrammar::from_json_schema(schema.clone()),
            Source::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        }
    }

    /// Compiles the grammar against a byte-level vocabulary: what llguidance refuses is refused here.
    fn check(&self) -> Result<(), SchemaError> {
        bytes_vocabulary()?.start(self).map(drop).map_err(|message| SchemaError { path: "#".into(), message })
    }

    /// How `text` stands against the grammar, byte by byte (tests and diagnostics).
    pub fn check_text(&self, text: &[u8]) -> TextMatch {
        let Ok(mut constraint) = bytes_vocabulary().map_err(drop).and_then(|v| v.start(self).map_err(drop)) else { return TextMatch::Rejected };
        for byte in text {
            match constraint.mask() {
                Ok(mask) if mask.allows(Token::from(*byte)) && constraint.advance(Token::from(*byte)) => {}
                _ => return TextMatch::Rejected,
            }
        }
        match constraint.mask() {
            _ if constraint.is_finished() => TextMatch::Finished,
            Ok(mask) if mask.can_end => TextMatch::Complete,
            Ok(_) => TextMatch::Prefix,
            Err(_) => TextMatch::Rejected,
        }
    }
}

/// How a text stands against a grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextMatch {
    /// Some byte is not allowed where it is.
    Rejected,
    /// Allowed so far; more must follow.
    Prefix,
    /// Allowed, and the output may end here (or go on).
    Complete,
    /// Allowed, and nothing may follow.
    Finished,
}

/// One byte per token (and an end token): for checking grammars before any model is chosen.
fn bytes_vocabulary() -> Result<&'static Vocabulary, SchemaError> {
    static BYTES: OnceLock<Option<Vocabulary>> = OnceLock::new();
    BYTES.get_or_init(|| Vocabulary::new((0..=255u8).map(|b| vec![b]).collect(), &[]).ok()).as_ref().ok_or_else(|| SchemaError { path: "#".into(), message: "the grammar engine failed to start".into() })
}

/// A schema with Mantle's layout options, after refusing unsupported keywords.
fn with_layout(schema: &Value) -> Result<Value, SchemaError> {
    if let Some((path, keyword)) = unsupported(schema, "#".to_owned(), 0) {
        return Err(SchemaError { path, message: format!("the keyword {keyword:?} is not supported") });
    }
    let mut schema = match schema {
        Value::Bool(true) => json!({}),
        Value::Bool(false) => return Err(SchemaError { path: "#".into(), message: "the schema false allows nothing".into() }),
        Value::Object(_) => schema.clone(),
        _ => return Err(SchemaError { path: "#".into(), message: "a schema must be an object or a boolean".into() }),
    };
    close_objects(&mut schema, 0);
    schema["x-guidance"] = json!({ "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": ", "lenient": false });
    Ok(schema)
}

/// Next to declared `properties`, keys the schema does not name are not generated (every
/// schema accepts an object without them): an object schema with properties and no
/// `additionalProperties` is closed. Branches of `allOf` are left as they are, since closing
/// one would refuse the keys another declares.
fn close_objects(schema: &mut Value, depth: usize) {
    let Value::Object(map) = schema else { return };
    if depth > MAX_DEPTH {
        return;
    }
    if map.contains_key("properties") && matches!(map.get("additionalProperties"), None | Some(Value::Bool(true))) && !map.contains_key("patternProperties") {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, value) in map.iter_mut() {
        let key = key.as_str();
        if key == "allOf" {
            continue;
        }
        if SUBSCHEMA_MAPS.contains(&key) {
            if let Some(children) = value.as_object_mut() {
                children.values_mut().for_each(|child| close_objects(child, depth + 1));
            }
        } else if SUBSCHEMA_LISTS.contains(&key) && value.is_array() {
            value.as_array_mut().into_iter().flatten().for_each(|child| close_objects(child, depth + 1));
        } else if SUBSCHEMA.contains(&key) {
            close_objects(value, depth + 1);
        }
    }
}

/// The most patterns and formats compiled one by one to say where an error is, so a schema with
/// thousands of them costs bounded work (past that, the error says `#`).
const LOCATE_BUDGET: usize = 64;

/// The path of the first `pattern` or `format` that does not compile on its own.
fn locate(schema: &Value, path: String, depth: usize, budget: &mut usize) -> Option<String> {
    let Value::Object(map) = schema else { return None };
    if depth > MAX_DEPTH {
        return None;
    }
    for key in ["pattern", "format"] {
        if let Some(value) = map.get(key) {
            if *budget == 0 {
                return None;
            }
            *budget -= 1;
            let alone = Grammar { source: Source::Schema(json!({ "type": "string", key: value })) };
            if alone.check().is_err() {
                return Some(format!("{path}/{key}"));
            }
        }
    }
    map.iter().find_map(|(key, value)| {
        let key = key.as_str();
        if SUBSCHEMA_MAPS.contains(&key) {
            value.as_object()?.iter().find_map(|(name, child)| locate(child, format!("{path}/{key}/{}", pointer_escape(name)), depth + 1, budget))
        } else if SUBSCHEMA_LISTS.contains(&key) && value.is_array() {
            value.as_array()?.iter().enumerate().find_map(|(i, child)| locate(child, format!("{path}/{key}/{i}"), depth + 1, budget))
        } else if SUBSCHEMA.contains(&key) {
            locate(value, format!("{path}/{key}"), depth + 1, budget)
        } else {
            None
        }
    })
}

/// The first unsupported keyword in `schema` and the path to the schema holding it.
fn unsupported(schema: &Value, path: String, depth: usize) -> Option<(String, String)> {
    let Value::Object(map) = schema else { return None };
    if depth > MAX_DEPTH {
        return Some((path, "(nesting deeper than 64)".into()));
    }
    if let Some(keyword) = map.keys().find(|k| UNSUPPORTED.contains(&k.as_str())) {
        return Some((path, keyword.clone()));
    }
    for (key, value) in map {
        let key = key.as_str();
        let found = if SUBSCHEMA_MAPS.contains(&key) {
            value.as_object().and_then(|children| children.iter().find_map(|(name, child)| unsupported(child, format!("{path}/{key}/{}", pointer_escape(name)), depth + 1)))
        } else if SUBSCHEMA_LISTS.contains(&key) && value.is_array() {
            value.as_array().and_then(|children| children.iter().enumerate().find_map(|(i, child)| unsupported(child, format!("{path}/{key}/{i}"), depth + 1)))
        } else if SUBSCHEMA.contains(&key) {
            unsupported(value, format!("{path}/{key}"), depth + 1)
        } else {
            None
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn pointer_escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// A Lark string literal for `text`.
fn lark_string(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// A model's vocabulary, indexed for masks (built once per model, on its first constrained request).
pub struct Vocabulary {
    factory: ParserFactory,
    /// Tokens that end the output.
    ends: Vec<Token>,
    n_vocab: usize,
}

impl Vocabulary {
    /// Indexes `tokens` (each token's bytes, by id); `ends` are the tokens that end generation.
    pub fn new(mut tokens: Vec<Vec<u8>>, ends: &[Token]) -> Result<Vocabulary, String> {
        let n_vocab = tokens.len();
        // End tokens are special tokens to llguidance (marked with 0xFF); a vocabulary without
        // one gets an extra id no model can sample.
        let mut eos = ends.first().copied();
        for (i, end) in ends.iter().enumerate() {
            if let Some(bytes) = tokens.get_mut(*end as usize) {
                *bytes = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                bytes.extend_from_slice(format!("<|end_{i}|>").as_bytes());
            }
        }
        if eos.is_none() {
            let mut marker = vec![TokTrie::SPECIAL_TOKEN_MARKER];
            marker.extend_from_slice(b"<|end|>");
            tokens.push(marker);
            eos = Some((tokens.len() - 1) as Token);
        }
        let info = TokRxInfo::new(tokens.len() as u32, eos.expect("set above"));
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &tokens)));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        factory.quiet();
        Ok(Vocabulary { factory, ends: ends.to_vec(), n_vocab })
    }

    /// A constraint following `grammar` from the start of an answer.
    pub fn start(&self, grammar: &Grammar) -> Result<Constraint, String> {
        let parser = self.factory.create_parser(grammar.top_level()).map_err(|e| compact(&e.to_string()))?;
        let matcher = llguidance::Matcher::new(Ok(parser));
        if let Some(err) = matcher.get_error() {
            return Err(compact(&err));
        }
        Ok(Constraint { matcher, eos: self.factory.tok_env().tok_trie().eos_token(), ends: self.ends.clone(), n_vocab: self.n_vocab })
    }
}

/// llguidance's messages on one line, without its source excerpt, shortened for a 400 body.
fn compact(message: &str) -> String {
    let first = message.split("\n   1 |").next().unwrap_or(message);
    let message = first.split_whitespace().collect::<Vec<_>>().join(" ");
    match message.char_indices().nth(400) {
        Some((at, _)) => format!("{}...", &message[..at]),
        None => message,
    }
}

/// One sequence's place in its grammar. A clone is an independent copy (each choice of a
/// request follows its own).
pub struct Constraint {
    matcher: llguidance::Matcher,
    eos: u32,
    ends: Vec<Token>,
    n_vocab: usize,
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Constraint { matcher: self.matcher.deep_clone(), eos: self.eos, ends: self.ends.clone(), n_vocab: self.n_vocab }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("finished", &self.matcher.is_stopped()).finish()
    }
}

/// Which tokens may come next.
pub struct Mask {
    vob: SimpleVob,
    /// Whether the output may end here.
    pub can_end: bool,
}

impl Mask {
    /// Whether `token` (not an end token) may be sampled.
    pub fn allows(&self, token: Token) -> bool {
        self.vob.is_allowed(token)
    }
}

impl Constraint {
    /// The tokens allowed next, or why none can be computed.
    pub fn mask(&mut self) -> Result<Mask, String> {
        let vob = self.matcher.compute_mask().map_err(|e| e.to_string())?;
        let can_end = vob.is_allowed(self.eos);
        Ok(Mask { vob, can_end })
    }

    /// Moves past a sampled token; `false` if the grammar did not allow it.
    pub fn advance(&mut self, token: Token) -> bool {
        (token as usize) < self.n_vocab && !self.ends.contains(&token) && self.matcher.consume_token(token).is_ok()
    }

    /// Whether the output is complete: nothing but the end may follow.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}

#[cfg(test)]
mod tests;
