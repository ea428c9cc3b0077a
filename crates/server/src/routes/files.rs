//! `resolve`: file downloads with HEAD, `Range`, `If-None-Match`, and the headers
//! `huggingface_hub` reads (`X-Repo-Commit`, `ETag`/`X-Linked-Etag`, `X-Linked-Size`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::ids::RepoKind;
use futures::TryStreamExt as _;
use serde::Deserialize;

use super::repo_from_path;
use crate::auth::Auth;
use crate::{ApiResult, AppState};

#[derive(Deserialize)]
pub(crate) struct ResolveParams {
    ns: String,
    name: String,
    rev: String,
    path: String,
}

pub(crate) async fn resolve_model(state: State<AppState>, method: Method, path: Path<ResolveParams>, headers: HeaderMap, auth: Auth) -> ApiResult<Response> {
    resolve(state, method, path, headers, auth, RepoKind::Model).await
}

pub(crate) async fn resolve_dataset(state: State<AppState>, method: Method, path: Path<ResolveParams>, headers: HeaderMap, auth: Auth) -> ApiResult<Response> {
    resolve(state, method, path, headers, auth, RepoKind::Dataset).await
}

async fn resolve(State(state): State<AppState>, method: Method, Path(p): Path<ResolveParams>, headers: HeaderMap, Auth(principal): Auth, kind: RepoKind) -> ApiResult<Response> {
    let kinds = if kind == RepoKind::Model { "models" } else { "datasets" };
    let (kind, name) = repo_from_path(kinds, &p.ns, &p.name)?;
    let repo = state.hub.visible_repo(&principal, kind, &name).await?;
    let (commit, file) = state.hub.file(&repo, &p.rev, &p.path).await?;

    let etag = format!("\"{}\"", file.etag());
    let mut out = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(name, value);
        }
    };
    put("x-repo-commit", commit.as_str());
    put("etag", &etag);
    put("x-linked-etag", &etag);
    put("x-linked-size", &file.size.to_string());
    put("accept-ranges", "bytes");
    put("content-type", "application/octet-stream");
    // Uploaded bytes are served on the console's origin: a browser must never sniff them into
    // HTML or script, run them, or render them in place.
    put("x-content-type-options", "nosniff");
    put("content-security-policy", "sandbox; default-src 'none'");
    put("content-disposition", &attachment(p.path.rsplit('/').next().unwrap_or("file")));
    // Files stored through Xet name their Xet hash and where a read token comes from, so
    // clients with hf_xet fetch them chunk-wise; everyone else gets the bytes below.
    if file.lfs {
        if let Some(xet_hash) = state.hub.xet_hashes(std::slice::from_ref(&file.sha256.to_string())).await?.remove(file.sha256.as_str()) {
            put("x-xet-hash", &xet_hash);
            let token_url = format!("{}/api/{kinds}/{name}/xet-read-token/{commit}", super::base_url(&state, &headers));
            put("link", &format!("<{token_url}>; rel=\"xet-auth\""));
        }
    }
    // Content-addressed under a commit id, the bytes never change; under a branch they may.
    put("cache-control", if p.rev == commit.as_str() { "public, max-age=31536000, immutable" } else { "no-cache" });

    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }

    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(text) => match parse_range(text, file.size) {
            RangeSpec::Whole => None,
            RangeSpec::Part(start, end) => Some((start, end)),
            RangeSpec::Unsatisfiable => {
                put("content-range", &format!("bytes */{}", file.size));
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, out).into_response());
            }
        },
    };
    let (status, length) = match range {
        Some((start, end)) => {
            put("content-range", &format!("bytes {start}-{end}/{}", file.size));
            (StatusCode::PARTIAL_CONTENT, end - start + 1)
        }
        None => (StatusCode::OK, file.size),
    };
    put("content-length", &length.to_string());
    if method == Method::HEAD {
        return Ok((status, out).into_response());
    }
    let stream = state.hub.blob_stream(&file.sha256, range.map(|(start, end)| start..end + 1)).await?;
    let body = Body::from_stream(stream.map_err(|err| std::io::Error::other(err.to_string())));
    Ok((status, out, body).into_response())
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses a single `bytes=` range against a size. Several ranges, or another unit, get the whole
/// file, which RFC 9110 allows.
fn parse_range(text: &str, size: u64) -> RangeSpec {
    let Some(spec) = text.trim().strip_prefix("bytes=") else { return RangeSpec::Whole };
    if spec.contains(',') {
        return RangeSpec::Whole;
    }
    let Some((start, end)) = spec.trim().split_once('-') else { return RangeSpec::Unsatisfiable };
    let (start, end) = (start.trim(), end.trim());
    let parsed = match (start.is_empty(), end.is_empty()) {
        (true, true) => None,
        (true, false) => end.parse::<u64>().ok().filter(|n| *n > 0).map(|n| (size.saturating_sub(n), size.saturating_sub(1))),
        (false, true) => start.parse::<u64>().ok().map(|s| (s, size.saturating_sub(1))),
        (false, false) => match (start.parse::<u64>(), end.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(size.saturating_sub(1)))),
            _ => None,
        },
    };
    match parsed {
        Some((start, end)) if size > 0 && start < size && start <= end => RangeSpec::Part(start, end),
        _ => RangeSpec::Unsatisfiable,
    }
}

/// `Content-Disposition` for a download, in the Hub's shape (the client reads `filename="..."`
/// for display): the name percent-encoded, and an ASCII fallback without quotes or controls.
pub(crate) fn attachment(name: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string();
    let ascii: String = name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' && c != ';' { c } else { '_' }).collect();
    format!("attachment; filename*=UTF-8''{encoded}; filename=\"{ascii}\";")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, size: u64, expect: RangeSpec) {
        assert_eq!(parse_range(text, size), expect, "{text}");
    }

    #[test]
    fn ranges() {
        check("bytes=0-99", 1000, RangeSpec::Part(0, 99));
        check("bytes=900-", 1000, RangeSpec::Part(900, 999));
        check("bytes=-100", 1000, RangeSpec::Part(900, 999));
        check("bytes=0-5000", 1000, RangeSpec::Part(0, 999));
        check("bytes=-5000", 1000, RangeSpec::Part(0, 999));
        check("bytes=1000-", 1000, RangeSpec::Unsatisfiable);
        check("bytes=5-3", 1000, RangeSpec::Unsatisfiable);
        check("bytes=abc", 1000, RangeSpec::Unsatisfiable);
        check("bytes=0-0", 0, RangeSpec::Unsatisfiable);
        check("bytes=0-1,5-6", 1000, RangeSpec::Whole);
        check("items=0-1", 1000, RangeSpec::Whole);
    }
}
