//! Preupload and commit. A commit body is NDJSON read line by line (each line bounded), so inline
//! files are decoded one at a time and a whole body is never held in memory.

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use base64::Engine as _;
use domain::hub::{CommitRequest, UploadMode};
use domain::ids::RepoPath;
use domain::meta::FileOperation;
use futures::TryStreamExt as _;
use serde::Deserialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};

use super::{base_url, repo_url, RevParams};
use crate::auth::Auth;
use crate::error::json_rejection;
use crate::{ApiError, ApiResult, AppState};

#[derive(Deserialize)]
pub(crate) struct CommitQuery {
    create_pr: Option<String>,
}

/// The most operations one commit may carry.
const MAX_OPERATIONS: usize = 100_000;

pub(crate) async fn preupload(State(state): State<AppState>, Path(p): Path<RevParams>, Auth(principal): Auth, body: Result<Json<api::hub::PreuploadRequest>, JsonRejection>) -> ApiResult<Json<api::hub::PreuploadResponse>> {
    let (kind, name) = p.repo()?;
    let repo = state.hub.writable_repo(&principal, kind, &name).await?;
    let Json(body) = body.map_err(json_rejection)?;
    if body.files.len() > 1000 {
        return Err(ApiError::invalid("at most 1000 files per preupload request"));
    }
    // A new branch has no files yet; preupload against it answers as for an empty tree.
    let (commit, files) = match state.hub.snapshot(&repo, &p.rev).await {
        Ok((commit, files)) => (commit.id.to_string(), files),
        Err(domain::Error::RevisionNotFound(_)) => (String::new(), Vec::new()),
        Err(err) => return Err(err.into()),
    };
    let existing_by_path: std::collections::HashMap<&RepoPath, &domain::repo::FileEntry> = files.iter().map(|f| (&f.path, f)).collect();
    let mut answers = Vec::with_capacity(body.files.len());
    for file in body.files {
        let path = RepoPath::parse(&file.path)?;
        let mode = state.hub.upload_mode(file.size);
        let existing = existing_by_path.get(&path);
        answers.push(api::hub::PreuploadAnswer {
            path: file.path,
            upload_mode: match mode {
                UploadMode::Regular => "regular".into(),
                UploadMode::Lfs => "lfs".into(),
            },
            should_ignore: false,
            // The client compares this with its own oid (git sha1 for regular, sha256 for LFS) to skip unchanged files.
            oid: existing.map(|f| match mode {
                UploadMode::Regular => f.git_oid.clone(),
                UploadMode::Lfs => f.sha256.to_string(),
            }),
        });
    }
    Ok(Json(api::hub::PreuploadResponse { files: answers, commit_oid: commit }))
}

pub(crate) async fn create_commit(State(state): State<AppState>, Path(p): Path<RevParams>, Query(query): Query<CommitQuery>, headers: HeaderMap, Auth(principal): Auth, body: Body) -> ApiResult<Json<api::hub::CommitResponse>> {
    let (kind, name) = p.repo()?;
    // Rights are checked before a single byte of the body is read or stored.
    let repo = state.hub.writable_repo(&principal, kind, &name).await?;
    if query.create_pr.as_deref().is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        return Err(ApiError::invalid("pull requests are not supported; commit to a branch"));
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.starts_with("application/json") {
        return Err(ApiError::invalid("send the commit as NDJSON (Content-Type: application/x-ndjson)"));
    }
    // A line holds at most one base64 file plus its JSON envelope.
    let max_line = usize::try_from(state.config.hub.max_inline_file.saturating_mul(4) / 3 + 64 * 1024).unwrap_or(usize::MAX);
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, tokio_util::io::StreamReader::new(stream));
    let mut line = Vec::new();
    let mut header: Option<api::hub::CommitHeader> = None;
    let mut operations = Vec::new();
    let mut line_no = 0usize;
    while read_line(&mut reader, &mut line, max_line).await? {
        line_no += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed: api::hub::CommitLine = serde_json::from_slice(&line).map_err(|err| ApiError::invalid(format!("line {line_no} of the commit body is not a valid operation: {err}")))?;
        match parsed {
            api::hub::CommitLine::Header(h) => {
                if header.is_some() || line_no != 1 {
                    return Err(ApiError::invalid("the header must be the first line, and only once"));
                }
                header = Some(h);
                continue;
            }
            _ if header.is_none() => return Err(ApiError::invalid("the commit body must start with a header line")),
            api::hub::CommitLine::File(file) => {
                let path = RepoPath::parse(&file.path)?;
                let bytes = match file.encoding.as_deref() {
                    None | Some("base64") => base64::engine::general_purpose::STANDARD.decode(file.content.as_bytes()).map_err(|err| ApiError::invalid(format!("{path}: content is not valid base64: {err}")))?,
                    Some("utf-8" | "utf8") => file.content.into_bytes(),
                    Some(other) => return Err(ApiError::invalid(format!("{path}: unsupported encoding {other:?}"))),
                };
                operations.push(FileOperation::Add(state.hub.store_inline(&principal, &repo, path, bytes.into()).await?));
            }
            api::hub::CommitLine::LfsFile(file) => {
                if file.algo.as_deref().is_some_and(|a| a != "sha256") {
                    return Err(ApiError::invalid(format!("{}: unsupported LFS algo", file.path)));
                }
                let path = RepoPath::parse(&file.path)?;
                operations.push(FileOperation::Add(state.hub.lfs_entry(&principal, &repo, path, &file.oid, file.size).await?));
            }
            api::hub::CommitLine::DeletedFile(file) => operations.push(FileOperation::DeleteFile(RepoPath::parse(&file.path)?)),
            api::hub::CommitLine::DeletedFolder(folder) => operations.push(FileOperation::DeleteFolder(RepoPath::parse(folder.path.trim_end_matches('/'))?)),
        }
        if operations.len() > MAX_OPERATIONS {
            return Err(ApiError::invalid(format!("at most {MAX_OPERATIONS} operations per commit")));
        }
    }
    let header = header.ok_or_else(|| ApiError::invalid("the commit body is empty: expected a header line"))?;
    let request = CommitRequest { branch: p.rev.clone(), parent_commit: header.parent_commit, title: header.summary, message: header.description, operations };
    let commit = state.hub.commit(&principal, &repo, request).await?;
    state.scan_wake.notify_one();
    let commit_url = format!("{}/commit/{}", repo_url(&base_url(&state, &headers), kind, &name), commit.id);
    Ok(Json(api::hub::CommitResponse { success: true, commit_oid: commit.id.to_string(), commit_url, pull_request_url: None }))
}

/// Reads one `\n`-terminated line into `line` (without the newline); false at end of input.
/// A line longer than `max` is refused before it is buffered whole.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, line: &mut Vec<u8>, max: usize) -> ApiResult<bool> {
    line.clear();
    loop {
        let available = reader.fill_buf().await.map_err(|err| ApiError::invalid(format!("reading the commit body failed: {err}")))?;
        if available.is_empty() {
            return Ok(!line.is_empty());
        }
        let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], true),
            None => (available, false),
        };
        if line.len() + chunk.len() > max {
            return Err(ApiError::invalid(format!("a commit line is longer than {max} bytes; upload large files through LFS")));
        }
        line.extend_from_slice(chunk);
        let consumed = chunk.len() + usize::from(found);
        reader.consume(consumed);
        if found {
            return Ok(true);
        }
    }
}
