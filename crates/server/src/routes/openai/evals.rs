//! OpenAI's Evals API (`/v1/evals`, runs and output items) over `domain`'s evals and the run
//! worker in `crate::evals`. Bodies are checked by `evals::spec`; answers are built in OpenAI's
//! shapes here. Beyond OpenAI: a run's data may be a hub file (`file_id` =
//! `datasets/ns/name@revision:path`), pinned to its commit; every run records the exact model
//! revision and data revision it used; per-grader results carry 95% intervals.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use domain::evals::{Eval, EvalRun, OutputItem, RunStatus};
use serde_json::{json, Value};

use super::OpenAiError;
use crate::evals::spec;
use crate::inference;
use crate::AppState;

/// List parameters (cursor pages, as the official client pages them).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
    order: Option<String>,
    order_by: Option<String>,
    status: Option<String>,
}

type Reply = Result<Json<Value>, OpenAiError>;
type QueryResult = Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>;

fn body_of(body: Result<Json<Value>, JsonRejection>) -> Result<Value, OpenAiError> {
    body.map(|Json(v)| v).map_err(OpenAiError::from_rejection)
}

fn unix(time: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time).map(|t| t.timestamp()).unwrap_or(0)
}

/// One page of `entries` (already in ascending order of creation), by the query.
fn page(mut entries: Vec<Value>, query: &ListQuery) -> Reply {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(OpenAiError::invalid("limit must be between 1 and 100", Some("limit")));
    }
    match query.order.as_deref() {
        None | Some("asc") => {}
        Some("desc") => entries.reverse(),
        Some(_) => return Err(OpenAiError::invalid("order must be asc or desc", Some("order"))),
    }
    if let Some(by) = query.order_by.as_deref().filter(|by| *by != "created_at") {
        return Err(OpenAiError::unsupported("order_by", &format!("order_by {by}")));
    }
    if let Some(after) = &query.after {
        let at = entries.iter().position(|e| e["id"] == *after).ok_or_else(|| OpenAiError::invalid(format!("after names no entry: {after}"), Some("after")))?;
        entries.drain(..=at);
    }
    let has_more = entries.len() > limit;
    entries.truncate(limit);
    let (first, last) = (entries.first().map(|e| e["id"].clone()), entries.last().map(|e| e["id"].clone()));
    Ok(Json(json!({ "object": "list", "data": entries, "first_id": first, "last_id": last, "has_more": has_more })))
}

fn eval_json(eval: &Eval) -> Value {
    json!({ "object": "eval", "id": eval.id, "name": eval.name, "data_source_config": eval.data_source_config, "testing_criteria": eval.testing_criteria, "metadata": eval.metadata, "created_at": unix(&eval.created_at) })
}

fn run_json(run: &EvalRun) -> Value {
    let summary = &run.summary;
    let or = |key: &str, default: Value| summary.get(key).cloned().unwrap_or(default);
    json!({
        "object": "eval.run", "id": run.id, "eval_id": run.eval_id, "name": run.name, "status": run.status.as_str(),
        "model": run.spec.get("model").cloned().unwrap_or(json!("")), "data_source": run.spec["data_source"], "metadata": run.spec["metadata"],
        "created_at": unix(&run.created_at), "report_url": "",
        "result_counts": or("result_counts", json!({ "total": 0, "passed": 0, "failed": 0, "errored": 0 })),
        "per_testing_criteria_results": or("per_testing_criteria_results", json!([])), "per_model_usage": or("per_model_usage", json!([])),
        "error": or("error", json!({ "code": "", "message": "" })),
        "revision": run.spec.get("revision"), "data_revision": run.spec.get("data_revision"), "revisions_used": summary.get("revisions"),
    })
}

fn item_json(eval_id: &str, item: &OutputItem) -> Value {
    let body = &item.body;
    let mut sample = body.get("sample").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    // Every sample has the fields the client's type names, whatever the data gave.
    let text = sample.get("output_text").and_then(Value::as_str).map(str::to_owned);
    for (key, default) in [
        ("input", json!([])),
        ("output", json!(text.map(|t| vec![json!({ "role": "assistant", "content": t })]).unwrap_or_default())),
        ("finish_reason", json!("")),
        ("model", json!("")),
        ("usage", json!({ "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0 })),
        ("error", json!({ "code": "", "message": "" })),
        ("temperature", json!(0.0)),
        ("top_p", json!(1.0)),
        ("seed", json!(0)),
        ("max_completion_tokens", json!(0)),
    ] {
        if sample.get(key).is_none() {
            sample[key] = default;
        }
    }
    json!({
        "object": "eval.run.output_item", "id": item.id, "run_id": item.run_id, "eval_id": eval_id, "created_at": unix(&item.created_at), "status": item.status,
        "datasource_item_id": item.index, "datasource_item": body["datasource_item"], "results": body["results"], "sample": sample,
    })
}

/// `POST /v1/evals`.
pub(crate) async fn create_eval(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<Value>, JsonRejection>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    let eval = crate::evals::create_eval(&state, &principal, body_of(body)?).await?;
    Ok(Json(eval_json(&eval)))
}

/// `GET /v1/evals`.
pub(crate) async fn list_evals(State(state): State<AppState>, headers: HeaderMap, query: QueryResult) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    let Query(query) = query.map_err(|err| OpenAiError::invalid(err.body_text(), None))?;
    if query.status.is_some() {
        return Err(OpenAiError::unsupported("status", "status on evals"));
    }
    let evals = state.hub.evals(&principal).await?;
    page(evals.iter().map(eval_json).collect(), &query)
}

/// `GET /v1/evals/{eval_id}`.
pub(crate) async fn get_eval(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    Ok(Json(eval_json(&state.hub.eval(&principal, &id).await?)))
}

/// `POST /v1/evals/{eval_id}`: name and metadata.
pub(crate) async fn update_eval(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, body: Result<Json<Value>, JsonRejection>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    let body = body_of(body)?;
    if let Some(key) = body.as_object().and_then(|o| o.keys().find(|k| !["name", "metadata"].contains(&k.as_str()))) {
        return Err(OpenAiError::unsupported(key, &format!("updating {key}")));
    }
    let name = body.get("name").and_then(Value::as_str).map(str::to_owned);
    let metadata = body.get("metadata").map(|m| spec::metadata(Some(m))).transpose()?;
    Ok(Json(eval_json(&state.hub.update_eval(&principal, &id, name, metadata).await?)))
}

/// `DELETE /v1/evals/{eval_id}`.
pub(crate) async fn delete_eval(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    state.hub.delete_eval(&principal, &id).await?;
    Ok(Json(json!({ "object": "eval.deleted", "deleted": true, "eval_id": id })))
}

/// `POST /v1/evals/{eval_id}/runs`: checked, pinned and queued by `evals::queue_run`.
pub(crate) async fn create_run(State(state): State<AppState>, headers: HeaderMap, Path(eval_id): Path<String>, body: Result<Json<Value>, JsonRejection>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    let run = crate::evals::queue_run(&state, &principal, &eval_id, body_of(body)?).await?;
    Ok(Json(run_json(&run)))
}

/// `GET /v1/evals/{eval_id}/runs`.
pub(crate) async fn list_runs(State(state): State<AppState>, headers: HeaderMap, Path(eval_id): Path<String>, query: QueryResult) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    let Query(query) = query.map_err(|err| OpenAiError::invalid(err.body_text(), None))?;
    let runs = state.hub.eval_runs(&principal, &eval_id).await?;
    let wanted = query.status.as_deref().map(|s| RunStatus::parse(s).ok_or_else(|| OpenAiError::invalid("status must be queued, in_progress, completed, canceled or failed", Some("status")))).transpose()?;
    page(runs.iter().filter(|r| wanted.is_none_or(|w| r.status == w)).map(run_json).collect(), &query)
}

/// `GET /v1/evals/{eval_id}/runs/{run_id}`.
pub(crate) async fn get_run(State(state): State<AppState>, headers: HeaderMap, Path((eval_id, run_id)): Path<(String, String)>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    Ok(Json(run_json(&state.hub.eval_run(&principal, &eval_id, &run_id).await?)))
}

/// `POST /v1/evals/{eval_id}/runs/{run_id}/cancel` (what the client calls; also the run's own
/// path, as the API reference gives it): cancels the run.
pub(crate) async fn cancel_run(State(state): State<AppState>, headers: HeaderMap, Path((eval_id, run_id)): Path<(String, String)>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    Ok(Json(run_json(&state.hub.cancel_eval_run(&principal, &eval_id, &run_id).await?)))
}

/// `DELETE /v1/evals/{eval_id}/runs/{run_id}`.
pub(crate) async fn delete_run(State(state): State<AppState>, headers: HeaderMap, Path((eval_id, run_id)): Path<(String, String)>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    state.hub.delete_eval_run(&principal, &eval_id, &run_id).await?;
    Ok(Json(json!({ "object": "eval.run.deleted", "deleted": true, "run_id": run_id })))
}

/// `GET /v1/evals/{eval_id}/runs/{run_id}/output_items`.
pub(crate) async fn list_output_items(State(state): State<AppState>, headers: HeaderMap, Path((eval_id, run_id)): Path<(String, String)>, query: QueryResult) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    let Query(query) = query.map_err(|err| OpenAiError::invalid(err.body_text(), None))?;
    if let Some(status) = query.status.as_deref().filter(|s| !["pass", "fail", "error"].contains(s)) {
        return Err(OpenAiError::invalid(format!("status must be pass, fail or error, not {status:?}"), Some("status")));
    }
    let items = state.hub.eval_output_items(&principal, &eval_id, &run_id).await?;
    page(items.iter().filter(|i| query.status.as_deref().is_none_or(|s| i.status == s)).map(|i| item_json(&eval_id, i)).collect(), &query)
}

/// `GET /v1/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}`.
pub(crate) async fn get_output_item(State(state): State<AppState>, headers: HeaderMap, Path((eval_id, run_id, item_id)): Path<(String, String, String)>) -> Reply {
    let principal = inference::authenticate(&state, &headers).await?;
    let items = state.hub.eval_output_items(&principal, &eval_id, &run_id).await?;
    let item = items.iter().find(|i| i.id == item_id).ok_or_else(|| OpenAiError::from(domain::Error::NotFound(format!("no output item {item_id}"))))?;
    Ok(Json(item_json(&eval_id, item)))
}
