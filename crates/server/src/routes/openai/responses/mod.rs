//! OpenAI's Responses API over the inference service: `POST /v1/responses` (plain and streamed
//! with typed events), `GET` and `DELETE /v1/responses/{id}`, and
//! `GET /v1/responses/{id}/input_items`. A request's input items (and, with
//! `previous_response_id`, the stored conversation before them) become chat messages; the
//! answer's text and function calls become output items. Responses are stored (unless `store`
//! is false) as their owner's, after the answer ended and before the terminal event is sent, so
//! a client that continues from it at once finds it.

mod events;
mod request;

use std::collections::VecDeque;
use std::convert::Infallible;

use api::responses::CreateResponse;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::auth::Principal;
use domain::responses::StoredResponse;
use futures::StreamExt as _;
use serde_json::{json, Map, Value};

use super::OpenAiError;
use crate::inference::{self, Answer, Input, Output};
use crate::retrieval;
use crate::AppState;
use events::{Builder, Ending};
use request::Parsed;

/// `POST /v1/responses`.
pub(crate) async fn create_response(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<CreateResponse>, JsonRejection>) -> Result<Response, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let Json(body) = body.map_err(OpenAiError::from_rejection)?;
    // Schemas compile into grammars: CPU work the caller chooses, off the async workers.
    let parsed = inference::prompt::off_async(move || request::parse(body)).await?;
    let chain = match &parsed.previous {
        None => Vec::new(),
        Some(id) => state.hub.conversation(&principal, id).await.map_err(|err| match err {
            domain::Error::NotFound(_) => OpenAiError::invalid(format!("Previous response with id '{id}' not found."), Some("previous_response_id")).with_code("previous_response_not_found"),
            other => other.into(),
        })?,
    };
    let mut items: Vec<&Value> = Vec::new();
    for earlier in &chain {
        items.extend(earlier.input.as_array().into_iter().flatten());
        items.extend(earlier.body.get("output").and_then(Value::as_array).into_iter().flatten());
    }
    items.extend(parsed.input.iter());
    let mut messages = request::chat_messages(parsed.instructions.as_deref(), &items);
    let target = inference::resolve(&state, &principal, &parsed.model).await?;
    let response_id = format!("resp_{}", inference::random_id());
    let searched = match &parsed.file_search {
        Some(tool) => Some(file_search(&state, &principal, &response_id, tool, &parsed.input, &items).await?),
        None => None,
    };
    let mut options = parsed.options.clone();
    if let Some(searched) = searched.as_ref().filter(|s| !s.found.is_empty()) {
        add_sources(&mut messages, &searched.found);
        // Citations can name only what was retrieved: the answer's `[n]` is held to 1..=n,
        // unless another grammar (a JSON format, forced calls) already holds it.
        if options.grammar.is_none() && !parsed.tools.as_ref().is_some_and(|t| t.active()) {
            let n = searched.found.len();
            let grammar = inference::prompt::off_async(move || engine::grammar::Grammar::citations(n)).await.map_err(|err| OpenAiError::from(domain::Error::Internal(err.to_string())))?;
            options.grammar = Some(std::sync::Arc::new(grammar));
        }
    }
    let generation = options.request("openai.responses", Input::Chat(messages), parsed.tools.clone());
    let answer = inference::generate(&state, &principal, &target, generation).await?;

    let mut headers = crate::quotas::headers(&answer.limits, None);
    if let Ok(value) = HeaderValue::from_str(&answer.revision) {
        headers.insert("x-mantle-revision", value);
    }
    let mut builder = Builder::new(envelope(&parsed, &answer, &response_id), parsed.top_logprobs.is_some());
    let mut preamble = builder.start();
    if let Some(searched) = searched {
        let results = parsed.include_search_results.then(|| searched.found.iter().map(|f| json!({ "file_id": f.file_id, "filename": f.filename, "score": f.score, "attributes": f.attributes, "text": f.text })).collect());
        let sources = searched.found.iter().map(|f| (f.file_id.clone(), f.filename.clone())).collect();
        preamble.extend(builder.searched(searched.queries, results, sources));
    }
    let run = Run { state, principal, answer, builder, parsed };
    if run.parsed.options.stream {
        return Ok((headers, Sse::new(stream(run, preamble))).into_response());
    }
    let (response, ending) = run.collect().await?;
    if let Ending::Failed(message) = ending {
        return Err(OpenAiError::from(domain::Error::Internal(message)));
    }
    Ok((headers, Json(response)).into_response())
}

/// What the response object repeats of the request, and its identity.
fn envelope(parsed: &Parsed, answer: &Answer, id: &str) -> Map<String, Value> {
    let object = json!({
        "id": id,
        "object": "response",
        "created_at": answer.created,
        "status": "in_progress",
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": parsed.instructions,
        "max_output_tokens": parsed.max_output_tokens,
        "max_tool_calls": parsed.max_tool_calls,
        "model": parsed.model,
        "output": [],
        "parallel_tool_calls": parsed.parallel_tool_calls,
        "previous_response_id": parsed.previous,
        "reasoning": { "effort": null, "summary": null },
        "service_tier": "default",
        "store": parsed.store,
        "temperature": parsed.temperature,
        "text": parsed.text_echo,
        "tool_choice": parsed.tool_choice_echo,
        "tools": parsed.tools_echo,
        "top_logprobs": parsed.top_logprobs,
        "top_p": parsed.top_p,
        "truncation": "disabled",
        "usage": null,
        "user": parsed.user,
        "metadata": parsed.metadata,
    });
    match object {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// One response being generated.
struct Run {
    state: AppState,
    principal: Principal,
    answer: Answer,
    builder: Builder,
    parsed: Parsed,
}

impl Run {
    /// The final object once the answer ended (stored when asked), and how it ended.
    async fn end(&mut self, last: &Output) -> Result<(Value, Ending), OpenAiError> {
        let ending = self.builder.ending(last);
        let usage = match last {
            Output::Usage { prompt_tokens, completion_tokens } => Some((*prompt_tokens, *completion_tokens)),
            _ => None,
        };
        let response = self.builder.finish(&ending, usage);
        if self.parsed.store {
            let stored = StoredResponse {
                id: response["id"].as_str().unwrap_or_default().to_owned(),
                owner: String::new(),
                previous_id: self.parsed.previous.clone(),
                model: self.parsed.model.clone(),
                input: Value::Array(self.parsed.input.clone()),
                body: response.clone(),
                created_at: domain::format_time(chrono::Utc::now()),
            };
            self.state.hub.store_response(&self.principal, stored).await?;
        }
        Ok((response, ending))
    }

    /// Runs the answer to its end, keeping only the final object.
    async fn collect(mut self) -> Result<(Value, Ending), OpenAiError> {
        while let Some(output) = self.answer.next().await {
            if matches!(output, Output::Usage { .. } | Output::Failed(_)) {
                return self.end(&output).await;
            }
            self.builder.push(output);
        }
        Err(OpenAiError::from(domain::Error::Internal("the engine stopped".into())))
    }
}

/// The SSE body: typed events, each with its `event:` name; the stream ends after the terminal
/// event. Dropping it (a client that went away) drops the answer, which cancels it.
fn stream(run: Run, preamble: Vec<events::Event>) -> futures::stream::BoxStream<'static, Result<SseEvent, Infallible>> {
    struct State {
        run: Run,
        queue: VecDeque<events::Event>,
        done: bool,
    }
    let queue: VecDeque<events::Event> = preamble.into();
    futures::stream::unfold(State { run, queue, done: false }, |mut s| async move {
        loop {
            if let Some((kind, body)) = s.queue.pop_front() {
                return Some((Ok(SseEvent::default().event(kind).data(body.to_string())), s));
            }
            if s.done {
                return None;
            }
            match s.run.answer.next().await {
                Some(output @ (Output::Usage { .. } | Output::Failed(_))) => {
                    s.done = true;
                    let (response, ending) = match s.run.end(&output).await {
                        Ok(ended) => ended,
                        Err(err) => {
                            let failed = Ending::Failed(err.message());
                            (s.run.builder.finish(&failed, None), failed)
                        }
                    };
                    let event = s.run.builder.terminal(&ending, response);
                    s.queue.push_back(event);
                }
                Some(output) => {
                    let events = s.run.builder.push(output);
                    s.queue.extend(events);
                }
                None => {
                    s.done = true;
                    let failed = Ending::Failed("the engine stopped".into());
                    let response = s.run.builder.finish(&failed, None);
                    let event = s.run.builder.terminal(&failed, response);
                    s.queue.push_back(event);
                }
            }
        }
    })
    .boxed()
}

/// What a `file_search` found for a response.
struct Searched {
    queries: Vec<String>,
    found: Vec<retrieval::Found>,
}

/// Runs a request's `file_search`: the query is the request's last user message (else the
/// conversation's); every named store is searched (each must be the caller's), the results
/// merged by score; the run is audited with what it read and found.
async fn file_search(state: &AppState, principal: &Principal, response_id: &str, tool: &request::FileSearch, input: &[Value], items: &[&Value]) -> Result<Searched, OpenAiError> {
    let text_of = |item: &Value| -> String { item["content"].as_array().into_iter().flatten().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ") };
    let last_user = |list: &mut dyn Iterator<Item = &Value>| list.filter(|i| i["type"] == "message" && i["role"] == "user").last().map(text_of);
    let query = last_user(&mut input.iter()).or_else(|| last_user(&mut items.iter().copied())).filter(|q| !q.trim().is_empty());
    let Some(query) = query else {
        return Ok(Searched { queries: Vec::new(), found: Vec::new() });
    };
    // A query is bounded as the search endpoint bounds it.
    let mut cut = query.len().min(16 * 1024);
    while !query.is_char_boundary(cut) {
        cut -= 1;
    }
    let query = query[..cut].to_owned();
    let mut found: Vec<retrieval::Found> = Vec::new();
    for store in &tool.store_ids {
        let mut search = tool.search.clone();
        search.queries = vec![query.clone()];
        let results = retrieval::search(state, principal, store, search).await.map_err(|err| match err {
            inference::InferenceError::Domain(domain::Error::NotFound(message)) => OpenAiError::invalid(message, Some("tools")),
            other => other.into(),
        })?;
        found.extend(results);
    }
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    found.truncate(tool.search.max);
    let details = json!({ "vector_stores": tool.store_ids, "queries": [query], "results": found.iter().map(|f| json!({ "file_id": f.file_id, "score": f.score })).collect::<Vec<_>>() });
    state.hub.record_tool_run(principal, "file_search", response_id, details).await?;
    Ok(Searched { queries: vec![query], found })
}

/// Puts retrieved chunks, numbered from 1, into the system message, with how to cite them.
fn add_sources(messages: &mut Vec<Value>, found: &[retrieval::Found]) {
    let mut text = String::from("Answer from the sources below. After each statement a source supports, cite it by its number in square brackets, like [1].\n");
    for (n, source) in found.iter().enumerate() {
        text.push_str(&format!("\n[{}] {}\n{}\n", n + 1, source.filename, source.text.trim()));
    }
    match messages.first_mut().filter(|m| m["role"] == "system") {
        Some(system) => {
            let before = system["content"].as_str().unwrap_or_default().to_owned();
            system["content"] = Value::String(format!("{before}\n\n{text}"));
        }
        None => messages.insert(0, json!({ "role": "system", "content": text })),
    }
}

/// Query of `GET /v1/responses/{id}`.
#[derive(serde::Deserialize)]
pub(crate) struct RetrieveQuery {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    starting_after: Option<u64>,
}

/// `GET /v1/responses/{id}`.
pub(crate) async fn retrieve_response(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, query: Result<Query<RetrieveQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let Query(query) = query.map_err(|err| OpenAiError::invalid(err.body_text(), None))?;
    if query.stream == Some(true) || query.starting_after.is_some() {
        return Err(OpenAiError::unsupported("stream", "replaying a stored response as a stream"));
    }
    let stored = stored(&state, &principal, &id).await?;
    Ok(Json(stored.body))
}

/// `DELETE /v1/responses/{id}`.
pub(crate) async fn delete_response(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    stored(&state, &principal, &id).await?;
    state.hub.delete_response(&principal, &id).await?;
    Ok(Json(json!({ "id": id, "object": "response", "deleted": true })))
}

/// Query of `GET /v1/responses/{id}/input_items`.
#[derive(serde::Deserialize)]
pub(crate) struct InputItemsQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    order: Option<String>,
}

/// `GET /v1/responses/{id}/input_items`: this response's own input items (not those of the
/// responses it continued), newest first unless `order=asc`, a page of `limit` (1 to 100,
/// default 20) after the item `after`.
pub(crate) async fn list_input_items(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, query: Result<Query<InputItemsQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let Query(query) = query.map_err(|err| OpenAiError::invalid(err.body_text(), None))?;
    let mut items: Vec<Value> = stored(&state, &principal, &id).await?.input.as_array().cloned().unwrap_or_default();
    // Stored oldest first; the list is newest first unless `order=asc`.
    items.reverse();
    let bounds = super::list::Bounds { default: 20, max: 100 };
    Ok(Json(super::list::page(items, query.limit, query.order.as_deref(), query.after.as_deref(), None, bounds)?))
}

/// The caller's stored response, or OpenAI's 404.
async fn stored(state: &AppState, principal: &Principal, id: &str) -> Result<StoredResponse, OpenAiError> {
    state.hub.response(principal, id).await.map_err(|err| match err {
        domain::Error::NotFound(_) => OpenAiError::not_found(format!("Response with id '{id}' not found.")).with_code("not_found"),
        other => other.into(),
    })
}
