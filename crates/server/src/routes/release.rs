//! Release routes (`/api/admin/routes`): create, canary, promote, roll back, delete, history.
//! Handlers only translate; `Hub` checks rights, records the history and audits.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use domain::hub::ChangeNote;

use crate::auth::Auth;
use crate::error::json_rejection;
use crate::{ApiError, ApiResult, AppState};

fn wire(route: domain::routes::Route) -> api::admin::Route {
    let (canary, canary_percent) = route.canary.map_or((None, 0), |(name, percent)| (Some(name), percent));
    let (shadow, shadow_percent) = route.shadow.map_or((None, 0), |(name, percent)| (Some(name), percent));
    let rollout = route.rollout.as_ref().map(domain::routes::Rollout::to_json);
    api::admin::Route { name: route.name, stable: route.stable, canary, canary_percent, shadow, shadow_percent, rollout, updated_at: route.updated_at }
}

fn note(reason: Option<String>, eval_runs: Vec<String>) -> ChangeNote {
    ChangeNote { reason: reason.unwrap_or_default(), eval_runs, extra: serde_json::json!({}) }
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(json_rejection)
}

/// An optional JSON body (promote, rollback and delete may send none).
fn optional_note(bytes: &axum::body::Bytes) -> Result<api::admin::RouteNote, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) || bytes.trim_ascii() == b"null" {
        return Ok(api::admin::RouteNote::default());
    }
    serde_json::from_slice(bytes).map_err(|err| ApiError::invalid(format!("malformed JSON body: {err}")))
}

#[utoipa::path(get, path = "/api/admin/routes", tag = "routes", responses((status = 200, body = Vec<api::admin::Route>), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn list_routes(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<Vec<api::admin::Route>>> {
    Ok(Json(state.hub.routes(&principal).await?.into_iter().map(wire).collect()))
}

#[utoipa::path(get, path = "/api/admin/routes/{name}", tag = "routes", params(("name" = String, Path)), responses((status = 200, body = api::admin::Route), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such route")))]
pub(crate) async fn get_route(State(state): State<AppState>, Path(name): Path<String>, Auth(principal): Auth) -> ApiResult<Json<api::admin::Route>> {
    Ok(Json(wire(state.hub.route(&principal, &name).await?)))
}

#[utoipa::path(put, path = "/api/admin/routes/{name}", tag = "routes", params(("name" = String, Path)), request_body = api::admin::SetRoute, responses((status = 200, body = api::admin::Route), (status = 400, description = "bad input"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such deployment"), (status = 409, description = "the name is a deployment's, or the route changed meanwhile")))]
pub(crate) async fn set_route(State(state): State<AppState>, Path(name): Path<String>, Auth(principal): Auth, request: Result<Json<api::admin::SetRoute>, JsonRejection>) -> ApiResult<Json<api::admin::Route>> {
    let request = body(request)?;
    Ok(Json(wire(state.hub.set_route(&principal, &name, &request.stable, note(request.reason, request.eval_runs)).await?)))
}

#[utoipa::path(post, path = "/api/admin/routes/{name}/canary", tag = "routes", params(("name" = String, Path)), request_body = api::admin::CanaryRoute, responses((status = 200, body = api::admin::Route), (status = 400, description = "bad input"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such route or deployment"), (status = 409, description = "the route changed meanwhile")))]
pub(crate) async fn canary_route(State(state): State<AppState>, Path(name): Path<String>, Auth(principal): Auth, request: Result<Json<api::admin::CanaryRoute>, JsonRejection>) -> ApiResult<Json<api::admin::Route>> {
    let request = body(request)?;
    let plan = request.analysis.map(|a| domain::hub::RolloutPlan {
        steps: a.steps,
        bake_secs: a.bake_secs.unwrap_or(300),
        slo: domain::routes::Slo { max_error_rate: a.max_error_rate, max_latency_p95_ms: a.max_latency_p95_ms, max_ttft_p95_ms: a.max_ttft_p95_ms, min_tokens_per_sec: a.min_tokens_per_sec, max_ttft_regression: a.max_ttft_regression },
        min_requests: a.min_requests.unwrap_or(20),
        failure_limit: a.failure_limit.unwrap_or(0),
        shadow_secs: a.shadow_secs.unwrap_or(0),
    });
    let percent = match (request.percent, &plan) {
        (Some(percent), _) => percent,
        (None, Some(_)) => 0,
        (None, None) => return Err(ApiError::invalid("percent is required without analysis")),
    };
    Ok(Json(wire(state.hub.canary_route(&principal, &name, &request.deployment, percent, plan, note(request.reason, request.eval_runs)).await?)))
}

#[utoipa::path(post, path = "/api/admin/routes/{name}/shadow", tag = "routes", params(("name" = String, Path)), request_body = api::admin::ShadowRoute, responses((status = 200, body = api::admin::Route), (status = 400, description = "bad input"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such route or deployment"), (status = 409, description = "the route changed meanwhile, or a rollout is shadowing")))]
pub(crate) async fn shadow_route(State(state): State<AppState>, Path(name): Path<String>, Auth(principal): Auth, request: Result<Json<api::admin::ShadowRoute>, JsonRejection>) -> ApiResult<Json<api::admin::Route>> {
    let request = body(request)?;
    let shadow = request.deployment.as_deref().map(|d| (d, request.percent.unwrap_or(100)));
    Ok(Json(wire(state.hub.shadow_route(&principal, &name, shadow, note(request.reason, request.eval_runs)).await?)))
}

#[utoipa::path(post, path = "/api/admin/routes/{name}/promote", tag = "routes", params(("name" = String, Path)), request_body(content = api::admin::RouteNote, description = "optional"), responses((status = 200, body = api::admin::Route), (status = 400, description = "no canary"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such route"), (status = 409, description = "the route changed meanwhile")))]
pub(crate) async fn promote_route(State(state): State<AppState>, Path(name): Path<String>, Auth(principal): Auth, bytes: axum::body::Bytes) -> ApiResult<Json<api::admin::Route>> {
    let request = optional_note(&bytes)?;
    Ok(Json(wire(state.hub.promote_route(&principal, &name, note(request.reason, request.eval_runs)).await?)))
}

#[utoipa::path(post, path = "/api/admin/routes/{name}/rollback", tag = "routes", params(("name" = String, Path)), request_body(content = api::admin::RouteNote, description = "optional"), responses((status = 200, body = api::admin::Route), (status = 400, description = "nothing to go back to"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such route"), (status = 409, description = "the route changed meanwhile")))]
pub(crate) async fn rollback_route(State(state): State<AppState>, Path(name): Path<String>, Auth(principal): Auth, bytes: axum::body::Bytes) -> ApiResult<Json<api::admin::Route>> {
    let request = optional_note(&bytes)?;
    Ok(Json(wire(state.hub.rollback_route(&principal, &name, note(request.reason, request.eval_runs)).await?)))
}

#[utoipa::path(delete, path = "/api/admin/routes/{name}", tag = "routes", params(("name" = String, Path)), responses((status = 200, body = Object), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such route")))]
pub(crate) async fn delete_route(State(state): State<AppState>, Path(name): Path<String>, Auth(principal): Auth, bytes: axum::body::Bytes) -> ApiResult<Json<serde_json::Value>> {
    let request = optional_note(&bytes)?;
    state.hub.delete_route(&principal, &name, note(request.reason, request.eval_runs)).await?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}

#[utoipa::path(get, path = "/api/admin/routes/{name}/history", tag = "routes", params(("name" = String, Path)), responses((status = 200, body = Vec<api::admin::RouteChange>), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn route_history(State(state): State<AppState>, Path(name): Path<String>, Auth(principal): Auth) -> ApiResult<Json<Vec<api::admin::RouteChange>>> {
    let history = state.hub.route_history(&principal, &name).await?;
    Ok(Json(history.into_iter().map(|c| api::admin::RouteChange { at: c.at, actor: c.actor, action: c.action, from: c.from, to: c.to, reason: c.reason, evidence: c.evidence }).collect()))
}
