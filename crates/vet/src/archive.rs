//! Containers: PyTorch zip archives (whatever the top folder is called), numpy `.npy`/`.npz`, and
//! plain zip. Member names that escape the extraction folder and members that decompress far
//! beyond their compressed size are findings; decompression is bounded whatever the headers say.

use std::io::{Read, Seek};

use crate::{pickle, FileReport, Finding, Format, Limits, Verdict};

/// Scans a zip: names and ratios of every member, then the pickles of a PyTorch archive and the
/// arrays of an `.npz`.
pub fn scan_zip<R: Read + Seek>(reader: &mut R, name: &str, limits: &Limits) -> FileReport {
    let mut findings = Vec::new();
    let mut archive = match zip::ZipArchive::new(reader) {
        Ok(archive) => archive,
        Err(err) => {
            findings.push(Finding::new(Verdict::Error, "zip.malformed", None, "", format!("unreadable zip archive: {err}")));
            return FileReport { format: Format::Zip, findings };
        }
    };
    if archive.len() > limits.max_archive_entries {
        findings.push(Finding::new(Verdict::Unsafe, "zip.too_many_entries", None, archive.len().to_string(), format!("the archive lists {} entries, more than the limit of {}", archive.len(), limits.max_archive_entries)));
        return FileReport { format: Format::Zip, findings };
    }
    let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    let is_torch = names.iter().any(|n| n.ends_with("/data.pkl") || n == "data.pkl");
    let is_npz = name.ends_with(".npz") || (!names.is_empty() && names.iter().all(|n| n.ends_with(".npy")));
    let is_keras = names.iter().any(|n| n == "config.json") && (name.ends_with(".keras") || names.iter().any(|n| n == "metadata.json"));
    let format = if is_keras {
        Format::Keras
    } else if is_torch {
        Format::PyTorchZip
    } else if is_npz {
        Format::NumpyZip
    } else {
        Format::Zip
    };
    for index in 0..archive.len() {
        let mut member = match archive.by_index(index) {
            Ok(member) => member,
            Err(err) => {
                findings.push(Finding::new(Verdict::Error, "zip.malformed", None, names.get(index).cloned().unwrap_or_default(), format!("unreadable member: {err}")));
                continue;
            }
        };
        let member_name = member.name().to_owned();
        if let Some(why) = unsafe_member_name(&member_name) {
            findings.push(Finding {
                member: Some(member_name.clone()),
                ..Finding::new(Verdict::Unsafe, "zip.path_traversal", Some(member.header_start()), member_name.clone(), format!("member name {why}: extracting it would write outside the target folder"))
            });
        }
        let (size, compressed) = (member.size(), member.compressed_size());
        if size > 1024 * 1024 && size / compressed.max(1) > limits.max_compression_ratio {
            findings.push(Finding {
                member: Some(member_name.clone()),
                ..Finding::new(Verdict::Unsafe, "zip.bomb", Some(member.header_start()), member_name.clone(), format!("member expands {compressed} bytes to a declared {size} (ratio above {})", limits.max_compression_ratio))
            });
            continue;
        }
        if format == Format::Keras && member_name == "config.json" {
            for mut finding in crate::keras::check_config(&mut member) {
                finding.member = Some(member_name.clone());
                findings.push(finding);
            }
            continue;
        }
        let scan_pickle = member_name.ends_with(".pkl") || (format == Format::Zip && member_name.ends_with(".pickle"));
        let is_npy = member_name.ends_with(".npy");
        if !(scan_pickle || is_npy) {
            continue;
        }
        // Bounded whatever the header claims: one byte past the limit tells us it was exceeded.
        let mut bounded = (&mut member).take(limits.max_member_bytes + 1);
        let mut member_findings = if scan_pickle { pickle::scan_stream(&mut bounded) } else { scan_npy(&mut bounded, Some(&member_name), limits).findings };
        if bounded.limit() == 0 {
            member_findings.push(Finding::new(Verdict::Error, "zip.member_too_large", None, member_name.clone(), format!("member decompresses to more than {} bytes; it was not fully scanned", limits.max_member_bytes)));
        }
        for mut finding in member_findings {
            finding.member = Some(member_name.clone());
            findings.push(finding);
        }
    }
    FileReport { format, findings }
}

/// Why a member name would escape the extraction folder, if it would.
fn unsafe_member_name(name: &str) -> Option<&'static str> {
    if name.starts_with('/') || name.starts_with('\\') {
        return Some("is absolute");
    }
    if name.len() >= 2 && name.as_bytes()[1] == b':' {
        return Some("has a drive letter");
    }
    if name.split(['/', '\\']).any(|part| part == "..") {
        return Some("climbs out with '..'");
    }
    if name.chars().any(|c| c.is_control()) {
        return Some("holds control characters");
    }
    None
}

/// Scans a `.npy` stream: header structure, and for object arrays the pickle that follows.
pub fn scan_npy<R: Read>(reader: &mut R, member: Option<&str>, _limits: &Limits) -> FileReport {
    let mut findings = Vec::new();
    let subject = member.unwrap_or("").to_owned();
    let mut magic = [0u8; 8];
    if reader.read_exact(&mut magic).is_err() || &magic[..6] != b"\x93NUMPY" {
        findings.push(Finding::new(Verdict::Error, "npy.malformed", Some(0), subject, "not a .npy stream (bad magic)"));
        return FileReport { format: Format::Numpy, findings };
    }
    let header_len = match magic[6] {
        1 => {
            let mut len = [0u8; 2];
            reader.read_exact(&mut len).ok().map(|_| u64::from(u16::from_le_bytes(len)))
        }
        2 | 3 => {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len).ok().map(|_| u64::from(u32::from_le_bytes(len)))
        }
        _ => None,
    };
    let Some(header_len) = header_len.filter(|len| *len <= 1024 * 1024) else {
        findings.push(Finding::new(Verdict::Error, "npy.malformed", Some(6), subject, "unsupported .npy version or header length"));
        return FileReport { format: Format::Numpy, findings };
    };
    let mut header = vec![0u8; header_len as usize];
    if reader.read_exact(&mut header).is_err() {
        findings.push(Finding::new(Verdict::Error, "npy.malformed", Some(10), subject, "truncated .npy header"));
        return FileReport { format: Format::Numpy, findings };
    }
    let header = String::from_utf8_lossy(&header);
    if !header.contains("'descr'") || !header.contains("'shape'") {
        findings.push(Finding::new(Verdict::Error, "npy.malformed", Some(10), subject, "the .npy header lacks descr or shape"));
        return FileReport { format: Format::Numpy, findings };
    }
    if has_object_dtype(&header) {
        // Object arrays are stored as a pickle right after the header: numpy.load(allow_pickle=True) runs it.
        findings.push(Finding::new(Verdict::Suspicious, "npy.object_array", Some(10), subject, "object dtype: the array is a pickle, loaded only with allow_pickle=True"));
        for mut finding in pickle::scan_stream(reader) {
            finding.offset = finding.offset.map(|o| o + 10 + header_len);
            findings.push(finding);
        }
    }
    FileReport { format: Format::Numpy, findings }
}

/// Whether the `descr` of a .npy header names the object type code `O` anywhere (structured dtypes included).
fn has_object_dtype(header: &str) -> bool {
    let Some(start) = header.find("'descr'") else { return false };
    let rest = &header[start + 7..];
    let end = rest.find("'fortran_order'").or_else(|| rest.find("'shape'")).unwrap_or(rest.len());
    let descr = &rest[..end];
    descr.split('\'').skip(1).step_by(2).any(|code| code.trim_start_matches(['<', '>', '|', '=']) == "O")
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        {
            let mut writer = zip::ZipWriter::new(&mut out);
            let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
            for (name, bytes) in entries {
                writer.start_file(*name, options).unwrap();
                writer.write_all(bytes).unwrap();
            }
            writer.finish().unwrap();
        }
        out.into_inner()
    }

    fn codes(report: &FileReport) -> Vec<&str> {
        report.findings.iter().map(|f| f.code).collect()
    }

    const SAFE_PICKLE: &[u8] = b"\x80\x02ccollections\nOrderedDict\n)R.";
    const EVIL_PICKLE: &[u8] = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.";

    fn npy(descr: &str, payload: &[u8]) -> Vec<u8> {
        let header = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (1,), }}");
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(payload);
        out
    }

    #[test]
    fn torch_archives_scan_every_pickle_whatever_the_top_folder() {
        let bytes = zip_of(&[("my_model/data.pkl", SAFE_PICKLE), ("my_model/data/0", b"\0\0\0\0"), ("my_model/extra.pkl", EVIL_PICKLE)]);
        let report = scan_zip(&mut std::io::Cursor::new(bytes), "model.pt", &Limits::default());
        assert_eq!(report.format, Format::PyTorchZip);
        assert_eq!(codes(&report), vec!["pickle.dangerous_global"]);
        assert_eq!(report.findings[0].member.as_deref(), Some("my_model/extra.pkl"));
        assert_eq!(report.verdict(), Verdict::Unsafe);
        let clean = zip_of(&[("archive/data.pkl", SAFE_PICKLE), ("archive/version", b"3\n")]);
        assert_eq!(scan_zip(&mut std::io::Cursor::new(clean), "m.bin", &Limits::default()).verdict(), Verdict::Safe);
    }

    #[test]
    fn zip_slip_names_are_unsafe() {
        for name in ["../evil.sh", "/etc/cron.d/x", "a/../../b", "C:/win.ini", "..\\x"] {
            let bytes = zip_of(&[(name, b"x")]);
            let report = scan_zip(&mut std::io::Cursor::new(bytes), "a.zip", &Limits::default());
            assert!(codes(&report).contains(&"zip.path_traversal"), "{name}: {:?}", report.findings);
        }
    }

    #[test]
    fn zip_bombs_are_refused_without_inflating() {
        let zeros = vec![0u8; 50 * 1024 * 1024];
        let bytes = zip_of(&[("archive/data.pkl", &zeros)]);
        assert!(bytes.len() < 1024 * 1024);
        let report = scan_zip(&mut std::io::Cursor::new(bytes), "m.pt", &Limits::default());
        assert!(codes(&report).contains(&"zip.bomb"), "{:?}", report.findings);
        // A low member limit catches what a ratio check would let through.
        let many = b"N0".repeat(1536 * 1024);
        let bytes = zip_of(&[("archive/data.pkl", &many)]);
        let limits = Limits { max_member_bytes: 1024 * 1024, max_compression_ratio: 100_000, ..Limits::default() };
        let report = scan_zip(&mut std::io::Cursor::new(bytes), "m.pt", &limits);
        assert!(codes(&report).contains(&"zip.member_too_large"), "{:?}", report.findings);
    }

    #[test]
    fn npy_object_arrays_carry_a_scanned_pickle() {
        let plain = npy("'<f4'", &[0, 0, 128, 63]);
        assert!(scan_npy(&mut &plain[..], None, &Limits::default()).findings.is_empty());
        let object = npy("'|O'", EVIL_PICKLE);
        let report = scan_npy(&mut &object[..], None, &Limits::default());
        assert_eq!(codes(&report), vec!["npy.object_array", "pickle.dangerous_global"]);
        let structured = npy("[('a', '<i4'), ('b', 'O')]", SAFE_PICKLE);
        assert_eq!(codes(&scan_npy(&mut &structured[..], None, &Limits::default())), vec!["npy.object_array"]);
        let npz = zip_of(&[("x.npy", &plain), ("y.npy", &object)]);
        let report = scan_zip(&mut std::io::Cursor::new(npz), "arrays.npz", &Limits::default());
        assert_eq!(report.format, Format::NumpyZip);
        assert_eq!(report.verdict(), Verdict::Unsafe);
        assert_eq!(scan_npy(&mut &b"\x93NUMPY\x09\x00"[..], None, &Limits::default()).verdict(), Verdict::Error);
    }

    #[test]
    fn keras_archives_are_checked_for_lambda_layers() {
        let config = br#"{"class_name":"Sequential","config":{"layers":[{"class_name":"Lambda","module":"keras.layers","config":{"name":"l","function":"4wE="}}]}}"#;
        let bytes = zip_of(&[("metadata.json", b"{\"keras_version\":\"3.0\"}"), ("config.json", config), ("model.weights.h5", b"\x89HDF")]);
        let report = scan_zip(&mut std::io::Cursor::new(bytes), "model.keras", &Limits::default());
        assert_eq!(report.format, Format::Keras);
        assert_eq!(codes(&report), vec!["keras.lambda"]);
    }

    #[test]
    fn garbage_is_an_error_finding() {
        let report = scan_zip(&mut std::io::Cursor::new(b"PK\x03\x04garbage".to_vec()), "x.zip", &Limits::default());
        assert_eq!(report.verdict(), Verdict::Error);
    }
}
