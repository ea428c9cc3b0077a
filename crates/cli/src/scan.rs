//! `mantle scan`: the vetting scanners on local files, for users' own CI. No server involved.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Scans files and folders (recursively); prints a table or JSON. Returns whether anything was unsafe.
pub(crate) fn scan_paths(paths: &[PathBuf], json: bool) -> anyhow::Result<bool> {
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files).with_context(|| format!("read {}", path.display()))?;
    }
    let limits = vet::Limits::default();
    let mut any_unsafe = false;
    let mut reports = Vec::new();
    for file in &files {
        let mut handle = std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
        let report = vet::scan_file(&file.to_string_lossy(), &mut handle, &limits).with_context(|| format!("scan {}", file.display()))?;
        any_unsafe |= report.verdict() == vet::Verdict::Unsafe;
        reports.push((file.clone(), report));
    }
    if json {
        let out: Vec<_> = reports
            .iter()
            .map(|(path, report)| {
                serde_json::json!({
                    "path": path.display().to_string(),
                    "format": report.format.as_str(),
                    "verdict": report.verdict().as_str(),
                    "findings": report.findings.iter().map(|f| serde_json::json!({
                        "verdict": f.verdict.as_str(),
                        "code": f.code,
                        "offset": f.offset,
                        "member": f.member,
                        "subject": f.subject,
                        "reason": f.reason,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (path, report) in &reports {
            println!("{:<10} {:<12} {}", report.verdict().as_str().to_uppercase(), report.format.as_str(), path.display());
            for finding in &report.findings {
                let place = match (&finding.member, finding.offset) {
                    (Some(member), Some(offset)) => format!("{member}@{offset}"),
                    (Some(member), None) => member.clone(),
                    (None, Some(offset)) => format!("@{offset}"),
                    (None, None) => String::new(),
                };
                println!("    {:<10} {:<26} {:<24} {}", finding.verdict.as_str(), finding.code, place, finding.reason);
            }
        }
        let worst = reports.iter().map(|(_, r)| r.verdict()).max().unwrap_or(vet::Verdict::Safe);
        println!("{} files scanned; worst verdict: {}", reports.len(), worst);
    }
    Ok(any_unsafe)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            if entry.file_name() == ".git" {
                continue;
            }
            collect(&entry.path(), out)?;
        }
    } else if meta.is_file() {
        out.push(path.to_path_buf());
    }
    Ok(())
}
