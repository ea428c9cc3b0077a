//! Route table and the helpers handlers share: repo ids from paths, the public base URL.

mod admin;
mod commit;
mod console;
mod files;
mod lfs;
mod ollama;
pub(crate) mod openai;
mod openapi;
mod pipelines;
mod release;
mod repos;
mod tree;
mod vetting;
mod xet;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::{delete, get, post, put};
use axum::Router;
use domain::ids::{RepoKind, RepoName};
use tower_http::trace::TraceLayer;

use crate::{ApiError, AppState};

/// All routes.
pub(crate) fn router(state: AppState) -> Router {
    let json_limit = state.config.max_json_body;
    let api = Router::new()
        .route("/api/whoami-v2", get(repos::whoami))
        .route("/api/repos/create", post(repos::create_repo))
        .route("/api/repos/delete", delete(repos::delete_repo))
        .route("/api/repos/move", post(repos::move_repo))
        .route("/api/validate-yaml", post(repos::validate_yaml))
        .route("/api/{kinds}", get(repos::list_repos))
        .route("/api/{kinds}/{ns}/{name}", get(repos::repo_info))
        .route("/api/{kinds}/{ns}/{name}/revision/{rev}", get(repos::repo_info_at))
        .route("/api/{kinds}/{ns}/{name}/settings", put(repos::update_settings))
        .route("/api/{kinds}/{ns}/{name}/tree/{rev}", get(tree::list_tree_root))
        .route("/api/{kinds}/{ns}/{name}/tree/{rev}/{*path}", get(tree::list_tree))
        .route("/api/{kinds}/{ns}/{name}/paths-info/{rev}", post(tree::paths_info))
        .route("/api/{kinds}/{ns}/{name}/refs", get(repos::list_refs))
        .route("/api/{kinds}/{ns}/{name}/commits/{rev}", get(repos::list_commits))
        .route("/api/{kinds}/{ns}/{name}/branch/{branch}", post(repos::create_branch).delete(repos::delete_branch))
        .route("/api/{kinds}/{ns}/{name}/tag/{rev}", post(repos::create_tag).delete(repos::delete_tag))
        .route("/api/{kinds}/{ns}/{name}/preupload/{rev}", post(commit::preupload))
        .route("/api/{kinds}/{ns}/{name}/xet-write-token/{rev}", get(xet::write_token))
        .route("/api/{kinds}/{ns}/{name}/xet-read-token/{rev}", get(xet::read_token))
        .route("/xet/{partition}/v1/chunks/{prefix}/{hash}", get(xet::dedup_chunk))
        .route("/xet/{partition}/v1/reconstructions/{file_id}", get(xet::reconstruction))
        .route("/xet-fetch/{xorb}", get(xet::fetch))
        .route("/api/{kinds}/{ns}/{name}/vetting/{rev}", get(vetting::revision_verdict))
        .route("/api/{kinds}/{ns}/{name}/bom/{rev}", get(vetting::bom))
        .route("/api/policies/{namespace}", get(vetting::get_policy).put(vetting::set_policy))
        .route("/api/policies/{namespace}/overrides", get(vetting::list_overrides).post(vetting::add_override))
        .route("/api/admin/users", get(admin::list_users).post(admin::create_user))
        .route("/api/admin/orgs", post(admin::create_org))
        .route("/api/admin/orgs/{org}/members", post(admin::add_member))
        .route("/api/admin/tokens", get(admin::list_tokens).post(admin::create_token))
        .route("/api/admin/tokens/{id}", delete(admin::revoke_token))
        .route("/api/admin/gc", post(admin::gc))
        .route("/api/admin/deployments", get(admin::list_deployments).post(admin::create_deployment))
        .route("/api/admin/deployments/{name}", delete(admin::delete_deployment))
        .route("/api/admin/routes", get(release::list_routes))
        .route("/api/admin/routes/{name}", get(release::get_route).put(release::set_route).delete(release::delete_route))
        .route("/api/admin/routes/{name}/canary", post(release::canary_route))
        .route("/api/admin/routes/{name}/shadow", post(release::shadow_route))
        .route("/api/admin/routes/{name}/promote", post(release::promote_route))
        .route("/api/admin/routes/{name}/rollback", post(release::rollback_route))
        .route("/api/admin/routes/{name}/history", get(release::route_history))
        .route("/api/admin/routes/{name}/pipeline", axum::routing::put(pipelines::bind).delete(pipelines::unbind))
        .route("/api/admin/pipelines", get(pipelines::bindings))
        .route("/api/admin/pipelines/runs", get(pipelines::runs))
        .route("/api/admin/pipelines/runs/{id}", get(pipelines::get_run))
        .route("/api/admin/pipelines/runs/{id}/cancel", post(pipelines::cancel_run))
        .route("/api/admin/audit", get(admin::export_audit))
        .route("/api/usage", get(admin::usage))
        .route("/api/admin/quotas", get(admin::list_quotas))
        .route("/api/admin/quotas/{scope}/{subject}", put(admin::set_quota).delete(admin::delete_quota))
        .route("/api/admin/audit/verify", get(admin::verify_audit))
        .route("/api/admin/audit/checkpoint", post(admin::create_audit_checkpoint))
        .route("/api/admin/audit/checkpoints", get(admin::list_audit_checkpoints))
        .route("/api/audit/public-key", get(admin::audit_public_key))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/{ns}/{name_git}/info/lfs/objects/batch", post(lfs::batch_model))
        .route("/datasets/{ns}/{name_git}/info/lfs/objects/batch", post(lfs::batch_dataset))
        .route("/", get(console::index))
        .route("/console/app.js", get(console::script))
        .route("/console/releases.js", get(console::releases))
        .route("/console/retrieval.js", get(console::retrieval))
        .route("/console/app.css", get(console::style))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{model}", get(openai::retrieve_model))
        .route("/v1/chat/completions", post(openai::create_chat_completion))
        .route("/v1/completions", post(openai::create_completion))
        .route("/v1/embeddings", post(openai::create_embedding))
        .route("/v1/responses", post(openai::create_response))
        .route("/v1/responses/{id}", get(openai::retrieve_response).delete(openai::delete_response))
        .route("/v1/responses/{id}/input_items", get(openai::list_input_items))
        .route("/v1/vector_stores", post(openai::vector_stores::create).get(openai::vector_stores::list))
        .route("/v1/vector_stores/{id}", get(openai::vector_stores::retrieve).post(openai::vector_stores::update).delete(openai::vector_stores::delete))
        .route("/v1/vector_stores/{id}/search", post(openai::vector_stores::search))
        .route("/v1/vector_stores/{id}/files", post(openai::vector_stores::attach).get(openai::vector_stores::list_files))
        .route("/v1/vector_stores/{id}/files/{file_id}", get(openai::vector_stores::retrieve_file).post(openai::vector_stores::update_file).delete(openai::vector_stores::detach))
        .route("/v1/vector_stores/{id}/files/{file_id}/content", get(openai::vector_stores::file_content))
        .route("/v1/vector_stores/{id}/file_batches", post(openai::vector_stores::create_batch))
        .route("/v1/vector_stores/{id}/file_batches/{batch_id}", get(openai::vector_stores::retrieve_batch))
        .route("/v1/vector_stores/{id}/file_batches/{batch_id}/cancel", post(openai::vector_stores::cancel_batch))
        .route("/v1/vector_stores/{id}/file_batches/{batch_id}/files", get(openai::vector_stores::batch_files))
        .route("/v1/evals", post(openai::evals::create_eval).get(openai::evals::list_evals))
        .route("/v1/evals/{eval_id}", get(openai::evals::get_eval).post(openai::evals::update_eval).delete(openai::evals::delete_eval))
        .route("/v1/evals/{eval_id}/runs", post(openai::evals::create_run).get(openai::evals::list_runs))
        .route("/v1/evals/{eval_id}/runs/{run_id}", get(openai::evals::get_run).post(openai::evals::cancel_run).delete(openai::evals::delete_run))
        .route("/v1/evals/{eval_id}/runs/{run_id}/cancel", post(openai::evals::cancel_run))
        .route("/v1/evals/{eval_id}/runs/{run_id}/output_items", get(openai::evals::list_output_items))
        .route("/v1/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}", get(openai::evals::get_output_item))
        .route("/v1/webhook_endpoints", post(openai::webhooks::create).get(openai::webhooks::list))
        .route("/v1/webhook_endpoints/{id}", get(openai::webhooks::retrieve).post(openai::webhooks::update).delete(openai::webhooks::delete))
        .route("/v1/webhook_endpoints/{id}/rotate_secret", post(openai::webhooks::rotate_secret))
        .route("/v1/webhook_endpoints/{id}/test", post(openai::webhooks::test))
        .route("/v1/webhook_endpoints/{id}/deliveries", get(openai::webhooks::deliveries))
        .route("/tokenize", post(openai::tokenize))
        .route("/detokenize", post(openai::detokenize))
        .route("/tokenizer_info", get(openai::tokenizer_info))
        .route("/deployments/{name}/v1/completions", post(openai::create_completion_at))
        .route("/deployments/{name}/tokenize", post(openai::tokenize_at))
        .route("/deployments/{name}/detokenize", post(openai::detokenize_at))
        .route("/deployments/{name}/tokenizer_info", get(openai::tokenizer_info_at))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .layer(DefaultBodyLimit::max(json_limit));
    // Streaming routes read their bodies chunk by chunk and enforce their own limits.
    let streaming = Router::new()
        .route("/api/{kinds}/{ns}/{name}/commit/{rev}", post(commit::create_commit))
        .route("/lfs-upload/{kinds}/{ns}/{name}/{oid}", put(lfs::upload_object).post(lfs::complete_multipart))
        .route("/lfs-upload/{kinds}/{ns}/{name}/{oid}/verify", post(lfs::verify_object))
        .route("/lfs-upload/{kinds}/{ns}/{name}/{oid}/{part}", put(lfs::upload_part))
        .route("/xet/{partition}/v1/xorbs/{prefix}/{hash}", post(xet::upload_xorb))
        .route("/xet/{partition}/v1/shards", post(xet::upload_shard))
        .route("/v1/files", post(openai::files::create_file).get(openai::files::list_files))
        .route("/v1/files/{id}", get(openai::files::retrieve_file).delete(openai::files::delete_file))
        .route("/v1/files/{id}/content", get(openai::files::file_content))
        .layer(DefaultBodyLimit::disable());
    let files = Router::new().route("/{ns}/{name}/resolve/{rev}/{*path}", get(files::resolve_model)).route("/datasets/{ns}/{name}/resolve/{rev}/{*path}", get(files::resolve_dataset));
    api.merge(streaming).merge(files).fallback(not_found).layer(TraceLayer::new_for_http()).with_state(state)
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render(&state.runtime, &state.usage))
}

/// Unknown paths. Repo-shaped ones (a repo id without namespace, say) answer `RepoNotFound`, so
/// clients raise the same error as for any other missing repo.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let path = uri.path();
    if path.starts_with("/v1/") {
        return openai::OpenAiError::not_found(format!("no such endpoint: {path}")).into_response();
    }
    let repo_shaped = path.starts_with("/api/models/") || path.starts_with("/api/datasets/") || path.contains("/resolve/");
    let err = if repo_shaped { domain::Error::RepoNotFound(format!("repository not found for {path}")) } else { domain::Error::NotFound(format!("no such endpoint: {path}")) };
    ApiError::from(err).into_response()
}

/// `/api/{kinds}/{ns}/{name}/...` path parameters.
#[derive(serde::Deserialize)]
pub(crate) struct RepoParams {
    pub(crate) kinds: String,
    pub(crate) ns: String,
    pub(crate) name: String,
}

/// `/api/{kinds}/{ns}/{name}/.../{rev}` path parameters.
#[derive(serde::Deserialize)]
pub(crate) struct RevParams {
    pub(crate) kinds: String,
    pub(crate) ns: String,
    pub(crate) name: String,
    pub(crate) rev: String,
}

impl RepoParams {
    pub(crate) fn repo(&self) -> Result<(RepoKind, RepoName), ApiError> {
        repo_from_path(&self.kinds, &self.ns, &self.name)
    }
}

impl RevParams {
    pub(crate) fn repo(&self) -> Result<(RepoKind, RepoName), ApiError> {
        repo_from_path(&self.kinds, &self.ns, &self.name)
    }
}

/// Parses `{kinds}/{ns}/{name}` from a path. A malformed name cannot exist, so it reads as not found.
pub(crate) fn repo_from_path(kinds: &str, ns: &str, name: &str) -> Result<(RepoKind, RepoName), ApiError> {
    let kind = match kinds {
        "models" => RepoKind::Model,
        "datasets" => RepoKind::Dataset,
        other => return Err(domain::Error::RepoNotFound(format!("unsupported repo type {other:?}")).into()),
    };
    let name = RepoName::from_parts(ns, name).map_err(|_| domain::Error::RepoNotFound(format!("repository {ns}/{name} not found")))?;
    Ok((kind, name))
}

/// The URL clients reach this server at: the configured public URL, else scheme and Host of the request.
pub(crate) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.as_str().trim_end_matches('/').to_owned();
    }
    let host = headers.get("host").and_then(|h| h.to_str().ok()).filter(|h| !h.is_empty()).map(str::to_owned).unwrap_or_else(|| state.config.addr.to_string());
    let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).filter(|s| *s == "https").unwrap_or("http");
    format!("{scheme}://{host}")
}

/// The web URL of a repo: `{base}/{ns}/{name}` or `{base}/datasets/{ns}/{name}`.
pub(crate) fn repo_url(base: &str, kind: RepoKind, name: &RepoName) -> String {
    format!("{base}/{}{name}", kind.url_prefix())
}
