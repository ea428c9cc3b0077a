//! OpenAI's Files API: `POST /v1/files` (multipart: `purpose` and optionally
//! `expires_after[anchor]`/`expires_after[seconds]` before `file`), `GET /v1/files` (`purpose`,
//! `limit`, `order`, `after`), `GET` and `DELETE /v1/files/{id}`, `GET /v1/files/{id}/content`.
//! The upload streams into the blob store (bounded by the server's limits, never buffered whole);
//! the rules are `Hub`'s.

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::files::StoredFile;
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{json, Value};

use super::OpenAiError;
use crate::inference;
use crate::AppState;

/// The longest a small multipart field (`purpose`, `expires_after[...]`) may be.
const MAX_FIELD: usize = 1024;

/// A file as the API shows it.
pub(crate) fn file_json(file: &StoredFile) -> Value {
    let time = |at: &str| chrono::DateTime::parse_from_rfc3339(at).map(|t| t.timestamp()).unwrap_or(0);
    json!({
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": time(&file.created_at),
        "expires_at": file.expires_at.as_deref().map(time),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": null,
    })
}

/// `POST /v1/files`.
pub(crate) async fn create_file(State(state): State<AppState>, headers: HeaderMap, multipart: Result<Multipart, MultipartRejection>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let mut multipart = multipart.map_err(|err| OpenAiError::invalid(format!("the body must be multipart/form-data: {}", err.body_text()), None))?;
    let (mut purpose, mut anchor, mut seconds) = (None::<String>, None::<String>, None::<String>);
    let bad = |err: axum::extract::multipart::MultipartError| OpenAiError::invalid(format!("malformed multipart body: {}", err.body_text()), None);
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "purpose" | "expires_after[anchor]" | "expires_after[seconds]" => {
                let bytes = field.bytes().await.map_err(bad)?;
                if bytes.len() > MAX_FIELD {
                    return Err(OpenAiError::invalid(format!("{name} is too long"), Some(&name)));
                }
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| OpenAiError::invalid(format!("{name} is not UTF-8"), Some(&name)))?;
                match name.as_str() {
                    "purpose" => purpose = Some(text),
                    "expires_after[anchor]" => anchor = Some(text),
                    _ => seconds = Some(text),
                }
            }
            "file" => {
                let purpose = purpose.ok_or_else(|| OpenAiError::invalid("purpose is required (and must come before file)", Some("purpose")))?;
                let expires = expires_after(anchor.as_deref(), seconds.as_deref())?;
                let filename = field.file_name().map(str::to_owned).ok_or_else(|| OpenAiError::invalid("the file part needs a filename", Some("file")))?;
                let stream = field.map_err(|err| err.body_text()).boxed();
                let file = state.hub.upload_file(&principal, &filename, &purpose, expires, stream).await.map_err(|err| match err {
                    domain::Error::Invalid(message) => OpenAiError::invalid(message, Some("file")),
                    other => other.into(),
                })?;
                return Ok(Json(file_json(&file)));
            }
            other => return Err(OpenAiError::invalid(format!("Unknown parameter: '{other}'."), Some(other))),
        }
    }
    Err(OpenAiError::invalid("file is required", Some("file")))
}

/// `expires_after`: anchor `created_at` and 3600 to 2592000 seconds, as OpenAI takes it.
fn expires_after(anchor: Option<&str>, seconds: Option<&str>) -> Result<Option<u64>, OpenAiError> {
    match (anchor, seconds) {
        (None, None) => Ok(None),
        (Some("created_at"), Some(seconds)) => match seconds.trim().parse::<u64>() {
            Ok(secs) if (3600..=2_592_000).contains(&secs) => Ok(Some(secs)),
            _ => Err(OpenAiError::invalid("expires_after[seconds] must be between 3600 and 2592000", Some("expires_after[seconds]"))),
        },
        (Some(_), Some(_)) => Err(OpenAiError::invalid("expires_after[anchor] must be created_at", Some("expires_after[anchor]"))),
        _ => Err(OpenAiError::invalid("expires_after needs both anchor and seconds", Some("expires_after"))),
    }
}

/// Query of `GET /v1/files`.
#[derive(serde::Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    purpose: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    after: Option<String>,
}

/// `GET /v1/files`: newest first unless `order=asc`; `limit` 1 to 10000 (default 10000).
pub(crate) async fn list_files(State(state): State<AppState>, headers: HeaderMap, query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let Query(query) = query.map_err(|err| OpenAiError::invalid(err.body_text(), None))?;
    let files = state.hub.uploaded_files(&principal, query.purpose.as_deref()).await?;
    let items = files.iter().map(file_json).collect();
    let bounds = super::list::Bounds { default: 10_000, max: 10_000 };
    Ok(Json(super::list::page(items, query.limit, query.order.as_deref(), query.after.as_deref(), None, bounds)?))
}

/// `GET /v1/files/{id}`.
pub(crate) async fn retrieve_file(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    Ok(Json(file_json(&state.hub.uploaded_file(&principal, &id).await.map_err(not_found)?)))
}

/// `DELETE /v1/files/{id}`.
pub(crate) async fn delete_file(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    state.hub.delete_file(&principal, &id).await.map_err(not_found)?;
    Ok(Json(json!({ "id": id, "object": "file", "deleted": true })))
}

/// `GET /v1/files/{id}/content`: the bytes, as an attachment that never renders on this origin.
pub(crate) async fn file_content(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let (file, stream) = state.hub.uploaded_file_content(&principal, &id).await.map_err(not_found)?;
    let mut response = Body::from_stream(stream.map_err(|err| std::io::Error::other(err.to_string()))).into_response();
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(file.bytes));
    out.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    out.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    if let Ok(value) = HeaderValue::from_str(&crate::routes::files::attachment(&file.filename)) {
        out.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// A missing file in OpenAI's words.
fn not_found(err: domain::Error) -> OpenAiError {
    match err {
        domain::Error::NotFound(message) => OpenAiError::not_found(message).with_code("not_found"),
        other => other.into(),
    }
}
