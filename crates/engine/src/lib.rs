//! The inference engine. Queueing, admission, continuous batching, sampling, stop handling,
//! cancellation and streaming are written once here; backends implement the narrow, synchronous,
//! batch-level `ModelRunner` and live on their own OS thread, reached through channels.
//!
//! Only the deterministic `mock` runner exists so far; real backends (llama.cpp for generation,
//! an embedding runner) plug in behind the same trait.

pub mod bert;
mod dense;
mod elementwise;
pub mod embed;
pub mod grammar;
pub mod hf_tokenizer;
#[cfg(feature = "llama")]
pub mod llama;
mod load;
pub mod mock;
mod sampler;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use dense::Precision;
pub use elementwise::dot_rows;
pub use embed::{EmbedConfig, EmbedEngine, EmbedRunner};
pub use load::{load_embedder, load_runner, EmbedderConfig, RunnerConfig};
pub use sampler::{Sampler, SamplingParams};

/// A token id.
pub type Token = u32;

/// What can go wrong, by what the caller can do.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The queue is full: retry later (429).
    #[error("the engine is at capacity; retry later")]
    Overloaded,
    /// The request cannot be served as asked (400).
    #[error("{0}")]
    Invalid(String),
    /// The engine stopped or the backend failed (500/503).
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}

/// What a runner tells the engine about its model.
#[derive(Clone, Debug)]
pub struct RunnerInfo {
    pub n_vocab: usize,
    pub n_ctx: usize,
    pub eos: Token,
    /// The beginning-of-sequence token, when the model has one.
    pub bos: Option<Token>,
    /// The backend and its version (e.g. `llama.cpp`), part of every response's fingerprint.
    pub backend: String,
    /// Memory the loaded model holds: weights plus its KV cache (an estimate, for the budget).
    pub memory_bytes: u64,
}

/// Text to tokens, callable from any thread (request handlers count and check prompts before
/// they reach the runner thread).
pub trait Tokenizer: Send + Sync {
    /// Tokens of `text`; special-token markup in it (chat templates) is parsed as such.
    fn encode(&self, text: &str) -> Vec<Token>;
    /// Tokens of a prompt made of pieces: markup (`false`: special-token text parsed as such) and
    /// caller text (`true`: taken literally, never turned into special tokens). A BOS is added as
    /// `encode` would, at the start only.
    fn encode_pieces(&self, pieces: &[(&str, bool)]) -> Vec<Token> {
        self.encode(&pieces.iter().map(|(text, _)| *text).collect::<String>())
    }
    /// The texts `encode` turns into special tokens (none for a tokenizer without any).
    fn special_texts(&self) -> Arc<Vec<String>> {
        Arc::default()
    }
    /// Tokens of `text` with special-token text parsed as such, and the model's own special
    /// tokens (a BOS) added only when `add_special` (vLLM's `/tokenize`).
    fn encode_special(&self, text: &str, add_special: bool) -> Vec<Token>;
    /// The bytes `tokens` stand for, special tokens spelled as their text (what `encode` parses
    /// back into them).
    fn decode(&self, tokens: &[Token]) -> Vec<u8>;
    /// Tokens of `text` cut to at most `max` (keeping the closing special token, as a
    /// tokenizer's own truncation does for right-truncated encoders), and whether anything was cut.
    fn encode_truncating(&self, text: &str, max: usize) -> (Vec<Token>, bool) {
        truncate_keeping_end(self.encode(text), max)
    }
}

/// `ids` cut to at most `max`, keeping the last one (an encoder's closing special token, such as
/// BERT's `[SEP]`); whether anything was cut.
pub fn truncate_keeping_end(mut ids: Vec<Token>, max: usize) -> (Vec<Token>, bool) {
    if ids.len() <= max {
        return (ids, false);
    }
    let last = ids.last().copied();
    ids.truncate(max);
    if let (Some(last), Some(end)) = (last, ids.last_mut()) {
        *end = last;
    }
    (ids, true)
}

/// One sequence's work in a step: tokens to feed (a prefill chunk, or the last sampled token).
#[derive(Debug)]
pub struct SeqStep {
    pub slot: usize,
    pub tokens: Vec<Token>,
    /// Whether the runner must give the logits after every fed token (scoring a prompt), not
    /// only after the last.
    pub all_logits: bool,
    /// Filled by the runner: the logits after the last fed token, or with `all_logits` one row
    /// of `n_vocab` after each fed token, in order.
    pub logits: Vec<f32>,
}

/// A batch-level, synchronous model backend. It owns its KV slots; the engine never touches them.
pub trait ModelRunner: Send + 'static {
    /// Facts about the model.
    fn info(&self) -> RunnerInfo;
    /// The model's tokenizer, shared with request handlers.
    fn tokenizer(&self) -> Arc<dyn Tokenizer>;
    /// The bytes one token stands for.
    fn token_bytes(&self, token: Token) -> Vec<u8>;
    /// Feeds every sequence its tokens in one batch and fills each `logits`.
    fn step(&mut self, batch: &mut [SeqStep]) -> Result<(), String>;
    /// Frees a slot's KV state.
    fn release(&mut self, slot: usize);
    /// Keeps the first `keep` positions of a slot's KV state and drops the rest, so a new
    /// sequence can start from a shared prompt prefix. `false` if the backend cannot; the engine
    /// then releases the slot and prefills from the start.
    fn truncate(&mut self, slot: usize, keep: usize) -> bool {
        let _ = (slot, keep);
        false
    }
    /// Whether a token ends generation (models may have several end-of-generation tokens).
    fn is_end(&self, token: Token) -> bool {
        token == self.info().eos
    }
}

/// A generation request, already tokenized and validated.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: Vec<Token>,
    pub params: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// `Some(k)`: send each sampled token's log probability and the `k` likeliest alternatives.
    pub logprobs: Option<usize>,
    /// Output constrained to a grammar (structured output, forced tool calls), started with
    /// [`Engine::constrain`]: every sampled token keeps the text on a path the grammar accepts,
    /// and generation stops when it is complete.
    pub constraint: Option<grammar::Constraint>,
    /// `Some(k)`: score the prompt too (OpenAI's `echo` with `logprobs`): every prompt token after
    /// the first gets its log probability and the `k` likeliest alternatives, sent as one
    /// `Event::PromptLogprobs` before anything generated. Such a prompt is prefilled whole (a
    /// cached prefix has no logits to give), `max_tokens` may be 0 (score only), and an end
    /// token that stops generation is reported with its log probability like any other token.
    pub prompt_logprobs: Option<usize>,
}

/// What a stream receives.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Text produced by one or more tokens (UTF-8 is held back until a character is complete).
    Text(String),
    /// Log probabilities of the tokens sampled since the last event (when the request asked).
    /// They arrive before the text those tokens complete.
    Logprobs(Vec<TokenLogprob>),
    /// The prompt's tokens with their log probabilities (only when `prompt_logprobs` was asked):
    /// the first token's bytes (nothing precedes it, so it has no probability), then every other
    /// prompt token in order.
    PromptLogprobs { first: Vec<u8>, scored: Vec<TokenLogprob> },
    /// The end, with why and the token counts.
    Done { finish_reason: FinishReason, prompt_tokens: usize, completion_tokens: usize },
    /// The backend failed mid-stream.
    Failed(String),
}

/// One sampled token's log probability and its likeliest alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: Token,
    /// The token's bytes (a token may hold part of a UTF-8 character).
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<TopLogprob>,
}

/// An alternative token at one position.
#[derive(Clone, Debug, PartialEq)]
pub struct TopLogprob {
    pub token: Token,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Sequences decoded together.
    pub max_batch: usize,
    /// Requests waiting beyond the running ones before new ones get `Overloaded`.
    pub max_queue: usize,
    /// Prompt tokens fed per sequence per step, so a long prompt does not stall running streams.
    pub prefill_chunk: usize,
    /// Tokens fed per step across all sequences, decoding ones included (prefill gets what is
    /// left, at least one token).
    pub max_step_tokens: usize,
}

enum Command {
    Generate { request: GenerateRequest, events: tokio::sync::mpsc::UnboundedSender<Event>, progress: Arc<Progress> },
}

/// Whether a runner thread is serving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Serving requests.
    Running,
    /// The runner thread died (a panic in the backend or the engine): every request it held got
    /// `Event::Failed`, new ones get `Unavailable`, and the engine must be started again.
    Failed(String),
}

/// A cheap handle to one engine (one model, one runner thread).
#[derive(Clone)]
pub struct Engine {
    commands: std::sync::mpsc::SyncSender<Command>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
    info: RunnerInfo,
    tokenizer: Arc<dyn Tokenizer>,
    batch_size: Arc<AtomicUsize>,
    health: tokio::sync::watch::Receiver<Health>,
    /// The vocabulary indexed for grammar masks.
    vocabulary: Arc<LazyVocabulary>,
}

/// Each token's bytes (by id) and the end tokens: what a grammar index is built from.
type VocabularyBytes = (Vec<Vec<u8>>, Vec<Token>);

/// A model's grammar index, built from its token bytes when a request first needs it.
struct LazyVocabulary {
    /// Token bytes and end tokens, until the index is built.
    bytes: std::sync::Mutex<Option<VocabularyBytes>>,
    built: std::sync::OnceLock<Result<grammar::Vocabulary, String>>,
}

/// Work done for one request so far, counted by the runner thread as it happens, so a request
/// that is cancelled or fails is still charged for what was computed.
#[derive(Debug, Default)]
pub struct Progress {
    prefilled: AtomicUsize,
    generated: AtomicUsize,
}

impl Progress {
    /// Prompt tokens fed to the model (including a reused cached prefix).
    pub fn prefilled(&self) -> usize {
        self.prefilled.load(Ordering::Acquire)
    }

    /// Tokens sampled.
    pub fn generated(&self) -> usize {
        self.generated.load(Ordering::Acquire)
    }
}

/// The stream of one request; dropping it cancels the request and frees its slot.
pub struct Generation {
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    progress: Arc<Progress>,
    /// Set once `Done` or `Failed` was handed out.
    ended: bool,
    _permit: Permit,
}

impl Generation {
    /// The next event. The stream always ends with `Done` or `Failed`: a runner that went away
    /// without saying so (its thread died) reads as `Failed`, never as a quiet end.
    pub async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        let event = self.events.recv().await.unwrap_or_else(|| Event::Failed("the model's runner stopped".into()));
        self.ended = matches!(event, Event::Done { .. } | Event::Failed(_));
        Some(event)
    }

    /// The work done for this request so far.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }
}

struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Engine {
    /// Starts the runner thread.
    pub fn start(runner: Box<dyn ModelRunner>, config: EngineConfig) -> Self {
        let info = runner.info();
        let tokenizer = runner.tokenizer();
        // Token bytes for grammar masks; the index over them is built on the first constrained request.
        let ends: Vec<Token> = (0..info.n_vocab as Token).filter(|t| runner.is_end(*t)).collect();
        let bytes: Vec<Vec<u8>> = (0..info.n_vocab as Token).map(|t| if ends.contains(&t) { Vec::new() } else { runner.token_bytes(t) }).collect();
        let vocabulary = Arc::new(LazyVocabulary { bytes: std::sync::Mutex::new(Some((bytes, ends))), built: std::sync::OnceLock::new() });
        let capacity = config.max_batch + config.max_queue;
        let (commands, inbox) = std::sync::mpsc::sync_channel(capacity.max(1));
        let batch_size = Arc::new(AtomicUsize::new(0));
        let batch_size_seen = batch_size.clone();
        let (health_tx, health) = tokio::sync::watch::channel(Health::Running);
        std::thread::Builder::new()
            .name("mantle-runner".into())
            .spawn(move || {
                // A panic anywhere in a step (the backend, sampling, a grammar) must not end the
                // thread silently: unwinding drops every request's sender, so their streams read
                // `Failed`, and the health watch tells the owner to start the engine again. The
                // runner's state is not trusted after a panic; it is dropped with the thread.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_loop(runner, config, inbox, &batch_size_seen)));
                if let Err(panic) = outcome {
                    let message = panic_message(panic.as_ref());
                    tracing::error!("the runner thread panicked: {message}");
                    batch_size_seen.store(0, Ordering::Relaxed);
                    let _ = health_tx.send(Health::Failed(message));
                }
            })
            .expect("spawn the runner thread");
        Engine { commands, admitted: Arc::new(AtomicUsize::new(0)), capacity, info, tokenizer, batch_size, health, vocabulary }
    }

    /// Whether the runner thread is serving.
    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// A watch on the runner's health, to react when it fails.
    pub fn watch_health(&self) -> tokio::sync::watch::Receiver<Health> {
        self.health.clone()
    }

    /// A constraint following `grammar` over this model's vocabulary, for a request's
    /// `constraint`. Compiling a grammar is CPU work the caller chooses: call it off the async
    /// workers. The vocabulary index is built on the first call.
    pub fn constrain(&self, grammar: &grammar::Grammar) -> Result<grammar::Constraint, String> {
        let vocabulary = self.vocabulary.built.get_or_init(|| {
            let (bytes, ends) = self.vocabulary.bytes.lock().expect("not poisoned").take().unwrap_or_default();
            grammar::Vocabulary::new(bytes, &ends)
        });
        vocabulary.as_ref().map_err(Clone::clone)?.start(grammar)
    }

    /// The model's facts.
    pub fn info(&self) -> &RunnerInfo {
        &self.info
    }

    /// Tokens of `text`, on the caller's thread.
    pub fn tokenize(&self, text: &str) -> Vec<Token> {
        self.tokenizer.encode(text)
    }

    /// Tokens of prompt pieces (see `Tokenizer::encode_pieces`), on the caller's thread.
    pub fn tokenize_pieces(&self, pieces: &[(&str, bool)]) -> Vec<Token> {
        self.tokenizer.encode_pieces(pieces)
    }

    /// The model's tokenizer, for handlers that tokenize or decode on their own threads.
    pub fn tokenizer(&self) -> &Arc<dyn Tokenizer> {
        &self.tokenizer
    }

    /// The texts the tokenizer turns into special tokens.
    pub fn special_texts(&self) -> Arc<Vec<String>> {
        self.tokenizer.special_texts()
    }

    /// Sequences in the latest step (0 when idle).
    pub fn batch_size(&self) -> usize {
        self.batch_size.load(Ordering::Relaxed)
    }

    /// Requests admitted and not yet finished (running plus waiting).
    pub fn in_flight(&self) -> usize {
        self.admitted.load(Ordering::Acquire).min(self.capacity)
    }

    /// Queues a generation, or answers `Overloaded` at once when the queue is full.
    pub fn generate(&self, request: GenerateRequest) -> Result<Generation, InferError> {
        if request.prompt.is_empty() {
            return Err(InferError::Invalid("the prompt is empty".into()));
        }
        if request.prompt.len() + request.max_tokens > self.info.n_ctx {
            return Err(InferError::Invalid(format!("prompt ({} tokens) plus max_tokens ({}) exceed the context of {}", request.prompt.len(), request.max_tokens, self.info.n_ctx)));
        }
        // Admission is counted here, not in the channel, so a full engine answers at once.
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel);
        let permit = Permit(self.admitted.clone());
        if admitted >= self.capacity {
            return Err(InferError::Overloaded);
        }
        if let Health::Failed(why) = self.health() {
            return Err(InferError::Unavailable(format!("the runner failed ({why})")));
        }
        // Unbounded per stream, yet bounded by max_tokens: a slow client never stalls the batch.
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let progress = Arc::new(Progress::default());
        self.commands.try_send(Command::Generate { request, events: events_tx, progress: progress.clone() }).map_err(|err| match err {
            std::sync::mpsc::TrySendError::Full(_) => InferError::Overloaded,
            std::sync::mpsc::TrySendError::Disconnected(_) => InferError::Unavailable("the runner thread stopped".into()),
        })?;
        Ok(Generation { events, progress, ended: false, _permit: permit })
    }
}

struct Active {
    slot: usize,
    request: GenerateRequest,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    progress: Arc<Progress>,
    sampler: Sampler,
    fed: usize,
    /// The tokens fed into this sequence's KV state so far.
    kv: Vec<Token>,
    generated: Vec<Token>,
    pending_bytes: Vec<u8>,
    text: String,
    /// Bytes of `text` already sent; the rest may be the start of a stop sequence.
    sent: usize,
    next_input: Option<Token>,
    constraint: Option<grammar::Constraint>,
    /// With `prompt_logprobs`: the prompt tokens scored so far.
    prompt_scores: Vec<TokenLogprob>,
}

fn run_loop(mut runner: Box<dyn ModelRunner>, config: EngineConfig, inbox: std::sync::mpsc::Receiver<Command>, batch_size: &AtomicUsize) {
    let mut free: Vec<usize> = (0..config.max_batch).rev().collect();
    // Per slot: the tokens its KV state still holds from the sequence that last used it, so a
    // new prompt sharing a prefix with them (the chat template, a system prompt, earlier turns)
    // skips prefilling that prefix.
    let mut cached: Vec<Vec<Token>> = vec![Vec::new(); config.max_batch];
    let mut waiting: std::collections::VecDeque<Command> = std::collections::VecDeque::new();
    let mut active: Vec<Active> = Vec::new();
    // End-of-generation tokens, masked out for requests that ignore them.
    let end_tokens: Vec<Token> = (0..runner.info().n_vocab as Token).filter(|t| runner.is_end(*t)).collect();
    loop {
        // Block only when idle; otherwise take what has arrived and keep decoding.
        if active.is_empty() && waiting.is_empty() {
            batch_size.store(0, Ordering::Relaxed);
            match inbox.recv() {
                Ok(command) => waiting.push_back(command),
                Err(_) => return,
            }
        }
        while let Ok(command) = inbox.try_recv() {
            waiting.push_back(command);
        }
        while let (Some(_), false) = (free.last(), waiting.is_empty()) {
            let Command::Generate { request, events, progress } = waiting.pop_front().expect("checked non-empty");
            if events.is_closed() {
                continue;
            }
            // The free slot whose cached tokens share the longest prefix with this prompt; at
            // least one prompt token is always fed, for the logits.
            let limit = request.prompt.len() - 1;
            let candidates = free.iter().enumerate().map(|(i, slot)| (i, common_prefix(&cached[*slot], &request.prompt).min(limit)));
            // A seeded request prefills its whole prompt, as it would on an idle engine: a
            // backend's kernels may round differently for a one-token tail than for the whole
            // prompt (llama.cpp's F16 matrix code does), and the same seed must give the same
            // text. It takes the slot whose cache is least useful to others.
            // A scored prompt needs the logits of every position, so it takes no cached prefix either.
            let seeded = request.params.seed.is_some() || request.prompt_logprobs.is_some();
            let (position, shared) = if seeded { candidates.min_by_key(|(i, n)| (*n, *i)).map(|(i, _)| (i, 0)) } else { candidates.max_by_key(|(i, n)| (*n, *i)) }.expect("checked non-empty");
            let slot = free.remove(position);
            let reused = if shared > 0 && runner.truncate(slot, shared) {
                shared
            } else {
                if !cached[slot].is_empty() {
                    runner.release(slot);
                }
                0
            };
            cached[slot].clear();
            let sampler = Sampler::new(request.params.clone());
            let kv = request.prompt[..reused].to_vec();
            let constraint = request.constraint.clone();
            // A reused cached prefix counts as fed: a finished request is charged its whole prompt too.
            progress.prefilled.store(reused, Ordering::Release);
            active.push(Active { slot, request, events, progress, sampler, fed: reused, kv, generated: Vec::new(), pending_bytes: Vec::new(), text: String::new(), sent: 0, next_input: None, constraint, prompt_scores: Vec::new() });
        }
        // Dropped clients cancel their sequences and free their slots.
        active.retain_mut(|seq| {
            if seq.events.is_closed() {
                cached[seq.slot] = std::mem::take(&mut seq.kv);
                free.push(seq.slot);
                false
            } else {
                true
            }
        });
        if active.is_empty() {
            continue;
        }
        // Every decoding sequence feeds its last token; prefilling ones share what is left of the
        // step's token budget, oldest first, so a burst of long prompts cannot stall the streams
        // already running for longer than one budget's worth of prefill.
        let decoding = active.iter().filter(|seq| seq.next_input.is_some()).count();
        // The budget counts the decoding tokens too: a step that fits one physical batch of the
        // backend runs in one pass over the weights.
        let mut budget = config.max_step_tokens.saturating_sub(decoding).max(1);
        let mut included: Vec<usize> = Vec::with_capacity(active.len());
        let mut batch: Vec<SeqStep> = Vec::with_capacity(active.len());
        for (index, seq) in active.iter().enumerate() {
            let (tokens, all_logits) = match seq.next_input {
                Some(token) => (vec![token], false),
                None => {
                    let n = config.prefill_chunk.min(seq.request.prompt.len() - seq.fed).min(budget);
                    if n == 0 {
                        continue;
                    }
                    budget -= n;
                    (seq.request.prompt[seq.fed..seq.fed + n].to_vec(), seq.request.prompt_logprobs.is_some())
                }
            };
            included.push(index);
            batch.push(SeqStep { slot: seq.slot, tokens, all_logits, logits: Vec::new() });
        }
        debug_assert!(batch.len() >= decoding);
        batch_size.store(batch.len(), Ordering::Relaxed);
        if let Err(err) = runner.step(&mut batch) {
            tracing::error!("failed to run a batch step: {err}");
            for seq in active.drain(..) {
                let _ = seq.events.send(Event::Failed(err.clone()));
                runner.release(seq.slot);
                cached[seq.slot].clear();
                free.push(seq.slot);
            }
            continue;
        }
        let mut finished = Vec::new();
        for (index, step) in included.into_iter().zip(batch) {
            let seq = &mut active[index];
            seq.kv.extend_from_slice(&step.tokens);
            let mut raw_logits = step.logits;
            if step.all_logits {
                match score_prompt(runner.as_ref(), seq, raw_logits, step.tokens.len()) {
                    Ok(last) => raw_logits = last,
                    Err(err) => {
                        tracing::error!("{err}");
                        let _ = seq.events.send(Event::Failed(err));
                        finished.push((index, FinishReason::Stop));
                        continue;
                    }
                }
            }
            if seq.next_input.is_none() {
                seq.fed += step.tokens.len();
                seq.progress.prefilled.fetch_add(step.tokens.len(), Ordering::AcqRel);
                if seq.fed < seq.request.prompt.len() {
                    continue; // still prefilling: no token sampled yet
                }
                if seq.request.prompt_logprobs.is_some() {
                    let first = runner.token_bytes(seq.request.prompt[0]);
                    let _ = seq.events.send(Event::PromptLogprobs { first, scored: std::mem::take(&mut seq.prompt_scores) });
                }
                if seq.request.max_tokens == 0 {
                    finished.push((index, FinishReason::Length));
                    continue; // scoring only
                }
            }
            let history: Vec<Token> = seq.request.prompt.iter().chain(seq.generated.iter()).copied().collect();
            let mut logits = raw_logits.clone();
            if seq.request.params.ignore_eos {
                for end in &end_tokens {
                    if let Some(logit) = logits.get_mut(*end as usize) {
                        *logit = f32::NEG_INFINITY;
                    }
                }
            }
            if let Some(constraint) = &mut seq.constraint {
                let mask = match constraint.mask() {
                    Ok(mask) => mask,
                    Err(err) => {
                        tracing::error!("the grammar could not compute a mask ({err}); ending the sequence");
                        finished.push((index, FinishReason::Stop));
                        continue;
                    }
                };
                for (token, logit) in logits.iter_mut().enumerate() {
                    if !mask.allows(token as Token) {
                        *logit = f32::NEG_INFINITY;
                    }
                }
                let may_end = mask.can_end && !seq.request.params.ignore_eos;
                for end in &end_tokens {
                    logits[*end as usize] = if may_end { raw_logits[*end as usize] } else { f32::NEG_INFINITY };
                }
                if !may_end && logits.iter().all(|l| *l == f32::NEG_INFINITY) {
                    // Nothing the grammar accepts can follow.
                    finished.push((index, FinishReason::Stop));
                    continue;
                }
            }
            let token = seq.sampler.sample(&logits, &history);
            if runner.is_end(token) {
                // Scoring clients (echo) read the last entry as the generated token: it is there
                // even when it is the end.
                if let (Some(top), Some(_)) = (seq.request.logprobs, seq.request.prompt_logprobs) {
                    let _ = seq.events.send(Event::Logprobs(vec![token_logprob(runner.as_ref(), &raw_logits, token, top)]));
                    seq.generated.push(token);
                    seq.progress.generated.fetch_add(1, Ordering::AcqRel);
                }
                finished.push((index, FinishReason::Stop));
                continue;
            }
            if let Some(top) = seq.request.logprobs {
                let _ = seq.events.send(Event::Logprobs(vec![token_logprob(runner.as_ref(), &raw_logits, token, top)]));
            }
            seq.generated.push(token);
            seq.progress.generated.fetch_add(1, Ordering::AcqRel);
            seq.next_input = Some(token);
            let bytes = runner.token_bytes(token);
            let mut complete = false;
            if let Some(constraint) = &mut seq.constraint {
                if !constraint.advance(token) {
                    tracing::error!("a sampled token left the grammar; ending the sequence");
                    complete = true;
                }
                complete |= constraint.is_finished();
            }
            seq.pending_bytes.extend(bytes);
            let piece = take_complete_utf8(&mut seq.pending_bytes);
            seq.text.push_str(&piece);
            // A stop sequence ends the stream without sending any of itself: text that could be
            // the start of one is held back until it is known not to be.
            let unsent = &seq.text[seq.sent..];
            if let Some(at) = seq.request.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| unsent.find(s.as_str())).min() {
                if at > 0 {
                    let _ = seq.events.send(Event::Text(unsent[..at].to_owned()));
                }
                seq.sent = seq.text.len();
                finished.push((index, FinishReason::Stop));
                continue;
            }
            let hold = seq.request.stop.iter().map(|s| partial_stop_suffix(unsent, s)).max().unwrap_or(0);
            let ready = unsent.len() - hold;
            if ready > 0 {
                // A gone client is noticed and cancelled at the top of the next round.
                let _ = seq.events.send(Event::Text(unsent[..ready].to_owned()));
                seq.sent += ready;
            }
            if complete {
                // The grammar's output is whole: nothing but the end may follow.
                if seq.sent < seq.text.len() {
                    let _ = seq.events.send(Event::Text(seq.text[seq.sent..].to_owned()));
                    seq.sent = seq.text.len();
                }
                finished.push((index, FinishReason::Stop));
            } else if seq.generated.len() >= seq.request.max_tokens {
                finished.push((index, FinishReason::Length));
            }
        }
        for (index, reason) in finished.into_iter().rev() {
            // remove, not swap_remove: the batch keeps its order from step to step.
            let seq = active.remove(index);
            // Held-back text that no stop sequence completed is real output.
            if reason == FinishReason::Length && seq.sent < seq.text.len() {
                let _ = seq.events.send(Event::Text(seq.text[seq.sent..].to_owned()));
            }
            let _ = seq.events.send(Event::Done { finish_reason: reason, prompt_tokens: seq.request.prompt.len(), completion_tokens: seq.generated.len() });
            cached[seq.slot] = seq.kv;
            free.push(seq.slot);
        }
    }
}

/// Scores the prompt tokens a prefill chunk of `fed` tokens predicts (row `r` of `logits` is what
/// followed the chunk's token `r`, so it scores the prompt token after it) and gives back the
/// last row, which predicts the first generated token.
fn score_prompt(runner: &dyn ModelRunner, seq: &mut Active, logits: Vec<f32>, fed: usize) -> Result<Vec<f32>, String> {
    let n_vocab = runner.info().n_vocab;
    if fed == 0 || logits.len() != fed * n_vocab {
        return Err(format!("the backend gave {} logits for {fed} tokens of a vocabulary of {n_vocab}", logits.len()));
    }
    let top = seq.request.prompt_logprobs.unwrap_or(0);
    for (r, row) in logits.chunks_exact(n_vocab).enumerate() {
        if let Some(next) = seq.request.prompt.get(seq.fed + r + 1) {
            seq.prompt_scores.push(token_logprob(runner, row, *next, top));
        }
    }
    Ok(logits[(fed - 1) * n_vocab..].to_vec())
}

/// How many leading tokens two sequences share.
fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The length of the longest proper prefix of `stop` that `text` ends with (0 if none). Only
/// prefixes that end at a character boundary of `stop` count (text is whole characters).
fn partial_stop_suffix(text: &str, stop: &str) -> usize {
    stop.char_indices().map(|(at, _)| at).filter(|k| *k > 0).rev().find(|k| text.ends_with(&stop[..*k])).unwrap_or(0)
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload.downcast_ref::<&str>().map(|s| (*s).to_owned()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The log probability of `token` and the `top` likeliest alternatives, from the model's raw
/// logits (before temperature, penalties and masks).
fn token_logprob(runner: &dyn ModelRunner, logits: &[f32], token: Token, top: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
    let logprob = |t: Token| logits.get(t as usize).map_or(f32::NEG_INFINITY, |l| l - log_sum);
    let mut top_tokens: Vec<Token> = Vec::new();
    if top > 0 {
        let mut order: Vec<Token> = (0..logits.len() as Token).collect();
        let k = top.min(order.len());
        order.select_nth_unstable_by(k.saturating_sub(1), |a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
        order.truncate(k);
        order.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
        top_tokens = order;
    }
    TokenLogprob { token, bytes: runner.token_bytes(token), logprob: logprob(token), top: top_tokens.into_iter().map(|t| TopLogprob { token: t, bytes: runner.token_bytes(t), logprob: logprob(t) }).collect() }
}

/// Takes the longest valid UTF-8 prefix out of `bytes`, leaving an incomplete character behind.
fn take_complete_utf8(bytes: &mut Vec<u8>) -> String {
    let valid = match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(err) => match err.error_len() {
            // Invalid bytes (not just incomplete) are replaced rather than held forever.
            Some(_) => {
                let text = String::from_utf8_lossy(bytes).into_owned();
                bytes.clear();
                return text;
            }
            None => err.valid_up_to(),
        },
    };
    let rest = bytes.split_off(valid);
    String::from_utf8(std::mem::replace(bytes, rest)).expect("checked valid UTF-8")
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod utf8_tests {
    #[test]
    fn split_characters_are_held_back() {
        let mut bytes = "hé".as_bytes()[..2].to_vec();
        assert_eq!(super::take_complete_utf8(&mut bytes), "h");
        bytes.push(0xa9);
        assert_eq!(super::take_complete_utf8(&mut bytes), "é");
        assert!(bytes.is_empty());
    }
}
