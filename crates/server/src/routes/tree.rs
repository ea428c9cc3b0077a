//! Tree listing (recursive or not, paginated with `Link`) and paths-info.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use base64::Engine as _;
use domain::repo::{git_blob_oid, FileEntry};
use serde::Deserialize;

use super::{base_url, repo_from_path, RevParams};
use crate::auth::Auth;
use crate::{ApiError, ApiResult, AppState};

#[derive(Deserialize)]
pub(crate) struct TreeParams {
    kinds: String,
    ns: String,
    name: String,
    rev: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
pub(crate) struct TreeQuery {
    recursive: Option<String>,
    expand: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

fn truthy(value: Option<&str>) -> bool {
    matches!(value.map(str::to_ascii_lowercase).as_deref(), Some("1" | "true" | "yes"))
}

pub(crate) async fn list_tree_root(state: State<AppState>, Path(p): Path<TreeParams>, query: Query<TreeQuery>, headers: HeaderMap, auth: Auth) -> ApiResult<(HeaderMap, Json<Vec<api::hub::TreeEntry>>)> {
    list_tree(state, Path(p), query, headers, auth).await
}

pub(crate) async fn list_tree(State(state): State<AppState>, Path(p): Path<TreeParams>, Query(query): Query<TreeQuery>, headers: HeaderMap, Auth(principal): Auth) -> ApiResult<(HeaderMap, Json<Vec<api::hub::TreeEntry>>)> {
    let (kind, name) = repo_from_path(&p.kinds, &p.ns, &p.name)?;
    let repo = state.hub.visible_repo(&principal, kind, &name).await?;
    let (commit, files) = state.hub.snapshot(&repo, &p.rev).await?;
    let folder = p.path.trim_matches('/');
    let recursive = truthy(query.recursive.as_deref());
    let entries = tree_entries(&files, folder, recursive).ok_or_else(|| domain::Error::entry_not_found(folder, Some(commit.id.to_string())))?;

    let expand = truthy(query.expand.as_deref());
    let page_size = query.limit.unwrap_or(if expand { 50 } else { 1000 }).clamp(1, 1000);
    let start = match &query.cursor {
        None => 0,
        Some(cursor) => decode_cursor(cursor).ok_or_else(|| ApiError::invalid("invalid cursor"))?,
    };
    let mut page: Vec<_> = entries.iter().skip(start).take(page_size).cloned().collect();
    if expand {
        let verdict = state.hub.judge_files(&repo, &files).await?;
        for entry in page.iter_mut().filter(|e| e.kind == "file") {
            if let Some(file) = verdict.files.iter().find(|f| f.path == entry.path) {
                entry.security_file_status = Some(super::vetting::security_file_status(file));
            }
        }
    }
    let mut out = HeaderMap::new();
    if start + page_size < entries.len() {
        let encoded_path = if folder.is_empty() { String::new() } else { format!("/{}", percent_encoding::utf8_percent_encode(folder, percent_encoding::NON_ALPHANUMERIC)) };
        let rev = percent_encoding::utf8_percent_encode(&p.rev, percent_encoding::NON_ALPHANUMERIC);
        let next = format!("<{}/api/{}/{name}/tree/{rev}{encoded_path}?recursive={recursive}&expand={expand}&limit={page_size}&cursor={}>; rel=\"next\"", base_url(&state, &headers), p.kinds, encode_cursor(start + page_size));
        if let Ok(value) = next.parse() {
            out.insert("link", value);
        }
    }
    fill_xet_hashes(&state, &mut page).await?;
    Ok((out, Json(page)))
}

/// Adds `xetHash` to the LFS entries stored through Xet.
async fn fill_xet_hashes(state: &AppState, entries: &mut [api::hub::TreeEntry]) -> ApiResult<()> {
    let sha256s: Vec<String> = entries.iter().filter_map(|e| e.lfs.as_ref().map(|lfs| lfs.oid.clone())).collect();
    if sha256s.is_empty() {
        return Ok(());
    }
    let hashes = state.hub.xet_hashes(&sha256s).await?;
    for entry in entries {
        entry.xet_hash = entry.lfs.as_ref().and_then(|lfs| hashes.get(&lfs.oid).cloned());
    }
    Ok(())
}

fn encode_cursor(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("o:{offset}"))
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    String::from_utf8(bytes).ok()?.strip_prefix("o:")?.parse().ok()
}

/// The entries under `folder` (empty for the root): its children, or with `recursive` every file
/// and folder below it. `None` when `folder` is not a folder of this tree.
pub(crate) fn tree_entries(files: &[FileEntry], folder: &str, recursive: bool) -> Option<Vec<api::hub::TreeEntry>> {
    let prefix = if folder.is_empty() { String::new() } else { format!("{folder}/") };
    let mut entries = Vec::new();
    let mut folders: BTreeMap<String, Vec<&FileEntry>> = BTreeMap::new();
    let mut found = folder.is_empty();
    for file in files {
        let Some(rest) = file.path.as_str().strip_prefix(&prefix) else { continue };
        found = true;
        let parts: Vec<&str> = rest.split('/').collect();
        // Every folder between `folder` and the file is listed when recursive; only the first otherwise.
        let depth = if recursive { parts.len() - 1 } else { parts.len().min(2) - 1 };
        for i in 0..depth {
            folders.entry(format!("{prefix}{}", parts[..=i].join("/"))).or_default().push(file);
        }
        if recursive || parts.len() == 1 {
            entries.push(file_entry(file));
        }
    }
    if !found {
        return None;
    }
    for (path, contents) in folders {
        entries.push(folder_entry(&path, &contents));
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Some(entries)
}

pub(crate) fn file_entry(file: &FileEntry) -> api::hub::TreeEntry {
    api::hub::TreeEntry {
        kind: "file".into(),
        oid: file.git_oid.clone(),
        size: file.size,
        path: file.path.to_string(),
        lfs: file.lfs.then(|| api::hub::TreeLfs { oid: file.sha256.to_string(), size: file.size, pointer_size: file.pointer_size() }),
        xet_hash: None,
        security_file_status: None,
    }
}

/// A folder entry; its oid is a stable digest of what it holds.
fn folder_entry(path: &str, contents: &[&FileEntry]) -> api::hub::TreeEntry {
    let listing: String = contents.iter().map(|f| format!("{} {}\n", f.git_oid, f.path)).collect();
    api::hub::TreeEntry { kind: "directory".into(), oid: git_blob_oid(listing.as_bytes()), size: 0, path: path.to_owned(), lfs: None, xet_hash: None, security_file_status: None }
}

/// `POST .../paths-info/{rev}`: the client sends a form (`paths=a&paths=b&expand=...`); JSON works too.
/// Missing paths are left out, as on the Hub.
pub(crate) async fn paths_info(State(state): State<AppState>, Path(p): Path<RevParams>, headers: HeaderMap, Auth(principal): Auth, body: Bytes) -> ApiResult<Json<Vec<api::hub::TreeEntry>>> {
    let (kind, name) = p.repo()?;
    let repo = state.hub.visible_repo(&principal, kind, &name).await?;
    let is_json = headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let paths: Vec<String> = if is_json {
        let request: api::hub::PathsInfoRequest = serde_json::from_slice(&body).map_err(|err| ApiError::invalid(format!("malformed JSON body: {err}")))?;
        request.paths
    } else {
        url::form_urlencoded::parse(&body).filter(|(key, _)| key == "paths" || key == "paths[]").map(|(_, value)| value.into_owned()).collect()
    };
    if paths.len() > 10_000 {
        return Err(ApiError::invalid("at most 10000 paths per request"));
    }
    let (_, files) = state.hub.snapshot(&repo, &p.rev).await?;
    let mut out = Vec::new();
    for path in paths {
        let path = path.trim_matches('/');
        if let Some(file) = files.iter().find(|f| f.path.as_str() == path) {
            out.push(file_entry(file));
        } else {
            let prefix = format!("{path}/");
            let contents: Vec<&FileEntry> = files.iter().filter(|f| f.path.as_str().starts_with(&prefix)).collect();
            if !contents.is_empty() {
                out.push(folder_entry(path, &contents));
            }
        }
    }
    fill_xet_hashes(&state, &mut out).await?;
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::ids::{Digest, RepoPath};

    fn check(paths: &[&str], folder: &str, recursive: bool, expect: Option<&str>) {
        let files: Vec<FileEntry> = paths.iter().map(|p| FileEntry { path: RepoPath::parse(p).unwrap(), size: 1, sha256: Digest::parse(&"b".repeat(64)).unwrap(), git_oid: "o".into(), lfs: false }).collect();
        let got = tree_entries(&files, folder, recursive).map(|entries| entries.iter().map(|e| format!("{}:{}", &e.kind[..1], e.path)).collect::<Vec<_>>().join(" "));
        assert_eq!(got.as_deref(), expect);
    }

    #[test]
    fn listing() {
        let files = ["a.txt", "d/b.txt", "d/e/c.txt", "z"];
        check(&files, "", false, Some("f:a.txt d:d f:z"));
        check(&files, "", true, Some("f:a.txt d:d f:d/b.txt d:d/e f:d/e/c.txt f:z"));
        check(&files, "d", false, Some("f:d/b.txt d:d/e"));
        check(&files, "d/e", true, Some("f:d/e/c.txt"));
        check(&files, "nope", false, None);
        check(&files, "a.txt", false, None);
    }

    #[test]
    fn cursors_round_trip() {
        assert_eq!(decode_cursor(&encode_cursor(1234)), Some(1234));
        assert_eq!(decode_cursor("garbage!"), None);
    }
}
