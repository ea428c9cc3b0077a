//! Pipelines (`/api/admin/routes/{name}/pipeline`, `/api/admin/pipelines`): bind a route to a
//! repo's pushes, list and inspect runs, cancel one. Handlers only translate; `Hub` checks
//! rights and audits; `crate::pipelines` runs them.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::Json;

use crate::auth::Auth;
use crate::error::json_rejection;
use crate::{ApiError, ApiResult, AppState};

fn binding(b: domain::pipelines::Binding) -> api::admin::PipelineBinding {
    api::admin::PipelineBinding { route: b.route, repo: b.repo, repo_type: b.repo_kind, branch: b.branch, spec: b.spec, bound_by: b.bound_by, bound_at: b.bound_at }
}

fn run(r: domain::pipelines::PipelineRun) -> api::admin::PipelineRun {
    api::admin::PipelineRun {
        id: r.id,
        route: r.route,
        repo: r.repo,
        repo_type: r.repo_kind,
        branch: r.branch,
        commit: r.commit,
        pusher: r.pusher,
        status: r.status.as_str().to_owned(),
        stage: r.stage,
        state: r.state,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// Which runs to list.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsQuery {
    /// Only this route's runs.
    route: Option<String>,
    /// At most this many, newest first (default 50).
    limit: Option<i64>,
}

#[utoipa::path(put, path = "/api/admin/routes/{name}/pipeline", tag = "pipelines", params(("name" = String, Path)), request_body = api::admin::BindPipeline, responses((status = 200, body = api::admin::PipelineBinding), (status = 400, description = "bad input or an invalid pipeline"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such route or repo")))]
pub(crate) async fn bind(State(state): State<AppState>, Path(name): Path<String>, Auth(principal): Auth, request: Result<Json<api::admin::BindPipeline>, JsonRejection>) -> ApiResult<Json<api::admin::PipelineBinding>> {
    let Json(request) = request.map_err(json_rejection)?;
    let kind = domain::ids::RepoKind::parse(request.repo_type.as_deref().unwrap_or("model"))?;
    let repo = domain::ids::RepoName::parse(&request.repo)?;
    let branch = request.branch.unwrap_or_else(|| domain::repo::DEFAULT_BRANCH.to_owned());
    if request.spec.as_ref().is_some_and(|s| s.len() > domain::pipelines::MAX_SPEC_BYTES) {
        return Err(ApiError::invalid(format!("spec may have at most {} bytes", domain::pipelines::MAX_SPEC_BYTES)));
    }
    // The spec is at most 64 KiB and 20,000 YAML events: checked here, it is cheap.
    Ok(Json(binding(state.hub.bind_pipeline(&principal, &name, kind, &repo, &branch, request.spec).await?)))
}

#[utoipa::path(delete, path = "/api/admin/routes/{name}/pipeline", tag = "pipelines", params(("name" = String, Path)), responses((status = 200, body = Object), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "the route has no pipeline")))]
pub(crate) async fn unbind(State(state): State<AppState>, Path(name): Path<String>, Auth(principal): Auth) -> ApiResult<Json<serde_json::Value>> {
    state.hub.unbind_pipeline(&principal, &name).await?;
    Ok(Json(serde_json::json!({ "route": name, "deleted": true })))
}

#[utoipa::path(get, path = "/api/admin/pipelines", tag = "pipelines", responses((status = 200, body = Vec<api::admin::PipelineBinding>), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn bindings(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<Vec<api::admin::PipelineBinding>>> {
    Ok(Json(state.hub.pipeline_bindings(&principal).await?.into_iter().map(binding).collect()))
}

#[utoipa::path(get, path = "/api/admin/pipelines/runs", tag = "pipelines", params(RunsQuery), responses((status = 200, body = Vec<api::admin::PipelineRun>), (status = 400, description = "bad query"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn runs(State(state): State<AppState>, Auth(principal): Auth, query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult<Json<Vec<api::admin::PipelineRun>>> {
    let Query(query) = query.map_err(|err| ApiError::invalid(err.body_text()))?;
    Ok(Json(state.hub.pipeline_runs(&principal, query.route.as_deref(), query.limit.unwrap_or(50)).await?.into_iter().map(run).collect()))
}

#[utoipa::path(get, path = "/api/admin/pipelines/runs/{id}", tag = "pipelines", params(("id" = String, Path)), responses((status = 200, body = api::admin::PipelineRun), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such run")))]
pub(crate) async fn get_run(State(state): State<AppState>, Path(id): Path<String>, Auth(principal): Auth) -> ApiResult<Json<api::admin::PipelineRun>> {
    Ok(Json(run(state.hub.pipeline_run(&principal, &id).await?)))
}

#[utoipa::path(post, path = "/api/admin/pipelines/runs/{id}/cancel", tag = "pipelines", params(("id" = String, Path)), responses((status = 200, body = api::admin::PipelineRun), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such run"), (status = 409, description = "the run has ended")))]
pub(crate) async fn cancel_run(State(state): State<AppState>, Path(id): Path<String>, Auth(principal): Auth) -> ApiResult<Json<api::admin::PipelineRun>> {
    Ok(Json(run(state.hub.cancel_pipeline_run(&principal, &id).await?)))
}
