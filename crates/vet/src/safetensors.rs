//! safetensors structure: header length in bounds, header JSON, dtypes, shapes, offsets in
//! bounds, no overlaps or gaps, and sizes that add up. Only the header is read.

use std::io::{Read, Seek, SeekFrom};

use crate::{FileReport, Finding, Format, Verdict};

/// The largest header the reference implementation accepts.
const MAX_HEADER: u64 = 100 * 1024 * 1024;

/// Bits per element of each dtype the format defines.
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Scans a safetensors file. Every structural problem is `unsafe`: a file that claims to be
/// safetensors and is not one must not reach a loader.
pub fn scan<R: Read + Seek>(reader: &mut R) -> FileReport {
    let findings = match check(reader) {
        Ok(()) => Vec::new(),
        Err((offset, subject, reason)) => vec![Finding::new(Verdict::Unsafe, "safetensors.invalid", Some(offset), subject, reason)],
    };
    FileReport { format: Format::Safetensors, findings }
}

type Problem = (u64, String, String);

fn problem<T>(offset: u64, subject: &str, reason: impl Into<String>) -> Result<T, Problem> {
    Err((offset, subject.to_owned(), reason.into()))
}

fn check<R: Read + Seek>(reader: &mut R) -> Result<(), Problem> {
    let io = |err: std::io::Error| (0, String::new(), format!("read failed: {err}"));
    let file_len = reader.seek(SeekFrom::End(0)).map_err(io)?;
    reader.seek(SeekFrom::Start(0)).map_err(io)?;
    if file_len < 8 {
        return problem(0, "", "shorter than the 8-byte header length: not a safetensors file");
    }
    let mut len_bytes = [0u8; 8];
    reader.read_exact(&mut len_bytes).map_err(io)?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER {
        return problem(0, "", format!("header length {header_len} exceeds the 100 MiB limit: not a safetensors file"));
    }
    if header_len < 2 || 8 + header_len > file_len {
        return problem(0, "", format!("header length {header_len} does not fit in a {file_len}-byte file"));
    }
    let mut header = vec![0u8; header_len as usize];
    reader.read_exact(&mut header).map_err(io)?;
    if header.first() != Some(&b'{') {
        return problem(8, "", "the header does not start with '{'");
    }
    let json: serde_json::Value = serde_json::from_slice(&header).or_else(|err| problem(8, "", format!("the header is not valid JSON: {err}")))?;
    let Some(map) = json.as_object() else { return problem(8, "", "the header is not a JSON object") };
    let data_len = file_len - 8 - header_len;
    let mut spans = Vec::with_capacity(map.len());
    for (name, entry) in map {
        if name == "__metadata__" {
            let ok = entry.as_object().is_some_and(|m| m.values().all(|v| v.is_string()));
            if !ok {
                return problem(8, name, "__metadata__ must map strings to strings");
            }
            continue;
        }
        let Some(tensor) = entry.as_object() else { return problem(8, name, "a tensor entry is not an object") };
        let dtype = tensor.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
        let Some(bits) = dtype_bits(dtype) else { return problem(8, name, format!("unknown dtype {dtype:?}")) };
        let Some(shape) = tensor.get("shape").and_then(|s| s.as_array()) else { return problem(8, name, "missing shape") };
        let mut numel: u64 = 1;
        for dim in shape {
            let Some(dim) = dim.as_u64() else { return problem(8, name, "shape dimensions must be non-negative integers") };
            numel = numel.checked_mul(dim).ok_or_else(|| (8, name.clone(), "shape overflows".to_owned()))?;
        }
        let offsets = tensor.get("data_offsets").and_then(|o| o.as_array()).filter(|o| o.len() == 2);
        let Some(offsets) = offsets else { return problem(8, name, "data_offsets must be [begin, end]") };
        let (Some(begin), Some(end)) = (offsets[0].as_u64(), offsets[1].as_u64()) else { return problem(8, name, "data_offsets must be integers") };
        if begin > end || end > data_len {
            return problem(8, name, format!("data_offsets [{begin}, {end}] fall outside the {data_len}-byte data section"));
        }
        let total_bits = numel.checked_mul(bits).ok_or_else(|| (8, name.clone(), "size overflows".to_owned()))?;
        if total_bits % 8 != 0 || end - begin != total_bits / 8 {
            return problem(8, name, format!("{dtype} {shape:?} needs {} bytes but data_offsets span {}", total_bits.div_ceil(8), end - begin));
        }
        spans.push((begin, end, name.clone()));
    }
    spans.sort();
    let mut cursor = 0;
    for (begin, end, name) in &spans {
        if *begin != cursor {
            let what = if *begin < cursor { "overlaps the previous tensor" } else { "leaves a gap before it" };
            return problem(8 + header_len + begin, name, format!("tensor {what} (starts at {begin}, previous ended at {cursor})"));
        }
        cursor = *end;
    }
    if cursor != data_len {
        return problem(8 + header_len + cursor, "", format!("tensors cover {cursor} bytes but the data section holds {data_len}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header.as_bytes());
        out.extend(vec![0u8; data_len]);
        out
    }

    fn check_file(bytes: Vec<u8>, ok: bool) {
        let report = scan(&mut std::io::Cursor::new(bytes));
        assert_eq!(report.findings.is_empty(), ok, "{:?}", report.findings);
    }

    #[test]
    fn valid_files_pass() {
        check_file(file(r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}}"#, 32), true);
        check_file(file(r#"{"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}  "#, 0), true);
    }

    #[test]
    fn broken_files_are_unsafe() {
        check_file(b"not a safetensors file".to_vec(), false);
        check_file(vec![1, 2, 3], false);
        check_file(file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 4), false);
        check_file(file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, 4), false);
        check_file(file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#, 6), false);
        check_file(file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8), false);
        check_file(file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 10), false);
        check_file(file(r#"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#, 1), false);
        check_file(file(r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, 4), false);
        check_file(file(r#"{"a":{"dtype":"U8","shape":[4294967296,4294967296,16],"data_offsets":[0,1]}}"#, 1), false);
        check_file(file(r#"[1,2]"#, 0), false);
        check_file(file(r#"{"a": 1"#, 0), false);
        let mut huge = (u64::MAX).to_le_bytes().to_vec();
        huge.extend(b"{}");
        check_file(huge, false);
    }
}
