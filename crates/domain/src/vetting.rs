//! Vetting as the platform sees it: stored scan results, org policies and overrides, and the
//! verdict of a revision after policy. The scanners themselves live in the `vet` crate; the server
//! runs them and hands results here.

use std::collections::BTreeMap;

use crate::ids::Digest;
use crate::repo::FileEntry;

/// How bad something is. Ordered: `Safe < Suspicious < Error < Unsafe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Safe,
    Suspicious,
    Error,
    Unsafe,
}

impl Level {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Safe => "safe",
            Level::Suspicious => "suspicious",
            Level::Error => "error",
            Level::Unsafe => "unsafe",
        }
    }
    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "safe" => Level::Safe,
            "suspicious" => Level::Suspicious,
            "error" => Level::Error,
            "unsafe" => Level::Unsafe,
            _ => return None,
        })
    }
}

/// One stored finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub code: String,
    pub offset: Option<u64>,
    pub member: Option<String>,
    pub subject: String,
    pub reason: String,
}

/// The scan of one blob as one kind of file, by one scanner version.
#[derive(Clone, Debug)]
pub struct ScanResult {
    pub sha256: Digest,
    /// The file-name hint the scan used (lowercase extension); the same bytes named `.safetensors`
    /// and `.bin` are checked differently.
    pub hint: String,
    pub scanner_version: String,
    pub format: String,
    pub findings: Vec<Finding>,
    pub scanned_at: String,
}

/// A queued scan.
#[derive(Clone, Debug)]
pub struct ScanJob {
    pub id: i64,
    pub sha256: Digest,
    pub hint: String,
    pub attempts: i64,
}

/// The hint of a path: its lowercase extension, at most 16 characters, or empty.
pub fn scan_hint(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.') {
        Some((_, ext)) if !ext.is_empty() && ext.len() <= 16 => ext.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// An org's (or user's) vetting policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Whether pickle-based files (`.bin`, `.pt`, `.pkl`, PyTorch zips) may pass at all.
    pub allow_pickle: bool,
    /// Licences accepted (SPDX-ish ids as in model cards); `None` accepts any, including none.
    pub allowed_licenses: Option<Vec<String>>,
    /// Whether a `suspicious` verdict blocks like `unsafe`.
    pub suspicious_blocks: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { allow_pickle: true, allowed_licenses: None, suspicious_blocks: false }
    }
}

/// An accepted finding: one code and subject on one blob, with the reason a person gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub id: i64,
    pub namespace: String,
    pub sha256: Digest,
    pub code: String,
    pub subject: String,
    pub justification: String,
    pub author: String,
    pub created_at: String,
}

/// The verdict of one file of a revision.
#[derive(Clone, Debug)]
pub struct FileVerdict {
    pub path: String,
    pub sha256: Digest,
    pub size: u64,
    /// `None` while the scan is pending.
    pub format: Option<String>,
    pub level: Option<Level>,
    pub findings: Vec<Finding>,
    /// Findings accepted by an override, with the override that accepted each.
    pub overridden: Vec<(Finding, Override)>,
}

/// The verdict of a revision after policy.
#[derive(Clone, Debug)]
pub struct RevisionVerdict {
    pub files: Vec<FileVerdict>,
    /// Findings about the revision as a whole (licence, card).
    pub repo_findings: Vec<Finding>,
    pub license: Option<String>,
    pub scans_done: bool,
    /// The worst level over files and repo findings, once every scan is done.
    pub level: Option<Level>,
    /// Whether the policy blocks this revision from deployment.
    pub blocked: bool,
    pub reasons: Vec<String>,
    /// The policy the verdict was judged under.
    pub policy: Policy,
}

const PICKLE_FORMATS: &[&str] = &["pickle", "pytorch-zip", "npz", "npy"];

/// Combines scan results, overrides and policy into a revision verdict. Pure.
pub fn judge(files: &[FileEntry], results: &BTreeMap<(String, String), ScanResult>, overrides: &[Override], policy: &Policy, license: Option<String>, card: Option<&str>) -> RevisionVerdict {
    let mut verdicts = Vec::with_capacity(files.len());
    let mut scans_done = true;
    for file in files {
        let key = (file.sha256.to_string(), scan_hint(file.path.as_str()));
        let Some(result) = results.get(&key) else {
            scans_done = false;
            verdicts.push(FileVerdict { path: file.path.to_string(), sha256: file.sha256.clone(), size: file.size, format: None, level: None, findings: Vec::new(), overridden: Vec::new() });
            continue;
        };
        let mut findings = Vec::new();
        let mut overridden = Vec::new();
        for finding in &result.findings {
            match overrides.iter().find(|o| o.sha256 == file.sha256 && o.code == finding.code && o.subject == finding.subject) {
                Some(accepted) => overridden.push((finding.clone(), accepted.clone())),
                None => findings.push(finding.clone()),
            }
        }
        if !policy.allow_pickle && PICKLE_FORMATS.contains(&result.format.as_str()) {
            let finding = Finding { level: Level::Unsafe, code: "policy.pickle_not_allowed".into(), offset: None, member: None, subject: result.format.clone(), reason: format!("the policy does not allow pickle-based files ({})", result.format) };
            match overrides.iter().find(|o| o.sha256 == file.sha256 && o.code == finding.code) {
                Some(accepted) => overridden.push((finding, accepted.clone())),
                None => findings.push(finding),
            }
        }
        let level = findings.iter().map(|f| f.level).max().unwrap_or(Level::Safe);
        verdicts.push(FileVerdict { path: file.path.to_string(), sha256: file.sha256.clone(), size: file.size, format: Some(result.format.clone()), level: Some(level), findings, overridden });
    }
    let mut repo_findings = Vec::new();
    if let Some(allowed) = &policy.allowed_licenses {
        let ok = license.as_ref().is_some_and(|l| allowed.iter().any(|a| a.eq_ignore_ascii_case(l)));
        if !ok {
            repo_findings.push(Finding {
                level: Level::Unsafe,
                code: "policy.license".into(),
                offset: None,
                member: None,
                subject: license.clone().unwrap_or_else(|| "none".into()),
                reason: format!("licence {} is not among those the policy allows ({})", license.as_deref().unwrap_or("(none declared)"), allowed.join(", ")),
            });
        }
    }
    if let Some(card) = card {
        let check = crate::card::check_card(card);
        for error in check.errors {
            repo_findings.push(Finding { level: Level::Suspicious, code: "repo.card_invalid".into(), offset: None, member: None, subject: "README.md".into(), reason: format!("the model card's metadata is invalid: {error}") });
        }
        for warning in check.warnings {
            repo_findings.push(Finding { level: Level::Suspicious, code: "repo.card_metadata".into(), offset: None, member: None, subject: "README.md".into(), reason: format!("the model card lacks key fields: {warning}") });
        }
    }
    if card.is_none() {
        repo_findings.push(Finding { level: Level::Suspicious, code: "repo.no_card".into(), offset: None, member: None, subject: "README.md".into(), reason: "the revision has no model card (README.md)".into() });
    } else if license.is_none() {
        repo_findings.push(Finding { level: Level::Suspicious, code: "repo.no_license".into(), offset: None, member: None, subject: "license".into(), reason: "no licence is declared in the model card or a LICENSE file".into() });
    }
    let worst = verdicts.iter().filter_map(|f| f.level).chain(repo_findings.iter().map(|f| f.level)).max().unwrap_or(Level::Safe);
    let level = scans_done.then_some(worst);
    let mut reasons = Vec::new();
    for file in &verdicts {
        for finding in &file.findings {
            if finding.level >= Level::Error || (policy.suspicious_blocks && finding.level == Level::Suspicious) {
                reasons.push(format!("{}: {} ({})", file.path, finding.reason, finding.level.as_str()));
            }
        }
    }
    for finding in &repo_findings {
        if finding.level >= Level::Error || (policy.suspicious_blocks && finding.level == Level::Suspicious) {
            reasons.push(format!("{} ({})", finding.reason, finding.level.as_str()));
        }
    }
    if !scans_done {
        reasons.push("scans are still running".into());
    }
    let blocked = !reasons.is_empty();
    RevisionVerdict { files: verdicts, repo_findings, license, scans_done, level, blocked, reasons, policy: policy.clone() }
}

/// The licence a revision declares: the card's `license:` front matter, else the first line of a
/// LICENSE file when it names a well-known licence.
pub fn declared_license(card: Option<&str>, license_file: Option<&str>) -> Option<String> {
    if let Some(front) = card.and_then(crate::card::front_matter) {
        for line in front.lines() {
            if let Some(value) = line.strip_prefix("license:") {
                let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
                if !value.is_empty() {
                    return Some(value.to_ascii_lowercase());
                }
            }
        }
    }
    let text = license_file?.to_ascii_lowercase();
    let known = [("apache license", "apache-2.0"), ("mit license", "mit"), ("bsd 3-clause", "bsd-3-clause"), ("gnu general public license", "gpl-3.0"), ("creative commons attribution 4.0", "cc-by-4.0")];
    known.iter().find(|(needle, _)| text.contains(needle)).map(|(_, id)| (*id).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RepoPath;

    fn entry(path: &str, byte: char) -> FileEntry {
        FileEntry { path: RepoPath::parse(path).unwrap(), size: 1, sha256: Digest::parse(&byte.to_string().repeat(64)).unwrap(), git_oid: String::new(), lfs: false }
    }

    fn result(file: &FileEntry, format: &str, findings: Vec<(Level, &str, &str)>) -> ((String, String), ScanResult) {
        let findings = findings.into_iter().map(|(level, code, subject)| Finding { level, code: code.into(), offset: Some(2), member: None, subject: subject.into(), reason: "r".into() }).collect();
        let key = (file.sha256.to_string(), scan_hint(file.path.as_str()));
        (key, ScanResult { sha256: file.sha256.clone(), hint: scan_hint(file.path.as_str()), scanner_version: "1".into(), format: format.into(), findings, scanned_at: String::new() })
    }

    const CARD: &str = "---\nlicense: mit\n---\n# Model\n";

    #[test]
    fn verdicts_follow_findings_overrides_and_policy() {
        let weights = entry("pytorch_model.bin", 'a');
        let card = entry("README.md", 'b');
        let files = vec![weights.clone(), card.clone()];
        let mut results: BTreeMap<_, _> = [result(&weights, "pickle", vec![(Level::Suspicious, "pickle.unknown_global", "mylib.Net")]), result(&card, "other", vec![])].into_iter().collect();
        let policy = Policy::default();
        let verdict = judge(&files, &results, &[], &policy, Some("mit".into()), Some(CARD));
        assert_eq!(verdict.level, Some(Level::Suspicious));
        assert!(!verdict.blocked);
        let strict = Policy { suspicious_blocks: true, ..Policy::default() };
        assert!(judge(&files, &results, &[], &strict, Some("mit".into()), Some(CARD)).blocked);
        // An override on this blob accepts the finding and shows it.
        let accepted =
            Override { id: 1, namespace: "acme".into(), sha256: weights.sha256.clone(), code: "pickle.unknown_global".into(), subject: "mylib.Net".into(), justification: "our own class".into(), author: "root".into(), created_at: String::new() };
        let verdict = judge(&files, &results, std::slice::from_ref(&accepted), &strict, Some("mit".into()), Some(CARD));
        assert_eq!(verdict.level, Some(Level::Safe));
        assert!(!verdict.blocked);
        assert_eq!(verdict.files[0].overridden.len(), 1);
        // No pickles allowed, and licences limited.
        let no_pickle = Policy { allow_pickle: false, allowed_licenses: Some(vec!["apache-2.0".into()]), suspicious_blocks: false };
        let verdict = judge(&files, &results, &[accepted], &no_pickle, Some("mit".into()), Some(CARD));
        assert_eq!(verdict.level, Some(Level::Unsafe));
        assert!(verdict.reasons.iter().any(|r| r.contains("pickle")) && verdict.reasons.iter().any(|r| r.contains("licence")));
        // A pending scan means no verdict yet, and blocked.
        results.clear();
        let verdict = judge(&files, &results, &[], &policy, None, Some(CARD));
        assert!(!verdict.scans_done && verdict.level.is_none() && verdict.blocked);
    }

    #[test]
    fn licences() {
        assert_eq!(declared_license(Some("---\nlicense: Apache-2.0\n---\n"), None).as_deref(), Some("apache-2.0"));
        assert_eq!(declared_license(Some("# no front matter"), Some("MIT License\n\nCopyright")).as_deref(), Some("mit"));
        assert_eq!(declared_license(None, None), None);
        assert_eq!(scan_hint("a/b/Model.SafeTensors"), "safetensors");
        assert_eq!(scan_hint("LICENSE"), "");
    }
}
