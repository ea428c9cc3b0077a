//! Repo-level Hub endpoints: whoami, create/delete/move, info, settings, refs, commits, branches, tags.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::Json;
use domain::auth::Principal;
use domain::ids::{RepoKind, RepoName};
use domain::repo::{FileEntry, RefKind};
use serde::Deserialize;

use super::{base_url, repo_from_path, repo_url, RepoParams, RevParams};
use crate::auth::Auth;
use crate::error::json_rejection;
use crate::{ApiError, ApiResult, AppState};

#[derive(Deserialize)]
pub(crate) struct BranchParams {
    kinds: String,
    ns: String,
    name: String,
    branch: String,
}

impl BranchParams {
    fn repo(&self) -> ApiResult<(RepoKind, RepoName)> {
        repo_from_path(&self.kinds, &self.ns, &self.name)
    }
}

pub(crate) async fn whoami(Auth(principal): Auth) -> ApiResult<Json<api::hub::WhoAmI>> {
    let user = principal.user()?;
    Ok(Json(api::hub::WhoAmI {
        kind: "user".into(),
        name: user.name.clone(),
        fullname: user.name.clone(),
        is_pro: false,
        orgs: user.orgs.iter().map(|org| api::hub::WhoAmIOrg { kind: "org".into(), name: org.clone(), fullname: org.clone() }).collect(),
        auth: api::hub::WhoAmIAuth { kind: "access_token".into(), access_token: api::hub::AccessToken { display_name: user.token_name.clone(), role: user.role.as_str().into() } },
    }))
}

fn kind_from_body(kind: Option<&str>) -> ApiResult<RepoKind> {
    Ok(match kind {
        None => RepoKind::Model,
        Some(kind) => RepoKind::parse(kind)?,
    })
}

fn name_from_body(principal: &Principal, organization: Option<&str>, name: &str) -> ApiResult<RepoName> {
    // Clients send either `name` plus `organization`, or a full `ns/name` in `name`.
    if let Some((ns, repo)) = name.split_once('/') {
        return Ok(RepoName::from_parts(ns, repo)?);
    }
    let namespace = match organization {
        Some(org) => org.to_owned(),
        None => principal.user()?.name.clone(),
    };
    Ok(RepoName::from_parts(&namespace, name)?)
}

fn private_from(private: Option<bool>, visibility: Option<&str>) -> ApiResult<Option<bool>> {
    match (private, visibility) {
        (_, Some("private")) => Ok(Some(true)),
        (_, Some("public")) => Ok(Some(false)),
        (_, Some(other)) => Err(ApiError::invalid(format!("unsupported visibility {other:?}: expected public or private"))),
        (private, None) => Ok(private),
    }
}

pub(crate) async fn create_repo(State(state): State<AppState>, headers: HeaderMap, Auth(principal): Auth, body: Result<Json<api::hub::CreateRepoRequest>, JsonRejection>) -> ApiResult<Response> {
    let Json(body) = body.map_err(json_rejection)?;
    principal.user()?;
    let kind = kind_from_body(body.kind.as_deref())?;
    let name = name_from_body(&principal, body.organization.as_deref(), &body.name)?;
    let private = private_from(body.private, body.visibility.as_deref())?.unwrap_or(false);
    let url = repo_url(&base_url(&state, &headers), kind, &name);
    match state.hub.create_repo(&principal, kind, &name, private).await {
        Ok(_) => Ok(Json(api::hub::CreateRepoResponse { url, name: name.to_string(), id: name.to_string() }).into_response()),
        // The Hub's 409 carries the repo URL too; `create_repo(exist_ok=True)` reads it.
        Err(domain::Error::Conflict(message)) => Ok((StatusCode::CONFLICT, Json(serde_json::json!({ "error": message, "url": url }))).into_response()),
        Err(err) => Err(err.into()),
    }
}

pub(crate) async fn delete_repo(State(state): State<AppState>, Auth(principal): Auth, body: Result<Json<api::hub::DeleteRepoRequest>, JsonRejection>) -> ApiResult<Json<serde_json::Value>> {
    let Json(body) = body.map_err(json_rejection)?;
    let kind = kind_from_body(body.kind.as_deref())?;
    let name = name_from_body(&principal, body.organization.as_deref(), &body.name).map_err(|_| domain::Error::RepoNotFound("repository not found".into()))?;
    state.hub.delete_repo(&principal, kind, &name).await?;
    Ok(Json(serde_json::json!({})))
}

pub(crate) async fn move_repo(State(state): State<AppState>, Auth(principal): Auth, body: Result<Json<api::hub::MoveRepoRequest>, JsonRejection>) -> ApiResult<Json<serde_json::Value>> {
    let Json(body) = body.map_err(json_rejection)?;
    let kind = kind_from_body(body.kind.as_deref())?;
    let from = RepoName::parse(&body.from_repo).map_err(|_| domain::Error::RepoNotFound("repository not found".into()))?;
    let to = RepoName::parse(&body.to_repo)?;
    state.hub.move_repo(&principal, kind, &from, &to).await?;
    Ok(Json(serde_json::json!({})))
}

pub(crate) async fn update_settings(State(state): State<AppState>, Path(p): Path<RepoParams>, Auth(principal): Auth, body: Result<Json<api::hub::RepoSettingsRequest>, JsonRejection>) -> ApiResult<Json<serde_json::Value>> {
    let (kind, name) = p.repo()?;
    let Json(body) = body.map_err(json_rejection)?;
    if body.gated.as_ref().is_some_and(|g| g != &serde_json::Value::Bool(false)) {
        return Err(ApiError::invalid("gated repos are not supported"));
    }
    match private_from(body.private, body.visibility.as_deref())? {
        Some(private) => state.hub.set_private(&principal, kind, &name, private).await?,
        None => {
            // Still check access, so a settings call never succeeds silently for the wrong caller.
            state.hub.writable_repo(&principal, kind, &name).await?;
        }
    }
    Ok(Json(serde_json::json!({})))
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    author: Option<String>,
    search: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn list_repos(State(state): State<AppState>, Path(kinds): Path<String>, Query(query): Query<ListQuery>, Auth(principal): Auth) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let kind = match kinds.as_str() {
        "models" => RepoKind::Model,
        "datasets" => RepoKind::Dataset,
        _ => return Err(domain::Error::NotFound(format!("no such endpoint /api/{kinds}")).into()),
    };
    let repos = state.hub.list_repos(&principal, kind, query.author.as_deref()).await?;
    let search = query.search.map(|s| s.to_lowercase());
    let items = repos
        .into_iter()
        .filter(|repo| search.as_ref().is_none_or(|s| repo.name.to_string().to_lowercase().contains(s)))
        .take(query.limit.unwrap_or(1000).min(10_000))
        .map(|repo| {
            serde_json::json!({
                "_id": format!("{}", repo.id),
                "id": repo.name.to_string(),
                "modelId": repo.name.to_string(),
                "author": repo.name.namespace.to_string(),
                "private": repo.private,
                "createdAt": repo.created_at,
                "downloads": 0,
                "likes": 0,
                "tags": [],
            })
        })
        .collect();
    Ok(Json(items))
}

pub(crate) async fn repo_info(State(state): State<AppState>, Path(p): Path<RepoParams>, Auth(principal): Auth) -> ApiResult<Json<api::hub::RepoInfo>> {
    info(&state, &principal, &p.kinds, &p.ns, &p.name, domain::repo::DEFAULT_BRANCH).await
}

pub(crate) async fn repo_info_at(State(state): State<AppState>, Path(p): Path<RevParams>, Auth(principal): Auth) -> ApiResult<Json<api::hub::RepoInfo>> {
    info(&state, &principal, &p.kinds, &p.ns, &p.name, &p.rev).await
}

async fn info(state: &AppState, principal: &Principal, kinds: &str, ns: &str, name: &str, rev: &str) -> ApiResult<Json<api::hub::RepoInfo>> {
    let (kind, name) = repo_from_path(kinds, ns, name)?;
    let repo = state.hub.visible_repo(principal, kind, &name).await?;
    let (commit, files) = state.hub.snapshot(&repo, rev).await?;
    let verdict = state.hub.judge_files(&repo, &files).await?;
    Ok(Json(api::hub::RepoInfo {
        security_repo_status: Some(super::vetting::security_repo_status(&verdict)),
        mongo_id: format!("{:024x}", repo.id),
        id: name.to_string(),
        model_id: (kind == RepoKind::Model).then(|| name.to_string()),
        author: name.namespace.to_string(),
        sha: commit.id.to_string(),
        last_modified: commit.created_at.clone(),
        created_at: repo.created_at.clone(),
        private: repo.private,
        disabled: false,
        gated: false,
        downloads: 0,
        likes: 0,
        tags: Vec::new(),
        used_storage: files.iter().map(|f| f.size).sum(),
        siblings: files.iter().map(sibling).collect(),
    }))
}

fn sibling(file: &FileEntry) -> api::hub::Sibling {
    api::hub::Sibling { rfilename: file.path.to_string(), size: file.size, blob_id: file.git_oid.clone(), lfs: file.lfs.then(|| api::hub::SiblingLfs { size: file.size, sha256: file.sha256.to_string(), pointer_size: file.pointer_size() }) }
}

pub(crate) async fn list_refs(State(state): State<AppState>, Path(p): Path<RepoParams>, Auth(principal): Auth) -> ApiResult<Json<api::hub::Refs>> {
    let (kind, name) = p.repo()?;
    let repo = state.hub.visible_repo(&principal, kind, &name).await?;
    let refs = state.hub.refs(&repo).await?;
    let entry = |r: &domain::repo::GitRef, prefix: &str| api::hub::RefEntry { name: r.name.clone(), git_ref: format!("{prefix}{}", r.name), target_commit: r.commit.to_string() };
    Ok(Json(api::hub::Refs {
        branches: refs.iter().filter(|r| r.kind == RefKind::Branch).map(|r| entry(r, "refs/heads/")).collect(),
        converts: Vec::new(),
        tags: refs.iter().filter(|r| r.kind == RefKind::Tag).map(|r| entry(r, "refs/tags/")).collect(),
        pull_requests: Vec::new(),
    }))
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    p: Option<usize>,
    limit: Option<usize>,
}

pub(crate) async fn list_commits(State(state): State<AppState>, Path(p): Path<RevParams>, Query(page): Query<PageQuery>, headers: HeaderMap, Auth(principal): Auth) -> ApiResult<(HeaderMap, Json<Vec<api::hub::CommitEntry>>)> {
    let (kind, name) = p.repo()?;
    let repo = state.hub.visible_repo(&principal, kind, &name).await?;
    let commits = state.hub.commits(&repo, &p.rev).await?;
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let index = page.p.unwrap_or(0);
    let items: Vec<_> = commits
        .iter()
        .skip(index.saturating_mul(limit))
        .take(limit)
        .map(|c| api::hub::CommitEntry {
            id: c.id.to_string(),
            title: c.title.clone(),
            message: c.message.clone(),
            authors: vec![api::hub::CommitAuthor { user: c.author.clone() }],
            date: c.created_at.clone(),
            parents: c.parent.iter().map(|p| p.to_string()).collect(),
        })
        .collect();
    let mut out = HeaderMap::new();
    if (index + 1).saturating_mul(limit) < commits.len() {
        let rev = percent_encoding::utf8_percent_encode(&p.rev, percent_encoding::NON_ALPHANUMERIC);
        let next = format!("<{}/api/{}/{name}/commits/{rev}?p={}&limit={limit}>; rel=\"next\"", base_url(&state, &headers), p.kinds, index + 1);
        if let Ok(value) = next.parse() {
            out.insert("link", value);
        }
    }
    Ok((out, Json(items)))
}

pub(crate) async fn create_branch(State(state): State<AppState>, Path(p): Path<BranchParams>, Auth(principal): Auth, body: Option<Json<api::hub::CreateBranchRequest>>) -> ApiResult<Json<serde_json::Value>> {
    let (kind, name) = p.repo()?;
    let repo = state.hub.writable_repo(&principal, kind, &name).await?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    if body.empty_branch == Some(true) {
        return Err(ApiError::invalid("empty branches are not supported"));
    }
    state.hub.create_ref(&principal, &repo, RefKind::Branch, &p.branch, body.starting_point.as_deref()).await?;
    Ok(Json(serde_json::json!({})))
}

pub(crate) async fn delete_branch(State(state): State<AppState>, Path(p): Path<BranchParams>, Auth(principal): Auth) -> ApiResult<Json<serde_json::Value>> {
    let (kind, name) = p.repo()?;
    let repo = state.hub.writable_repo(&principal, kind, &name).await?;
    state.hub.delete_ref(&principal, &repo, RefKind::Branch, &p.branch).await?;
    Ok(Json(serde_json::json!({})))
}

pub(crate) async fn create_tag(State(state): State<AppState>, Path(p): Path<RevParams>, Auth(principal): Auth, body: Result<Json<api::hub::CreateTagRequest>, JsonRejection>) -> ApiResult<Json<serde_json::Value>> {
    let (kind, name) = p.repo()?;
    let Json(body) = body.map_err(json_rejection)?;
    let repo = state.hub.writable_repo(&principal, kind, &name).await?;
    state.hub.create_ref(&principal, &repo, RefKind::Tag, &body.tag, Some(&p.rev)).await?;
    Ok(Json(serde_json::json!({})))
}

pub(crate) async fn delete_tag(State(state): State<AppState>, Path(p): Path<RevParams>, Auth(principal): Auth) -> ApiResult<Json<serde_json::Value>> {
    let (kind, name) = p.repo()?;
    let repo = state.hub.writable_repo(&principal, kind, &name).await?;
    state.hub.delete_ref(&principal, &repo, RefKind::Tag, &p.rev).await?;
    Ok(Json(serde_json::json!({})))
}

/// `POST /api/validate-yaml`: the client checks a README's metadata before uploading it.
pub(crate) async fn validate_yaml(body: Result<Json<api::hub::ValidateYamlRequest>, JsonRejection>) -> ApiResult<Response> {
    let Json(body) = body.map_err(json_rejection)?;
    // Bounded work (the card check has an event and alias budget), but still CPU: off the async workers.
    let check = tokio::task::spawn_blocking(move || domain::card::check_card(&body.content)).await.map_err(domain::Error::internal)?;
    let messages = |items: Vec<String>| items.into_iter().map(|message| api::hub::YamlMessage { message }).collect::<Vec<_>>();
    let status = if check.errors.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    let error = check.errors.first().cloned();
    let reply = api::hub::ValidateYamlResponse { errors: messages(check.errors), warnings: messages(check.warnings), error };
    Ok((status, Json(reply)).into_response())
}
