//! Batched embedding: one runner thread per embedding model, reached through a bounded channel.
//! Whatever requests are waiting when the runner frees up are embedded together: their inputs
//! are sorted by length and cut into batches of at most `max_batch_tokens` tokens, so similar
//! lengths share a batch. A request whose caller went away is skipped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::{InferError, Token, Tokenizer};

/// A synchronous embedding backend.
pub trait EmbedRunner: Send + 'static {
    /// Length of each embedding.
    fn dims(&self) -> usize;
    /// The most tokens one input may have.
    fn max_tokens(&self) -> usize;
    /// The model's tokenizer, shared with request handlers (`encode_truncating` tells an input
    /// that is too long).
    fn tokenizer(&self) -> Arc<dyn Tokenizer>;
    /// Unit-length embeddings of the inputs, in order.
    fn embed(&mut self, inputs: &[&[Token]]) -> Result<Vec<Vec<f32>>, String>;
    /// The backend's name, part of the fingerprint.
    fn backend(&self) -> String;
    /// Token ids run from 0 to `n_vocab - 1`.
    fn n_vocab(&self) -> usize;
}

/// Settings of an embedding engine.
#[derive(Clone, Debug)]
pub struct EmbedConfig {
    /// Tokens embedded together in one backend call.
    pub max_batch_tokens: usize,
    /// Requests that may wait; past that, `Overloaded` at once.
    pub max_queue: usize,
}

struct Job {
    inputs: Vec<Vec<Token>>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

/// A cheap handle to one embedding model's runner thread.
#[derive(Clone)]
pub struct EmbedEngine {
    jobs: std::sync::mpsc::SyncSender<Job>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
    tokenizer: Arc<dyn Tokenizer>,
    dims: usize,
    max_tokens: usize,
    n_vocab: usize,
    backend: String,
}

impl EmbedEngine {
    /// Starts the runner thread.
    pub fn start(runner: Box<dyn EmbedRunner>, config: EmbedConfig) -> Self {
        let capacity = config.max_queue.max(1);
        let (jobs, inbox) = std::sync::mpsc::sync_channel(capacity);
        let (tokenizer, dims, max_tokens, n_vocab, backend) = (runner.tokenizer(), runner.dims(), runner.max_tokens(), runner.n_vocab(), runner.backend());
        std::thread::Builder::new().name("mantle-embedder".into()).spawn(move || run_loop(runner, config, inbox)).expect("spawn the embedding runner thread");
        EmbedEngine { jobs, admitted: Arc::new(AtomicUsize::new(0)), capacity, tokenizer, dims, max_tokens, n_vocab, backend }
    }

    /// Tokens of `text`, truncated to `max_tokens` as the model's tokenizer truncates, and
    /// whether anything was cut.
    pub fn tokenize(&self, text: &str) -> (Vec<Token>, bool) {
        self.tokenizer.encode_truncating(text, self.max_tokens)
    }

    /// How many tokens `text` takes without the model's special tokens (saturating at the
    /// tokenizer's own truncation length).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.encode_special(text, false).len()
    }

    /// Length of each embedding.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The most tokens one input may have.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Token ids run from 0 to `n_vocab - 1`.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// The backend's name.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.admitted.load(Ordering::Acquire).min(self.capacity)
    }

    /// Embeds `inputs`; `Overloaded` at once when the queue is full.
    pub async fn embed(&self, inputs: Vec<Vec<Token>>) -> Result<Vec<Vec<f32>>, InferError> {
        if let Some(bad) = inputs.iter().find(|i| i.is_empty() || i.len() > self.max_tokens) {
            return Err(InferError::Invalid(format!("an input has {} tokens; this model takes 1 to {}", bad.len(), self.max_tokens)));
        }
        // Checked per request, so one bad id is this caller's 400 and never fails the batch
        // its neighbours share.
        if let Some(bad) = inputs.iter().flatten().find(|t| **t as usize >= self.n_vocab) {
            return Err(InferError::Invalid(format!("token {bad} is outside the vocabulary of {}", self.n_vocab)));
        }
        let _permit = Admission::enter(&self.admitted, self.capacity)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs.try_send(Job { inputs, reply }).map_err(|err| match err {
            std::sync::mpsc::TrySendError::Full(_) => InferError::Overloaded,
            std::sync::mpsc::TrySendError::Disconnected(_) => InferError::Unavailable("the embedding runner stopped".into()),
        })?;
        match answer.await {
            Ok(Ok(vectors)) => Ok(vectors),
            Ok(Err(err)) => Err(InferError::Unavailable(err)),
            Err(_) => Err(InferError::Unavailable("the embedding runner stopped".into())),
        }
    }
}

/// One admitted request, counted until it is dropped.
struct Admission(Arc<AtomicUsize>);

impl Admission {
    fn enter(admitted: &Arc<AtomicUsize>, capacity: usize) -> Result<Admission, InferError> {
        let before = admitted.fetch_add(1, Ordering::AcqRel);
        let permit = Admission(admitted.clone());
        if before >= capacity {
            return Err(InferError::Overloaded);
        }
        Ok(permit)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn run_loop(mut runner: Box<dyn EmbedRunner>, config: EmbedConfig, inbox: std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = inbox.recv() {
        let mut jobs = vec![first];
        while let Ok(more) = inbox.try_recv() {
            jobs.push(more);
        }
        jobs.retain(|job| !job.reply.is_closed());
        // Every input of every waiting job, shortest first.
        let mut order: Vec<(usize, usize)> = jobs.iter().enumerate().flat_map(|(j, job)| (0..job.inputs.len()).map(move |i| (j, i))).collect();
        order.sort_by_key(|&(j, i)| jobs[j].inputs[i].len());
        let mut results: Vec<Vec<Option<Vec<f32>>>> = jobs.iter().map(|job| vec![None; job.inputs.len()]).collect();
        let mut failed: Vec<Option<String>> = vec![None; jobs.len()];
        let mut at = 0;
        while at < order.len() {
            let mut end = at;
            let mut tokens = 0;
            while end < order.len() && (end == at || tokens + jobs[order[end].0].inputs[order[end].1].len() <= config.max_batch_tokens) {
                tokens += jobs[order[end].0].inputs[order[end].1].len();
                end += 1;
            }
            let members: Vec<(usize, usize)> = order[at..end].iter().copied().filter(|&(j, _)| failed[j].is_none()).collect();
            at = end;
            match embed_guarded(runner.as_mut(), &jobs, &members) {
                Ok(vectors) => {
                    for (&(j, i), vector) in members.iter().zip(vectors) {
                        results[j][i] = Some(vector);
                    }
                }
                Err(err) => {
                    // One request's input must not fail the requests batched with it: embed
                    // each job's part of the batch on its own, and fail only those that fail.
                    // Members are in length order, so one job's inputs need not be adjacent.
                    let mut owners: Vec<usize> = members.iter().map(|&(j, _)| j).collect();
                    owners.sort_unstable();
                    owners.dedup();
                    if owners.len() == 1 {
                        failed[owners[0]] = Some(err);
                        continue;
                    }
                    for owner in owners {
                        let part: Vec<(usize, usize)> = members.iter().copied().filter(|&(j, _)| j == owner).collect();
                        match embed_guarded(runner.as_mut(), &jobs, &part) {
                            Ok(vectors) => {
                                for (&(j, i), vector) in part.iter().zip(vectors) {
                                    results[j][i] = Some(vector);
                                }
                            }
                            Err(err) => failed[owner] = Some(err),
                        }
                    }
                }
            }
        }
        for ((job, vectors), failure) in jobs.into_iter().zip(results).zip(failed) {
            let answer = match failure {
                Some(err) => {
                    tracing::error!("failed to embed a request: {err}");
                    Err(err)
                }
                None => Ok(vectors.into_iter().map(|v| v.expect("every input was embedded")).collect()),
            };
            let _ = job.reply.send(answer);
        }
    }
}

/// Runs the backend on some inputs of some jobs; a panic in the backend is that batch's error,
/// never the end of the runner thread.
fn embed_guarded(runner: &mut dyn EmbedRunner, jobs: &[Job], members: &[(usize, usize)]) -> Result<Vec<Vec<f32>>, String> {
    let batch: Vec<&[Token]> = members.iter().map(|&(j, i)| jobs[j].inputs[i].as_slice()).collect();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.embed(&batch))) {
        Ok(Ok(vectors)) if vectors.len() == batch.len() => Ok(vectors),
        Ok(Ok(_)) => Err("the backend returned the wrong number of embeddings".into()),
        Ok(Err(err)) => Err(err),
        Err(panic) => Err(format!("the embedding backend panicked: {}", crate::panic_message(panic.as_ref()))),
    }
}

/// A deterministic embedder for tests: byte tokens, and vectors from byte counts.
pub struct MockEmbedder {
    pub dims: usize,
    pub max_tokens: usize,
    /// Every backend call's batch size, for tests that check batching.
    pub calls: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl EmbedRunner for MockEmbedder {
    fn dims(&self) -> usize {
        self.dims
    }
    fn max_tokens(&self) -> usize {
        self.max_tokens
    }
    fn tokenizer(&self) -> Arc<dyn Tokenizer> {
        Arc::new(crate::mock::ByteTokenizer)
    }
    fn n_vocab(&self) -> usize {
        256
    }
    fn embed(&mut self, inputs: &[&[Token]]) -> Result<Vec<Vec<f32>>, String> {
        self.calls.lock().expect("not poisoned").push(inputs.len());
        // A test hook for backend failures: an input of the single token 0 fails its batch.
        if inputs.iter().any(|input| *input == [0]) {
            return Err("the mock embedder was asked to fail".into());
        }
        Ok(inputs
            .iter()
            .map(|input| {
                let mut v = vec![0f32; self.dims];
                for t in input.iter() {
                    v[*t as usize % self.dims] += 1.0;
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter().map(|x| x / norm).collect()
            })
            .collect())
    }
    fn backend(&self) -> String {
        "mock-embed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(max_queue: usize) -> (EmbedEngine, Arc<std::sync::Mutex<Vec<usize>>>) {
        let mock = MockEmbedder { dims: 8, max_tokens: 64, calls: Default::default() };
        let calls = mock.calls.clone();
        (EmbedEngine::start(Box::new(mock), EmbedConfig { max_batch_tokens: 32, max_queue }), calls)
    }

    #[tokio::test]
    async fn inputs_come_back_in_order_in_token_bounded_batches() {
        let (engine, calls) = engine(8);
        let texts = ["a much longer input than the others", "b", "cc", "a much longer input than the others"];
        let inputs: Vec<Vec<Token>> = texts.iter().map(|t| crate::mock::ByteTokenizer.encode(t)).collect();
        let vectors = engine.embed(inputs).await.unwrap();
        assert_eq!(vectors.len(), 4);
        assert_eq!(vectors[0], vectors[3]);
        assert_ne!(vectors[1], vectors[2]);
        assert!(vectors.iter().all(|v| (v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5));
        // 35 + 1 + 2 + 35 tokens with a 32-token budget: short ones together, long ones alone.
        assert_eq!(*calls.lock().unwrap(), vec![2, 1, 1]);
    }

    #[tokio::test]
    async fn bad_inputs_and_a_full_queue_are_refused() {
        let (engine, _) = engine(1);
        assert!(matches!(engine.embed(vec![vec![]]).await, Err(InferError::Invalid(_))));
        assert!(matches!(engine.embed(vec![vec![1; 65]]).await, Err(InferError::Invalid(_))));
        assert!(matches!(engine.embed(vec![vec![1], vec![300]]).await, Err(InferError::Invalid(message)) if message.contains("300")));
        // One admitted request fills a queue of one; the second is refused at once.
        let held = Admission::enter(&engine.admitted, engine.capacity).unwrap();
        assert!(matches!(engine.embed(vec![vec![1]]).await, Err(InferError::Overloaded)));
        drop(held);
        assert!(engine.embed(vec![vec![1]]).await.is_ok());
    }

    #[test]
    fn r11_a_request_that_fails_the_backend_fails_alone() {
        // Three jobs queued before the runner looks, so they share one batch (driven here
        // directly, without a thread); the one holding the failing input fails alone.
        let mock = MockEmbedder { dims: 8, max_tokens: 64, calls: Default::default() };
        let calls = mock.calls.clone();
        let (jobs, inbox) = std::sync::mpsc::sync_channel(8);
        let mut answers = Vec::new();
        for inputs in [vec![vec![5, 6], vec![7]], vec![vec![0], vec![8]], vec![vec![9]]] {
            let (reply, answer) = tokio::sync::oneshot::channel();
            jobs.send(Job { inputs, reply }).unwrap();
            answers.push(answer);
        }
        drop(jobs);
        run_loop(Box::new(mock), EmbedConfig { max_batch_tokens: 32, max_queue: 8 }, inbox);
        let mut results = answers.into_iter().map(|mut answer| answer.try_recv().unwrap());
        let (good, bad, other) = (results.next().unwrap(), results.next().unwrap(), results.next().unwrap());
        assert_eq!(good.unwrap().len(), 2);
        assert!(bad.unwrap_err().contains("asked to fail"));
        assert_eq!(other.unwrap().len(), 1);
        // One shared batch of all five inputs, then each job on its own, each once.
        assert_eq!(*calls.lock().unwrap(), vec![5, 2, 2, 1]);
    }
}
