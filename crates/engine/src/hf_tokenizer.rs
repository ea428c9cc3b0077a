//! Encoder tokenization with Hugging Face's `tokenizers` crate (what text-embeddings-inference
//! uses), so every `tokenizer.json` behaves exactly as it does in Python: its normalizer
//! sequence, pre-tokenizer, model (WordPiece, BPE, Unigram...), added tokens and post-processor.
//! Truncation is sentence-transformers': at `max_seq_length` when the model names one (else at
//! the file's own truncation length), in the file's direction and strategy, never past the
//! model's positions; padding is off (inputs are packed, never padded).

use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

use crate::{Token, Tokenizer};

/// No tokenizer in use makes fewer tokens than one per this many bytes of text, so text past
/// `max_len` times this can be cut before tokenizing without changing the (truncated) result.
const MAX_BYTES_PER_TOKEN: usize = 64;

/// A `tokenizer.json` with the sentence-transformers prompt put before every text.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    /// The most tokens one text becomes, special tokens included.
    max_len: usize,
    /// `config_sentence_transformers.json`'s default prompt (e.g. `"query: "`), or empty.
    prompt: String,
}

impl HfTokenizer {
    /// Reads `tokenizer.json`; texts are truncated at `max_len` tokens (sentence-transformers'
    /// `max_seq_length`) or, without one, at the file's own truncation length, and never past
    /// `cap` (the model's positions).
    pub fn from_json(json: &[u8], max_len: Option<usize>, cap: usize, prompt: String) -> Result<Self, String> {
        let mut inner = tokenizers::Tokenizer::from_bytes(json).map_err(|e| format!("tokenizer.json: {e}"))?;
        let (direction, strategy, own) = match inner.get_truncation() {
            Some(own) => (own.direction, own.strategy, Some(own.max_length)),
            None => (TruncationDirection::Right, TruncationStrategy::LongestFirst, None),
        };
        let limit = max_len.or(own).unwrap_or(cap).min(cap).max(1);
        inner.with_truncation(Some(TruncationParams { direction, strategy, max_length: limit, stride: 0 })).map_err(|e| format!("tokenizer.json truncation: {e}"))?;
        inner.with_padding(None);
        Ok(HfTokenizer { inner, max_len: limit, prompt })
    }

    /// The most tokens one text becomes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Tokens of `text` (with the prompt before it), truncated as configured, and whether
    /// anything was cut.
    fn encode_checked(&self, text: &str) -> (Vec<Token>, bool) {
        let text = if self.prompt.is_empty() { std::borrow::Cow::Borrowed(text) } else { std::borrow::Cow::Owned(format!("{}{text}", self.prompt)) };
        // A text far longer than any input is cut first (at a character boundary), so its size
        // never decides the work; what is cut would be truncated away anyway.
        let bound = self.max_len.saturating_mul(MAX_BYTES_PER_TOKEN);
        let (text, cut) = if text.len() > bound {
            let mut end = bound;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (&text[..end], true)
        } else {
            (&text[..], false)
        };
        match self.inner.encode_fast(text, true) {
            Ok(encoding) => {
                let truncated = cut || !encoding.get_overflowing().is_empty();
                (encoding.get_ids().to_vec(), truncated)
            }
            Err(err) => {
                // The library only fails on inputs it cannot represent; an empty result is a
                // 400 ("no tokens") for the caller.
                tracing::warn!("tokenizer failed on an input: {err}");
                (Vec::new(), false)
            }
        }
    }
}

impl Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Vec<Token> {
        self.encode_checked(text).0
    }

    /// The text alone (without the default prompt), truncated at the model's length.
    fn encode_special(&self, text: &str, add_special: bool) -> Vec<Token> {
        self.inner.encode_fast(text, add_special).map(|e| e.get_ids().to_vec()).unwrap_or_default()
    }

    fn decode(&self, tokens: &[Token]) -> Vec<u8> {
        self.inner.decode(tokens, false).unwrap_or_default().into_bytes()
    }

    fn encode_truncating(&self, text: &str, max: usize) -> (Vec<Token>, bool) {
        let (ids, truncated) = self.encode_checked(text);
        if ids.len() <= max {
            return (ids, truncated);
        }
        let (ids, _) = crate::truncate_keeping_end(ids, max);
        (ids, true)
    }
}
