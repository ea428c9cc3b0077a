//! Tool calling and structured output, shared by the OpenAI and Ollama routes: the request's
//! tools and choice, how the prompt presents them through the model's chat template, the grammar
//! that forces a call when one is required, and the parser that turns generated text back into
//! calls (whole or streamed).
//!
//! Calls are written in the Hermes format most open chat models are trained on
//! (`<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`). A template that renders
//! `tools` itself gets them; one that does not gets them described in the system message, and
//! the conversation's earlier calls and results written out in the same format.

use std::sync::Arc;

use engine::grammar::Grammar;
use serde_json::{json, Value};

/// A function the model may call.
#[derive(Clone, Debug)]
pub(crate) struct Tool {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    /// Its parameters' JSON schema (an empty object schema when the request gave none).
    pub(crate) parameters: Value,
}

impl Tool {
    /// The tool as OpenAI (and chat templates) write it.
    fn entry(&self) -> Value {
        json!({"type": "function", "function": {"name": self.name, "description": self.description.clone().unwrap_or_default(), "parameters": self.parameters}})
    }
}

/// Which calls the model may or must make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    None,
    Auto,
    Required,
    Named(String),
}

/// The tools of one request.
#[derive(Clone, Debug)]
pub(crate) struct ToolPlan {
    pub(crate) tools: Vec<Tool>,
    pub(crate) choice: Choice,
    pub(crate) parallel: bool,
    /// The grammar of forced calls (`required` or a named function), compiled when the request
    /// is parsed.
    forced: Option<Arc<Grammar>>,
}

/// A request problem: the message and the parameter it concerns.
#[derive(Debug)]
pub(crate) struct Invalid {
    pub(crate) message: String,
    pub(crate) param: String,
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { message: message.into(), param: param.into() }
}

/// The most tools one request may offer (OpenAI's limit).
const MAX_TOOLS: usize = 128;
/// The most calls one answer may make when parallel calls are allowed and a call is forced.
const MAX_PARALLEL_CALLS: u32 = 8;
const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

impl ToolPlan {
    /// `tools`, `tool_choice` and `parallel_tool_calls` as OpenAI (and Ollama, without the last
    /// two) take them; `None` when no tools were given.
    pub(crate) fn parse(tools: Option<&Value>, choice: Option<&Value>, parallel: Option<bool>) -> Result<Option<ToolPlan>, Invalid> {
        let list = match tools {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list.clone(),
            Some(_) => return Err(invalid("tools", "tools must be an array")),
        };
        if list.len() > MAX_TOOLS {
            return Err(invalid("tools", format!("at most {MAX_TOOLS} tools may be given")));
        }
        let mut parsed: Vec<Tool> = Vec::new();
        for (i, tool) in list.iter().enumerate() {
            let param = format!("tools[{i}]");
            if let Some(kind) = tool.get("type").and_then(Value::as_str) {
                if kind != "function" {
                    return Err(invalid(&param, format!("{param}.type {kind:?} is not supported; only function tools are")));
                }
            }
            let function = tool.get("function").ok_or_else(|| invalid(&param, format!("{param}.function is required")))?;
            let name = function.get("name").and_then(Value::as_str).ok_or_else(|| invalid(&param, format!("{param}.function.name is required")))?;
            if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
                return Err(invalid(&param, format!("{param}.function.name must be 1 to 64 letters, digits, underscores, dashes or dots")));
            }
            if parsed.iter().any(|t| t.name == name) {
                return Err(invalid(&param, format!("two tools are named {name:?}")));
            }
            let parameters = match function.get("parameters") {
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(schema) => schema.clone(),
            };
            if parameters.get("type").is_some_and(|t| t != "object") {
                return Err(invalid(&param, format!("{param}.function.parameters must describe an object")));
            }
            parsed.push(Tool { name: name.to_owned(), description: function.get("description").and_then(Value::as_str).map(str::to_owned), parameters });
        }
        let choice = match choice {
            None | Some(Value::Null) => Choice::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "none" => Choice::None,
                "auto" => Choice::Auto,
                "required" => Choice::Required,
                other => return Err(invalid("tool_choice", format!("tool_choice {other:?} is not one of none, auto, required or a named function"))),
            },
            Some(named) => {
                let name = named.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| invalid("tool_choice", "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}"))?;
                if !parsed.iter().any(|t| t.name == name) {
                    return Err(invalid("tool_choice", format!("tool_choice names {name:?}, which is not among the tools")));
                }
                Choice::Named(name.to_owned())
            }
        };
        if parsed.is_empty() {
            return match choice {
                Choice::None | Choice::Auto => Ok(None),
                _ => Err(invalid("tool_choice", "tool_choice requires tools")),
            };
        }
        // The tools a forced call may use have their parameters checked one by one (a schema the
        // grammar cannot enforce is fine while the model calls freely), then compiled together.
        let mut functions = Vec::new();
        for (i, tool) in parsed.iter().enumerate() {
            let forced = match &choice {
                Choice::Required => true,
                Choice::Named(name) => &tool.name == name,
                Choice::None | Choice::Auto => false,
            };
            if forced {
                let param = format!("tools[{i}]");
                Grammar::from_schema(&tool.parameters).map_err(|err| invalid(&param, format!("{param}.function.parameters cannot constrain a forced call: {err}")))?;
                functions.push((tool.name.clone(), tool.parameters.clone()));
            }
        }
        let parallel = parallel.unwrap_or(true);
        let max_calls = if matches!(choice, Choice::Required) && parallel { MAX_PARALLEL_CALLS } else { 1 };
        let forced = match functions.is_empty() {
            true => None,
            false => Some(Arc::new(Grammar::tool_calls(&functions, &format!("{OPEN}\n"), &format!("\n{CLOSE}"), max_calls).map_err(|err| invalid("tools", format!("the tools cannot constrain a forced call: {err}")))?)),
        };
        Ok(Some(ToolPlan { tools: parsed, choice, parallel, forced }))
    }

    /// Whether the model is shown the tools and its output parsed for calls.
    pub(crate) fn active(&self) -> bool {
        self.choice != Choice::None
    }

    /// The tools in the shape chat templates expect (OpenAI's).
    pub(crate) fn template_tools(&self) -> Value {
        Value::Array(self.offered().map(Tool::entry).collect())
    }

    fn offered(&self) -> impl Iterator<Item = &Tool> {
        self.tools.iter().filter(move |t| match &self.choice {
            Choice::Named(name) => &t.name == name,
            Choice::None => false,
            _ => true,
        })
    }

    /// The instructions for a template that does not render tools itself.
    pub(crate) fn system_text(&self) -> String {
        let mut text = String::from(
            "You can call functions. To call one, answer with its name and arguments as JSON inside <tool_call></tool_call> tags, like this:\n<tool_call>\n{\"name\": \"function_name\", \"arguments\": {\"argument\": \"value\"}}\n</tool_call>\n",
        );
        match &self.choice {
            Choice::Required => text.push_str("You must call at least one function.\n"),
            Choice::Named(name) => text.push_str(&format!("You must call the function {name}.\n")),
            _ => text.push_str("Call a function only when it helps answer; otherwise answer in plain text.\n"),
        }
        text.push_str("The functions:\n<tools>\n");
        for tool in self.offered() {
            text.push_str(&tool.entry().to_string());
            text.push('\n');
        }
        text.push_str("</tools>");
        text
    }

    /// The grammar that forces calls, for `required` and a named function.
    pub(crate) fn grammar(&self) -> Option<Arc<Grammar>> {
        self.forced.clone()
    }

    /// The finish reason of an answer that made calls (OpenAI says `stop` for a forced function).
    pub(crate) fn finish_reason(&self) -> &'static str {
        if matches!(self.choice, Choice::Named(_)) {
            "stop"
        } else {
            "tool_calls"
        }
    }
}

/// Whether a chat template renders `tools` itself.
pub(crate) fn template_renders_tools(source: &str) -> bool {
    source.contains("tools")
}

/// Prepares template messages for a template that knows nothing of tools: the tool instructions
/// join the system message, earlier calls become Hermes text, and results become
/// `<tool_response>` user turns. Templates that render tools get the messages as they are.
pub(crate) fn messages_for_template(messages: &mut Vec<Value>, plan: Option<&ToolPlan>, template_source: &str) {
    if template_renders_tools(template_source) {
        return;
    }
    for message in messages.iter_mut() {
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array).cloned() {
            let mut text = message.get("content").and_then(Value::as_str).unwrap_or_default().to_owned();
            for call in calls {
                let function = call.get("function").cloned().unwrap_or(Value::Null);
                let entry = json!({"name": function.get("name").cloned().unwrap_or(Value::Null), "arguments": function.get("arguments").cloned().unwrap_or(json!({}))});
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&format!("{OPEN}\n{entry}\n{CLOSE}"));
            }
            if let Some(object) = message.as_object_mut() {
                object.remove("tool_calls");
                object.insert("content".into(), Value::String(text));
            }
        } else if message.get("role") == Some(&json!("tool")) {
            let content = message.get("content").and_then(Value::as_str).unwrap_or_default();
            *message = json!({"role": "user", "content": format!("<tool_response>\n{content}\n</tool_response>")});
        }
    }
    if let Some(plan) = plan.filter(|p| p.active()) {
        let text = plan.system_text();
        match messages.first_mut() {
            Some(first) if first.get("role") == Some(&json!("system")) => {
                let content = first.get("content").and_then(Value::as_str).unwrap_or_default();
                first["content"] = Value::String(if content.is_empty() { text } else { format!("{content}\n\n{text}") });
            }
            _ => messages.insert(0, json!({"role": "system", "content": text})),
        }
    }
}

/// A call parsed out of generated text: the function's name and its arguments as JSON text.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Call {
    pub(crate) name: String,
    pub(crate) arguments: String,
}

/// What the parser finds in generated text, in order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Piece {
    Content(String),
    /// A call starts: its index among this answer's calls and its name.
    Start {
        index: usize,
        name: String,
    },
    /// More of call `index`'s arguments text.
    Arguments {
        index: usize,
        text: String,
    },
}

/// Turns streamed text into content and calls. Text that could be the start of a call is held
/// back until it is known; a call's arguments stream as they are generated when the model writes
/// the name first (it always does under a grammar), or whole when the call closes otherwise.
#[derive(Default)]
pub(crate) struct CallParser {
    pending: String,
    call: Option<OpenCall>,
    calls: usize,
    /// Calls beyond the first are dropped when parallel calls are off.
    single: bool,
    /// The offered functions: an answer that is nothing but `{"name": one of them, "arguments"
    /// or "parameters": ...}` (Llama-style, no tags) is a call too.
    names: Vec<String>,
    /// Whether anything was told yet (a bare call can only be the whole answer).
    started: bool,
}

struct OpenCall {
    text: String,
    /// Where the arguments value starts in `text`, once the name has been sent.
    arguments_at: Option<usize>,
    /// Bytes of the arguments already sent.
    sent: usize,
}

impl CallParser {
    /// Whether text around calls is still content: after the one call of a single-call answer it is dropped.
    fn takes_content(&self) -> bool {
        !(self.single && self.calls > 0)
    }

    /// A parser that knows no function names (tests).
    #[cfg(test)]
    pub(crate) fn new(parallel: bool) -> Self {
        CallParser { single: !parallel, ..Default::default() }
    }

    /// A parser for a request's tools (bare JSON calls to them are recognised too).
    pub(crate) fn for_plan(plan: &ToolPlan) -> Self {
        CallParser { single: !plan.parallel, names: plan.offered().map(|t| t.name.clone()).collect(), ..Default::default() }
    }

    /// Whether the answer so far may be one bare JSON call, held back until the end.
    fn maybe_bare(&self) -> bool {
        let text = self.pending.trim_start();
        !self.started && self.call.is_none() && !self.names.is_empty() && (text.is_empty() || text.starts_with('{'))
    }

    /// How many calls were made.
    pub(crate) fn calls(&self) -> usize {
        self.calls
    }

    /// Feeds generated text; returns what can be told so far.
    pub(crate) fn push(&mut self, text: &str) -> Vec<Piece> {
        self.pending.push_str(text);
        let mut out = Vec::new();
        if self.maybe_bare() {
            return out;
        }
        self.started = true;
        loop {
            match &mut self.call {
                None => {
                    if let Some(at) = self.pending.find(OPEN) {
                        let before = self.pending[..at].to_owned();
                        if !before.is_empty() && self.takes_content() {
                            out.push(Piece::Content(before));
                        }
                        self.pending.drain(..at + OPEN.len());
                        self.call = Some(OpenCall { text: String::new(), arguments_at: None, sent: 0 });
                        continue;
                    }
                    // Hold back a suffix that may begin the tag.
                    let hold = (1..OPEN.len()).rev().find(|k| self.pending.len() >= *k && self.pending.is_char_boundary(self.pending.len() - k) && OPEN.starts_with(&self.pending[self.pending.len() - k..])).unwrap_or(0);
                    let ready = self.pending.len() - hold;
                    if ready > 0 {
                        let text: String = self.pending.drain(..ready).collect();
                        if !(self.single && self.calls > 0) {
                            out.push(Piece::Content(text));
                        }
                    }
                    return out;
                }
                Some(call) => {
                    call.text.push_str(&self.pending);
                    self.pending.clear();
                    if let Some(at) = call.text.find(CLOSE) {
                        self.pending = call.text[at + CLOSE.len()..].to_owned();
                        call.text.truncate(at);
                        let call = self.call.take().expect("checked open");
                        self.close(call, &mut out);
                        continue;
                    }
                    self.stream_arguments(&mut out);
                    return out;
                }
            }
        }
    }

    /// Ends the text: an unclosed call that parses counts (a model may stop right after its JSON);
    /// anything else held back is content.
    pub(crate) fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.maybe_bare() {
            if let Some(call) = parse_call(&self.pending).filter(|c| self.names.contains(&c.name)) {
                self.pending.clear();
                out.push(Piece::Start { index: 0, name: call.name });
                out.push(Piece::Arguments { index: 0, text: call.arguments });
                self.calls = 1;
                return out;
            }
        }
        if let Some(call) = self.call.take() {
            self.close(call, &mut out);
        }
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() && self.takes_content() {
            out.push(Piece::Content(rest));
        }
        out
    }

    fn stream_arguments(&mut self, out: &mut Vec<Piece>) {
        if self.single && self.calls > 0 {
            return;
        }
        let index = self.calls;
        let Some(call) = &mut self.call else { return };
        if call.arguments_at.is_none() {
            if let Some((name, at)) = name_then_arguments(&call.text) {
                call.arguments_at = Some(at);
                out.push(Piece::Start { index, name });
            }
        }
        if let Some(at) = call.arguments_at {
            // Up to the end of the arguments value once it is complete; before that, all but
            // trailing whitespace (it may be the gap before the closing brace).
            let end = at + json_value_end(&call.text[at..]).unwrap_or_else(|| call.text[at..].trim_end().len());
            if end > at + call.sent {
                let text = call.text[at + call.sent..end].to_owned();
                call.sent = end - at;
                out.push(Piece::Arguments { index, text });
            }
        }
    }

    fn close(&mut self, call: OpenCall, out: &mut Vec<Piece>) {
        let dropped = self.single && self.calls > 0;
        let parsed = parse_call(&call.text);
        match (parsed, call.arguments_at) {
            (Some(_), _) if dropped => {}
            (Some(parsed), Some(_)) => {
                // Streamed so far: send the rest of the arguments text.
                let rest = parsed.arguments.get(call.sent..).unwrap_or_default();
                if !rest.is_empty() {
                    out.push(Piece::Arguments { index: self.calls, text: rest.to_owned() });
                }
                self.calls += 1;
            }
            (Some(parsed), None) => {
                out.push(Piece::Start { index: self.calls, name: parsed.name });
                out.push(Piece::Arguments { index: self.calls, text: parsed.arguments });
                self.calls += 1;
            }
            (None, Some(_)) => {
                // A call whose name was already sent but whose JSON is broken: it stays a call
                // with the arguments text generated so far.
                self.calls += 1;
            }
            (None, None) if !dropped => out.push(Piece::Content(format!("{OPEN}{}", call.text))),
            (None, None) => {}
        }
    }
}

/// `{"name": "...", "arguments": ` at the start of `text`: the name and where the arguments
/// value starts.
fn name_then_arguments(text: &str) -> Option<(String, usize)> {
    let mut rest = text.trim_start();
    let mut at = text.len() - rest.len();
    let eat = |rest: &mut &str, at: &mut usize, token: &str| -> Option<()> {
        let trimmed = rest.trim_start();
        *at += rest.len() - trimmed.len();
        let after = trimmed.strip_prefix(token)?;
        *at += token.len();
        *rest = after;
        Some(())
    };
    eat(&mut rest, &mut at, "{")?;
    eat(&mut rest, &mut at, "\"name\"")?;
    eat(&mut rest, &mut at, ":")?;
    let trimmed = rest.trim_start();
    at += rest.len() - trimmed.len();
    let name_len = json_value_end(trimmed)?;
    let name: String = serde_json::from_str(&trimmed[..name_len]).ok()?;
    rest = &trimmed[name_len..];
    at += name_len;
    eat(&mut rest, &mut at, ",")?;
    eat(&mut rest, &mut at, "\"arguments\"")?;
    eat(&mut rest, &mut at, ":")?;
    let trimmed = rest.trim_start();
    at += rest.len() - trimmed.len();
    // Only an object streams as it comes; anything else is read whole when the call closes.
    if !trimmed.starts_with('{') {
        return None;
    }
    Some((name, at))
}

/// The length of the complete JSON value (string, object or array) at the start of `text`, if it
/// is complete.
fn json_value_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut depth, mut in_string, mut escape) = (0usize, false, false);
    for (i, b) in bytes.iter().enumerate() {
        if in_string {
            match (escape, b) {
                (true, _) => escape = false,
                (false, b'\\') => escape = true,
                (false, b'"') => {
                    in_string = false;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ if depth == 0 && !b.is_ascii_whitespace() => return None,
            _ => {}
        }
    }
    None
}

/// A call's JSON: `{"name": ..., "arguments": {...}}` (or `parameters`, as Llama-style models
/// write it); arguments given as a JSON string are unwrapped.
pub(crate) fn parse_call(text: &str) -> Option<Call> {
    let value: Value = serde_json::from_str(text.trim()).ok()?;
    let name = value.get("name")?.as_str()?.to_owned();
    let arguments = match value.get("arguments").or_else(|| value.get("parameters")) {
        None => "{}".to_owned(),
        Some(Value::String(inner)) => serde_json::from_str::<Value>(inner).ok().filter(Value::is_object)?.to_string(),
        Some(object @ Value::Object(_)) => {
            // The generated text of the arguments, as streamed; re-serialized if not found.
            match name_then_arguments(text) {
                Some((_, at)) => match json_value_end(&text[at..]) {
                    Some(len) if serde_json::from_str::<Value>(&text[at..at + len]).ok().as_ref() == Some(object) => text[at..at + len].to_owned(),
                    _ => object.to_string(),
                },
                None => object.to_string(),
            }
        }
        Some(_) => return None,
    };
    Some(Call { name, arguments })
}

/// Splits a whole answer into content and calls (the streamed parse, all at once).
#[cfg(test)]
fn split_answer(text: &str, mut parser: CallParser) -> (String, Vec<Call>) {
    let mut pieces = parser.push(text);
    pieces.extend(parser.finish());
    let mut content = String::new();
    let mut calls: Vec<Call> = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Content(text) => content.push_str(&text),
            Piece::Start { name, .. } => calls.push(Call { name, arguments: String::new() }),
            Piece::Arguments { index, text } => {
                if let Some(call) = calls.get_mut(index) {
                    call.arguments.push_str(&text);
                }
            }
        }
    }
    (content, calls)
}

/// A fresh call id, as OpenAI writes them.
pub(crate) fn call_id() -> String {
    format!("call_{}", super::random_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(choice: Value) -> ToolPlan {
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"], "additionalProperties": false}}}, {"type": "function", "function": {"name": "now"}}]);
        ToolPlan::parse(Some(&tools), Some(&choice), None).unwrap().unwrap()
    }

    #[test]
    fn choices_parse_and_bad_ones_are_named() {
        assert_eq!(plan(json!("auto")).choice, Choice::Auto);
        assert_eq!(plan(json!({"type": "function", "function": {"name": "now"}})).choice, Choice::Named("now".into()));
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        assert!(ToolPlan::parse(Some(&tools), Some(&json!({"type": "function", "function": {"name": "g"}})), None).unwrap_err().message.contains("not among"));
        assert!(ToolPlan::parse(None, Some(&json!("required")), None).is_err());
        let bad = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?=x)"}}}}}]);
        // Free calls take any schema; a forced call needs one the grammar can enforce.
        assert!(ToolPlan::parse(Some(&bad), None, None).is_ok());
        let err = ToolPlan::parse(Some(&bad), Some(&json!("required")), None).unwrap_err();
        assert!(err.message.contains("look-around") && err.message.contains("#/properties/a/pattern") && err.param == "tools[0]", "{err:?}");
    }

    #[test]
    fn whole_answers_split_into_content_and_calls() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        let (content, calls) = split_answer(text, CallParser::new(true));
        assert_eq!(content.trim(), "Let me check.");
        assert_eq!(calls, vec![Call { name: "get_weather".into(), arguments: "{\"city\": \"Paris\", \"unit\": \"c\"}".into() }, Call { name: "now".into(), arguments: "{}".into() }]);
        let (_, single) = split_answer(text, CallParser::new(false));
        assert_eq!(single.len(), 1);
        // Arguments as a JSON string, keys in another order, no closing tag.
        let (content, calls) = split_answer("<tool_call>{\"arguments\": \"{\\\"x\\\": 1}\", \"name\": \"f\"}", CallParser::new(true));
        assert_eq!((content.as_str(), calls), ("", vec![Call { name: "f".into(), arguments: "{\"x\":1}".into() }]));
        // Not a call after all.
        let (content, calls) = split_answer("a <tool_call> b", CallParser::new(true));
        assert_eq!((content.as_str(), calls.len()), ("a <tool_call> b", 0));
        assert_eq!(split_answer("plain <tool answer", CallParser::new(true)).0, "plain <tool answer");
        // Llama-style bare JSON, to an offered function only.
        let tools = plan(json!("auto"));
        let (content, calls) = split_answer(" {\"name\": \"now\", \"parameters\": {}}", CallParser::for_plan(&tools));
        assert_eq!((content.as_str(), calls), ("", vec![Call { name: "now".into(), arguments: "{}".into() }]));
        let (content, calls) = split_answer("{\"name\": \"other\", \"parameters\": {}}", CallParser::for_plan(&tools));
        assert_eq!((content.as_str(), calls.len()), ("{\"name\": \"other\", \"parameters\": {}}", 0));
        assert_eq!(split_answer("Hello {x}", CallParser::for_plan(&tools)).0, "Hello {x}");
    }

    #[test]
    fn streamed_pieces_add_up_to_the_whole() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa\\\"ris\", \"unit\": \"c\"}}\n</tool_call>";
        for size in [1, 2, 3, 7] {
            let mut parser = CallParser::new(true);
            let mut pieces = Vec::new();
            let chars: Vec<char> = text.chars().collect();
            for chunk in chars.chunks(size) {
                pieces.extend(parser.push(&chunk.iter().collect::<String>()));
            }
            pieces.extend(parser.finish());
            assert_eq!(pieces[0], Piece::Start { index: 0, name: "get_weather".into() });
            let arguments: String = pieces.iter().filter_map(|p| if let Piece::Arguments { text, .. } = p { Some(text.as_str()) } else { None }).collect();
            assert_eq!(arguments, "{\"city\": \"Pa\\\"ris\", \"unit\": \"c\"}", "chunk size {size}: {pieces:?}");
            if size <= 3 {
                assert!(pieces.iter().filter(|p| matches!(p, Piece::Arguments { .. })).count() > 1, "arguments stream in fragments");
            }
            assert!(!pieces.iter().any(|p| matches!(p, Piece::Content(_))), "{pieces:?}");
        }
    }

    #[test]
    fn forced_calls_follow_the_schema() {
        use engine::grammar::TextMatch;
        let grammar = plan(json!("required")).grammar().unwrap();
        let call = b"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\", \"unit\": \"f\"}}\n</tool_call>";
        assert_eq!(grammar.check_text(call), TextMatch::Complete, "parallel calls may follow");
        let two = [&call[..], b"\n", &call[..]].concat();
        assert_eq!(grammar.check_text(&two), TextMatch::Complete);
        assert_eq!(grammar.check_text(b"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\""), TextMatch::Rejected, "city comes first");
        assert_eq!(grammar.check_text(b"<tool_call>\n{\"name\": \"now\", \"arguments\": {}}"), TextMatch::Prefix);
        let named = plan(json!({"type": "function", "function": {"name": "now"}})).grammar().unwrap();
        assert_eq!(named.check_text(b"<tool_call>\n{\"name\": \"get_"), TextMatch::Rejected);
        assert_eq!(named.check_text(b"<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>"), TextMatch::Finished);
    }

    #[test]
    fn templates_without_tools_get_instructions_and_hermes_turns() {
        let mut messages = vec![
            json!({"role": "user", "content": "weather?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "21C"}),
        ];
        messages_for_template(&mut messages, Some(&plan(json!("auto"))), "{% for m in messages %}{{ m.content }}{% endfor %}");
        assert_eq!(messages[0]["role"], "system");
        assert!(messages[0]["content"].as_str().unwrap().contains("get_weather"));
        assert!(messages[2]["content"].as_str().unwrap().contains("<tool_call>\n{\"name\":\"get_weather\""));
        assert_eq!(messages[3], json!({"role": "user", "content": "<tool_response>\n21C\n</tool_response>"}));
    }
}
