//! An answer as the Responses API tells it: output items (an assistant `message` with one
//! `output_text` part, `function_call` items) built from the inference outputs, with the typed
//! stream events the official clients accumulate (`response.created`, `response.in_progress`,
//! `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`,
//! `response.output_text.done`, `response.content_part.done`,
//! `response.function_call_arguments.delta` and `.done`, `response.output_item.done`, then
//! `response.completed`, `response.incomplete` or `response.failed`). A plain request runs the
//! same builder and keeps only the final object, so both shapes always agree.

use engine::TokenLogprob;
use serde_json::{json, Map, Value};

use crate::inference::{random_id, Finish, Output};

/// One stream event: its type and its body (which repeats the type).
pub(super) type Event = (&'static str, Value);

/// The item being written.
enum Open {
    Message { id: String, text: String, logprobs: Vec<Value> },
    Call { id: String, call_id: String, name: String, arguments: String },
}

/// How the answer ended.
pub(super) enum Ending {
    Completed,
    /// Cut at `max_output_tokens`.
    Incomplete,
    Failed(String),
}

/// Builds the output items and events of one response.
pub(super) struct Builder {
    /// The response object without `status`, `output` and `usage`.
    envelope: Map<String, Value>,
    sequence: u64,
    output: Vec<Value>,
    open: Option<Open>,
    /// Whether output text carries log probabilities.
    logprobs: bool,
    pending: Vec<Value>,
    length_cut: bool,
    /// Sources a `file_search` gave the model, numbered from 1: `(file_id, filename)`.
    sources: Vec<(String, String)>,
}

impl Builder {
    pub(super) fn new(envelope: Map<String, Value>, logprobs: bool) -> Builder {
        Builder { envelope, sequence: 0, output: Vec::new(), open: None, logprobs, pending: Vec::new(), length_cut: false, sources: Vec::new() }
    }

    /// The response object as it stands.
    pub(super) fn snapshot(&self, status: &str) -> Value {
        let mut object = self.envelope.clone();
        object.insert("status".into(), json!(status));
        object.insert("output".into(), Value::Array(self.output.clone()));
        Value::Object(object)
    }

    fn event(&mut self, kind: &'static str, body: Value) -> Event {
        let mut body = match body {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        body.insert("type".into(), json!(kind));
        body.insert("sequence_number".into(), json!(self.sequence));
        self.sequence += 1;
        (kind, Value::Object(body))
    }

    /// `response.created` and `response.in_progress`.
    pub(super) fn start(&mut self) -> Vec<Event> {
        let snapshot = self.snapshot("in_progress");
        vec![self.event("response.created", json!({ "response": snapshot })), self.event("response.in_progress", json!({ "response": snapshot }))]
    }

    /// A `file_search_call` that ran before generation, its events, and the sources the answer
    /// may cite (numbered from 1, in order).
    pub(super) fn searched(&mut self, queries: Vec<String>, results: Option<Vec<Value>>, sources: Vec<(String, String)>) -> Vec<Event> {
        let id = format!("fs_{}", random_id());
        let index = self.output.len();
        let mut events = Vec::new();
        let pending = json!({ "id": id, "type": "file_search_call", "status": "in_progress", "queries": queries, "results": null });
        events.push(self.event("response.output_item.added", json!({ "output_index": index, "item": pending })));
        for kind in ["response.file_search_call.in_progress", "response.file_search_call.searching", "response.file_search_call.completed"] {
            events.push(self.event(kind, json!({ "item_id": id, "output_index": index })));
        }
        let item = json!({ "id": id, "type": "file_search_call", "status": "completed", "queries": queries, "results": results });
        events.push(self.event("response.output_item.done", json!({ "output_index": index, "item": item })));
        self.output.push(item);
        self.sources = sources;
        events
    }

    /// The events one inference output makes (the end comes through `end`).
    pub(super) fn push(&mut self, output: Output) -> Vec<Event> {
        let mut events = Vec::new();
        match output {
            Output::Logprobs { entries, .. } if self.logprobs => self.pending.extend(entries.iter().map(logprob_json)),
            Output::Text { text, .. } => {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    self.close("completed", &mut events);
                    self.open_message(&mut events);
                }
                let logprobs = std::mem::take(&mut self.pending);
                let index = self.output.len();
                if let Some(Open::Message { id, text: written, logprobs: kept }) = &mut self.open {
                    written.push_str(&text);
                    kept.extend(logprobs.iter().cloned());
                    let body = json!({ "item_id": id, "output_index": index, "content_index": 0, "delta": text, "logprobs": logprobs });
                    events.push(self.event("response.output_text.delta", body));
                }
            }
            Output::CallStart { name, .. } => {
                self.close("completed", &mut events);
                self.pending.clear();
                let (id, call_id) = (format!("fc_{}", random_id()), crate::inference::tools::call_id());
                let item = json!({ "id": id, "type": "function_call", "status": "in_progress", "call_id": call_id, "name": name, "arguments": "" });
                let body = json!({ "output_index": self.output.len(), "item": item });
                events.push(self.event("response.output_item.added", body));
                self.open = Some(Open::Call { id, call_id, name, arguments: String::new() });
            }
            Output::CallArguments { text, .. } => {
                let index = self.output.len();
                if let Some(Open::Call { id, arguments, .. }) = &mut self.open {
                    arguments.push_str(&text);
                    let body = json!({ "item_id": id, "output_index": index, "delta": text });
                    events.push(self.event("response.function_call_arguments.delta", body));
                }
            }
            Output::Finished { reason, .. } => {
                self.length_cut = reason == Finish::Length;
                let status = if self.length_cut { "incomplete" } else { "completed" };
                if self.output.is_empty() && self.open.is_none() {
                    // An empty answer is still one (empty) assistant message.
                    self.open_message(&mut events);
                }
                self.close(status, &mut events);
            }
            Output::Logprobs { .. } | Output::Prompt { .. } | Output::Usage { .. } | Output::Failed(_) => {}
        }
        events
    }

    fn open_message(&mut self, events: &mut Vec<Event>) {
        let id = format!("msg_{}", random_id());
        let index = self.output.len();
        let item = json!({ "id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": [] });
        events.push(self.event("response.output_item.added", json!({ "output_index": index, "item": item })));
        let part = json!({ "type": "output_text", "text": "", "annotations": [], "logprobs": [] });
        events.push(self.event("response.content_part.added", json!({ "item_id": id, "output_index": index, "content_index": 0, "part": part })));
        self.open = Some(Open::Message { id, text: String::new(), logprobs: Vec::new() });
    }

    /// Ends the open item, if any, with `status`.
    fn close(&mut self, status: &str, events: &mut Vec<Event>) {
        let index = self.output.len();
        match self.open.take() {
            None => {}
            Some(Open::Message { id, text, logprobs }) => {
                let annotations = citations(&text, &self.sources);
                for (n, annotation) in annotations.iter().enumerate() {
                    let body = json!({ "item_id": id, "output_index": index, "content_index": 0, "annotation_index": n, "annotation": annotation });
                    events.push(self.event("response.output_text.annotation.added", body));
                }
                events.push(self.event("response.output_text.done", json!({ "item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": logprobs })));
                let mut part = json!({ "type": "output_text", "text": text, "annotations": annotations });
                if self.logprobs {
                    part["logprobs"] = Value::Array(logprobs);
                }
                events.push(self.event("response.content_part.done", json!({ "item_id": id, "output_index": index, "content_index": 0, "part": part })));
                let item = json!({ "id": id, "type": "message", "status": status, "role": "assistant", "content": [part] });
                events.push(self.event("response.output_item.done", json!({ "output_index": index, "item": item })));
                self.output.push(item);
            }
            Some(Open::Call { id, call_id, name, arguments }) => {
                events.push(self.event("response.function_call_arguments.done", json!({ "item_id": id, "output_index": index, "name": name, "arguments": arguments })));
                let item = json!({ "id": id, "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments });
                events.push(self.event("response.output_item.done", json!({ "output_index": index, "item": item })));
                self.output.push(item);
            }
        }
    }

    /// How the answer ended, given its last output (`Usage`: it finished; `Failed`: it did not).
    pub(super) fn ending(&self, last: &Output) -> Ending {
        match last {
            Output::Failed(message) => Ending::Failed(message.clone()),
            _ if self.length_cut => Ending::Incomplete,
            _ => Ending::Completed,
        }
    }

    /// The final response object.
    pub(super) fn finish(&mut self, ending: &Ending, usage: Option<(usize, usize)>) -> Value {
        let mut closing = Vec::new();
        self.close(if matches!(ending, Ending::Completed) { "completed" } else { "incomplete" }, &mut closing);
        let status = match ending {
            Ending::Completed => "completed",
            Ending::Incomplete => "incomplete",
            Ending::Failed(_) => "failed",
        };
        let mut object = self.snapshot(status);
        match ending {
            Ending::Incomplete => object["incomplete_details"] = json!({ "reason": "max_output_tokens" }),
            Ending::Failed(message) => object["error"] = json!({ "code": "server_error", "message": message }),
            Ending::Completed => {}
        }
        if let Some((input, output)) = usage {
            object["usage"] = json!({
                "input_tokens": input,
                "input_tokens_details": { "cached_tokens": 0 },
                "output_tokens": output,
                "output_tokens_details": { "reasoning_tokens": 0 },
                "total_tokens": input + output,
            });
        }
        object
    }

    /// The terminal event for the final object.
    pub(super) fn terminal(&mut self, ending: &Ending, response: Value) -> Event {
        let kind = match ending {
            Ending::Completed => "response.completed",
            Ending::Incomplete => "response.incomplete",
            Ending::Failed(_) => "response.failed",
        };
        self.event(kind, json!({ "response": response }))
    }
}

/// `file_citation` annotations for the `[n]` markers in `text` that name one of `sources`
/// (numbered from 1); `index` is the marker's position in characters.
fn citations(text: &str, sources: &[(String, String)]) -> Vec<Value> {
    if sources.is_empty() {
        return Vec::new();
    }
    let mut annotations = Vec::new();
    let mut chars = 0;
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        chars += rest[..open].chars().count();
        let after = &rest[open + 1..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        let cited = digits.parse::<usize>().ok().filter(|n| (1..=sources.len()).contains(n) && after[digits.len()..].starts_with(']'));
        if let Some(n) = cited {
            let (file_id, filename) = &sources[n - 1];
            annotations.push(json!({ "type": "file_citation", "file_id": file_id, "filename": filename, "index": chars }));
        }
        chars += 1;
        rest = after;
    }
    annotations
}

/// One token's log probability as `output_text.logprobs` writes it.
fn logprob_json(entry: &TokenLogprob) -> Value {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let top: Vec<Value> = entry.top.iter().map(|t| json!({ "token": text(&t.bytes), "bytes": t.bytes, "logprob": t.logprob })).collect();
    json!({ "token": text(&entry.bytes), "bytes": entry.bytes, "logprob": entry.logprob, "top_logprobs": top })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> Builder {
        let envelope = json!({ "id": "resp_1", "object": "response" }).as_object().unwrap().clone();
        Builder::new(envelope, false)
    }

    #[test]
    fn text_then_call_makes_two_items_in_order() {
        let mut b = builder();
        let mut kinds: Vec<&str> = b.start().iter().map(|e| e.0).collect();
        for output in [
            Output::Text { choice: 0, text: "Let me check. ".into() },
            Output::CallStart { choice: 0, call: 0, name: "weather".into() },
            Output::CallArguments { choice: 0, call: 0, text: "{\"city\":".into() },
            Output::CallArguments { choice: 0, call: 0, text: "\"Oslo\"}".into() },
            Output::Finished { choice: 0, reason: Finish::ToolCalls },
        ] {
            kinds.extend(b.push(output).iter().map(|e| e.0));
        }
        let last = Output::Usage { prompt_tokens: 10, completion_tokens: 7 };
        let ending = b.ending(&last);
        let response = b.finish(&ending, Some((10, 7)));
        kinds.push(b.terminal(&ending, response.clone()).0);
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert_eq!(response["status"], "completed");
        assert_eq!(response["output"][0]["content"][0]["text"], "Let me check. ");
        assert_eq!(response["output"][1]["arguments"], "{\"city\":\"Oslo\"}");
        assert!(response["output"][1]["call_id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(response["usage"]["total_tokens"], 17);
    }

    #[test]
    fn a_cut_answer_is_incomplete_and_an_empty_one_is_an_empty_message() {
        let mut b = builder();
        b.push(Output::Text { choice: 0, text: "abc".into() });
        b.push(Output::Finished { choice: 0, reason: Finish::Length });
        let ending = b.ending(&Output::Usage { prompt_tokens: 1, completion_tokens: 3 });
        let response = b.finish(&ending, Some((1, 3)));
        assert_eq!(response["status"], "incomplete");
        assert_eq!(response["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(response["output"][0]["status"], "incomplete");

        let mut b = builder();
        b.push(Output::Finished { choice: 0, reason: Finish::Stop });
        let response = b.finish(&Ending::Completed, Some((1, 0)));
        assert_eq!(response["output"][0]["content"][0]["text"], "");
    }

    #[test]
    fn citations_point_only_at_given_sources() {
        let mut b = builder();
        let events = b.searched(vec!["cats".into()], None, vec![("file-a".into(), "a.txt".into()), ("file-b".into(), "b.txt".into())]);
        assert_eq!(events.first().unwrap().0, "response.output_item.added");
        assert_eq!(events.last().unwrap().0, "response.output_item.done");
        b.push(Output::Text { choice: 0, text: "Cats purr [1]. Dogs [2] bark [3] [x].".into() });
        let events = b.push(Output::Finished { choice: 0, reason: Finish::Stop });
        assert_eq!(events.iter().filter(|e| e.0 == "response.output_text.annotation.added").count(), 2);
        let response = b.finish(&Ending::Completed, Some((1, 1)));
        assert_eq!(response["output"][0]["type"], "file_search_call");
        let annotations = response["output"][1]["content"][0]["annotations"].as_array().unwrap();
        assert_eq!(annotations.len(), 2);
        assert_eq!(annotations[0], json!({ "type": "file_citation", "file_id": "file-a", "filename": "a.txt", "index": 10 }));
        assert_eq!(annotations[1]["file_id"], "file-b");
    }

    #[test]
    fn a_failure_is_a_failed_response() {
        let mut b = builder();
        b.push(Output::Text { choice: 0, text: "par".into() });
        let last = Output::Failed("generation failed".into());
        let ending = b.ending(&last);
        let response = b.finish(&ending, None);
        assert_eq!(response["status"], "failed");
        assert_eq!(response["error"]["code"], "server_error");
        assert_eq!(b.terminal(&ending, response).0, "response.failed");
    }
}
