//! A deterministic runner for tests: byte tokens, logits that depend only on a sequence's own
//! history (never on its batch neighbours), and per-slot state like a real KV cache.

use std::sync::Arc;

use crate::{ModelRunner, RunnerInfo, SeqStep, Token, Tokenizer};

/// The end-of-sequence token: one past the 256 byte tokens.
pub const EOS: Token = 256;

/// The mock model.
pub struct MockRunner {
    n_ctx: usize,
    slots: std::collections::HashMap<usize, Vec<Token>>,
    /// Every step's batch sizes, for tests that check batching happened.
    pub steps: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    /// Every step's token count.
    pub step_tokens: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    /// Every step's slots, in batch order.
    pub step_slots: std::sync::Arc<std::sync::Mutex<Vec<Vec<usize>>>>,
    /// What `info().memory_bytes` reports (0 unless a test sets it).
    pub memory_bytes: u64,
    /// Fault injection: every step fails (a deployment that errors).
    pub fail: bool,
}

impl MockRunner {
    /// A mock with a context length.
    pub fn new(n_ctx: usize) -> Self {
        MockRunner { n_ctx, slots: Default::default(), steps: Default::default(), step_tokens: Default::default(), step_slots: Default::default(), memory_bytes: 0, fail: false }
    }
}

impl ModelRunner for MockRunner {
    fn info(&self) -> RunnerInfo {
        RunnerInfo { n_vocab: 257, n_ctx: self.n_ctx, eos: EOS, bos: None, backend: "mock".into(), memory_bytes: self.memory_bytes }
    }

    fn tokenizer(&self) -> Arc<dyn Tokenizer> {
        Arc::new(ByteTokenizer)
    }

    fn token_bytes(&self, token: Token) -> Vec<u8> {
        u8::try_from(token).map(|b| vec![b]).unwrap_or_default()
    }

    fn step(&mut self, batch: &mut [SeqStep]) -> Result<(), String> {
        if self.fail {
            return Err("injected fault".into());
        }
        self.steps.lock().expect("not poisoned").push(batch.len());
        self.step_tokens.lock().expect("not poisoned").push(batch.iter().map(|s| s.tokens.len()).sum());
        self.step_slots.lock().expect("not poisoned").push(batch.iter().map(|s| s.slot).collect());
        for seq in batch.iter_mut() {
            let history = self.slots.entry(seq.slot).or_default();
            let start = history.len();
            history.extend(&seq.tokens);
            // A test hook for runner failures: a sequence that says `[[panic]]` crashes the step.
            assert!(!history.windows(9).any(|w| w == b"[[panic]]".map(Token::from)), "the mock runner was asked to panic");
            if history.len() > self.n_ctx {
                return Err(format!("slot {} exceeded the context", seq.slot));
            }
            seq.logits = if seq.all_logits { (start + 1..=history.len()).flat_map(|end| logits_after(&history[..end])).collect() } else { logits_after(history) };
        }
        Ok(())
    }

    fn release(&mut self, slot: usize) {
        self.slots.remove(&slot);
    }

    fn truncate(&mut self, slot: usize, keep: usize) -> bool {
        self.slots.entry(slot).or_default().truncate(keep);
        true
    }
}

/// The logits after `history`: lowercase letters and spaces, chosen by a hash of the last tokens;
/// EOS grows likelier with length.
pub fn logits_after(history: &[Token]) -> Vec<f32> {
    let mut hash: u64 = 1469598103934665603;
    for token in history.iter().rev().take(8) {
        hash = (hash ^ u64::from(*token)).wrapping_mul(1099511628211);
    }
    let mut logits = vec![-10.0f32; 257];
    for (i, letter) in (b'a'..=b'z').chain([b' ']).enumerate() {
        logits[usize::from(letter)] = ((hash >> (i % 60)) & 0xff) as f32 / 64.0;
    }
    logits[EOS as usize] = history.len() as f32 / 40.0 - 2.0;
    if let Some(next) = scripted(history) {
        logits = vec![-10.0; 257];
        logits[next as usize] = 100.0;
    }
    logits
}

/// A test hook: a history holding `[[panic]]` panics the step (see `step`); one holding `[[say:TEXT]]` answers TEXT exactly, byte by byte from the last
/// `assistant\n` (the start of a chat template's answer), then ends.
fn scripted(history: &[Token]) -> Option<Token> {
    let bytes: Vec<u8> = history.iter().map(|t| u8::try_from(*t).unwrap_or(0)).collect();
    let find_last = |needle: &[u8]| bytes.windows(needle.len()).rposition(|w| w == needle);
    let start = find_last(b"[[say:")? + 6;
    let end = start + bytes[start..].windows(2).position(|w| w == b"]]")?;
    let answer_at = find_last(b"assistant\n")? + 10;
    if answer_at < end {
        return None;
    }
    let said = bytes.len() - answer_at;
    Some(bytes[start..end].get(said).map_or(EOS, |b| Token::from(*b)))
}

/// The mock's tokenizer: one token per byte.
pub struct ByteTokenizer;

impl Tokenizer for ByteTokenizer {
    fn encode(&self, text: &str) -> Vec<Token> {
        text.bytes().map(Token::from).collect()
    }

    /// No special tokens to add: the same bytes either way.
    fn encode_special(&self, text: &str, _add_special: bool) -> Vec<Token> {
        self.encode(text)
    }

    /// Byte tokens are their byte; EOS has no text.
    fn decode(&self, tokens: &[Token]) -> Vec<u8> {
        tokens.iter().filter_map(|t| u8::try_from(*t).ok()).collect()
    }
}
