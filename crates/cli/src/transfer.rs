//! `push`, `pull`, `ls` and `audit export`: the human CLI over the same Hub API that
//! `huggingface_hub` uses, with progress bars on long transfers.

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::client::{check, encode, encode_path, Client};

struct LocalFile {
    path: String,
    full: PathBuf,
    size: u64,
    sha256: String,
}

fn bar(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}").expect("valid template").progress_chars("=> "));
    bar.set_message(label.to_owned());
    bar
}

fn kind_prefix(kind: &str) -> anyhow::Result<(&'static str, &'static str)> {
    match kind {
        "model" => Ok(("models", "")),
        "dataset" => Ok(("datasets", "datasets/")),
        other => bail!("unknown repo type {other:?}: use model or dataset"),
    }
}

fn split_revision(repo: &str) -> (&str, &str) {
    repo.split_once('@').unwrap_or((repo, "main"))
}

fn walk(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).with_context(|| format!("read {}", folder.display()))? {
            let entry = entry?;
            let full = entry.path();
            let name = entry.file_name();
            if name == ".git" || (name == ".cache" && folder == dir) {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(full);
            } else if kind.is_file() {
                let relative = full.strip_prefix(dir).expect("walked under dir");
                let parts: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                out.push((parts.join("/"), full));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn hash_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Uploads a folder as one commit, through preupload, LFS for large files and an NDJSON commit.
pub(crate) async fn push(client: &Client, dir: &Path, repo: &str, kind: &str, branch: &str, message: Option<&str>, private: bool) -> anyhow::Result<()> {
    let (kinds, _) = kind_prefix(kind)?;
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let mut files = Vec::new();
    for (path, full) in walk(dir)? {
        let size = std::fs::metadata(&full)?.len();
        let sha256 = tokio::task::spawn_blocking({
            let full = full.clone();
            move || hash_file(&full)
        })
        .await??;
        files.push(LocalFile { path, full, size, sha256 });
    }
    if files.is_empty() {
        bail!("{} holds no files", dir.display());
    }

    // Create the repo if it does not exist yet, as `hf upload` does.
    let info = client.send(client.request(reqwest::Method::GET, &format!("/api/{kinds}/{repo}"))).await;
    if info.is_err() {
        let (namespace, name) = repo.split_once('/').context("REPO must be namespace/name")?;
        let body = serde_json::json!({ "name": name, "organization": namespace, "type": kind, "private": private });
        let _: serde_json::Value = client.post_json("/api/repos/create", &body).await.context("create the repo")?;
        eprintln!("created {kind} repo {repo}");
    }

    let mut modes = std::collections::HashMap::new();
    for chunk in files.chunks(256) {
        let sample_of = |f: &LocalFile| -> anyhow::Result<String> {
            let mut buffer = vec![0u8; 512];
            let mut file = std::fs::File::open(&f.full)?;
            let n = std::io::Read::read(&mut file, &mut buffer)?;
            Ok(base64::engine::general_purpose::STANDARD.encode(&buffer[..n]))
        };
        let request = serde_json::json!({
            "files": chunk.iter().map(|f| Ok(serde_json::json!({ "path": f.path, "size": f.size, "sample": sample_of(f)? }))).collect::<anyhow::Result<Vec<_>>>()?,
        });
        let answer: api::hub::PreuploadResponse = client.post_json(&format!("/api/{kinds}/{repo}/preupload/{}", encode(branch)), &request).await.context("preupload")?;
        for file in answer.files {
            modes.insert(file.path, file.upload_mode);
        }
    }

    let lfs: Vec<&LocalFile> = files.iter().filter(|f| modes.get(&f.path).map(String::as_str) == Some("lfs")).collect();
    if !lfs.is_empty() {
        upload_lfs(client, repo, kind, &lfs).await?;
    }

    let title = message.unwrap_or("Upload folder with mantle push");
    let mut body = Vec::new();
    serde_json::to_writer(&mut body, &serde_json::json!({ "key": "header", "value": { "summary": title, "description": "" } }))?;
    body.push(b'\n');
    for file in &files {
        let line = if modes.get(&file.path).map(String::as_str) == Some("lfs") {
            serde_json::json!({ "key": "lfsFile", "value": { "path": file.path, "algo": "sha256", "oid": file.sha256, "size": file.size } })
        } else {
            let bytes = std::fs::read(&file.full)?;
            serde_json::json!({ "key": "file", "value": { "path": file.path, "content": base64::engine::general_purpose::STANDARD.encode(bytes), "encoding": "base64" } })
        };
        serde_json::to_writer(&mut body, &line)?;
        body.push(b'\n');
    }
    let request = client.request(reqwest::Method::POST, &format!("/api/{kinds}/{repo}/commit/{}", encode(branch))).header("content-type", "application/x-ndjson").body(body);
    let commit: api::hub::CommitResponse = client.send(request).await.context("commit")?.json().await?;
    println!("pushed {} files ({} through LFS) to {repo}@{branch}: commit {}", files.len(), lfs.len(), commit.commit_oid);
    Ok(())
}

async fn upload_lfs(client: &Client, repo: &str, kind: &str, files: &[&LocalFile]) -> anyhow::Result<()> {
    let (_, prefix) = kind_prefix(kind)?;
    let request = serde_json::json!({
        "operation": "upload",
        "transfers": ["basic", "multipart"],
        "hash_algo": "sha256",
        "objects": files.iter().map(|f| serde_json::json!({ "oid": f.sha256, "size": f.size })).collect::<Vec<_>>(),
    });
    let batch: api::lfs::BatchResponse = client.post_json(&format!("/{prefix}{repo}.git/info/lfs/objects/batch"), &request).await.context("LFS batch")?;
    for answer in batch.objects {
        if let Some(error) = answer.error {
            bail!("LFS refused {}: {}", answer.oid, error.message);
        }
        let Some(actions) = answer.actions else { continue };
        let file = files.iter().find(|f| f.sha256 == answer.oid).context("server answered for an unknown object")?;
        let progress = bar(file.size, &file.path);
        if let Some(chunk) = actions.upload.header.get("chunk_size") {
            let chunk: u64 = chunk.parse().context("chunk_size")?;
            let mut parts = Vec::new();
            let n_parts = file.size.div_ceil(chunk);
            for part in 1..=n_parts {
                let url = actions.upload.header.get(&part.to_string()).context("missing part URL")?;
                let start = (part - 1) * chunk;
                let len = chunk.min(file.size - start);
                let body = file_body(&file.full, start, len, progress.clone()).await?;
                let response = check(client.http.put(url).header("content-length", len).body(body).send().await?).await?;
                let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                parts.push(serde_json::json!({ "partNumber": part, "etag": etag }));
            }
            check(client.http.post(&actions.upload.href).json(&serde_json::json!({ "oid": file.sha256, "parts": parts })).send().await?).await?;
        } else {
            let body = file_body(&file.full, 0, file.size, progress.clone()).await?;
            check(client.http.put(&actions.upload.href).header("content-length", file.size).body(body).send().await?).await?;
        }
        progress.finish();
        if let Some(verify) = actions.verify {
            client.send(client.request(reqwest::Method::POST, &verify.href).json(&serde_json::json!({ "oid": file.sha256, "size": file.size }))).await?;
        }
    }
    Ok(())
}

async fn file_body(path: &Path, start: u64, len: u64, progress: ProgressBar) -> anyhow::Result<reqwest::Body> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 1024 * 1024).inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            progress.inc(chunk.len() as u64);
        }
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// A path from the server, checked before it touches the local disk.
fn safe_local_path(dir: &Path, remote: &str) -> anyhow::Result<PathBuf> {
    let relative = Path::new(remote);
    if remote.contains('\\') || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("refusing unsafe path {remote:?} from the server");
    }
    Ok(dir.join(relative))
}

/// Downloads every file of a revision, pinned to the commit the revision resolves to.
pub(crate) async fn pull(client: &Client, repo_rev: &str, kind: &str, dir: &Path) -> anyhow::Result<()> {
    let (kinds, prefix) = kind_prefix(kind)?;
    let (repo, revision) = split_revision(repo_rev);
    let info: api::hub::RepoInfo = client.get_json(&format!("/api/{kinds}/{repo}/revision/{}", encode(revision))).await?;
    let total: u64 = info.siblings.iter().map(|s| s.size).sum();
    let progress = bar(total, &format!("{repo}@{}", &info.sha[..8]));
    for sibling in &info.siblings {
        let target = safe_local_path(dir, &sibling.rfilename)?;
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let url = format!("/{prefix}{repo}/resolve/{}/{}", info.sha, encode_path(&sibling.rfilename));
        let response = client.send(client.request(reqwest::Method::GET, &url)).await?;
        let temp = target.with_file_name(format!(".{}.mantle-part", target.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
        let mut out = tokio::fs::File::create(&temp).await?;
        let mut sha256 = Sha256::new();
        let mut size = 0u64;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            sha256.update(&chunk);
            size += chunk.len() as u64;
            progress.inc(chunk.len() as u64);
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        out.sync_all().await?;
        drop(out);
        if size != sibling.size {
            let _ = tokio::fs::remove_file(&temp).await;
            bail!("{}: got {size} bytes, expected {}", sibling.rfilename, sibling.size);
        }
        if let Some(lfs) = &sibling.lfs {
            if hex::encode(sha256.finalize()) != lfs.sha256 {
                let _ = tokio::fs::remove_file(&temp).await;
                bail!("{}: sha256 mismatch", sibling.rfilename);
            }
        }
        tokio::fs::rename(&temp, &target).await?;
    }
    progress.finish();
    println!("pulled {} files of {repo} at {} into {}", info.siblings.len(), info.sha, dir.display());
    Ok(())
}

/// Lists files with size, LFS flag and oid, following pagination.
pub(crate) async fn ls(client: &Client, repo_rev: &str, kind: &str) -> anyhow::Result<()> {
    let (kinds, _) = kind_prefix(kind)?;
    let (repo, revision) = split_revision(repo_rev);
    let mut next = Some(format!("/api/{kinds}/{repo}/tree/{}?recursive=true", encode(revision)));
    while let Some(url) = next.take() {
        let response = client.send(client.request(reqwest::Method::GET, &url)).await?;
        next = response.headers().get("link").and_then(|v| v.to_str().ok()).and_then(parse_next_link);
        let entries: Vec<api::hub::TreeEntry> = response.json().await?;
        for entry in entries.iter().filter(|e| e.kind == "file") {
            println!("{:>14}  {:<4} {}  {}", entry.size, if entry.lfs.is_some() { "lfs" } else { "" }, &entry.oid[..12.min(entry.oid.len())], entry.path);
        }
    }
    Ok(())
}

fn parse_next_link(header: &str) -> Option<String> {
    header.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| Some(part.split_once('<')?.1.split_once('>')?.0.to_owned()))
}

/// Writes audit rows as JSONL, paging through the whole log.
pub(crate) async fn export_audit(client: &Client, since: Option<&str>, output: Option<&Path>) -> anyhow::Result<()> {
    let mut out: Box<dyn std::io::Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?)),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut after = 0;
    let mut count = 0;
    loop {
        let mut url = format!("/api/admin/audit?after={after}&limit=1000");
        if let Some(since) = since {
            url.push_str(&format!("&since={}", encode(since)));
        }
        let page: Vec<api::admin::AuditEntry> = client.get_json(&url).await?;
        for entry in &page {
            serde_json::to_writer(&mut out, entry)?;
            out.write_all(b"\n")?;
            count += 1;
        }
        match page.last() {
            Some(entry) => after = entry.seq,
            None => break,
        }
    }
    out.flush()?;
    if output.is_some() {
        eprintln!("exported {count} audit events");
    }
    Ok(())
}

/// Prints a revision's verdict; returns false when the revision is blocked.
pub(crate) async fn vet(client: &Client, repo_rev: &str, kind: &str, json: bool) -> anyhow::Result<bool> {
    let (kinds, _) = kind_prefix(kind)?;
    let (repo, revision) = split_revision(repo_rev);
    let verdict: api::vetting::RevisionVerdict = client.get_json(&format!("/api/{kinds}/{repo}/vetting/{}", encode(revision))).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
        return Ok(!verdict.blocked);
    }
    println!("{repo}@{}  {}{}", verdict.commit, verdict.status.to_uppercase(), if verdict.blocked { "  (blocked)" } else { "" });
    println!(
        "licence: {}   policy: allow_pickle={} suspicious_blocks={} licences={}",
        verdict.license.as_deref().unwrap_or("none"),
        verdict.policy.allow_pickle,
        verdict.policy.suspicious_blocks,
        verdict.policy.allowed_licenses.as_ref().map(|l| l.join(",")).unwrap_or_else(|| "any".into())
    );
    println!();
    println!("{:<11} {:<12} {:>12}  FILE", "VERDICT", "FORMAT", "SIZE");
    for file in &verdict.files {
        println!("{:<11} {:<12} {:>12}  {}", file.status, file.format.as_deref().unwrap_or("-"), file.size, file.path);
        for f in &file.findings {
            let place = match (&f.member, f.offset) {
                (Some(m), Some(o)) => format!(" [{m} @{o}]"),
                (Some(m), None) => format!(" [{m}]"),
                (None, Some(o)) => format!(" [@{o}]"),
                (None, None) => String::new(),
            };
            println!("    {:<10} {:<28} {}{place}", f.level, f.code, f.reason);
        }
        for o in &file.overridden {
            println!("    {:<10} {:<28} {} (accepted by {}: {})", "overridden", o.finding.code, o.finding.subject, o.accepted_by.author, o.accepted_by.justification);
        }
    }
    for f in &verdict.repo_findings {
        println!("{:<11} {:<28} {}", f.level, f.code, f.reason);
    }
    if !verdict.reasons.is_empty() {
        println!();
        for reason in &verdict.reasons {
            println!("blocked: {reason}");
        }
    }
    Ok(!verdict.blocked)
}

/// Writes the CycloneDX AI-BOM of a revision.
pub(crate) async fn bom(client: &Client, repo_rev: &str, kind: &str, output: Option<&Path>) -> anyhow::Result<()> {
    let (kinds, _) = kind_prefix(kind)?;
    let (repo, revision) = split_revision(repo_rev);
    let document: serde_json::Value = client.get_json(&format!("/api/{kinds}/{repo}/bom/{}", encode(revision))).await?;
    let text = serde_json::to_string_pretty(&document)?;
    match output {
        Some(path) => std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        let dir = Path::new("/tmp/x");
        assert!(safe_local_path(dir, "a/b.txt").is_ok());
        assert!(safe_local_path(dir, "../etc/passwd").is_err());
        assert!(safe_local_path(dir, "/etc/passwd").is_err());
        assert!(safe_local_path(dir, "a\\b").is_err());
    }

    #[test]
    fn next_links() {
        assert_eq!(parse_next_link("<http://h/api?cursor=x>; rel=\"next\"").as_deref(), Some("http://h/api?cursor=x"));
        assert_eq!(parse_next_link("<http://h/a>; rel=\"prev\""), None);
    }
}
