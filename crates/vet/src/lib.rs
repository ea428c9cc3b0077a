//! Scanners for hostile model files. Each scanner takes bytes or a reader and returns findings;
//! none does IO of its own, allocates without bound, or panics on malformed input: "malformed"
//! is a finding. The pipeline that runs them, policies and overrides live elsewhere.

pub mod archive;
pub mod gguf;
pub mod keras;
pub mod pickle;
pub mod safetensors;
pub mod template;

use std::fmt;

/// Changes whenever a scanner's judgement can change; results of other versions are rescanned.
pub const SCANNER_VERSION: &str = concat!("mantle-vet/", env!("CARGO_PKG_VERSION"), "+4");
use std::io::{Read, Seek, SeekFrom};

/// How bad a finding or a file is. Ordered: `Safe < Suspicious < Error < Unsafe`; an `Error`
/// (could not be checked) ranks above `Suspicious` because nothing unchecked should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Safe,
    Suspicious,
    Error,
    Unsafe,
}

impl Verdict {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Safe => "safe",
            Verdict::Suspicious => "suspicious",
            Verdict::Error => "error",
            Verdict::Unsafe => "unsafe",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a scanner found, with where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub verdict: Verdict,
    /// A stable code, e.g. `pickle.dangerous_global`.
    pub code: &'static str,
    /// Byte offset in the scanned stream (inside `member`, when set).
    pub offset: Option<u64>,
    /// The archive member the offset refers to, e.g. `archive/data.pkl`.
    pub member: Option<String>,
    /// The global, key or field concerned, e.g. `os.system`.
    pub subject: String,
    /// A sentence a person can read.
    pub reason: String,
}

impl Finding {
    /// A finding without a member.
    pub fn new(verdict: Verdict, code: &'static str, offset: Option<u64>, subject: impl Into<String>, reason: impl Into<String>) -> Self {
        Finding { verdict, code, offset, member: None, subject: subject.into(), reason: reason.into() }
    }
}

/// The file formats the scanners recognise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pickle,
    PyTorchZip,
    Zip,
    Numpy,
    NumpyZip,
    Safetensors,
    Gguf,
    Keras,
    KerasH5,
    Other,
}

impl Format {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Pickle => "pickle",
            Format::PyTorchZip => "pytorch-zip",
            Format::Zip => "zip",
            Format::Numpy => "npy",
            Format::NumpyZip => "npz",
            Format::Safetensors => "safetensors",
            Format::Gguf => "gguf",
            Format::Keras => "keras",
            Format::KerasH5 => "keras-h5",
            Format::Other => "other",
        }
    }
}

/// What scanning one file found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    pub format: Format,
    pub findings: Vec<Finding>,
}

impl FileReport {
    /// The worst verdict among the findings, or `Safe`.
    pub fn verdict(&self) -> Verdict {
        self.findings.iter().map(|f| f.verdict).max().unwrap_or(Verdict::Safe)
    }
}

/// Limits that keep a hostile file from taking unbounded memory or time.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest pickle stream decompressed from an archive member.
    pub max_member_bytes: u64,
    /// The most entries an archive may have.
    pub max_archive_entries: usize,
    /// The largest compression ratio accepted for an archive member.
    pub max_compression_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_member_bytes: 1 << 30, max_archive_entries: 100_000, max_compression_ratio: 200 }
    }
}

/// Scans one file: the format is taken from its first bytes, then its name.
pub fn scan_file<R: Read + Seek>(name: &str, reader: &mut R, limits: &Limits) -> std::io::Result<FileReport> {
    let mut head = [0u8; 8];
    let n = read_up_to(reader, &mut head)?;
    reader.seek(SeekFrom::Start(0))?;
    let head = &head[..n];
    let lower = name.to_ascii_lowercase();
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(archive::scan_zip(reader, &lower, limits));
    }
    if head.starts_with(b"GGUF") || lower.ends_with(".gguf") {
        return Ok(gguf::scan(reader));
    }
    if head.starts_with(b"\x89HDF\r\n\x1a\n") || lower.ends_with(".h5") || lower.ends_with(".hdf5") {
        return Ok(FileReport { format: Format::KerasH5, findings: keras::check_h5(reader) });
    }
    if lower.ends_with(".safetensors") {
        return Ok(safetensors::scan(reader));
    }
    if head.starts_with(b"\x93NUMPY") {
        return Ok(archive::scan_npy(reader, None, limits));
    }
    let pickle_name = [".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".dat", ".data"].iter().any(|ext| lower.ends_with(ext));
    if pickle_name || head.first() == Some(&0x80) {
        let findings = pickle::scan_stream(reader);
        return Ok(FileReport { format: Format::Pickle, findings });
    }
    Ok(FileReport { format: Format::Other, findings: Vec::new() })
}

fn read_up_to<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
