//! Text generation: from a checked request to a stream of outputs, with the prompt built,
//! the request admitted under quotas, every choice started together (so they batch), tool calls
//! parsed out of the text, and the request accounted for however it ends.

use std::collections::VecDeque;
use std::sync::Arc;

use domain::auth::Principal;
use engine::grammar::Constraint;
use engine::{Engine, Event, FinishReason, GenerateRequest, Generation, Token, TokenLogprob};
use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt as _;

use super::tools::{self, CallParser, Piece, ToolPlan};
use super::{prompt, quotas, GenerationRequest, InferenceError, Input, Target};
use crate::metrics::RequestTimer;
use crate::runtime::Backend;
use crate::AppState;

/// The most generations (prompts times `n`) one request may start.
const MAX_GENERATIONS: usize = 64;

/// Why a choice ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
    /// The answer is one or more tool calls (and the request let the model choose to call).
    ToolCalls,
}

impl Finish {
    /// OpenAI's and Ollama's word for it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
        }
    }
}

/// What an answer tells, in order. Every choice ends with `Finished`; the answer ends with
/// `Usage` (after every choice finished) or `Failed`, and nothing comes after either.
#[derive(Debug)]
pub(crate) enum Output {
    /// The prompt, given back first when the request asked (`echo`): its text, and with
    /// `logprobs` its tokens: the first one's bytes (it has no probability), then each other
    /// token scored.
    Prompt {
        choice: usize,
        text: String,
        scores: Option<PromptScores>,
    },
    /// Log probabilities of the tokens behind the next output of this choice.
    Logprobs {
        choice: usize,
        entries: Vec<TokenLogprob>,
    },
    Text {
        choice: usize,
        text: String,
    },
    /// A tool call starts: its index among the choice's calls and the function's name.
    CallStart {
        choice: usize,
        call: usize,
        name: String,
    },
    /// More of a call's arguments (JSON text).
    CallArguments {
        choice: usize,
        call: usize,
        text: String,
    },
    Finished {
        choice: usize,
        reason: Finish,
    },
    Usage {
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// Generation failed; the detail is in the server log, this is for the caller.
    Failed(String),
}

/// A scored prompt: the first token's bytes (it has no probability), then every other token.
pub(crate) type PromptScores = (Vec<u8>, Vec<TokenLogprob>);

/// A generation under way: what every API's answer repeats, and its outputs.
pub(crate) struct Answer {
    /// A fresh random id (each API adds its own prefix).
    pub(crate) id: String,
    /// Unix seconds.
    pub(crate) created: i64,
    /// `fp_...` over the exact revision, file, backend and settings.
    pub(crate) fingerprint: String,
    /// `repo@commit`.
    pub(crate) revision: String,
    /// Quota limits that applied, for `x-ratelimit-*`.
    pub(crate) limits: domain::quota::Limits,
    pub(crate) prompt_tokens: usize,
    pub(crate) n_choices: usize,
    /// Whether outputs carry log probabilities.
    pub(crate) logprobs: bool,
    /// With `echo`: each prompt's text as given (`None` for token ids, spelled from their bytes),
    /// choice `c` belonging to prompt `c / n`.
    echo: Option<Arc<Vec<Option<String>>>>,
    n: usize,
    events: SelectAll<BoxStream<'static, (usize, Event)>>,
    timer: RequestTimer,
    tools: Option<ToolPlan>,
    /// Per choice, with tools: the parser that finds its calls.
    parsers: Vec<CallParser>,
    ready: VecDeque<Output>,
    completion_tokens: usize,
    ended: bool,
}

/// A whole answer, gathered.
pub(crate) struct Collected {
    pub(crate) choices: Vec<CollectedChoice>,
    pub(crate) prompt_tokens: usize,
    pub(crate) completion_tokens: usize,
}

/// One choice of a gathered answer.
#[derive(Default)]
pub(crate) struct CollectedChoice {
    /// With `echo`: the prompt's text and, with logprobs, its scored tokens.
    pub(crate) prompt: Option<(String, Option<PromptScores>)>,
    pub(crate) text: String,
    pub(crate) calls: Vec<tools::Call>,
    pub(crate) logprobs: Vec<TokenLogprob>,
    pub(crate) reason: Option<Finish>,
}

/// Starts generating for `request` on `target`: builds the prompts, admits the request under
/// the caller's quotas and starts every choice.
pub(crate) async fn generate(state: &AppState, principal: &Principal, target: &Target, request: GenerationRequest) -> Result<Answer, InferenceError> {
    let copy = target.shadow.clone().map(|deployment| (deployment, request.clone()));
    let answer = prepare(state, principal, target, request, false).await?;
    if let Some((deployment, request)) = copy {
        tokio::spawn(shadow(state.clone(), principal.clone(), deployment, request));
    }
    Ok(answer)
}

/// Shadow traffic: the same request on the route's shadow deployment, its answer discarded.
/// It takes no quota of the caller's and costs nothing; its outcome is recorded under that
/// deployment (usage log, account and API `shadow`; `/metrics`), which is what a shadow
/// rollout's analysis reads.
async fn shadow(state: AppState, principal: Principal, deployment: domain::meta::Deployment, request: GenerationRequest) {
    let name = deployment.name.clone();
    let outcome = async {
        let served = state.runtime.get(&state.hub, deployment).await?;
        let target = Target { served, load: std::time::Duration::ZERO, shadow: None };
        prepare(&state, &principal, &target, request, true).await?.collect().await.map_err(|err| InferenceError::invalid(err, None))
    };
    if let Err(err) = outcome.await {
        tracing::debug!(deployment = %name, "a shadow request failed: {err}");
    }
}

/// Builds the prompts, admits the request (a shadow copy takes no quota and is billed at no
/// cost) and starts every choice.
async fn prepare(state: &AppState, principal: &Principal, target: &Target, mut request: GenerationRequest, shadowed: bool) -> Result<Answer, InferenceError> {
    let served = &target.served;
    let Backend::Generate(engine) = &served.backend else {
        return Err(InferenceError::NotGenerative { model: target.name().to_owned() });
    };
    request.tools = request.tools.take().filter(ToolPlan::active);
    if let Some(plan) = &request.tools {
        if request.constraint.is_some() {
            return Err(InferenceError::unsupported("response_format", "a response format together with tools"));
        }
        request.constraint = plan.grammar();
    }
    // The field holding the input, named by errors about it (the input itself is consumed below).
    let param = request.input.param();
    let echo = request.echo.then(|| match &request.input {
        Input::Texts(texts) => Arc::new(texts.iter().cloned().map(Some).collect()),
        Input::Tokens(lists) => Arc::new(vec![None; lists.len()]),
        Input::Chat(_) => Arc::new(vec![None]),
    });
    let prompts = prompts(engine, target, &mut request).await?;
    if prompts.is_empty() || prompts.len() * request.n > MAX_GENERATIONS {
        return Err(InferenceError::invalid(format!("prompt must hold 1 to {MAX_GENERATIONS} prompts (times n)"), Some(param)));
    }
    if prompts.iter().any(Vec::is_empty) {
        return Err(InferenceError::invalid("a prompt has no tokens", Some(param)));
    }
    // The grammar over this model's vocabulary: CPU work the caller chooses, off the async workers.
    let constraint = match request.constraint.clone() {
        Some(grammar) => {
            let engine = engine.clone();
            let constraint = prompt::off_async(move || engine.constrain(&grammar)).await;
            Some(constraint.map_err(|err| InferenceError::invalid(format!("the response format cannot be enforced on this model: {err}"), Some("response_format")))?)
        }
        None => None,
    };
    let prompt_tokens = prompts.iter().map(Vec::len).sum::<usize>();
    let (limits, timer) = if shadowed {
        (domain::quota::Limits::default(), state.metrics.start(target.name()).shadowed(&state.usage, &served.deployment.settings))
    } else {
        let admission = quotas::admit(state, principal, prompt_tokens * request.n).await?;
        (admission.limits.clone(), state.metrics.start(target.name()).billed(&state.usage, principal, request.api, &served.deployment.settings, admission))
    };
    start(engine, target, Started { prompts, param, constraint, limits, timer, echo }, request)
}

/// What `generate` has prepared for `start`.
struct Started {
    prompts: Vec<Vec<Token>>,
    param: &'static str,
    constraint: Option<Constraint>,
    limits: domain::quota::Limits,
    timer: RequestTimer,
    echo: Option<Arc<Vec<Option<String>>>>,
}

/// The request's prompts as tokens: chat messages rendered through the template (with the tools
/// offered), texts tokenized, token ids checked against the vocabulary.
async fn prompts(engine: &Engine, target: &Target, request: &mut GenerationRequest) -> Result<Vec<Vec<Token>>, InferenceError> {
    let param = request.input.param();
    match std::mem::replace(&mut request.input, Input::Texts(Vec::new())) {
        Input::Chat(mut messages) => {
            let Some(chat) = &target.served.chat else {
                return Err(InferenceError::NoChatTemplate { model: target.name().to_owned() });
            };
            let plan = request.tools.as_ref();
            tools::messages_for_template(&mut messages, plan, &chat.source);
            let template_tools = plan.filter(|_| tools::template_renders_tools(&chat.source)).map(ToolPlan::template_tools);
            let tokens = prompt::chat(engine, chat, messages, template_tools).await.map_err(|err| InferenceError::prompt(err, param))?;
            Ok(vec![tokens])
        }
        // Counted before any tokenizing work is spent on them.
        Input::Texts(texts) if texts.len() > MAX_GENERATIONS => Err(InferenceError::invalid(format!("prompt must hold 1 to {MAX_GENERATIONS} prompts (times n)"), Some(param))),
        Input::Texts(texts) => prompt::texts(engine, texts).await.map_err(|err| InferenceError::prompt(err, param)),
        Input::Tokens(lists) => {
            let n_vocab = engine.info().n_vocab;
            if let Some(bad) = lists.iter().flatten().find(|t| **t as usize >= n_vocab) {
                return Err(InferenceError::invalid(format!("token {bad} is outside the vocabulary of {n_vocab}"), Some(param)));
            }
            Ok(lists)
        }
    }
}

/// Starts every prompt times `n` choices; a failure drops those already started, which cancels them.
fn start(engine: &Engine, target: &Target, prepared: Started, request: GenerationRequest) -> Result<Answer, InferenceError> {
    let Started { prompts, param, constraint, limits, mut timer, echo } = prepared;
    let served = &target.served;
    let n_ctx = engine.info().n_ctx;
    let defaults = served.sampling_defaults();
    let params = request.sampling.resolve(&defaults, &request.fallback);
    let prompt_tokens = prompts.iter().map(Vec::len).sum();
    let mut streams = Vec::with_capacity(prompts.len() * request.n);
    for (p, prompt) in prompts.into_iter().enumerate() {
        // A prompt may fill the context only when nothing is generated after it (scoring).
        if prompt.len() > n_ctx || (prompt.len() == n_ctx && request.max_tokens != Some(0)) {
            return Err(InferenceError::context_exceeded(param, format!("the prompt has {} tokens; the model's context holds {n_ctx}", prompt.len())));
        }
        let room = n_ctx - prompt.len();
        // A limit the request set is the caller's (too long is an error); a default never is.
        let max_tokens = match request.max_tokens {
            Some(n) if request.clip_to_context => n.min(room),
            Some(n) => n,
            None => defaults.max_tokens.map_or(room, |n| (n as usize).min(room)),
        };
        for j in 0..request.n {
            let mut params = params.clone();
            // With a seed, each choice gets its own stream.
            params.seed = params.seed.map(|seed| seed.wrapping_add(j as u64));
            // An echoed prompt is always scored: token ids are spelled from the scores' bytes.
            let prompt_logprobs = echo.as_ref().map(|_| request.logprobs.unwrap_or(0));
            let generate = GenerateRequest { prompt: prompt.clone(), params, max_tokens, stop: request.stop.clone(), logprobs: request.logprobs, constraint: constraint.clone(), prompt_logprobs };
            let generation = engine.generate(generate).map_err(|err| {
                timer.reject(&err);
                match err {
                    // The prompt and max_tokens do not fit the context together.
                    engine::InferError::Invalid(message) => InferenceError::context_exceeded(param, message),
                    other => InferenceError::from(other),
                }
            })?;
            timer.track(generation.progress());
            streams.push(events_of(p * request.n + j, generation));
        }
    }
    let parsers = match &request.tools {
        Some(plan) => (0..streams.len()).map(|_| CallParser::for_plan(plan)).collect(),
        None => Vec::new(),
    };
    Ok(Answer {
        id: super::random_id(),
        created: chrono::Utc::now().timestamp(),
        fingerprint: served.fingerprint.clone(),
        revision: served.revision.clone(),
        limits,
        prompt_tokens,
        n_choices: streams.len(),
        logprobs: request.logprobs.is_some(),
        echo,
        n: request.n,
        events: futures::stream::select_all(streams),
        timer,
        tools: request.tools,
        parsers,
        ready: VecDeque::new(),
        completion_tokens: 0,
        ended: false,
    })
}

fn events_of(index: usize, generation: Generation) -> BoxStream<'static, (usize, Event)> {
    futures::stream::unfold(generation, move |mut generation| async move { generation.next().await.map(|event| ((index, event), generation)) }).boxed()
}

impl Answer {
    /// The next output, or `None` after `Usage` or `Failed`. Dropping the answer (a client that
    /// went away) cancels its generations; the request is then charged the work done so far.
    pub(crate) async fn next(&mut self) -> Option<Output> {
        loop {
            if let Some(output) = self.ready.pop_front() {
                return Some(output);
            }
            if self.ended {
                return None;
            }
            match self.events.next().await {
                Some((choice, Event::Text(text))) => {
                    self.timer.token();
                    match self.parsers.get_mut(choice) {
                        Some(parser) => {
                            let pieces = parser.push(&text);
                            self.take_pieces(choice, pieces);
                        }
                        None => return Some(Output::Text { choice, text }),
                    }
                }
                Some((choice, Event::Logprobs(entries))) => return Some(Output::Logprobs { choice, entries }),
                Some((choice, Event::PromptLogprobs { first, scored })) => {
                    let given = self.echo.as_ref().and_then(|texts| texts.get(choice / self.n.max(1)).cloned().flatten());
                    let text = given.unwrap_or_else(|| {
                        let bytes: Vec<u8> = first.iter().chain(scored.iter().flat_map(|e| e.bytes.iter())).copied().collect();
                        String::from_utf8_lossy(&bytes).into_owned()
                    });
                    let scores = self.logprobs.then_some((first, scored));
                    return Some(Output::Prompt { choice, text, scores });
                }
                Some((choice, Event::Done { finish_reason, completion_tokens, .. })) => {
                    self.completion_tokens += completion_tokens;
                    let mut reason = match finish_reason {
                        FinishReason::Stop => Finish::Stop,
                        FinishReason::Length => Finish::Length,
                    };
                    if let Some(parser) = self.parsers.get_mut(choice) {
                        let pieces = parser.finish();
                        let called = parser.calls() > 0;
                        self.take_pieces(choice, pieces);
                        if called && reason == Finish::Stop && self.tools.as_ref().is_some_and(|plan| plan.finish_reason() == "tool_calls") {
                            reason = Finish::ToolCalls;
                        }
                    }
                    self.ready.push_back(Output::Finished { choice, reason });
                }
                Some((_, Event::Failed(err))) => {
                    tracing::error!("failed to generate: {err}");
                    self.timer.fail();
                    self.ended = true;
                    return Some(Output::Failed("generation failed; see the server log".to_owned()));
                }
                None => {
                    self.timer.finish(self.prompt_tokens, self.completion_tokens);
                    self.ended = true;
                    return Some(Output::Usage { prompt_tokens: self.prompt_tokens, completion_tokens: self.completion_tokens });
                }
            }
        }
    }

    fn take_pieces(&mut self, choice: usize, pieces: Vec<Piece>) {
        for piece in pieces {
            self.ready.push_back(match piece {
                Piece::Content(text) => Output::Text { choice, text },
                Piece::Start { index, name } => Output::CallStart { choice, call: index, name },
                Piece::Arguments { index, text } => Output::CallArguments { choice, call: index, text },
            });
        }
    }

    /// The whole answer, or the failure's message for the caller.
    pub(crate) async fn collect(mut self) -> Result<Collected, String> {
        let mut choices: Vec<CollectedChoice> = (0..self.n_choices).map(|_| CollectedChoice::default()).collect();
        while let Some(output) = self.next().await {
            match output {
                Output::Prompt { choice, text, scores } => choices[choice].prompt = Some((text, scores)),
                Output::Logprobs { choice, entries } => choices[choice].logprobs.extend(entries),
                Output::Text { choice, text } => choices[choice].text.push_str(&text),
                Output::CallStart { choice, name, .. } => choices[choice].calls.push(tools::Call { name, arguments: String::new() }),
                Output::CallArguments { choice, call, text } => {
                    if let Some(call) = choices[choice].calls.get_mut(call) {
                        call.arguments.push_str(&text);
                    }
                }
                Output::Finished { choice, reason } => choices[choice].reason = Some(reason),
                Output::Usage { prompt_tokens, completion_tokens } => return Ok(Collected { choices, prompt_tokens, completion_tokens }),
                Output::Failed(message) => return Err(message),
            }
        }
        Err("the engine stopped".to_owned())
    }
}
