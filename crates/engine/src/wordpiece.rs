//! BERT's WordPiece tokenizer as Hugging Face `tokenizers` configures it in `tokenizer.json`:
//! the BertNormalizer (clean text, pad CJK characters, strip accents, lowercase), the
//! BertPreTokenizer (split on whitespace and punctuation), greedy longest-match WordPiece with a
//! `##` continuation prefix, and `[CLS] ... [SEP]` around each text, truncated to a maximum length.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization as _;

use crate::{Token, Tokenizer};

/// A WordPiece tokenizer read from a `tokenizer.json`.
pub struct WordPiece {
    vocab: HashMap<String, Token>,
    unk: Token,
    cls: Token,
    sep: Token,
    prefix: String,
    max_word_chars: usize,
    lowercase: bool,
    strip_accents: bool,
    handle_chinese_chars: bool,
    clean_text: bool,
    /// The most tokens one text becomes, `[CLS]` and `[SEP]` included.
    max_len: usize,
}

impl WordPiece {
    /// Reads `tokenizer.json` (a WordPiece model with a BertNormalizer); `max_len` caps every
    /// encoded text, special tokens included.
    pub fn from_json(json: &[u8], max_len: usize) -> Result<Self, String> {
        let root: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("tokenizer.json is not JSON: {e}"))?;
        let model = &root["model"];
        if model["type"] != "WordPiece" {
            return Err(format!("tokenizer.json has a {} model; only WordPiece (BERT) is supported", model["type"]));
        }
        let vocab: HashMap<String, Token> = model["vocab"]
            .as_object()
            .ok_or("tokenizer.json has no WordPiece vocabulary")?
            .iter()
            .map(|(piece, id)| id.as_u64().and_then(|id| Token::try_from(id).ok()).map(|id| (piece.clone(), id)).ok_or_else(|| format!("bad id for {piece:?}")))
            .collect::<Result<_, String>>()?;
        let id = |name: &str| vocab.get(name).copied().ok_or_else(|| format!("the vocabulary has no {name}"));
        let unk = id(model["unk_token"].as_str().unwrap_or("[UNK]"))?;
        let normalizer = &root["normalizer"];
        let flag = |key: &str, default: bool| normalizer[key].as_bool().unwrap_or(default);
        let lowercase = flag("lowercase", true);
        Ok(WordPiece {
            unk,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            prefix: model["continuing_subword_prefix"].as_str().unwrap_or("##").to_owned(),
            max_word_chars: model["max_input_chars_per_word"].as_u64().unwrap_or(100) as usize,
            // BertNormalizer: strip_accents null means "follow lowercase".
            strip_accents: normalizer["strip_accents"].as_bool().unwrap_or(lowercase),
            lowercase,
            handle_chinese_chars: flag("handle_chinese_chars", true),
            clean_text: flag("clean_text", true),
            max_len: max_len.max(2),
            vocab,
        })
    }

    /// The vocabulary size (the largest id plus one).
    pub fn vocab_size(&self) -> usize {
        self.vocab.values().max().map_or(0, |m| *m as usize + 1)
    }

    fn normalize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if self.clean_text {
                if c == '\0' || c == '\u{fffd}' || is_format(c) || (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
                    continue;
                }
                if c.is_whitespace() {
                    out.push(' ');
                    continue;
                }
            }
            if self.handle_chinese_chars && is_cjk(c) {
                out.push(' ');
                out.push(c);
                out.push(' ');
            } else {
                out.push(c);
            }
        }
        if self.strip_accents {
            out = out.nfd().filter(|c| !unicode_normalization::char::is_combining_mark(*c)).collect();
        }
        if self.lowercase {
            out = out.to_lowercase();
        }
        out
    }

    fn word_pieces(&self, word: &str, out: &mut Vec<Token>) {
        let chars: Vec<(usize, char)> = word.char_indices().collect();
        if chars.len() > self.max_word_chars {
            out.push(self.unk);
            return;
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut candidate = String::new();
        while start < chars.len() {
            let mut end = chars.len();
            let mut found = None;
            while start < end {
                let from = chars[start].0;
                let to = if end == chars.len() { word.len() } else { chars[end].0 };
                candidate.clear();
                if start > 0 {
                    candidate.push_str(&self.prefix);
                }
                candidate.push_str(&word[from..to]);
                if let Some(id) = self.vocab.get(&candidate) {
                    found = Some(*id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => pieces.push(id),
                None => {
                    out.push(self.unk);
                    return;
                }
            }
            start = end;
        }
        out.extend(pieces);
    }
}

impl Tokenizer for WordPiece {
    fn encode(&self, text: &str) -> Vec<Token> {
        let normalized = self.normalize(text);
        let mut ids = vec![self.cls];
        let budget = self.max_len - 1;
        'words: for chunk in normalized.split(' ').filter(|w| !w.is_empty()) {
            // Punctuation characters are words of their own.
            let mut start = 0;
            for (i, c) in chunk.char_indices() {
                if is_punctuation(c) {
                    if start < i {
                        self.word_pieces(&chunk[start..i], &mut ids);
                    }
                    self.word_pieces(&chunk[i..i + c.len_utf8()], &mut ids);
                    start = i + c.len_utf8();
                }
                if ids.len() >= budget {
                    break 'words;
                }
            }
            if start < chunk.len() {
                self.word_pieces(&chunk[start..], &mut ids);
            }
            if ids.len() >= budget {
                break;
            }
        }
        ids.truncate(budget);
        ids.push(self.sep);
        ids
    }
}

/// Common invisible format characters (category Cf), which BERT's text cleaning drops with the
/// control characters: soft hyphen, zero-width and direction marks, word joiners, the BOM.
fn is_format(c: char) -> bool {
    matches!(c as u32, 0x00AD | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0xFEFF)
}

/// The CJK ideograph blocks BERT pads with spaces.
fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// ASCII symbols count as punctuation (as in BERT), plus Unicode punctuation: the Latin-1 marks
/// and the general, CJK and fullwidth punctuation blocks (a close approximation of category P).
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c as u32, 0x00A1 | 0x00A7 | 0x00AB | 0x00B6 | 0x00B7 | 0x00BB | 0x00BF | 0x2010..=0x2027 | 0x2030..=0x2043 | 0x2045..=0x2051 | 0x2053..=0x205E | 0x3001..=0x3003 | 0x3008..=0x3011 | 0x3014..=0x301F | 0xFF01..=0xFF0F | 0xFF1A..=0xFF20 | 0xFF3B..=0xFF40 | 0xFF5B..=0xFF65)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> WordPiece {
        let vocab: Vec<&str> = vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s", "un", "##believ", "##able", ",", "!", "cafe", "的", "a"];
        let vocab: serde_json::Map<String, serde_json::Value> = vocab.iter().enumerate().map(|(i, p)| (p.to_string(), serde_json::json!(i))).collect();
        let json = serde_json::json!({
            "normalizer": { "type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true },
            "model": { "type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab },
        });
        WordPiece::from_json(&serde_json::to_vec(&json).unwrap(), 16).unwrap()
    }

    fn check(text: &str, expect: &[Token]) {
        assert_eq!(tokenizer().encode(text), expect, "{text:?}");
    }

    #[test]
    fn bert_normalization_pieces_and_truncation() {
        check("Hello, worlds!", &[2, 4, 10, 5, 6, 11, 3]);
        check("  UNBELIEVABLE\tcafé\u{0}", &[2, 7, 8, 9, 12, 3]);
        check("xyz 的a", &[2, 1, 13, 14, 3]);
        check("", &[2, 3]);
        // Sixteen tokens at most, [SEP] last.
        let long = tokenizer().encode(&"hello ".repeat(40));
        assert_eq!(long.len(), 16);
        assert_eq!(long.last(), Some(&3));
    }
}
