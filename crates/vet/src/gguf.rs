//! GGUF structure: header, metadata key/value types, tensor infos, alignment and bounds; and the
//! chat templates the metadata carries, checked by `template`.

use std::io::{Read, Seek, SeekFrom};

use crate::{template, FileReport, Finding, Format, Verdict};

const MAX_KV: u64 = 1_000_000;
const MAX_TENSORS: u64 = 1_000_000;
const MAX_STRING: u64 = 64 * 1024 * 1024;
const MAX_DIMS: u32 = 4;

/// Block size (elements) and bytes per block of each ggml tensor type.
fn type_layout(kind: u32) -> Option<(u64, u64)> {
    Some(match kind {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        _ => return None,
    })
}

struct Parser<'a, R> {
    reader: &'a mut R,
    offset: u64,
    file_len: u64,
}

type Problem = (u64, String);

impl<R: Read + Seek> Parser<'_, R> {
    fn fail<T>(&self, reason: impl Into<String>) -> Result<T, Problem> {
        Err((self.offset, reason.into()))
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Problem> {
        let mut buf = [0u8; N];
        if self.reader.read_exact(&mut buf).is_err() {
            return self.fail("truncated");
        }
        self.offset += N as u64;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, Problem> {
        Ok(u32::from_le_bytes(self.bytes::<4>()?))
    }

    fn u64(&mut self) -> Result<u64, Problem> {
        Ok(u64::from_le_bytes(self.bytes::<8>()?))
    }

    fn skip(&mut self, n: u64) -> Result<(), Problem> {
        let target = self.offset.checked_add(n).filter(|t| *t <= self.file_len);
        let Some(target) = target else { return self.fail(format!("a value of {n} bytes runs past the end of the file")) };
        if self.reader.seek(SeekFrom::Start(target)).is_err() {
            return self.fail("seek failed");
        }
        self.offset = target;
        Ok(())
    }

    /// Reads a string, keeping it only when `keep` (and not longer than the limit).
    fn string(&mut self, keep: bool) -> Result<Option<String>, Problem> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return self.fail(format!("a string of {len} bytes exceeds the 64 MiB limit"));
        }
        if !keep {
            self.skip(len)?;
            return Ok(None);
        }
        if self.offset + len > self.file_len {
            return self.fail("a string runs past the end of the file");
        }
        let mut buf = vec![0u8; len as usize];
        if self.reader.read_exact(&mut buf).is_err() {
            return self.fail("truncated string");
        }
        self.offset += len;
        match String::from_utf8(buf) {
            Ok(text) => Ok(Some(text)),
            Err(_) => self.fail("a string is not valid UTF-8"),
        }
    }

    /// Reads one value of `kind`; strings are kept when `keep`; string arrays are kept up to `keep_items`.
    fn value(&mut self, kind: u32, keep: bool, keep_items: u64, depth: u32) -> Result<Meta, Problem> {
        let scalar = |size: u64| size;
        Ok(match kind {
            0 | 1 | 7 => Meta::Int(u64::from(self.bytes::<1>()?[0])),
            2 | 3 => Meta::Int(u64::from(u16::from_le_bytes(self.bytes::<2>()?))),
            4 | 5 => Meta::Int(u64::from(self.u32()?)),
            6 => {
                self.skip(scalar(4))?;
                Meta::Other
            }
            10 | 11 => Meta::Int(self.u64()?),
            12 => {
                self.skip(scalar(8))?;
                Meta::Other
            }
            8 => match self.string(keep)? {
                Some(text) => Meta::Str(text),
                None => Meta::Other,
            },
            9 => {
                if depth > 2 {
                    return self.fail("arrays nested deeper than 2");
                }
                let elem = self.u32()?;
                let count = self.u64()?;
                let fixed = match elem {
                    0 | 1 | 7 => Some(1),
                    2 | 3 => Some(2),
                    4..=6 => Some(4),
                    10..=12 => Some(8),
                    8 | 9 => None,
                    other => return self.fail(format!("unknown array element type {other}")),
                };
                match fixed {
                    Some(size) => {
                        let total = count.checked_mul(size).ok_or((self.offset, "array size overflows".to_owned()))?;
                        self.skip(total)?;
                        Meta::Other
                    }
                    None => {
                        if count > self.file_len {
                            return self.fail(format!("an array declares {count} elements, more than the file has bytes"));
                        }
                        let mut items = Vec::new();
                        for i in 0..count {
                            let item = self.value(elem, keep && i < keep_items, 0, depth + 1)?;
                            if let Meta::Str(text) = item {
                                items.push(text);
                            }
                        }
                        Meta::Strings(items)
                    }
                }
            }
            other => return self.fail(format!("unknown metadata value type {other}")),
        })
    }
}

enum Meta {
    Int(u64),
    Str(String),
    Strings(Vec<String>),
    Other,
}

/// The chat templates of a GGUF file and the special tokens they use.
#[derive(Clone, Debug, Default)]
pub struct ChatTemplates {
    /// `(metadata key, template source)`, the default one under `tokenizer.chat_template`.
    pub templates: Vec<(String, String)>,
    pub bos_token: String,
    pub eos_token: String,
    /// The numeric `general.sampling.*` entries (the model author's recommended sampler
    /// settings), by the key's last part (`temp`, `top_k`, `top_p`, `min_p`, `penalty_repeat`...).
    pub sampling: Vec<(String, f64)>,
}

/// Scans a GGUF file.
pub fn scan<R: Read + Seek>(reader: &mut R) -> FileReport {
    let mut findings = Vec::new();
    match parse(reader, &mut findings) {
        Ok(chat) => {
            for (key, source) in &chat.templates {
                findings.extend(template::check(key, source, &chat.bos_token, &chat.eos_token));
            }
        }
        Err((offset, reason)) => findings.push(Finding::new(Verdict::Unsafe, "gguf.invalid", Some(offset), "", reason)),
    }
    FileReport { format: Format::Gguf, findings }
}

/// Reads the chat templates of a structurally valid GGUF file.
pub fn chat_templates<R: Read + Seek>(reader: &mut R) -> Result<ChatTemplates, String> {
    parse(reader, &mut Vec::new()).map_err(|(offset, reason)| format!("invalid GGUF at byte {offset}: {reason}"))
}

fn parse<R: Read + Seek>(reader: &mut R, findings: &mut Vec<Finding>) -> Result<ChatTemplates, Problem> {
    let file_len = reader.seek(SeekFrom::End(0)).map_err(|e| (0, format!("seek failed: {e}")))?;
    reader.seek(SeekFrom::Start(0)).map_err(|e| (0, format!("seek failed: {e}")))?;
    let mut p = Parser { reader, offset: 0, file_len };
    if &p.bytes::<4>()? != b"GGUF" {
        return p.fail("bad magic: not a GGUF file");
    }
    let version = p.u32()?;
    if !(2..=3).contains(&version) {
        return p.fail(format!("unsupported GGUF version {version}"));
    }
    let n_tensors = p.u64()?;
    let n_kv = p.u64()?;
    if n_tensors > MAX_TENSORS || n_kv > MAX_KV {
        return p.fail(format!("{n_tensors} tensors and {n_kv} metadata entries exceed the limits"));
    }
    let mut alignment: u64 = 32;
    let mut templates: Vec<(String, String)> = Vec::new();
    let mut tokens: Vec<String> = Vec::new();
    let (mut bos, mut eos) = (None, None);
    let mut sampling = Vec::new();
    for _ in 0..n_kv {
        let key = p.string(true)?.unwrap_or_default();
        let kind = p.u32()?;
        if let Some(name) = key.strip_prefix("general.sampling.").filter(|_| matches!(kind, 4 | 5 | 6 | 12)) {
            let value = match kind {
                4 => f64::from(p.u32()?),
                5 => f64::from(p.u32()? as i32),
                6 => f64::from(f32::from_bits(p.u32()?)),
                _ => f64::from_bits(p.u64()?),
            };
            if value.is_finite() && sampling.len() < 64 {
                sampling.push((name.to_owned(), value));
            }
            continue;
        }
        let is_template = key == "tokenizer.chat_template" || key.starts_with("tokenizer.chat_template.");
        let keep_tokens = key == "tokenizer.ggml.tokens";
        let value = p.value(kind, is_template || keep_tokens, if keep_tokens { 1_000_000 } else { 0 }, 0)?;
        match (key.as_str(), value) {
            ("general.alignment", Meta::Int(a)) => {
                if a == 0 || !a.is_power_of_two() || a > 1 << 20 {
                    return p.fail(format!("general.alignment {a} is not a power of two up to 1 MiB"));
                }
                alignment = a;
            }
            ("general.alignment", _) => return p.fail("general.alignment must be an integer"),
            ("tokenizer.ggml.tokens", Meta::Strings(items)) => tokens = items,
            ("tokenizer.ggml.bos_token_id", Meta::Int(id)) => bos = Some(id),
            ("tokenizer.ggml.eos_token_id", Meta::Int(id)) => eos = Some(id),
            (_, Meta::Str(text)) if is_template => templates.push((key.clone(), text)),
            _ => {}
        }
    }
    let mut infos = Vec::with_capacity(n_tensors.min(100_000) as usize);
    for _ in 0..n_tensors {
        let name = p.string(true)?.unwrap_or_default();
        let n_dims = p.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return p.fail(format!("tensor {name:?} has {n_dims} dimensions"));
        }
        let mut numel: u64 = 1;
        for _ in 0..n_dims {
            let dim = p.u64()?;
            numel = numel.checked_mul(dim).ok_or((p.offset, format!("tensor {name:?} has a shape that overflows")))?;
        }
        let kind = p.u32()?;
        let offset = p.u64()?;
        infos.push((name, numel, kind, offset));
    }
    let data_start = p.offset.div_ceil(alignment) * alignment;
    // A file without tensors may end right after its metadata, without alignment padding.
    if data_start > file_len && !infos.is_empty() {
        return p.fail("the tensor data section starts past the end of the file");
    }
    let data_len = file_len.saturating_sub(data_start);
    let mut spans = Vec::with_capacity(infos.len());
    for (name, numel, kind, offset) in &infos {
        if offset % alignment != 0 {
            return Err((data_start + offset, format!("tensor {name:?} is not aligned to {alignment} bytes")));
        }
        let Some((block, bytes)) = type_layout(*kind) else {
            findings.push(Finding::new(Verdict::Suspicious, "gguf.unknown_type", Some(data_start + offset), name.clone(), format!("tensor type {kind} is unknown to this scanner; its bounds were not checked")));
            continue;
        };
        if numel % block != 0 {
            return Err((data_start + offset, format!("tensor {name:?} has {numel} elements, not a multiple of its block size {block}")));
        }
        let size = (numel / block).checked_mul(bytes).ok_or((data_start + offset, format!("tensor {name:?} size overflows")))?;
        if offset.checked_add(size).is_none_or(|end| end > data_len) {
            return Err((data_start + offset, format!("tensor {name:?} ({size} bytes at {offset}) runs past the end of the data section ({data_len} bytes)")));
        }
        spans.push((*offset, offset + size, name.clone()));
    }
    spans.sort();
    for pair in spans.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err((data_start + pair[1].0, format!("tensors {:?} and {:?} overlap", pair[0].2, pair[1].2)));
        }
    }
    let token = |id: Option<u64>| id.and_then(|id| tokens.get(id as usize)).cloned().unwrap_or_default();
    Ok(ChatTemplates { templates, bos_token: token(bos), eos_token: token(eos), sampling })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a GGUF v3 file.
    fn gguf(kv: &[(&str, u32, Vec<u8>)], tensors: &[(&str, &[u64], u32, u64)], data_len: usize) -> Vec<u8> {
        let string = |s: &str| {
            let mut out = (s.len() as u64).to_le_bytes().to_vec();
            out.extend(s.as_bytes());
            out
        };
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((kv.len() as u64).to_le_bytes());
        for (key, kind, value) in kv {
            out.extend(string(key));
            out.extend(kind.to_le_bytes());
            out.extend(value);
        }
        for (name, dims, kind, offset) in tensors {
            out.extend(string(name));
            out.extend((dims.len() as u32).to_le_bytes());
            for d in *dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(kind.to_le_bytes());
            out.extend(offset.to_le_bytes());
        }
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.extend(vec![0u8; data_len]);
        out
    }

    fn str_value(s: &str) -> Vec<u8> {
        let mut out = (s.len() as u64).to_le_bytes().to_vec();
        out.extend(s.as_bytes());
        out
    }

    fn codes(bytes: Vec<u8>) -> Vec<&'static str> {
        scan(&mut std::io::Cursor::new(bytes)).findings.iter().map(|f| f.code).collect()
    }

    const TEMPLATE: &str = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}";

    #[test]
    fn valid_files_pass() {
        let bytes = gguf(&[("general.architecture", 8, str_value("llama")), ("tokenizer.chat_template", 8, str_value(TEMPLATE))], &[("a", &[4, 8], 0, 0), ("b", &[64], 8, 128)], 128 + 68);
        assert_eq!(codes(bytes), Vec::<&str>::new());
    }

    #[test]
    fn broken_files_are_unsafe() {
        assert_eq!(codes(b"GGUX\x03\x00\x00\x00".to_vec()), vec!["gguf.invalid"]);
        assert_eq!(codes(gguf(&[], &[("a", &[4], 0, 0)], 8)), vec!["gguf.invalid"], "tensor past the end");
        assert_eq!(codes(gguf(&[], &[("a", &[8], 0, 0), ("b", &[8], 0, 0)], 64)), vec!["gguf.invalid"], "overlap");
        assert_eq!(codes(gguf(&[], &[("a", &[8], 0, 3)], 64)), vec!["gguf.invalid"], "misaligned");
        assert_eq!(codes(gguf(&[], &[("a", &[30], 2, 0)], 64)), vec!["gguf.invalid"], "not a block multiple");
        assert_eq!(codes(gguf(&[("general.alignment", 4, 3u32.to_le_bytes().to_vec())], &[], 0)), vec!["gguf.invalid"]);
        let mut huge_string = (u64::MAX).to_le_bytes().to_vec();
        huge_string.extend(b"x");
        assert_eq!(codes(gguf(&[("k", 8, huge_string)], &[], 0)), vec!["gguf.invalid"]);
        let mut huge_array = 8u32.to_le_bytes().to_vec();
        huge_array.extend((u64::MAX / 2).to_le_bytes());
        assert_eq!(codes(gguf(&[("k", 9, huge_array)], &[], 0)), vec!["gguf.invalid"]);
        assert_eq!(codes(gguf(&[], &[("a", &[1, 1, 1, 1, 1], 0, 0)], 64)), vec!["gguf.invalid"]);
    }

    #[test]
    fn templates_are_checked() {
        let evil = "{{ messages.__class__.__init__.__globals__ }}";
        let bytes = gguf(&[("tokenizer.chat_template", 8, str_value(evil))], &[], 0);
        assert!(codes(bytes).contains(&"template.sandbox_escape"));
    }
}
