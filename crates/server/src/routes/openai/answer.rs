//! An inference answer in OpenAI's shapes: one JSON body (`chat.completion`, `text_completion`)
//! or an SSE stream of chunks ending in `[DONE]`.

use std::collections::VecDeque;
use std::convert::Infallible;

use api::openai as wire;
use axum::http::HeaderValue;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use engine::TokenLogprob;
use futures::stream::BoxStream;
use futures::StreamExt as _;

use super::params::Endpoint;
use super::OpenAiError;
use crate::inference::{Answer, Finish, Output};

/// The response for `answer`: streamed when asked, else gathered into one body.
pub(super) async fn respond(answer: Answer, endpoint: Endpoint, model: String, stream: bool, include_usage: bool) -> Response {
    let mut headers = crate::quotas::headers(&answer.limits, None);
    if let Ok(value) = HeaderValue::from_str(&answer.revision) {
        headers.insert("x-mantle-revision", value);
    }
    let prefix = if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" };
    let head = Head { id: format!("{prefix}-{}", answer.id), created: answer.created, model, fingerprint: answer.fingerprint.clone(), endpoint };
    if stream {
        (headers, Sse::new(stream_chunks(answer, head, include_usage))).into_response()
    } else {
        match collect(answer, head).await {
            Ok(body) => (headers, body).into_response(),
            Err(err) => err.into_response(),
        }
    }
}

async fn collect(answer: Answer, head: Head) -> Result<Response, OpenAiError> {
    let wants_logprobs = answer.logprobs;
    let collected = answer.collect().await.map_err(|message| OpenAiError::from(domain::Error::Internal(message)))?;
    let usage = usage(collected.prompt_tokens, collected.completion_tokens);
    let finish = |reason: Option<Finish>| reason.unwrap_or(Finish::Stop).as_str().to_owned();
    Ok(match head.endpoint {
        Endpoint::Chat => {
            let choices = collected
                .choices
                .into_iter()
                .enumerate()
                .map(|(i, choice)| {
                    let logprobs = wants_logprobs.then(|| logprobs_json(head.endpoint, &choice.logprobs, 0));
                    let tool_calls = (!choice.calls.is_empty())
                        .then(|| choice.calls.into_iter().map(|c| wire::ToolCall { id: crate::inference::tools::call_id(), kind: "function".into(), function: wire::FunctionCall { name: c.name, arguments: c.arguments } }).collect::<Vec<_>>());
                    let content = if tool_calls.is_some() && choice.text.trim().is_empty() { None } else { Some(choice.text) };
                    wire::ChatChoice { index: i as u32, message: wire::AssistantMessage { role: "assistant".into(), content, refusal: None, tool_calls }, logprobs, finish_reason: finish(choice.reason) }
                })
                .collect();
            Json(wire::ChatCompletion { id: head.id, object: "chat.completion".into(), created: head.created, model: head.model, system_fingerprint: head.fingerprint, choices, usage }).into_response()
        }
        Endpoint::Completions => {
            let choices = collected
                .choices
                .into_iter()
                .enumerate()
                .map(|(i, choice)| {
                    let (prompt, scores) = choice.prompt.unwrap_or_default();
                    let logprobs = wants_logprobs.then(|| match scores {
                        Some((first, scored)) => {
                            let mut json = prompt_logprobs_json(&first, &scored);
                            append_logprobs(&mut json, logprobs_json(head.endpoint, &choice.logprobs, prompt_bytes(&first, &scored)));
                            json
                        }
                        None => logprobs_json(head.endpoint, &choice.logprobs, 0),
                    });
                    wire::CompletionChoice { index: i as u32, logprobs, text: prompt + &choice.text, finish_reason: Some(finish(choice.reason)) }
                })
                .collect();
            Json(wire::Completion { id: head.id, object: "text_completion".into(), created: head.created, model: head.model, system_fingerprint: head.fingerprint, choices, usage: Some(Some(usage)) }).into_response()
        }
    })
}

/// What every chunk of one response repeats.
#[derive(Clone)]
struct Head {
    id: String,
    created: i64,
    model: String,
    fingerprint: String,
    endpoint: Endpoint,
}

impl Head {
    /// One chunk with one choice's part (or, for the usage chunk, no choices).
    fn chunk(&self, part: Option<Part>, usage: Option<Option<wire::Usage>>) -> SseEvent {
        let finish = |r: Option<Finish>| r.map(|r| r.as_str().to_owned());
        let json = match self.endpoint {
            Endpoint::Chat => {
                let choices = part
                    .into_iter()
                    .map(|p| wire::ChunkChoice { index: p.index as u32, delta: wire::Delta { role: p.role.map(str::to_owned), content: p.content, tool_calls: p.tool_calls }, logprobs: p.logprobs, finish_reason: finish(p.finish) })
                    .collect();
                serde_json::to_string(&wire::ChatCompletionChunk { id: self.id.clone(), object: "chat.completion.chunk".into(), created: self.created, model: self.model.clone(), system_fingerprint: self.fingerprint.clone(), choices, usage })
            }
            Endpoint::Completions => {
                let choices = part.into_iter().map(|p| wire::CompletionChoice { index: p.index as u32, text: p.content.unwrap_or_default(), logprobs: p.logprobs, finish_reason: finish(p.finish) }).collect();
                serde_json::to_string(&wire::Completion { id: self.id.clone(), object: "text_completion".into(), created: self.created, model: self.model.clone(), system_fingerprint: self.fingerprint.clone(), choices, usage })
            }
        };
        SseEvent::default().data(json.expect("chunks serialize"))
    }
}

/// What one chunk says about one choice.
#[derive(Default)]
struct Part {
    index: usize,
    role: Option<&'static str>,
    content: Option<String>,
    logprobs: Option<serde_json::Value>,
    finish: Option<Finish>,
    tool_calls: Option<Vec<wire::ToolCallDelta>>,
}

/// The SSE body: a role chunk per chat choice, content chunks as text arrives, a finish chunk
/// per choice, the usage chunk when asked for, then `[DONE]`; a failure is an error event and no
/// `[DONE]`. Dropping it (a client that went away) drops the answer, which cancels it.
fn stream_chunks(answer: Answer, head: Head, include_usage: bool) -> BoxStream<'static, Result<SseEvent, Infallible>> {
    struct State {
        answer: Answer,
        head: Head,
        include_usage: bool,
        queue: VecDeque<SseEvent>,
        /// Per choice: log probabilities not yet sent, and the text length sent so far.
        pending: Vec<Vec<TokenLogprob>>,
        sent_len: Vec<usize>,
        done: bool,
    }
    impl State {
        /// The log probabilities of the tokens behind the next chunk of a choice, when asked
        /// for: on every text chunk, on other chunks when there are some.
        fn take_logprobs(&mut self, index: usize, always: bool) -> Option<serde_json::Value> {
            if !self.answer.logprobs || (!always && self.pending[index].is_empty()) {
                return None;
            }
            let entries = std::mem::take(&mut self.pending[index]);
            Some(logprobs_json(self.head.endpoint, &entries, self.sent_len[index]))
        }

        fn push(&mut self, part: Part) {
            let usage_field = self.include_usage.then_some(None);
            self.queue.push_back(self.head.chunk(Some(part), usage_field));
        }
    }
    let usage_field = include_usage.then_some(None);
    let mut queue = VecDeque::new();
    if head.endpoint == Endpoint::Chat {
        for index in 0..answer.n_choices {
            queue.push_back(head.chunk(Some(Part { index, role: Some("assistant"), content: Some(String::new()), ..Part::default() }), usage_field));
        }
    }
    let n = answer.n_choices;
    let state = State { answer, head, include_usage, queue, pending: vec![Vec::new(); n], sent_len: vec![0; n], done: false };
    futures::stream::unfold(state, move |mut state| async move {
        loop {
            if let Some(event) = state.queue.pop_front() {
                return Some((Ok(event), state));
            }
            if state.done {
                return None;
            }
            match state.answer.next().await {
                Some(Output::Prompt { choice, text, scores }) => {
                    state.sent_len[choice] += scores.as_ref().map_or(text.len(), |(first, scored)| prompt_bytes(first, scored));
                    let logprobs = scores.map(|(first, scored)| prompt_logprobs_json(&first, &scored));
                    state.push(Part { index: choice, content: Some(text), logprobs, ..Part::default() });
                }
                Some(Output::Logprobs { choice, entries }) => state.pending[choice].extend(entries),
                Some(Output::Text { choice, text }) => {
                    let logprobs = state.take_logprobs(choice, true);
                    state.sent_len[choice] += text.len();
                    state.push(Part { index: choice, content: Some(text), logprobs, ..Part::default() });
                }
                Some(Output::CallStart { choice, call, name }) => {
                    let logprobs = state.take_logprobs(choice, false);
                    let delta = wire::ToolCallDelta { index: call as u32, id: Some(crate::inference::tools::call_id()), kind: Some("function".into()), function: wire::FunctionDelta { name: Some(name), arguments: Some(String::new()) } };
                    state.push(Part { index: choice, tool_calls: Some(vec![delta]), logprobs, ..Part::default() });
                }
                Some(Output::CallArguments { choice, call, text }) => {
                    let logprobs = state.take_logprobs(choice, false);
                    let delta = wire::ToolCallDelta { index: call as u32, function: wire::FunctionDelta { name: None, arguments: Some(text) }, ..Default::default() };
                    state.push(Part { index: choice, tool_calls: Some(vec![delta]), logprobs, ..Part::default() });
                }
                Some(Output::Finished { choice, reason }) => {
                    let content = (state.head.endpoint == Endpoint::Completions).then(String::new);
                    let logprobs = state.take_logprobs(choice, false);
                    state.push(Part { index: choice, content, logprobs, finish: Some(reason), ..Part::default() });
                }
                Some(Output::Usage { prompt_tokens, completion_tokens }) => {
                    if state.include_usage {
                        state.queue.push_back(state.head.chunk(None, Some(Some(usage(prompt_tokens, completion_tokens)))));
                    }
                    state.queue.push_back(SseEvent::default().data("[DONE]"));
                    state.done = true;
                }
                Some(Output::Failed(message)) => {
                    let body = serde_json::json!({ "error": { "message": message, "type": "server_error", "param": null, "code": null } });
                    state.queue.push_back(SseEvent::default().data(body.to_string()));
                    state.done = true;
                }
                None => state.done = true,
            }
        }
    })
    .boxed()
}

/// Log probabilities in the route's shape: chat's `{content: [...]}`, or the completions API's
/// parallel arrays with text offsets counted from `offset`.
fn logprobs_json(endpoint: Endpoint, entries: &[TokenLogprob], offset: usize) -> serde_json::Value {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match endpoint {
        Endpoint::Chat => {
            let content: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    let top: Vec<serde_json::Value> = e.top.iter().map(|t| serde_json::json!({ "token": text(&t.bytes), "logprob": t.logprob, "bytes": t.bytes })).collect();
                    serde_json::json!({ "token": text(&e.bytes), "logprob": e.logprob, "bytes": e.bytes, "top_logprobs": top })
                })
                .collect();
            serde_json::json!({ "content": content, "refusal": null })
        }
        Endpoint::Completions => {
            let mut at = offset;
            let mut offsets = Vec::with_capacity(entries.len());
            for e in entries {
                offsets.push(at);
                at += e.bytes.len();
            }
            let top: Vec<serde_json::Value> = entries.iter().map(|e| serde_json::Value::Object(e.top.iter().map(|t| (text(&t.bytes), serde_json::json!(t.logprob))).collect())).collect();
            serde_json::json!({
                "tokens": entries.iter().map(|e| text(&e.bytes)).collect::<Vec<_>>(),
                "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
                "top_logprobs": top,
                "text_offset": offsets,
            })
        }
    }
}

/// An echoed prompt's log probabilities in the completions API's shape: the first token has
/// none (`null`, as OpenAI and vLLM give it), every other token its own and its alternatives.
fn prompt_logprobs_json(first: &[u8], scored: &[TokenLogprob]) -> serde_json::Value {
    let mut json = serde_json::json!({ "tokens": [String::from_utf8_lossy(first)], "token_logprobs": [null], "top_logprobs": [null], "text_offset": [0] });
    append_logprobs(&mut json, logprobs_json(Endpoint::Completions, scored, first.len()));
    json
}

/// The length in bytes of a scored prompt's tokens, where the answer's text offsets continue.
fn prompt_bytes(first: &[u8], scored: &[TokenLogprob]) -> usize {
    first.len() + scored.iter().map(|e| e.bytes.len()).sum::<usize>()
}

/// Appends the parallel arrays of `more` to those of `json` (completions shape).
fn append_logprobs(json: &mut serde_json::Value, more: serde_json::Value) {
    for key in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
        if let (Some(list), Some(serde_json::Value::Array(extra))) = (json.get_mut(key).and_then(|v| v.as_array_mut()), more.get(key)) {
            list.extend(extra.iter().cloned());
        }
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> wire::Usage {
    wire::Usage { prompt_tokens: prompt_tokens as u64, completion_tokens: completion_tokens as u64, total_tokens: (prompt_tokens + completion_tokens) as u64 }
}
