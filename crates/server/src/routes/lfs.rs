//! The Git LFS batch API and the signed upload endpoints it hands out (basic PUT, multipart
//! parts and completion, verify).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use domain::ids::{Digest, RepoKind, RepoName};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::Deserialize;

use super::base_url;
use crate::auth::Auth;
use crate::error::json_rejection;
use crate::{ApiError, ApiResult, AppState};

/// The most multipart upload URLs one batch answer lists.
const MAX_PARTS_PER_BATCH: u64 = 10_000;

#[derive(Deserialize)]
pub(crate) struct BatchParams {
    ns: String,
    name_git: String,
}

pub(crate) async fn batch_model(state: State<AppState>, path: Path<BatchParams>, headers: HeaderMap, auth: Auth, body: Result<Json<api::lfs::BatchRequest>, JsonRejection>) -> ApiResult<impl IntoResponse> {
    batch(state, path, headers, auth, body, RepoKind::Model).await
}

pub(crate) async fn batch_dataset(state: State<AppState>, path: Path<BatchParams>, headers: HeaderMap, auth: Auth, body: Result<Json<api::lfs::BatchRequest>, JsonRejection>) -> ApiResult<impl IntoResponse> {
    batch(state, path, headers, auth, body, RepoKind::Dataset).await
}

async fn batch(State(state): State<AppState>, Path(p): Path<BatchParams>, headers: HeaderMap, Auth(principal): Auth, body: Result<Json<api::lfs::BatchRequest>, JsonRejection>, kind: RepoKind) -> ApiResult<impl IntoResponse> {
    let repo_name = p.name_git.strip_suffix(".git").unwrap_or(&p.name_git);
    let name = RepoName::from_parts(&p.ns, repo_name).map_err(|_| domain::Error::RepoNotFound("repository not found".into()))?;
    let Json(body) = body.map_err(json_rejection)?;
    if body.operation != "upload" {
        return Err(ApiError::invalid(format!("LFS operation {:?} is not supported; download files through /resolve", body.operation)));
    }
    if body.hash_algo.as_deref().is_some_and(|a| a != "sha256") {
        return Err(ApiError::invalid("only sha256 LFS objects are supported"));
    }
    if body.objects.len() > 1000 {
        return Err(ApiError::invalid("at most 1000 objects per batch"));
    }
    let repo = state.hub.writable_repo(&principal, kind, &name).await?;
    // huggingface_hub 1.x with hf_xet offers Xet here: the client then uploads through the CAS
    // API (chunk-level dedup) and needs no upload URLs, only the objects acknowledged.
    if body.transfers.iter().any(|t| t == "xet") {
        let answers = body
            .objects
            .into_iter()
            .map(|object| {
                let error = if Digest::parse(&object.oid).is_err() {
                    Some(api::lfs::BatchError { code: 422, message: "oid must be 64 hex characters (sha256)".into() })
                } else if object.size > state.config.hub.max_lfs_file {
                    Some(api::lfs::BatchError { code: 422, message: format!("object is larger than the limit of {} bytes", state.config.hub.max_lfs_file) })
                } else {
                    None
                };
                api::lfs::BatchAnswer { oid: object.oid, size: object.size, authenticated: Some(true), actions: None, error }
            })
            .collect();
        let response = api::lfs::BatchResponse { transfer: "xet".into(), objects: answers, hash_algo: "sha256".into() };
        return Ok(([("content-type", HeaderValue::from_static("application/vnd.git-lfs+json"))], Json(response)));
    }
    let multipart_allowed = body.transfers.iter().any(|t| t == "multipart");
    // One answer lists a URL per part: bound them, so a batch of huge declared sizes cannot make
    // the server sign and send millions of URLs.
    if multipart_allowed {
        let parts: u64 = body.objects.iter().filter(|o| o.size > state.config.multipart_threshold && o.size <= state.config.hub.max_lfs_file).map(|o| o.size.div_ceil(state.config.multipart_chunk)).sum();
        if parts > MAX_PARTS_PER_BATCH {
            return Err(ApiError::invalid(format!("this batch would need {parts} upload part URLs; at most {MAX_PARTS_PER_BATCH} per batch (send fewer objects per batch)")));
        }
    }
    let base = base_url(&state, &headers);
    let expires = chrono::Utc::now() + chrono::Duration::seconds(i64::try_from(state.config.upload_url_ttl).unwrap_or(86400));
    let exp = expires.timestamp().to_string();
    let expires_at = domain::format_time(expires);
    let mut answers = Vec::with_capacity(body.objects.len());
    let mut used_multipart = false;
    for object in body.objects {
        let error = |code: u16, message: String| api::lfs::BatchAnswer { oid: object.oid.clone(), size: object.size, authenticated: None, actions: None, error: Some(api::lfs::BatchError { code, message }) };
        let Ok(digest) = Digest::parse(&object.oid) else {
            answers.push(error(422, "oid must be 64 hex characters (sha256)".into()));
            continue;
        };
        if object.size > state.config.hub.max_lfs_file {
            answers.push(error(422, format!("object is larger than the limit of {} bytes", state.config.hub.max_lfs_file)));
            continue;
        }
        if state.hub.content_size(&digest).await? == Some(object.size) && state.hub.may_reuse_blob(&principal, &repo, &digest).await? {
            // Already stored, and the caller may use it: no actions, the client skips the upload.
            // Anyone else uploads the bytes (which proves possession), so a stored blob is never
            // revealed to, or reused by, a tenant who only knows its digest.
            answers.push(api::lfs::BatchAnswer { oid: digest.to_string(), size: object.size, authenticated: Some(true), actions: None, error: None });
            continue;
        }
        let size = object.size.to_string();
        let object_url = format!("{base}/lfs-upload/{}s/{name}/{digest}", kind.as_str());
        let sign = |op: &str, part: &str| state.signer.sign(&[op, kind.as_str(), &name.to_string(), digest.as_str(), &size, part, &exp]);
        let query = |op: &str, part: &str| format!("size={size}&exp={exp}&sig={}", sign(op, part));
        let verify = api::lfs::Action { href: format!("{object_url}/verify?{}", query("verify", "")), header: BTreeMap::new(), expires_at: Some(expires_at.clone()) };
        let upload = if multipart_allowed && object.size > state.config.multipart_threshold {
            used_multipart = true;
            let chunk = state.config.multipart_chunk;
            let n_parts = object.size.div_ceil(chunk);
            let mut header = BTreeMap::new();
            header.insert("chunk_size".to_owned(), chunk.to_string());
            for part in 1..=n_parts {
                let part = part.to_string();
                header.insert(part.clone(), format!("{object_url}/{part}?{}", query("part", &part)));
            }
            api::lfs::Action { href: format!("{object_url}?{}", query("complete", "")), header, expires_at: Some(expires_at.clone()) }
        } else {
            api::lfs::Action { href: format!("{object_url}?{}", query("upload", "")), header: BTreeMap::new(), expires_at: Some(expires_at.clone()) }
        };
        answers.push(api::lfs::BatchAnswer { oid: digest.to_string(), size: object.size, authenticated: Some(true), actions: Some(api::lfs::BatchActions { upload, verify: Some(verify) }), error: None });
    }
    let response = api::lfs::BatchResponse { transfer: if used_multipart { "multipart" } else { "basic" }.into(), objects: answers, hash_algo: "sha256".into() };
    Ok(([("content-type", HeaderValue::from_static("application/vnd.git-lfs+json"))], Json(response)))
}

#[derive(Deserialize)]
pub(crate) struct ObjectParams {
    kinds: String,
    ns: String,
    name: String,
    oid: String,
    #[serde(default)]
    part: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct SignedQuery {
    size: u64,
    exp: i64,
    sig: String,
}

/// Checks a signed URL and returns the object's digest.
fn check_signature(state: &AppState, op: &str, p: &ObjectParams, q: &SignedQuery, part: &str) -> ApiResult<Digest> {
    let kind = RepoKind::parse(&p.kinds)?;
    let digest = Digest::parse(&p.oid)?;
    let repo = format!("{}/{}", p.ns, p.name);
    let fields = [op, kind.as_str(), repo.as_str(), digest.as_str(), &q.size.to_string(), part, &q.exp.to_string()];
    if !state.signer.verify(&fields, &q.sig) {
        return Err(domain::Error::forbidden("invalid upload signature").into());
    }
    if chrono::Utc::now().timestamp() > q.exp {
        return Err(domain::Error::forbidden("the upload URL has expired; ask the batch endpoint again").into());
    }
    Ok(digest)
}

/// The repo a signed upload URL was issued for (the signature covers it).
fn signed_repo(p: &ObjectParams) -> ApiResult<(RepoKind, RepoName)> {
    let kind = RepoKind::parse(&p.kinds)?;
    let name = RepoName::from_parts(&p.ns, &p.name).map_err(|_| domain::Error::RepoNotFound("repository not found".into()))?;
    Ok((kind, name))
}

fn check_content_length(headers: &HeaderMap, expected: u64) -> ApiResult<()> {
    if let Some(length) = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()) {
        if length != expected {
            return Err(ApiError::invalid(format!("body has {length} bytes, but the object was declared with {expected}")));
        }
    }
    Ok(())
}

/// Basic transfer: the whole object in one PUT. It becomes visible only if sha256 and size match.
pub(crate) async fn upload_object(State(state): State<AppState>, Path(p): Path<ObjectParams>, Query(q): Query<SignedQuery>, headers: HeaderMap, body: Body) -> ApiResult<StatusCode> {
    let digest = check_signature(&state, "upload", &p, &q, "")?;
    check_content_length(&headers, q.size)?;
    let stream = body.into_data_stream().map_err(|err| err.to_string()).boxed();
    let (kind, name) = signed_repo(&p)?;
    state.hub.upload_object(kind, &name, &digest, q.size, stream).await?;
    Ok(StatusCode::OK)
}

/// Multipart transfer: one part; the response's ETag goes back in the completion request.
pub(crate) async fn upload_part(State(state): State<AppState>, Path(p): Path<ObjectParams>, Query(q): Query<SignedQuery>, body: Body) -> ApiResult<impl IntoResponse> {
    let part_text = p.part.clone().unwrap_or_default();
    let digest = check_signature(&state, "part", &p, &q, &part_text)?;
    let part: u32 = part_text.parse().map_err(|_| ApiError::invalid("invalid part number"))?;
    let chunk = state.config.multipart_chunk;
    let n_parts = q.size.div_ceil(chunk);
    if part == 0 || u64::from(part) > n_parts {
        return Err(ApiError::invalid("part number out of range"));
    }
    let stream = body.into_data_stream().map_err(|err| err.to_string()).boxed();
    let etag = state.hub.upload_part(&digest, part, stream, chunk).await?;
    Ok((StatusCode::OK, [("etag", format!("\"{etag}\""))]))
}

/// Multipart completion: joins the parts, checks sha256 and size, makes the object visible.
pub(crate) async fn complete_multipart(State(state): State<AppState>, Path(p): Path<ObjectParams>, Query(q): Query<SignedQuery>, body: Result<Json<api::lfs::CompletionRequest>, JsonRejection>) -> ApiResult<Json<serde_json::Value>> {
    let digest = check_signature(&state, "complete", &p, &q, "")?;
    let Json(body) = body.map_err(json_rejection)?;
    if Digest::parse(&body.oid)? != digest {
        return Err(ApiError::invalid("completion oid does not match the upload URL"));
    }
    let n_parts = u32::try_from(q.size.div_ceil(state.config.multipart_chunk)).map_err(|_| ApiError::invalid("too many parts"))?;
    if body.parts.len() != n_parts as usize {
        return Err(ApiError::invalid(format!("expected {n_parts} parts, got {}", body.parts.len())));
    }
    let (kind, name) = signed_repo(&p)?;
    state.hub.complete_upload(kind, &name, &digest, q.size, n_parts).await?;
    tracing::info!(oid = %digest, size = q.size, parts = n_parts, "multipart upload completed");
    Ok(Json(serde_json::json!({ "oid": digest.to_string(), "size": q.size })))
}

/// Verify: the object must be stored with the declared size.
pub(crate) async fn verify_object(State(state): State<AppState>, Path(p): Path<ObjectParams>, Query(q): Query<SignedQuery>, body: Result<Json<api::lfs::VerifyRequest>, JsonRejection>) -> ApiResult<Json<serde_json::Value>> {
    let digest = check_signature(&state, "verify", &p, &q, "")?;
    let Json(body) = body.map_err(json_rejection)?;
    if Digest::parse(&body.oid)? != digest || body.size != q.size {
        return Err(ApiError::invalid("verify request does not match the upload"));
    }
    match state.hub.blob_size(&digest).await? {
        Some(size) if size == q.size => Ok(Json(serde_json::json!({ "oid": digest.to_string(), "size": size }))),
        _ => Err(ApiError::invalid(format!("object {digest} is not stored with {} bytes", q.size))),
    }
}
