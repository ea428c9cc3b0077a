//! Mantle's admin API: users, orgs, memberships, tokens, gc and the audit log.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use crate::auth::Auth;
use crate::error::json_rejection;
use crate::{ApiError, ApiResult, AppState};

fn account(account: domain::meta::Account) -> api::admin::Account {
    api::admin::Account { id: account.id, name: account.name.to_string(), kind: account.kind.as_str().into(), is_admin: account.is_admin, created_at: account.created_at }
}

fn token(info: domain::meta::TokenInfo, secret: Option<String>) -> api::admin::Token {
    api::admin::Token { id: info.id, user: info.user_name, name: info.name, role: info.role.as_str().into(), created_at: info.created_at, expires_at: info.expires_at, revoked_at: info.revoked_at, token: secret }
}

#[utoipa::path(get, path = "/api/admin/users", tag = "admin", responses((status = 200, body = Vec<api::admin::Account>), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn list_users(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<Vec<api::admin::Account>>> {
    Ok(Json(state.hub.list_accounts(&principal).await?.into_iter().map(account).collect()))
}

#[utoipa::path(post, path = "/api/admin/users", tag = "admin", request_body = api::admin::CreateUser, responses((status = 200, body = api::admin::Account), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 409, description = "exists")))]
pub(crate) async fn create_user(State(state): State<AppState>, Auth(principal): Auth, body: Result<Json<api::admin::CreateUser>, JsonRejection>) -> ApiResult<Json<api::admin::Account>> {
    let Json(body) = body.map_err(json_rejection)?;
    Ok(Json(account(state.hub.create_user(&principal, &body.name, body.org.as_deref()).await?)))
}

#[utoipa::path(post, path = "/api/admin/orgs", tag = "admin", request_body = api::admin::CreateOrg, responses((status = 200, body = api::admin::Account), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 409, description = "exists")))]
pub(crate) async fn create_org(State(state): State<AppState>, Auth(principal): Auth, body: Result<Json<api::admin::CreateOrg>, JsonRejection>) -> ApiResult<Json<api::admin::Account>> {
    let Json(body) = body.map_err(json_rejection)?;
    Ok(Json(account(state.hub.create_org(&principal, &body.name).await?)))
}

#[utoipa::path(post, path = "/api/admin/orgs/{org}/members", tag = "admin", params(("org" = String, Path)), request_body = api::admin::AddMember, responses((status = 200, body = Object), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such org or user"), (status = 409, description = "already a member")))]
pub(crate) async fn add_member(State(state): State<AppState>, Path(org): Path<String>, Auth(principal): Auth, body: Result<Json<api::admin::AddMember>, JsonRejection>) -> ApiResult<Json<serde_json::Value>> {
    let Json(body) = body.map_err(json_rejection)?;
    state.hub.add_member(&principal, &org, &body.user).await?;
    Ok(Json(serde_json::json!({ "org": org, "user": body.user })))
}

#[utoipa::path(get, path = "/api/admin/tokens", tag = "admin", responses((status = 200, body = Vec<api::admin::Token>), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn list_tokens(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<Vec<api::admin::Token>>> {
    Ok(Json(state.hub.list_tokens(&principal).await?.into_iter().map(|t| token(t, None)).collect()))
}

#[utoipa::path(post, path = "/api/admin/tokens", tag = "admin", request_body = api::admin::CreateToken, responses((status = 200, body = api::admin::Token), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such user")))]
pub(crate) async fn create_token(State(state): State<AppState>, Auth(principal): Auth, body: Result<Json<api::admin::CreateToken>, JsonRejection>) -> ApiResult<Json<api::admin::Token>> {
    let Json(body) = body.map_err(json_rejection)?;
    let (info, secret) = state.hub.create_token(&principal, &body.user, &body.role, body.name.as_deref(), body.expires_in.as_deref()).await?;
    Ok(Json(token(info, Some(secret))))
}

#[utoipa::path(delete, path = "/api/admin/tokens/{id}", tag = "admin", params(("id" = i64, Path)), responses((status = 200, body = api::admin::Token), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such token"), (status = 409, description = "already revoked")))]
pub(crate) async fn revoke_token(State(state): State<AppState>, Path(id): Path<i64>, Auth(principal): Auth) -> ApiResult<Json<api::admin::Token>> {
    Ok(Json(token(state.hub.revoke_token(&principal, id).await?, None)))
}

#[utoipa::path(post, path = "/api/admin/gc", tag = "admin", request_body = Option<api::admin::GcRequest>, responses((status = 200, body = api::admin::GcReport), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn gc(State(state): State<AppState>, Auth(principal): Auth, body: Option<Json<api::admin::GcRequest>>) -> ApiResult<Json<api::admin::GcReport>> {
    let request = body.map(|Json(b)| b).unwrap_or_default();
    let min_age = request.min_age_secs.unwrap_or(3600);
    // Up to a century: beyond that nothing is old enough, and the time arithmetic would overflow.
    let Some(min_age) = (0..=3_155_760_000).contains(&min_age).then(|| chrono::Duration::seconds(min_age)) else {
        return Err(ApiError::invalid("min_age_secs must be 0 to 3155760000 (a century)"));
    };
    let report = state.hub.gc(&principal, min_age).await?;
    Ok(Json(api::admin::GcReport {
        blobs_seen: report.blobs_seen,
        blobs_deleted: report.blobs_deleted,
        bytes_freed: report.bytes_freed,
        temporary_deleted: report.temporary_deleted,
        xet_files_deleted: report.xet_files_deleted,
        xorbs_deleted: report.xorbs_deleted,
    }))
}

#[utoipa::path(get, path = "/api/admin/audit/verify", tag = "audit", responses((status = 200, body = api::admin::AuditVerify), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn verify_audit(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<api::admin::AuditVerify>> {
    let report = state.hub.verify_audit(&principal).await?;
    if let Some(broken) = report.broken {
        return Ok(Json(api::admin::AuditVerify { ok: false, checked: report.checked, broken_seq: Some(broken.seq), reason: Some(broken.reason), verified_through: None }));
    }
    // The chain holds together; now against the signed checkpoints.
    let checked = crate::audit_log::verify_stored(&state, &principal).await?;
    Ok(Json(api::admin::AuditVerify { ok: checked.broken.is_none(), checked: checked.checked, broken_seq: None, reason: checked.broken, verified_through: checked.verified_through }))
}

/// `POST /api/admin/audit/checkpoint`: signs the chain head now (site admin).
#[utoipa::path(post, path = "/api/admin/audit/checkpoint", tag = "audit", responses((status = 200, body = Option<api::admin::AuditCheckpoint>), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn create_audit_checkpoint(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<Option<api::admin::AuditCheckpoint>>> {
    principal.site_admin()?;
    Ok(Json(crate::audit_log::checkpoint(&state).await?))
}

/// `GET /api/admin/audit/checkpoints`: the newest signed checkpoints, oldest first (site admin).
#[utoipa::path(get, path = "/api/admin/audit/checkpoints", tag = "audit", responses((status = 200, body = Vec<api::admin::AuditCheckpoint>), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn list_audit_checkpoints(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<Vec<api::admin::AuditCheckpoint>>> {
    principal.site_admin()?;
    Ok(Json(crate::audit_log::checkpoints(&state).await?))
}

/// `GET /api/audit/public-key`: the key checkpoints are signed with (public by nature).
#[utoipa::path(get, path = "/api/audit/public-key", tag = "audit", responses((status = 200, body = api::admin::AuditPublicKey)))]
pub(crate) async fn audit_public_key(State(state): State<AppState>) -> Json<api::admin::AuditPublicKey> {
    Json(api::admin::AuditPublicKey { algorithm: "ed25519".into(), public_key: state.audit_signer.public_key() })
}

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    after: Option<i64>,
    since: Option<String>,
    limit: Option<i64>,
}

/// Audit rows after a seq (paging) and optionally at or after a time (RFC 3339).
#[utoipa::path(get, path = "/api/admin/audit", tag = "audit", params(("after" = Option<i64>, Query), ("since" = Option<String>, Query, description = "RFC 3339"), ("limit" = Option<i64>, Query)), responses((status = 200, body = Vec<api::admin::AuditEntry>), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn export_audit(State(state): State<AppState>, Query(query): Query<AuditQuery>, Auth(principal): Auth) -> ApiResult<Json<Vec<api::admin::AuditEntry>>> {
    let since = match &query.since {
        None => None,
        Some(text) => Some(chrono::DateTime::parse_from_rfc3339(text).map(|t| domain::format_time(t.with_timezone(&chrono::Utc))).map_err(|err| ApiError::invalid(format!("since {text:?} is not an RFC 3339 time: {err}")))?),
    };
    let limit = query.limit.unwrap_or(1000).clamp(1, 10_000);
    // Stored times share one fixed format, so text order is time order. Rows before `since` are
    // skipped page by page until `limit` rows are found or the log ends.
    let mut after = query.after.unwrap_or(0);
    let mut rows = Vec::new();
    loop {
        let page = state.hub.audit_page(&principal, after, limit).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        rows.extend(page.into_iter().filter(|row| since.as_ref().is_none_or(|s| row.time >= *s)));
        if rows.len() >= limit as usize {
            rows.truncate(limit as usize);
            break;
        }
    }
    let entries = rows
        .into_iter()
        .map(|row| api::admin::AuditEntry {
            seq: row.seq,
            time: row.time,
            actor: row.actor,
            action: row.action,
            target: row.target,
            details: serde_json::from_str(&row.details).unwrap_or(serde_json::Value::String(row.details)),
            prev_hash: row.prev_hash,
            hash: row.hash,
        })
        .collect();
    Ok(Json(entries))
}

fn sampling_wire(s: &domain::meta::SamplingDefaults) -> api::admin::SamplingDefaults {
    api::admin::SamplingDefaults { temperature: s.temperature, top_p: s.top_p, top_k: s.top_k, min_p: s.min_p, repetition_penalty: s.repetition_penalty, max_tokens: s.max_tokens }
}

/// A deployment as the admin API shows it; `served` when it is resident here.
fn deployment(d: domain::meta::Deployment, served: Option<&crate::runtime::Served>) -> api::admin::Deployment {
    let resident = served.is_some();
    let effective_sampling = served.map(|s| sampling_wire(&s.sampling_defaults()));
    api::admin::Deployment {
        name: d.name,
        kind: d.kind.as_str().into(),
        repo: d.repo.to_string(),
        commit: d.commit.to_string(),
        file: d.file_path.to_string(),
        sha256: d.file_sha256.to_string(),
        context: d.settings.context,
        max_batch: d.settings.max_batch,
        threads: d.settings.threads,
        created_by: d.created_by,
        created_at: d.created_at,
        resident,
        price_prompt: d.settings.price_prompt_micros as f64 / 1e6,
        price_completion: d.settings.price_completion_micros as f64 / 1e6,
        keep_alive_max: d.settings.keep_alive_max_secs,
        sampling: sampling_wire(&d.settings.sampling),
        effective_sampling,
    }
}

/// A price per million tokens (currency units) as millionths; absent is free.
fn price_micros(price: Option<f64>, field: &str) -> Result<u64, domain::Error> {
    match price {
        None => Ok(0),
        Some(p) if p.is_finite() && (0.0..=1e6).contains(&p) => Ok((p * 1e6).round() as u64),
        Some(_) => Err(domain::Error::invalid(format!("{field} must be a price per million tokens between 0 and 1000000"))),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct UsageParams {
    since: Option<String>,
    until: Option<String>,
    org: Option<String>,
    account: Option<String>,
    by: Option<String>,
}

/// `GET /api/usage`: the caller's own usage; a site admin's token sees everyone's, by org or account.
#[utoipa::path(get, path = "/api/usage", tag = "usage", params(("since" = Option<String>, Query), ("until" = Option<String>, Query), ("org" = Option<String>, Query), ("account" = Option<String>, Query), ("by" = Option<String>, Query, description = "day, token, deployment or account")), responses((status = 200, body = api::admin::UsageReport), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn usage(State(state): State<AppState>, Auth(principal): Auth, axum::extract::Query(params): axum::extract::Query<UsageParams>) -> ApiResult<Json<api::admin::UsageReport>> {
    let group = domain::meta::UsageGroup::parse(params.by.as_deref().unwrap_or("day"))?;
    let rows = state.hub.usage(&principal, params.since.as_deref(), params.until.as_deref(), params.org.as_deref(), params.account.as_deref(), group).await?;
    let row = |r: &domain::meta::UsageRow| api::admin::UsageRow {
        key: r.key.clone(),
        requests: r.requests,
        errors: r.errors,
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        total_tokens: r.prompt_tokens + r.completion_tokens,
        cost: r.cost_micros / 1e6,
    };
    let rows: Vec<api::admin::UsageRow> = rows.iter().map(row).collect();
    let mut total = api::admin::UsageRow::default();
    for r in &rows {
        total.requests += r.requests;
        total.errors += r.errors;
        total.prompt_tokens += r.prompt_tokens;
        total.completion_tokens += r.completion_tokens;
        total.total_tokens += r.total_tokens;
        total.cost += r.cost;
    }
    Ok(Json(api::admin::UsageReport { by: params.by.unwrap_or_else(|| "day".into()), rows, total }))
}

#[utoipa::path(post, path = "/api/admin/deployments", tag = "deployments", request_body = api::admin::CreateDeployment, responses((status = 200, body = api::admin::Deployment), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such repo, revision or file"), (status = 409, description = "exists")))]
pub(crate) async fn create_deployment(State(state): State<AppState>, Auth(principal): Auth, body: Result<Json<api::admin::CreateDeployment>, JsonRejection>) -> ApiResult<Json<api::admin::Deployment>> {
    let Json(body) = body.map_err(json_rejection)?;
    let kind = domain::ids::RepoKind::parse(body.kind.as_deref().unwrap_or("model"))?;
    let repo = domain::ids::RepoName::parse(&body.repo)?;
    let settings = domain::meta::EngineSettings {
        context: body.context,
        max_batch: body.max_batch,
        threads: body.threads,
        price_prompt_micros: price_micros(body.price_prompt, "price_prompt")?,
        price_completion_micros: price_micros(body.price_completion, "price_completion")?,
        keep_alive_max_secs: match body.keep_alive_max {
            None => domain::meta::DEFAULT_KEEP_ALIVE_MAX_SECS,
            Some(secs) if secs <= 366 * 86_400 => secs,
            Some(_) => return Err(ApiError::invalid("keep_alive_max must be 0 to 31622400 seconds (a year); pin longer with an admin token")),
        },
        sampling: body.sampling.map_or_else(Default::default, |s| domain::meta::SamplingDefaults { temperature: s.temperature, top_p: s.top_p, top_k: s.top_k, min_p: s.min_p, repetition_penalty: s.repetition_penalty, max_tokens: s.max_tokens }),
    };
    let request = domain::hub::DeployRequest { name: body.name, kind, repo, revision: body.revision, file: body.file, settings };
    let created = state.hub.deploy(&principal, request).await?;
    Ok(Json(deployment(created, None)))
}

#[utoipa::path(get, path = "/api/admin/deployments", tag = "deployments", responses((status = 200, body = Vec<api::admin::Deployment>), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn list_deployments(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<Vec<api::admin::Deployment>>> {
    let resident = state.runtime.resident();
    Ok(Json(
        state
            .hub
            .deployments(&principal)
            .await?
            .into_iter()
            .map(|d| {
                let served = resident.iter().find(|s| s.deployment.name == d.name).map(|s| s.as_ref());
                deployment(d, served)
            })
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/admin/deployments/{name}", tag = "deployments", params(("name" = String, Path)), responses((status = 200, body = Object), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such deployment")))]
pub(crate) async fn delete_deployment(State(state): State<AppState>, Path(name): Path<String>, Auth(principal): Auth) -> ApiResult<Json<serde_json::Value>> {
    state.hub.undeploy(&principal, &name).await?;
    state.runtime.unload(&name);
    Ok(Json(serde_json::json!({ "deleted": name })))
}

fn quota_wire(q: domain::meta::Quota) -> api::admin::Quota {
    let (scope, subject) = q.subject.key();
    api::admin::Quota { scope: scope.to_owned(), subject, limits: api::admin::SetQuota { requests_per_minute: q.requests_per_minute, tokens_per_minute: q.tokens_per_minute, tokens_per_month: q.tokens_per_month }, updated_at: q.updated_at }
}

#[utoipa::path(get, path = "/api/admin/quotas", tag = "quotas", responses((status = 200, body = Vec<api::admin::Quota>), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed")))]
pub(crate) async fn list_quotas(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<Vec<api::admin::Quota>>> {
    Ok(Json(state.hub.quotas(&principal).await?.into_iter().map(quota_wire).collect()))
}

#[utoipa::path(put, path = "/api/admin/quotas/{scope}/{subject}", tag = "quotas", params(("scope" = String, Path, description = "token, user or org"), ("subject" = String, Path)), request_body = api::admin::SetQuota, responses((status = 200, body = api::admin::Quota), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such subject")))]
pub(crate) async fn set_quota(State(state): State<AppState>, Path((scope, subject)): Path<(String, String)>, Auth(principal): Auth, body: Result<Json<api::admin::SetQuota>, JsonRejection>) -> ApiResult<Json<api::admin::Quota>> {
    let Json(body) = body.map_err(json_rejection)?;
    let quota = domain::meta::Quota {
        subject: domain::meta::QuotaSubject::from_key(&scope, &subject)?,
        requests_per_minute: body.requests_per_minute,
        tokens_per_minute: body.tokens_per_minute,
        tokens_per_month: body.tokens_per_month,
        updated_at: String::new(),
    };
    let quota = state.hub.set_quota(&principal, quota).await?;
    state.quotas.invalidate();
    Ok(Json(quota_wire(quota)))
}

#[utoipa::path(delete, path = "/api/admin/quotas/{scope}/{subject}", tag = "quotas", params(("scope" = String, Path), ("subject" = String, Path)), responses((status = 200, body = Object), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such quota")))]
pub(crate) async fn delete_quota(State(state): State<AppState>, Path((scope, subject)): Path<(String, String)>, Auth(principal): Auth) -> ApiResult<Json<serde_json::Value>> {
    let subject = domain::meta::QuotaSubject::from_key(&scope, &subject)?;
    state.hub.delete_quota(&principal, &subject).await?;
    state.quotas.invalidate();
    Ok(Json(serde_json::json!({ "deleted": format!("{scope}/{}", subject.key().1) })))
}
