//! `mantle extract-text`: the child process the server runs to read a PDF's text. A crafted PDF
//! can make a parser panic, loop or allocate without end; here that costs only this process,
//! which limits its own address space and CPU time before it reads a byte (the server also kills
//! it after a wall-clock bound). Reads the document on stdin, writes UTF-8 text on stdout.

use std::io::{Read as _, Write as _};

/// The most bytes read from stdin.
const MAX_INPUT: u64 = 64 * 1024 * 1024;
/// The address space and CPU seconds this process may use.
const MAX_MEMORY: u64 = 2 * 1024 * 1024 * 1024;
const MAX_CPU_SECS: u64 = 60;

/// Runs the extraction; the exit code says whether it worked (the reason goes to stderr).
pub(crate) fn run() -> std::process::ExitCode {
    if let Err(err) = rlimit::setrlimit(rlimit::Resource::AS, MAX_MEMORY, MAX_MEMORY).and_then(|()| rlimit::setrlimit(rlimit::Resource::CPU, MAX_CPU_SECS, MAX_CPU_SECS)) {
        eprintln!("cannot limit the extractor's resources: {err}");
        return std::process::ExitCode::FAILURE;
    }
    let mut bytes = Vec::new();
    if let Err(err) = std::io::stdin().take(MAX_INPUT + 1).read_to_end(&mut bytes) {
        eprintln!("cannot read the document: {err}");
        return std::process::ExitCode::FAILURE;
    }
    if bytes.len() as u64 > MAX_INPUT {
        eprintln!("the document is larger than {MAX_INPUT} bytes");
        return std::process::ExitCode::FAILURE;
    }
    match pdf_extract::extract_text_from_mem(&bytes) {
        Ok(text) => match std::io::stdout().lock().write_all(text.as_bytes()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(_) => std::process::ExitCode::FAILURE,
        },
        Err(err) => {
            eprintln!("not a readable PDF: {err}");
            std::process::ExitCode::from(2)
        }
    }
}
