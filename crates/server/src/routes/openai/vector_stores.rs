//! OpenAI's Vector Stores API: stores, their files and file batches, and search. This module
//! checks the wire fields and phrases answers; the rules are `Hub`'s, ingestion and search are
//! `crate::retrieval`'s.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use domain::hub::Attach;
use domain::vectors::{FileBatch, StoreFile, VectorStore, CANCELLED, COMPLETED, FAILED, IN_PROGRESS};
use serde_json::{json, Map, Value};

use super::OpenAiError;
use crate::inference;
use crate::retrieval::index::{Filter, Weights};
use crate::retrieval::{self, Search};
use crate::runtime::Backend;
use crate::AppState;

/// OpenAI's default and bounds of `max_chunk_size_tokens`, and the default overlap.
const AUTO_CHUNK: u64 = 800;
const AUTO_OVERLAP: u64 = 400;
const MIN_CHUNK: u64 = 100;
/// The most queries one search may run.
const MAX_QUERIES: usize = 8;
const MAX_CHUNK: u64 = 4096;

fn time(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at).map(|t| t.timestamp()).unwrap_or(0)
}

fn body_of(body: Result<Json<Value>, JsonRejection>) -> Result<Map<String, Value>, OpenAiError> {
    match body.map_err(OpenAiError::from_rejection)? {
        Json(Value::Object(map)) => Ok(map),
        _ => Err(OpenAiError::invalid("the body must be a JSON object", None)),
    }
}

/// Refuses a body field outside `known`, by name.
fn only(body: &Map<String, Value>, known: &[&str]) -> Result<(), OpenAiError> {
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(OpenAiError::invalid(format!("Unknown parameter: '{key}'."), Some(key))),
        None => Ok(()),
    }
}

fn counts(files: &[StoreFile]) -> Value {
    let n = |status: &str| files.iter().filter(|f| f.status == status).count();
    json!({ "in_progress": n(IN_PROGRESS), "completed": n(COMPLETED), "failed": n(FAILED), "cancelled": n(CANCELLED), "total": files.len() })
}

fn store_json(store: &VectorStore, files: &[StoreFile]) -> Value {
    let status = if domain::hub::vector_store_expired(store) {
        "expired"
    } else if files.iter().any(|f| f.status == IN_PROGRESS) {
        "in_progress"
    } else {
        "completed"
    };
    let expires_at = store.expires_after_days.map(|days| time(&store.last_active_at) + i64::from(days) * 86_400);
    json!({
        "id": store.id,
        "object": "vector_store",
        "created_at": time(&store.created_at),
        "name": store.name,
        "usage_bytes": files.iter().map(|f| f.usage_bytes).sum::<u64>(),
        "file_counts": counts(files),
        "status": status,
        "expires_after": store.expires_after_days.map(|days| json!({ "anchor": "last_active_at", "days": days })),
        "expires_at": expires_at,
        "last_active_at": time(&store.last_active_at),
        "metadata": store.metadata,
        "embedding_model": store.embedding_model,
        "embedding_revision": store.embedding_revision,
        "reindex": store.reindex.as_ref().map(|r| json!({
            "embedding_revision": r.revision,
            "started_at": time(&r.started_at),
            "files_done": r.files_done,
            "files_total": files.iter().filter(|f| f.status == COMPLETED).count(),
            "last_error": r.error,
        })),
    })
}

fn file_json(file: &StoreFile) -> Value {
    json!({
        "id": file.file_id,
        "object": "vector_store.file",
        "usage_bytes": file.usage_bytes,
        "created_at": time(&file.created_at),
        "vector_store_id": file.store_id,
        "status": file.status,
        "last_error": file.last_error,
        "chunking_strategy": { "type": "static", "static": file.chunking },
        "attributes": file.attributes,
    })
}

fn batch_json(batch: &FileBatch, files: &[StoreFile]) -> Value {
    let status = if batch.cancelled {
        "cancelled"
    } else if files.iter().any(|f| f.status == IN_PROGRESS) {
        "in_progress"
    } else if !files.is_empty() && files.iter().all(|f| f.status == FAILED) {
        "failed"
    } else {
        "completed"
    };
    json!({ "id": batch.id, "object": "vector_store.files_batch", "created_at": time(&batch.created_at), "vector_store_id": batch.store_id, "status": status, "file_counts": counts(files) })
}

/// `metadata`: at most 16 string pairs.
fn metadata(value: Option<&Value>) -> Result<Option<Value>, OpenAiError> {
    match value {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(json!({}))),
        Some(Value::Object(map)) if map.len() <= 16 && map.iter().all(|(k, v)| k.chars().count() <= 64 && v.as_str().is_some_and(|s| s.chars().count() <= 512)) => Ok(Some(Value::Object(map.clone()))),
        Some(_) => Err(OpenAiError::invalid("metadata takes at most 16 pairs of strings (keys up to 64 characters, values up to 512)", Some("metadata"))),
    }
}

/// `attributes`: at most 16 keys, values strings (up to 512 characters), numbers or booleans.
fn attributes(value: Option<&Value>) -> Result<Value, OpenAiError> {
    match value {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(map)) if map.len() <= 16 && map.iter().all(|(k, v)| k.chars().count() <= 64 && (v.is_number() || v.is_boolean() || v.as_str().is_some_and(|s| s.chars().count() <= 512))) => Ok(Value::Object(map.clone())),
        Some(_) => Err(OpenAiError::invalid("attributes take at most 16 keys (up to 64 characters) with string, number or boolean values", Some("attributes"))),
    }
}

/// `expires_after`: `{anchor: "last_active_at", days: 1..=365}`; `Some(None)` removes it.
fn expires_after(value: Option<&Value>) -> Result<Option<Option<u32>>, OpenAiError> {
    match value {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(spec) => {
            let anchor_ok = spec.get("anchor").and_then(Value::as_str) == Some("last_active_at");
            match spec.get("days").and_then(Value::as_u64) {
                Some(days @ 1..=365) if anchor_ok => Ok(Some(Some(days as u32))),
                _ => Err(OpenAiError::invalid("expires_after must be {anchor: \"last_active_at\", days: 1 to 365}", Some("expires_after"))),
            }
        }
    }
}

/// `chunking_strategy` resolved against the model's input limit: `auto` (800 tokens, 400
/// overlapping, both cut to what the model takes) or `static`.
fn chunking(value: Option<&Value>, model_limit: u64) -> Result<Value, OpenAiError> {
    let param = "chunking_strategy";
    let (max, overlap) = match value {
        None | Some(Value::Null) => (AUTO_CHUNK.min(model_limit), AUTO_OVERLAP.min(AUTO_CHUNK.min(model_limit) / 4)),
        Some(spec) => match spec.get("type").and_then(Value::as_str) {
            Some("auto") => (AUTO_CHUNK.min(model_limit), AUTO_OVERLAP.min(AUTO_CHUNK.min(model_limit) / 4)),
            Some("static") => {
                let max = spec.pointer("/static/max_chunk_size_tokens").and_then(Value::as_u64).ok_or_else(|| OpenAiError::invalid("chunking_strategy.static.max_chunk_size_tokens is required", Some(param)))?;
                let overlap = spec.pointer("/static/chunk_overlap_tokens").and_then(Value::as_u64).ok_or_else(|| OpenAiError::invalid("chunking_strategy.static.chunk_overlap_tokens is required", Some(param)))?;
                if !(MIN_CHUNK..=MAX_CHUNK).contains(&max) {
                    return Err(OpenAiError::invalid(format!("max_chunk_size_tokens must be between {MIN_CHUNK} and {MAX_CHUNK}"), Some("chunking_strategy.static.max_chunk_size_tokens")));
                }
                if max > model_limit {
                    return Err(OpenAiError::invalid(format!("max_chunk_size_tokens {max} is more than the embedding model takes ({model_limit})"), Some("chunking_strategy.static.max_chunk_size_tokens")));
                }
                if overlap > max / 2 {
                    return Err(OpenAiError::invalid("chunk_overlap_tokens must not exceed half of max_chunk_size_tokens", Some("chunking_strategy.static.chunk_overlap_tokens")));
                }
                (max, overlap)
            }
            _ => return Err(OpenAiError::invalid("chunking_strategy.type must be auto or static", Some(param))),
        },
    };
    Ok(json!({ "max_chunk_size_tokens": max, "chunk_overlap_tokens": overlap }))
}

/// The tokens one chunk may hold with the store's model (its input limit less its two special
/// tokens).
async fn model_limit(state: &AppState, principal: &domain::auth::Principal, model: &str) -> Result<(u64, String), OpenAiError> {
    let target = inference::resolve(state, principal, model).await?;
    match &target.served.backend {
        Backend::Embed(engine) => Ok(((engine.max_tokens() as u64).saturating_sub(2).max(1), target.served.revision.clone())),
        Backend::Generate(_) => Err(OpenAiError::invalid(format!("{model} is not an embedding model"), Some("embedding_model"))),
    }
}

/// `POST /v1/vector_stores`.
pub(crate) async fn create(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<Value>, JsonRejection>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let body = body_of(body)?;
    only(&body, &["name", "file_ids", "chunking_strategy", "metadata", "expires_after", "description", "embedding_model"])?;
    if body.get("description").is_some_and(|d| d.as_str().is_none_or(|d| !d.is_empty())) {
        return Err(OpenAiError::unsupported("description", "a vector store description"));
    }
    let name = match body.get("name") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(name)) => name.clone(),
        Some(_) => return Err(OpenAiError::invalid("name must be a string", Some("name"))),
    };
    let model = match body.get("embedding_model").and_then(Value::as_str) {
        Some(model) => model.to_owned(),
        None => default_embedding_model(&state, &principal).await?,
    };
    let (limit, revision) = model_limit(&state, &principal, &model).await?;
    let chunking = chunking(body.get("chunking_strategy"), limit)?;
    let files = file_ids(body.get("file_ids"))?.into_iter().map(|file_id| Attach { file_id, attributes: json!({}), chunking: chunking.clone() }).collect();
    let mut metadata = metadata(body.get("metadata"))?.unwrap_or_else(|| json!({}));
    if let Some(map) = metadata.as_object_mut().filter(|m| m.len() < 16) {
        map.entry("embedding_model").or_insert_with(|| json!(model));
    }
    let store = VectorStore {
        id: format!("vs_{}", inference::random_id()),
        owner: String::new(),
        token_id: 0,
        name,
        embedding_model: model,
        embedding_revision: revision,
        metadata,
        created_at: String::new(),
        expires_after_days: expires_after(body.get("expires_after"))?.flatten(),
        last_active_at: String::new(),
        version: 0,
        reindex: None,
    };
    let store = state.hub.create_vector_store(&principal, store, files).await.map_err(file_not_found)?;
    state.ingest_wake.notify_one();
    let files = state.hub.vector_store_files(&principal, &store.id).await?;
    Ok(Json(store_json(&store, &files)))
}

/// The site's default embedding deployment (`retrieval.embedding_model`), else the caller's only
/// embedding deployment.
async fn default_embedding_model(state: &AppState, principal: &domain::auth::Principal) -> Result<String, OpenAiError> {
    if let Some(model) = &state.config.default_embedding_model {
        return Ok(model.clone());
    }
    let embedders: Vec<String> = state.hub.runnable_deployments(principal).await?.into_iter().filter(|d| d.file_path.as_str().ends_with(".safetensors")).map(|d| d.name).collect();
    match embedders.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(OpenAiError::invalid("no embedding model is deployed for this caller; deploy one (a sentence-transformers safetensors repo)", Some("embedding_model"))),
        many => Err(OpenAiError::invalid(format!("{} embedding models are deployed ({}); name one with embedding_model", many.len(), many.join(", ")), Some("embedding_model"))),
    }
}

fn file_ids(value: Option<&Value>) -> Result<Vec<String>, OpenAiError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(|| OpenAiError::invalid("file_ids must be strings", Some("file_ids")))).collect(),
        Some(_) => Err(OpenAiError::invalid("file_ids must be an array", Some("file_ids"))),
    }
}

/// A file that is not the caller's upload, in OpenAI's words.
fn file_not_found(err: domain::Error) -> OpenAiError {
    match err {
        domain::Error::NotFound(message) => OpenAiError::invalid(message, Some("file_id")),
        other => other.into(),
    }
}

fn not_found(err: domain::Error) -> OpenAiError {
    match err {
        domain::Error::NotFound(message) => OpenAiError::not_found(message).with_code("not_found"),
        other => other.into(),
    }
}

/// Query of the list endpoints.
#[derive(serde::Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    filter: Option<String>,
}

/// A page of `items` (newest first unless `order=asc`), cursor by id.
fn page(items: Vec<Value>, query: &ListQuery) -> Result<Value, OpenAiError> {
    super::list::page(items, query.limit, query.order.as_deref(), query.after.as_deref(), query.before.as_deref(), super::list::Bounds { default: 20, max: 100 })
}

type Listed = Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>;

fn query_of(query: Listed) -> Result<ListQuery, OpenAiError> {
    query.map(|Query(q)| q).map_err(|err| OpenAiError::invalid(err.body_text(), None))
}

/// `GET /v1/vector_stores`.
pub(crate) async fn list(State(state): State<AppState>, headers: HeaderMap, query: Listed) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let query = query_of(query)?;
    let mut items = Vec::new();
    for store in state.hub.vector_stores(&principal).await? {
        let files = state.hub.vector_store_files(&principal, &store.id).await?;
        items.push(store_json(&store, &files));
    }
    Ok(Json(page(items, &query)?))
}

/// `GET /v1/vector_stores/{id}`.
pub(crate) async fn retrieve(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let store = state.hub.vector_store(&principal, &id).await.map_err(not_found)?;
    let files = state.hub.vector_store_files(&principal, &id).await?;
    Ok(Json(store_json(&store, &files)))
}

/// `POST /v1/vector_stores/{id}`: name, metadata, expires_after.
pub(crate) async fn update(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, body: Result<Json<Value>, JsonRejection>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let body = body_of(body)?;
    only(&body, &["name", "metadata", "expires_after"])?;
    let name = match body.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err(OpenAiError::invalid("name must be a string", Some("name"))),
    };
    let store = state.hub.update_vector_store(&principal, &id, name, metadata(body.get("metadata"))?, expires_after(body.get("expires_after"))?).await.map_err(not_found)?;
    let files = state.hub.vector_store_files(&principal, &id).await?;
    Ok(Json(store_json(&store, &files)))
}

/// `DELETE /v1/vector_stores/{id}`.
pub(crate) async fn delete(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    state.hub.delete_vector_store(&principal, &id).await.map_err(not_found)?;
    Ok(Json(json!({ "id": id, "object": "vector_store.deleted", "deleted": true })))
}

/// The chunking of files attached to an existing store, from the request.
async fn store_chunking(state: &AppState, principal: &domain::auth::Principal, store_id: &str, spec: Option<&Value>) -> Result<Value, OpenAiError> {
    let store = state.hub.vector_store(principal, store_id).await.map_err(not_found)?;
    let (limit, _) = model_limit(state, principal, &store.embedding_model).await?;
    chunking(spec, limit)
}

/// `POST /v1/vector_stores/{id}/files`.
pub(crate) async fn attach(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, body: Result<Json<Value>, JsonRejection>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let body = body_of(body)?;
    only(&body, &["file_id", "attributes", "chunking_strategy"])?;
    let file_id = body.get("file_id").and_then(Value::as_str).ok_or_else(|| OpenAiError::invalid("file_id is required", Some("file_id")))?.to_owned();
    let chunking = store_chunking(&state, &principal, &id, body.get("chunking_strategy")).await?;
    let attach = Attach { file_id, attributes: attributes(body.get("attributes"))?, chunking };
    let (files, _) = state.hub.attach_vector_files(&principal, &id, vec![attach], false).await.map_err(file_not_found)?;
    state.ingest_wake.notify_one();
    Ok(Json(file_json(&files[0])))
}

/// `GET /v1/vector_stores/{id}/files` (`filter` by status).
pub(crate) async fn list_files(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, query: Listed) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let query = query_of(query)?;
    let files = state.hub.vector_store_files(&principal, &id).await.map_err(not_found)?;
    let items = files.iter().filter(|f| query.filter.as_deref().is_none_or(|s| f.status == s)).map(file_json).collect();
    Ok(Json(page(items, &query)?))
}

/// `GET /v1/vector_stores/{id}/files/{file_id}`.
pub(crate) async fn retrieve_file(State(state): State<AppState>, headers: HeaderMap, Path((id, file_id)): Path<(String, String)>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    Ok(Json(file_json(&state.hub.vector_store_file(&principal, &id, &file_id).await.map_err(not_found)?)))
}

/// `GET /v1/vector_stores/{id}/files/{file_id}/content`: the file's chunks as ingested.
pub(crate) async fn file_content(State(state): State<AppState>, headers: HeaderMap, Path((id, file_id)): Path<(String, String)>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let chunks = state.hub.vector_file_chunks(&principal, &id, &file_id).await.map_err(not_found)?;
    let data: Vec<Value> = chunks.into_iter().map(|text| json!({ "type": "text", "text": text })).collect();
    Ok(Json(json!({ "object": "vector_store.file_content.page", "data": data, "has_more": false, "next_page": null })))
}

/// `POST /v1/vector_stores/{id}/files/{file_id}`: new attributes.
pub(crate) async fn update_file(State(state): State<AppState>, headers: HeaderMap, Path((id, file_id)): Path<(String, String)>, body: Result<Json<Value>, JsonRejection>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let body = body_of(body)?;
    only(&body, &["attributes"])?;
    let file = state.hub.set_vector_file_attributes(&principal, &id, &file_id, attributes(body.get("attributes"))?).await.map_err(not_found)?;
    Ok(Json(file_json(&file)))
}

/// `DELETE /v1/vector_stores/{id}/files/{file_id}`.
pub(crate) async fn detach(State(state): State<AppState>, headers: HeaderMap, Path((id, file_id)): Path<(String, String)>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    state.hub.detach_vector_file(&principal, &id, &file_id).await.map_err(not_found)?;
    Ok(Json(json!({ "id": file_id, "object": "vector_store.file.deleted", "deleted": true })))
}

/// `POST /v1/vector_stores/{id}/file_batches`: `file_ids` (with shared `attributes`) or `files`
/// (each with its own).
pub(crate) async fn create_batch(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, body: Result<Json<Value>, JsonRejection>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let body = body_of(body)?;
    only(&body, &["file_ids", "files", "attributes", "chunking_strategy"])?;
    let chunking = store_chunking(&state, &principal, &id, body.get("chunking_strategy")).await?;
    let shared = attributes(body.get("attributes"))?;
    let mut attach: Vec<Attach> = file_ids(body.get("file_ids"))?.into_iter().map(|file_id| Attach { file_id, attributes: shared.clone(), chunking: chunking.clone() }).collect();
    if let Some(files) = body.get("files").filter(|f| !f.is_null()) {
        for (i, file) in files.as_array().ok_or_else(|| OpenAiError::invalid("files must be an array", Some("files")))?.iter().enumerate() {
            let file_id = file.get("file_id").and_then(Value::as_str).ok_or_else(|| OpenAiError::invalid(format!("files[{i}].file_id is required"), Some("files")))?;
            let own = match file.get("chunking_strategy") {
                Some(spec) => store_chunking(&state, &principal, &id, Some(spec)).await?,
                None => chunking.clone(),
            };
            attach.push(Attach { file_id: file_id.to_owned(), attributes: attributes(file.get("attributes"))?, chunking: own });
        }
    }
    let (_, batch) = state.hub.attach_vector_files(&principal, &id, attach, true).await.map_err(file_not_found)?;
    state.ingest_wake.notify_one();
    let batch_id = batch.map(|b| b.id).unwrap_or_default();
    let (batch, files) = state.hub.file_batch(&principal, &id, &batch_id).await?;
    Ok(Json(batch_json(&batch, &files)))
}

/// `GET /v1/vector_stores/{id}/file_batches/{batch_id}`.
pub(crate) async fn retrieve_batch(State(state): State<AppState>, headers: HeaderMap, Path((id, batch_id)): Path<(String, String)>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let (batch, files) = state.hub.file_batch(&principal, &id, &batch_id).await.map_err(not_found)?;
    Ok(Json(batch_json(&batch, &files)))
}

/// `POST /v1/vector_stores/{id}/file_batches/{batch_id}/cancel`.
pub(crate) async fn cancel_batch(State(state): State<AppState>, headers: HeaderMap, Path((id, batch_id)): Path<(String, String)>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let (batch, files) = state.hub.cancel_file_batch(&principal, &id, &batch_id).await.map_err(not_found)?;
    Ok(Json(batch_json(&batch, &files)))
}

/// `GET /v1/vector_stores/{id}/file_batches/{batch_id}/files`.
pub(crate) async fn batch_files(State(state): State<AppState>, headers: HeaderMap, Path((id, batch_id)): Path<(String, String)>, query: Listed) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let query = query_of(query)?;
    let (_, files) = state.hub.file_batch(&principal, &id, &batch_id).await.map_err(not_found)?;
    let items = files.iter().filter(|f| query.filter.as_deref().is_none_or(|s| f.status == s)).map(file_json).collect();
    Ok(Json(page(items, &query)?))
}

/// The most results the search endpoint returns (OpenAI's is 50; 100 lets recall@100 be read).
pub(crate) const MAX_RESULTS: u64 = 100;
/// The most chunks `file_search` puts into a prompt (OpenAI's limit).
pub(crate) const MAX_TOOL_RESULTS: u64 = 50;

/// The search fields both the search endpoint and the `file_search` tool take (at most `most`
/// results).
pub(crate) fn search_of(queries: Vec<String>, filters: Option<&Value>, max: Option<&Value>, ranking: Option<&Value>, param: &str, most: u64) -> Result<Search, OpenAiError> {
    if queries.is_empty() || queries.len() > MAX_QUERIES || queries.iter().any(|q| q.trim().is_empty() || q.len() > 16 * 1024) {
        return Err(OpenAiError::invalid("query must be 1 to 8 non-empty strings of at most 16 KiB", Some("query")));
    }
    let filter = match filters {
        None | Some(Value::Null) => None,
        Some(spec) => Some(Filter::parse(spec).map_err(|why| OpenAiError::invalid(format!("filters: {why}"), Some(&format!("{param}filters"))))?),
    };
    let max = match max {
        None | Some(Value::Null) => 10,
        Some(n) => match n.as_u64() {
            Some(n) if (1..=most).contains(&n) => n as usize,
            _ => return Err(OpenAiError::invalid(format!("max_num_results must be between 1 and {most}"), Some(&format!("{param}max_num_results")))),
        },
    };
    let mut weights = Weights { embedding: 1.0, text: 1.0 };
    let mut threshold = 0.0;
    if let Some(options) = ranking.filter(|r| !r.is_null()) {
        let at = format!("{param}ranking_options");
        let object = options.as_object().ok_or_else(|| OpenAiError::invalid("ranking_options must be an object", Some(&at)))?;
        if let Some(key) = object.keys().find(|k| !matches!(k.as_str(), "ranker" | "score_threshold" | "hybrid_search")) {
            return Err(OpenAiError::invalid(format!("Unknown parameter: '{at}.{key}'."), Some(&at)));
        }
        match object.get("ranker").and_then(Value::as_str) {
            None | Some("auto") | Some("default-2024-11-15") => {}
            Some(other) => return Err(OpenAiError::unsupported(&format!("{at}.ranker"), &format!("ranker {other:?}"))),
        }
        if let Some(value) = object.get("score_threshold").filter(|v| !v.is_null()) {
            threshold = value.as_f64().filter(|t| (0.0..=1.0).contains(t)).ok_or_else(|| OpenAiError::invalid("score_threshold must be between 0 and 1", Some(&format!("{at}.score_threshold"))))? as f32;
        }
        if let Some(hybrid) = object.get("hybrid_search").filter(|v| !v.is_null()) {
            let weight = |key: &str| -> Result<f32, OpenAiError> {
                match hybrid.get(key) {
                    None | Some(Value::Null) => Ok(1.0),
                    Some(w) => w.as_f64().filter(|w| (0.0..=1000.0).contains(w)).map(|w| w as f32).ok_or_else(|| OpenAiError::invalid(format!("{key} must be a number from 0 to 1000"), Some(&format!("{at}.hybrid_search.{key}")))),
                }
            };
            weights = Weights { embedding: weight("embedding_weight")?, text: weight("text_weight")? };
            if weights.embedding == 0.0 && weights.text == 0.0 {
                return Err(OpenAiError::invalid("embedding_weight and text_weight cannot both be 0", Some(&format!("{at}.hybrid_search"))));
            }
        }
    }
    Ok(Search { api: "openai.vector_stores.search", queries, filter, max, weights, threshold })
}

/// `POST /v1/vector_stores/{id}/search`.
pub(crate) async fn search(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, body: Result<Json<Value>, JsonRejection>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let body = body_of(body)?;
    only(&body, &["query", "filters", "max_num_results", "ranking_options", "rewrite_query"])?;
    if body.get("rewrite_query").and_then(Value::as_bool) == Some(true) {
        return Err(OpenAiError::unsupported("rewrite_query", "query rewriting"));
    }
    let queries = match body.get("query") {
        Some(Value::String(query)) => vec![query.clone()],
        Some(Value::Array(list)) => list.iter().map(|q| q.as_str().map(str::to_owned).ok_or_else(|| OpenAiError::invalid("query must be a string or strings", Some("query")))).collect::<Result<_, _>>()?,
        _ => return Err(OpenAiError::invalid("query is required", Some("query"))),
    };
    let search = search_of(queries.clone(), body.get("filters"), body.get("max_num_results"), body.get("ranking_options"), "", MAX_RESULTS)?;
    let found = retrieval::search(&state, &principal, &id, search).await.map_err(not_found_inference)?;
    let data: Vec<Value> = found.iter().map(|f| json!({ "file_id": f.file_id, "filename": f.filename, "score": f.score, "attributes": f.attributes, "content": [{ "type": "text", "text": f.text }] })).collect();
    Ok(Json(json!({ "object": "vector_store.search_results.page", "search_query": queries, "data": data, "has_more": false, "next_page": null })))
}

fn not_found_inference(err: inference::InferenceError) -> OpenAiError {
    match err {
        inference::InferenceError::Domain(domain::Error::NotFound(message)) => OpenAiError::not_found(message).with_code("not_found"),
        other => other.into(),
    }
}
