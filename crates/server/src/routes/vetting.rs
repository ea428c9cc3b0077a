//! Vetting over HTTP: revision verdicts, policies, overrides, the CycloneDX AI-BOM, and the
//! Hub's `securityRepoStatus`/`securityFileStatus` fields.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use domain::vetting::{Level, Policy, RevisionVerdict};

use super::RevParams;
use crate::auth::Auth;
use crate::error::json_rejection;
use crate::{ApiError, ApiResult, AppState};

fn finding(f: &domain::vetting::Finding) -> api::vetting::Finding {
    api::vetting::Finding { level: f.level.as_str().into(), code: f.code.clone(), offset: f.offset, member: f.member.clone(), subject: f.subject.clone(), reason: f.reason.clone() }
}

fn override_item(o: &domain::vetting::Override) -> api::vetting::Override {
    api::vetting::Override {
        id: o.id,
        namespace: o.namespace.clone(),
        sha256: o.sha256.to_string(),
        code: o.code.clone(),
        subject: o.subject.clone(),
        justification: o.justification.clone(),
        author: o.author.clone(),
        created_at: o.created_at.clone(),
    }
}

fn policy(p: &Policy) -> api::vetting::Policy {
    api::vetting::Policy { allow_pickle: p.allow_pickle, allowed_licenses: p.allowed_licenses.clone(), suspicious_blocks: p.suspicious_blocks }
}

fn status(level: Option<Level>) -> String {
    level.map(|l| l.as_str().to_owned()).unwrap_or_else(|| "pending".into())
}

/// `GET /api/{type}s/{repo}/vetting/{rev}`.
#[utoipa::path(get, path = "/api/{kinds}/{ns}/{name}/vetting/{rev}", tag = "vetting", params(("kinds" = String, Path, description = "models or datasets"), ("ns" = String, Path), ("name" = String, Path), ("rev" = String, Path)), responses((status = 200, body = api::vetting::RevisionVerdict), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 404, description = "no such repo or revision")))]
pub(crate) async fn revision_verdict(State(state): State<AppState>, Path(p): Path<RevParams>, Auth(principal): Auth) -> ApiResult<Json<api::vetting::RevisionVerdict>> {
    let (kind, name) = p.repo()?;
    let repo = state.hub.visible_repo(&principal, kind, &name).await?;
    let (commit, verdict) = state.hub.vetting(&repo, &p.rev).await?;
    Ok(Json(to_api(&name.to_string(), commit.id.as_str(), &verdict, &state.hub.config.scanner_version)))
}

fn to_api(repo: &str, commit: &str, verdict: &RevisionVerdict, scanner_version: &str) -> api::vetting::RevisionVerdict {
    api::vetting::RevisionVerdict {
        repo: repo.to_owned(),
        commit: commit.to_owned(),
        status: status(verdict.level),
        blocked: verdict.blocked,
        reasons: verdict.reasons.clone(),
        license: verdict.license.clone(),
        scanner_version: scanner_version.to_owned(),
        formats: verdict.files.iter().fold(std::collections::BTreeMap::new(), |mut counts, f| {
            *counts.entry(f.format.clone().unwrap_or_else(|| "pending".into())).or_insert(0) += 1;
            counts
        }),
        policy: policy(&verdict.policy),
        files: verdict
            .files
            .iter()
            .map(|f| api::vetting::FileVerdict {
                path: f.path.clone(),
                sha256: f.sha256.to_string(),
                size: f.size,
                status: status(f.level),
                format: f.format.clone(),
                findings: f.findings.iter().map(finding).collect(),
                overridden: f.overridden.iter().map(|(f, o)| api::vetting::OverriddenFinding { finding: finding(f), accepted_by: override_item(o) }).collect(),
            })
            .collect(),
        repo_findings: verdict.repo_findings.iter().map(finding).collect(),
    }
}

/// `GET /api/policies/{namespace}`.
#[utoipa::path(get, path = "/api/policies/{namespace}", tag = "policies", params(("namespace" = String, Path)), responses((status = 200, body = api::vetting::Policy), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such namespace")))]
pub(crate) async fn get_policy(State(state): State<AppState>, Path(namespace): Path<String>, Auth(principal): Auth) -> ApiResult<Json<api::vetting::Policy>> {
    Ok(Json(policy(&state.hub.policy(&principal, &namespace).await?)))
}

/// `PUT /api/policies/{namespace}`.
#[utoipa::path(put, path = "/api/policies/{namespace}", tag = "policies", params(("namespace" = String, Path)), request_body = api::vetting::Policy, responses((status = 200, body = api::vetting::Policy), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such namespace")))]
pub(crate) async fn set_policy(State(state): State<AppState>, Path(namespace): Path<String>, Auth(principal): Auth, body: Result<Json<api::vetting::Policy>, JsonRejection>) -> ApiResult<Json<api::vetting::Policy>> {
    let Json(body) = body.map_err(json_rejection)?;
    let licenses = body.allowed_licenses.map(|list| list.into_iter().map(|l| l.trim().to_ascii_lowercase()).filter(|l| !l.is_empty()).collect::<Vec<_>>());
    if licenses.as_ref().is_some_and(|l| l.iter().any(|x| x.contains(','))) {
        return Err(ApiError::invalid("licence ids must not contain commas"));
    }
    let new = Policy { allow_pickle: body.allow_pickle, allowed_licenses: licenses, suspicious_blocks: body.suspicious_blocks };
    state.hub.set_policy(&principal, &namespace, new.clone()).await?;
    Ok(Json(policy(&new)))
}

/// `GET /api/policies/{namespace}/overrides`.
#[utoipa::path(get, path = "/api/policies/{namespace}/overrides", tag = "policies", params(("namespace" = String, Path)), responses((status = 200, body = Vec<api::vetting::Override>), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such namespace")))]
pub(crate) async fn list_overrides(State(state): State<AppState>, Path(namespace): Path<String>, Auth(principal): Auth) -> ApiResult<Json<Vec<api::vetting::Override>>> {
    Ok(Json(state.hub.overrides(&principal, &namespace).await?.iter().map(override_item).collect()))
}

/// `POST /api/policies/{namespace}/overrides`.
#[utoipa::path(post, path = "/api/policies/{namespace}/overrides", tag = "policies", params(("namespace" = String, Path)), request_body = api::vetting::CreateOverride, responses((status = 200, body = api::vetting::Override), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 403, description = "not allowed"), (status = 404, description = "no such namespace")))]
pub(crate) async fn add_override(State(state): State<AppState>, Path(namespace): Path<String>, Auth(principal): Auth, body: Result<Json<api::vetting::CreateOverride>, JsonRejection>) -> ApiResult<Json<api::vetting::Override>> {
    let Json(body) = body.map_err(json_rejection)?;
    let saved = state.hub.add_override(&principal, &namespace, &body.sha256, &body.code, &body.subject, &body.justification).await?;
    Ok(Json(override_item(&saved)))
}

/// `GET /api/{type}s/{repo}/bom/{rev}`: a CycloneDX 1.6 AI-BOM of the revision.
#[utoipa::path(get, path = "/api/{kinds}/{ns}/{name}/bom/{rev}", tag = "vetting", params(("kinds" = String, Path), ("ns" = String, Path), ("name" = String, Path), ("rev" = String, Path)), responses((status = 200, body = Object, description = "CycloneDX 1.6 AI-BOM"), (status = 400, description = "invalid"), (status = 401, description = "no or invalid token"), (status = 404, description = "no such repo or revision")))]
pub(crate) async fn bom(State(state): State<AppState>, Path(p): Path<RevParams>, Auth(principal): Auth) -> ApiResult<Json<serde_json::Value>> {
    let (kind, name) = p.repo()?;
    let repo = state.hub.visible_repo(&principal, kind, &name).await?;
    let (commit, verdict) = state.hub.vetting(&repo, &p.rev).await?;
    let model_ref = format!("{}:{name}@{}", kind.as_str(), commit.id);
    let severity = |level: Level| match level {
        Level::Unsafe => "critical",
        Level::Error => "high",
        Level::Suspicious => "medium",
        Level::Safe => "info",
    };
    let license = verdict.license.as_ref().map(|l| match spdx_id(l) {
        Some(id) => serde_json::json!([{ "license": { "id": id } }]),
        None => serde_json::json!([{ "license": { "name": l } }]),
    });
    let components: Vec<serde_json::Value> = verdict
        .files
        .iter()
        .map(|f| {
            serde_json::json!({
                "type": "file",
                "bom-ref": format!("file:{}", f.path),
                "name": f.path,
                "hashes": [{ "alg": "SHA-256", "content": f.sha256.as_str() }],
                "properties": [
                    { "name": "mantle:size", "value": f.size.to_string() },
                    { "name": "mantle:format", "value": f.format.clone().unwrap_or_else(|| "pending".into()) },
                    { "name": "mantle:verdict", "value": status(f.level) },
                ],
            })
        })
        .collect();
    let mut vulnerabilities = Vec::new();
    for file in &verdict.files {
        for f in &file.findings {
            vulnerabilities.push(vulnerability(vulnerabilities.len(), f, severity(f.level), Some(&file.path), None));
        }
        for (f, accepted) in &file.overridden {
            vulnerabilities.push(vulnerability(vulnerabilities.len(), f, severity(f.level), Some(&file.path), Some(accepted)));
        }
    }
    for f in &verdict.repo_findings {
        vulnerabilities.push(vulnerability(vulnerabilities.len(), f, severity(f.level), None, None));
    }
    let mut component = serde_json::json!({
        "type": "machine-learning-model",
        "bom-ref": model_ref,
        "name": name.to_string(),
        "version": commit.id.as_str(),
        "properties": [
            { "name": "mantle:verdict", "value": status(verdict.level) },
            { "name": "mantle:blocked", "value": verdict.blocked.to_string() },
            { "name": "mantle:scanner", "value": state.hub.config.scanner_version },
        ],
    });
    if let Some(license) = license {
        component["licenses"] = license;
    }
    Ok(Json(serde_json::json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid_from(commit.id.as_str())),
        "version": 1,
        "metadata": {
            "timestamp": domain::now_rfc3339(),
            "tools": { "components": [{ "type": "application", "name": "mantle", "version": env!("CARGO_PKG_VERSION") }] },
            "component": component,
        },
        "components": components,
        "vulnerabilities": vulnerabilities,
    })))
}

fn vulnerability(index: usize, f: &domain::vetting::Finding, severity: &str, path: Option<&str>, accepted: Option<&domain::vetting::Override>) -> serde_json::Value {
    let mut detail = format!("subject: {}", f.subject);
    if let Some(member) = &f.member {
        detail.push_str(&format!("; member: {member}"));
    }
    if let Some(offset) = f.offset {
        detail.push_str(&format!("; offset: {offset}"));
    }
    let mut item = serde_json::json!({
        "bom-ref": format!("finding-{index}"),
        "id": f.code,
        "source": { "name": "mantle-vet" },
        "ratings": [{ "severity": severity, "method": "other" }],
        "description": f.reason,
        "detail": detail,
        "affects": [{ "ref": path.map(|p| format!("file:{p}")).unwrap_or_else(|| "model".into()) }],
    });
    if let Some(accepted) = accepted {
        item["analysis"] = serde_json::json!({ "state": "not_affected", "justification": "requires_environment", "detail": format!("accepted by {} on {}: {}", accepted.author, accepted.created_at, accepted.justification) });
    }
    item
}

/// SPDX ids for the licences model cards name most often (cards use lowercase).
fn spdx_id(license: &str) -> Option<&'static str> {
    Some(match license {
        "apache-2.0" => "Apache-2.0",
        "mit" => "MIT",
        "bsd-3-clause" => "BSD-3-Clause",
        "bsd-2-clause" => "BSD-2-Clause",
        "gpl-3.0" => "GPL-3.0-only",
        "lgpl-3.0" => "LGPL-3.0-only",
        "cc-by-4.0" => "CC-BY-4.0",
        "cc-by-sa-4.0" => "CC-BY-SA-4.0",
        "cc-by-nc-4.0" => "CC-BY-NC-4.0",
        "cc0-1.0" => "CC0-1.0",
        "mpl-2.0" => "MPL-2.0",
        "openrail" => return None,
        _ => return None,
    })
}

/// A stable UUID-shaped serial from the commit id, so the same revision yields the same BOM serial.
fn uuid_from(commit: &str) -> String {
    let hex: String = commit.chars().chain(std::iter::repeat('0')).take(32).collect();
    format!("{}-{}-4{}-8{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

/// HF's `securityRepoStatus` for model info.
pub(crate) fn security_repo_status(verdict: &RevisionVerdict) -> serde_json::Value {
    let issues: Vec<serde_json::Value> = verdict.files.iter().filter(|f| f.level.is_some_and(|l| l > Level::Safe)).map(|f| serde_json::json!({ "path": f.path, "level": f.level.map(Level::as_str) })).collect();
    serde_json::json!({ "scansDone": verdict.scans_done, "filesWithIssues": issues })
}

/// HF's `securityFileStatus` for a tree entry.
pub(crate) fn security_file_status(file: &domain::vetting::FileVerdict) -> serde_json::Value {
    let status = status(file.level);
    let pickle_formats = ["pickle", "pytorch-zip", "npy", "npz"];
    let pickle = file.format.as_deref().filter(|f| pickle_formats.contains(f)).map(|_| {
        let imports: Vec<serde_json::Value> = file
            .findings
            .iter()
            .filter(|f| f.code.starts_with("pickle.") && f.subject.contains('.'))
            .map(|f| {
                let (module, name) = f.subject.rsplit_once('.').unwrap_or(("", &f.subject));
                let safety = if f.level == Level::Unsafe { "dangerous" } else { "suspicious" };
                serde_json::json!({ "module": module, "name": name, "safety": safety })
            })
            .collect();
        serde_json::json!({ "status": status, "pickleImports": imports })
    });
    serde_json::json!({ "status": status, "avScan": { "status": "unscanned", "virusNames": null }, "pickleImportScan": pickle })
}
