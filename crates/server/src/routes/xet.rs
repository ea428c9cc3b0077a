//! Xet: the Hub's token endpoints, and the CAS API hf_xet talks to, on Mantle's own port under
//! `casUrl` = `{base}/xet/{namespace}` (the repo's namespace). The namespace in the URL grants
//! nothing (the token carries the scope): it partitions clients' local caches, which hf_xet keys
//! by CAS URL, so a machine that pushed for one account never offers the server that account's
//! xorbs in another account's push (they would be refused: dedup stays inside a tenant). CAS
//! calls carry a signed token (`XetAuth`); xorb byte ranges are fetched through signed URLs
//! (`/xet-fetch`) that carry their own authority, bound to one range.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::xet::XetScope;
use futures::{StreamExt as _, TryStreamExt as _};
use serde::Deserialize;
use serde_json::json;

use super::{base_url, RevParams};
use crate::auth::Auth;
use crate::{ApiError, ApiResult, AppState};

/// How long a CAS token lives; clients refresh it through the token endpoint.
const TOKEN_TTL_SECS: i64 = 15 * 60;
/// How long a signed xorb fetch URL lives.
const FETCH_TTL_SECS: i64 = 60 * 60;
/// The largest shard body accepted.
const MAX_SHARD_BYTES: usize = 64 * 1024 * 1024;

#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    create_pr: Option<String>,
}

pub(crate) async fn write_token(state: State<AppState>, path: Path<RevParams>, query: Query<TokenQuery>, headers: HeaderMap, auth: Auth) -> ApiResult<Response> {
    token(state, path, query, headers, auth, true).await
}

pub(crate) async fn read_token(state: State<AppState>, path: Path<RevParams>, query: Query<TokenQuery>, headers: HeaderMap, auth: Auth) -> ApiResult<Response> {
    token(state, path, query, headers, auth, false).await
}

/// `{"accessToken", "exp", "casUrl"}` in the body (hf_xet reads it) and as `X-Xet-*` headers
/// (huggingface_hub reads those).
async fn token(State(state): State<AppState>, Path(p): Path<RevParams>, Query(query): Query<TokenQuery>, headers: HeaderMap, Auth(principal): Auth, write: bool) -> ApiResult<Response> {
    let (kind, name) = p.repo()?;
    if query.create_pr.as_deref().is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        return Err(ApiError::invalid("pull requests are not supported; commit to a branch"));
    }
    let revision = (p.rev != "None").then_some(p.rev.as_str());
    let scope = state.hub.xet_scope(&principal, kind, &name, revision, write).await?;
    let exp = chrono::Utc::now().timestamp() + TOKEN_TTL_SECS;
    let access_token = crate::signing::xet_token(&state.signer, &scope, exp);
    let cas_url = format!("{}/xet/{}", base_url(&state, &headers), name.namespace);
    let mut out = HeaderMap::new();
    for (key, value) in [("x-xet-cas-url", cas_url.clone()), ("x-xet-access-token", access_token.clone()), ("x-xet-token-expiration", exp.to_string())] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(key, value);
        }
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((out, Json(json!({ "accessToken": access_token, "exp": exp, "casUrl": cas_url }))).into_response())
}

/// The scope of a CAS request's `Authorization: Bearer` token.
pub(crate) struct XetAuth(XetScope);

impl FromRequestParts<AppState> for XetAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim).unwrap_or("");
        if token.is_empty() {
            return Err(domain::Error::Unauthenticated("a Xet token is required (Authorization: Bearer)".into()).into());
        }
        Ok(XetAuth(crate::signing::read_xet_token(&state.signer, token)?))
    }
}

fn check_prefix(prefix: &str, allowed: &[&str]) -> ApiResult<()> {
    if allowed.contains(&prefix) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!("unknown prefix {prefix:?}: expected {}", allowed.join(" or "))))
    }
}

/// `POST {cas}/v1/xorbs/default/{hash}`: a serialized xorb (chunk records, no footer), streamed.
pub(crate) async fn upload_xorb(State(state): State<AppState>, XetAuth(scope): XetAuth, Path((_, prefix, hash)): Path<(String, String, String)>, headers: HeaderMap, body: Body) -> ApiResult<Json<serde_json::Value>> {
    check_prefix(&prefix, &["default"])?;
    if let Some(length) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()) {
        if length > domain::xet::format::MAX_XORB_UPLOAD {
            return Err(ApiError::invalid(format!("a xorb upload is at most {} bytes; this one declares {length}", domain::xet::format::MAX_XORB_UPLOAD)));
        }
    }
    let stream = body.into_data_stream().map_err(|err| err.to_string()).boxed();
    // hf_xet shows only a refusal's status and URL: the reason goes to the log as well.
    let (inserted, size) = state.hub.put_xorb(&scope, &hash, stream).await.inspect_err(|err| tracing::info!(%hash, user = %scope.user, "xorb refused: {err}"))?;
    state.metrics.xorb_uploaded(size, inserted);
    Ok(Json(json!({ "was_inserted": inserted })))
}

/// `POST {cas}/v1/shards`: file reconstructions over uploaded xorbs.
pub(crate) async fn upload_shard(State(state): State<AppState>, XetAuth(scope): XetAuth, body: Body) -> ApiResult<Json<serde_json::Value>> {
    let bytes = axum::body::to_bytes(body, MAX_SHARD_BYTES).await.map_err(|err| ApiError::invalid(format!("the shard could not be read (at most {MAX_SHARD_BYTES} bytes): {err}")))?;
    let files = state.hub.put_shard(&scope, &bytes).await.inspect_err(|err| tracing::info!(user = %scope.user, "shard refused: {err}"))?;
    tracing::info!(files, repo_id = scope.repo_id, user = %scope.user, "xet shard registered");
    Ok(Json(json!({ "result": 1 })))
}

/// `GET {cas}/v1/chunks/{prefix}/{hash}`: a shard of the tenant's xorbs holding the chunk, or 404.
pub(crate) async fn dedup_chunk(State(state): State<AppState>, XetAuth(scope): XetAuth, Path((_, prefix, hash)): Path<(String, String, String)>) -> ApiResult<Response> {
    check_prefix(&prefix, &["default-merkledb", "default"])?;
    match state.hub.xet_dedup_shard(&scope, &hash).await? {
        Some(shard) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], shard).into_response()),
        None => Err(domain::Error::NotFound(format!("chunk {hash} is not known")).into()),
    }
}

/// `GET {cas}/v1/reconstructions/{file_id}` (optional `Range: bytes=a-b`): terms and signed
/// fetch URLs.
pub(crate) async fn reconstruction(State(state): State<AppState>, XetAuth(scope): XetAuth, Path((_, file_id)): Path<(String, String)>, headers: HeaderMap) -> ApiResult<Response> {
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(text) => Some(parse_inclusive_range(text).ok_or_else(|| ApiError::invalid(format!("malformed Range {text:?}: expected bytes=START-END")))?),
    };
    let Some(plan) = state.hub.xet_reconstruction(&scope, &file_id, range.map(|(start, end)| start..end.saturating_add(1))).await? else {
        return Ok((StatusCode::RANGE_NOT_SATISFIABLE, Json(json!({ "error": "the range starts past the end of the file" }))).into_response());
    };
    state.metrics.reconstruction_served();
    let base = format!("{}/xet-fetch", base_url(&state, &headers));
    let exp = (chrono::Utc::now().timestamp() + FETCH_TTL_SECS).to_string();
    let mut terms = Vec::with_capacity(plan.terms.len());
    let mut fetch_info: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for term in &plan.terms {
        terms.push(json!({ "hash": term.xorb, "unpacked_length": term.unpacked_len, "range": { "start": term.chunks.start, "end": term.chunks.end } }));
        let entries = fetch_info.entry(term.xorb.clone()).or_default();
        let chunks = json!({ "start": term.chunks.start, "end": term.chunks.end });
        if entries.iter().any(|e| e["range"] == chunks) {
            continue;
        }
        let (start, end) = (term.bytes.start, term.bytes.end - 1);
        let signed = format!("{start}-{end}");
        let sig = state.signer.sign(&["xet-fetch", &term.xorb, &signed, &exp]);
        entries.push(json!({ "range": chunks, "url": format!("{base}/{}?range={signed}&exp={exp}&sig={sig}", term.xorb), "url_range": { "start": start, "end": end } }));
    }
    Ok(Json(json!({ "offset_into_first_range": plan.offset_into_first_range, "terms": terms, "fetch_info": fetch_info })).into_response())
}

#[derive(Deserialize)]
pub(crate) struct FetchQuery {
    range: String,
    exp: i64,
    sig: String,
}

/// `GET /xet-fetch/{xorb}?range&exp&sig`: serialized xorb bytes within the signed range
/// (the client's `Range` may ask for part of it). No credentials: the URL is the authority.
pub(crate) async fn fetch(State(state): State<AppState>, Path(xorb): Path<String>, Query(q): Query<FetchQuery>, headers: HeaderMap) -> ApiResult<Response> {
    if !state.signer.verify(&["xet-fetch", &xorb, &q.range, &q.exp.to_string()], &q.sig) {
        return Err(domain::Error::forbidden("invalid fetch signature").into());
    }
    if chrono::Utc::now().timestamp() > q.exp {
        return Err(domain::Error::forbidden("the fetch URL has expired; ask for the reconstruction again").into());
    }
    let (signed_start, signed_end) = parse_inclusive_range(&format!("bytes={}", q.range)).ok_or_else(|| ApiError::invalid("malformed signed range"))?;
    let (start, end) = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => (signed_start, signed_end),
        Some(text) => parse_inclusive_range(text).ok_or_else(|| ApiError::invalid(format!("malformed Range {text:?}")))?,
    };
    if start < signed_start || end > signed_end || start > end {
        return Err(domain::Error::forbidden(format!("bytes {start}-{end} are outside the signed range {}", q.range)).into());
    }
    let stream = state.hub.xorb_bytes(&xorb, start..end + 1).await?;
    let body = Body::from_stream(stream.map_err(|err| std::io::Error::other(err.to_string())));
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_LENGTH, (end - start + 1).to_string()),
        (header::CONTENT_RANGE, format!("bytes {start}-{end}/*")),
        (header::CACHE_CONTROL, "private, max-age=3600, immutable".to_owned()),
    ];
    Ok((StatusCode::PARTIAL_CONTENT, headers, body).into_response())
}

/// `bytes=START-END`, end inclusive (the only form the CAS API uses).
fn parse_inclusive_range(text: &str) -> Option<(u64, u64)> {
    let (start, end) = text.trim().strip_prefix("bytes=")?.split_once('-')?;
    let (start, end) = (start.trim().parse::<u64>().ok()?, end.trim().parse::<u64>().ok()?);
    (start <= end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_inclusive_range;

    #[test]
    fn inclusive_ranges() {
        assert_eq!(parse_inclusive_range("bytes=0-99"), Some((0, 99)));
        assert_eq!(parse_inclusive_range("bytes=5-5"), Some((5, 5)));
        assert_eq!(parse_inclusive_range("bytes=6-5"), None);
        assert_eq!(parse_inclusive_range("bytes=-5"), None);
        assert_eq!(parse_inclusive_range("items=0-1"), None);
    }
}
