//! OpenAI's webhook endpoints API (`/v1/webhook_endpoints`, what `client.webhooks.create/list/
//! retrieve/update/delete/rotate_secret/test` call) over `Hub`'s endpoints; URLs are checked
//! against `webhooks.allowed_hosts`. Beyond OpenAI: `GET .../{id}/deliveries`, the delivery log.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use domain::webhooks::Endpoint;
use serde_json::{json, Value};

use super::OpenAiError;
use crate::inference;
use crate::AppState;

type Reply = Result<Json<Value>, OpenAiError>;

fn endpoint_json(endpoint: &Endpoint, with_secret: bool) -> Value {
    let unix = |t: &str| chrono::DateTime::parse_from_rfc3339(t).map(|t| t.timestamp()).unwrap_or(0);
    let secret = endpoint.secrets.first().map(|(s, _)| s.clone()).unwrap_or_default();
    let hint = format!("whsec_...{}", &secret[secret.len().saturating_sub(4)..]);
    let mut body = json!({ "object": "webhook_endpoint", "id": endpoint.id, "name": endpoint.name, "url": endpoint.url, "event_types": endpoint.event_types, "created_at": unix(&endpoint.created_at), "updated_at": unix(&endpoint.updated_at), "signing_secret_hint": hint });
    if with_secret {
        body["signing_secret"] = json!(secret);
    }
    body
}

fn fields(body: Result<Json<Value>, JsonRejection>, allowed: &[&str]) -> Result<Value, OpenAiError> {
    let Json(body) = body.map_err(OpenAiError::from_rejection)?;
    if let Some(key) = body.as_object().and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str()))) {
        return Err(OpenAiError::unsupported(key, key));
    }
    Ok(body)
}

fn strings(value: Option<&Value>, param: &str) -> Result<Option<Vec<String>>, OpenAiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(list)) => list.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(|| OpenAiError::invalid(format!("{param} must be strings"), Some(param)))).collect::<Result<Vec<_>, _>>().map(Some),
        Some(_) => Err(OpenAiError::invalid(format!("{param} must be a list of strings"), Some(param))),
    }
}

fn checked_url(state: &AppState, url: &str) -> Result<String, OpenAiError> {
    crate::webhooks::check_url(&state.config.webhook_hosts, url).map(|u| u.to_string()).map_err(|err| OpenAiError::invalid(err, Some("url")))
}

/// `POST /v1/webhook_endpoints`.
pub(crate) async fn create(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<Value>, JsonRejection>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    let body = fields(body, &["name", "url", "event_types"])?;
    let url = checked_url(&state, body.get("url").and_then(Value::as_str).ok_or_else(|| OpenAiError::invalid("url is required", Some("url")))?)?;
    let name = body.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
    let types = strings(body.get("event_types"), "event_types")?.unwrap_or_default();
    let endpoint = state.hub.create_webhook(&principal, &name, &url, types).await?;
    Ok(Json(endpoint_json(&endpoint, true)))
}

/// `GET /v1/webhook_endpoints`.
pub(crate) async fn list(State(state): State<AppState>, headers: HeaderMap) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    let endpoints = state.hub.webhooks(&principal).await?;
    let data: Vec<Value> = endpoints.iter().map(|e| endpoint_json(e, false)).collect();
    Ok(Json(json!({ "object": "list", "first_id": data.first().map(|e| e["id"].clone()), "last_id": data.last().map(|e| e["id"].clone()), "data": data, "has_more": false })))
}

/// `GET /v1/webhook_endpoints/{id}`.
pub(crate) async fn retrieve(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    Ok(Json(endpoint_json(&state.hub.webhook(&principal, &id).await?, false)))
}

/// `POST /v1/webhook_endpoints/{id}`.
pub(crate) async fn update(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, body: Result<Json<Value>, JsonRejection>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    let body = fields(body, &["name", "url", "event_types"])?;
    let url = body.get("url").and_then(Value::as_str).map(|u| checked_url(&state, u)).transpose()?;
    let name = body.get("name").and_then(Value::as_str).map(str::to_owned);
    let types = strings(body.get("event_types"), "event_types")?;
    Ok(Json(endpoint_json(&state.hub.update_webhook(&principal, &id, name, url, types).await?, false)))
}

/// `DELETE /v1/webhook_endpoints/{id}`.
pub(crate) async fn delete(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    state.hub.delete_webhook(&principal, &id).await?;
    Ok(Json(json!({ "object": "webhook_endpoint.deleted", "id": id, "deleted": true })))
}

/// `POST /v1/webhook_endpoints/{id}/rotate_secret`: a new secret; with
/// `keep_old_secret_active_for_24_hours`, deliveries carry both signatures meanwhile.
pub(crate) async fn rotate_secret(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, body: Result<Json<Value>, JsonRejection>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    let body = fields(body, &["keep_old_secret_active_for_24_hours"])?;
    let keep = body.get("keep_old_secret_active_for_24_hours").and_then(Value::as_bool).unwrap_or(false);
    Ok(Json(endpoint_json(&state.hub.rotate_webhook_secret(&principal, &id, keep).await?, true)))
}

/// `POST /v1/webhook_endpoints/{id}/test`: sends one signed test event now.
pub(crate) async fn test(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, body: Result<Json<Value>, JsonRejection>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    let body = fields(body, &["event_type"])?;
    let endpoint = state.hub.testable_webhook(&principal, &id).await?;
    let event_type = body.get("event_type").and_then(Value::as_str).or(endpoint.event_types.first().map(String::as_str)).unwrap_or("eval.run.succeeded").to_owned();
    let event_id = format!("evt_test_{}", inference::random_id());
    let payload = domain::webhooks::payload(&event_id, &event_type, chrono::Utc::now().timestamp(), &json!({ "id": "test", "test": true }));
    let delivery = domain::webhooks::Delivery {
        id: 0,
        endpoint_id: id.clone(),
        event_id,
        event_type: event_type.clone(),
        payload,
        status: "pending".into(),
        attempts: 0,
        next_at: String::new(),
        last_status: None,
        last_error: String::new(),
        created_at: String::new(),
    };
    let client = crate::webhooks::http_client().map_err(|err| OpenAiError::from(domain::Error::Internal(err.to_string())))?;
    let status = match crate::webhooks::send(&state.config.webhook_hosts, &client, &endpoint, &delivery).await {
        Ok(status) => status,
        Err((Some(status), _)) => status,
        Err((None, error)) => return Err(OpenAiError::invalid(format!("the test delivery failed: {error}"), None)),
    };
    Ok(Json(json!({ "object": "webhook_endpoint.test", "webhook_endpoint_id": id, "event_type": event_type, "status_code": status, "success": true })))
}

/// `?limit=` of the delivery log.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogQuery {
    limit: Option<i64>,
}

/// `GET /v1/webhook_endpoints/{id}/deliveries`: the newest deliveries and their attempts.
pub(crate) async fn deliveries(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    let Query(query) = query.map_err(|err| OpenAiError::invalid(err.body_text(), None))?;
    let log = state.hub.webhook_deliveries(&principal, &id, query.limit.unwrap_or(100)).await?;
    let data: Vec<Value> = log
        .iter()
        .map(|d| json!({ "event_id": d.event_id, "event_type": d.event_type, "status": d.status, "attempts": d.attempts, "last_status": d.last_status, "last_error": d.last_error, "next_at": d.next_at, "created_at": d.created_at }))
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}
