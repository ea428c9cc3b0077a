//! `Hub`: deployments, usage and quotas.

use super::*;

impl Hub {
    /// Deploys one file of a revision under `name` (site admin). The revision is pinned to its
    /// commit; only a revision whose verdict passes its org's policy deploys, else 403 with the
    /// verdict's reasons. Without `file`, the first `.gguf`, else `model.safetensors`, is chosen.
    pub async fn deploy(&self, principal: &Principal, request: DeployRequest) -> Result<Deployment> {
        let DeployRequest { name, kind, repo: repo_name, revision, file, mut settings } = request;
        let (name, repo_name, revision, file) = (name.as_str(), &repo_name, revision.as_str(), file.as_deref());
        let admin = principal.site_admin()?;
        AccountName::parse(name).map_err(|_| Error::invalid(format!("invalid deployment name {name:?}: letters, digits, '-', '_' and '.'")))?;
        if self.meta.get_route(name).await?.is_some() {
            return Err(Error::conflict(format!("{name} is a route; a deployment needs a name of its own")));
        }
        if settings.context == 0 || settings.context > 1 << 20 || settings.max_batch == 0 || settings.max_batch > 1024 || settings.threads == 0 || settings.threads > 256 {
            return Err(Error::invalid("context must be 1..=1048576, max_batch 1..=1024 and threads 1..=256"));
        }
        settings.sampling.check()?;
        let repo = self.visible_repo(principal, kind, repo_name).await?;
        let commit = self.resolve(&repo, revision).await?;
        let (_, verdict) = self.vetting(&repo, commit.as_str()).await?;
        if verdict.blocked {
            return Err(Error::forbidden(format!("{repo_name}@{commit} may not be deployed: {}", verdict.reasons.join("; "))));
        }
        let files = self.meta.list_files(&commit).await?;
        let chosen = match file {
            Some(path) => files.iter().find(|f| f.path.as_str() == path).ok_or_else(|| Error::entry_not_found(path, Some(commit.to_string())))?,
            None => files
                .iter()
                .find(|f| f.path.as_str().ends_with(".gguf"))
                .or_else(|| files.iter().find(|f| f.path.as_str() == "model.safetensors"))
                .ok_or_else(|| Error::invalid("the revision has no .gguf or model.safetensors file; name one with --file"))?,
        };
        // The revision's recommended sampling fills what the deployer left out (as vLLM reads it).
        if let Some(Ok(config)) = self.small_text(&files, "generation_config.json").await?.map(|text| serde_json::from_str::<serde_json::Value>(&text)) {
            settings.sampling = settings.sampling.or(&crate::meta::SamplingDefaults::from_generation_config(&config));
        }
        let deployment = Deployment {
            name: name.to_owned(),
            kind,
            repo: repo_name.clone(),
            commit: commit.clone(),
            file_path: chosen.path.clone(),
            file_sha256: chosen.sha256.clone(),
            settings: settings.clone(),
            created_by: admin.name.clone(),
            created_at: format_time(chrono::Utc::now()),
        };
        let details = json!({ "repo": repo_name.to_string(), "commit": commit.as_str(), "file": chosen.path.as_str(), "sha256": chosen.sha256.as_str(), "context": settings.context, "max_batch": settings.max_batch, "threads": settings.threads, "sampling": settings.sampling.to_json(), "verdict": verdict.level.map(|l| l.as_str()) });
        let event = AuditEvent::new(&admin.name, "deployment.create", format!("deployment:{name}"), details);
        self.meta.create_deployment(&deployment, event).await?;
        Ok(deployment)
    }

    /// Usage grouped as asked. Anyone sees their own; a site admin sees anyone's, by account or
    /// org. Times are RFC 3339 or dates (UTC).
    pub async fn usage(&self, principal: &Principal, since: Option<&str>, until: Option<&str>, org: Option<&str>, account: Option<&str>, group: crate::meta::UsageGroup) -> Result<Vec<crate::meta::UsageRow>> {
        let user = principal.user()?;
        let admin = user.is_admin && user.role == crate::auth::Role::Admin;
        let account = match (admin, account, org) {
            (true, account, _) => account.map(str::to_owned),
            (false, None | Some(_), Some(_)) => return Err(Error::forbidden("usage by org needs a site admin token")),
            (false, Some(other), None) if other != user.name => return Err(Error::forbidden("only a site admin sees other accounts' usage")),
            (false, _, None) => Some(user.name.clone()),
        };
        let time = |text: Option<&str>, field: &str| -> Result<Option<String>> {
            let Some(text) = text else { return Ok(None) };
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
                return Ok(Some(format_time(t.with_timezone(&chrono::Utc))));
            }
            match chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                Ok(day) => Ok(Some(format!("{day}T00:00:00.000Z"))),
                Err(_) => Err(Error::invalid(format!("{field} must be a date (2026-11-01) or an RFC 3339 time, not {text:?}"))),
            }
        };
        let query = crate::meta::UsageQuery { since: time(since, "since")?, until: time(until, "until")?, account, org: org.map(str::to_owned), group };
        self.meta.usage(&query).await
    }

    /// Sets a quota (site admin), audited.
    pub async fn set_quota(&self, principal: &Principal, mut quota: crate::meta::Quota) -> Result<crate::meta::Quota> {
        let admin = principal.site_admin()?;
        crate::quota::validate(&quota)?;
        match &quota.subject {
            crate::meta::QuotaSubject::Token(id) => {
                self.meta.get_token(*id).await?.ok_or_else(|| Error::NotFound(format!("no token {id}")))?;
            }
            crate::meta::QuotaSubject::User(name) => {
                let account = self.meta.get_account(&AccountName::parse(name)?).await?;
                if !account.is_some_and(|a| a.kind == AccountKind::User) {
                    return Err(Error::NotFound(format!("no user {name}")));
                }
            }
            crate::meta::QuotaSubject::Org(org) => {
                let account = self.meta.get_account(&AccountName::parse(org)?).await?;
                if !account.is_some_and(|a| a.kind == AccountKind::Org) {
                    return Err(Error::NotFound(format!("no org {org}")));
                }
            }
        }
        quota.updated_at = format_time(chrono::Utc::now());
        let (scope, subject) = quota.subject.key();
        let details = json!({ "requests_per_minute": quota.requests_per_minute, "tokens_per_minute": quota.tokens_per_minute, "tokens_per_month": quota.tokens_per_month });
        let event = AuditEvent::new(&admin.name, "quota.set", format!("quota:{scope}:{subject}"), details);
        self.meta.set_quota(&quota, event).await?;
        Ok(quota)
    }

    /// Removes a quota (site admin), audited.
    pub async fn delete_quota(&self, principal: &Principal, subject: &crate::meta::QuotaSubject) -> Result<()> {
        let admin = principal.site_admin()?;
        let (scope, name) = subject.key();
        let event = AuditEvent::new(&admin.name, "quota.delete", format!("quota:{scope}:{name}"), json!({}));
        self.meta.delete_quota(subject, event).await
    }

    /// All quotas (site admin).
    pub async fn quotas(&self, principal: &Principal) -> Result<Vec<crate::meta::Quota>> {
        principal.site_admin()?;
        self.meta.list_quotas().await
    }

    /// All deployments (site admin).
    pub async fn deployments(&self, principal: &Principal) -> Result<Vec<Deployment>> {
        principal.site_admin()?;
        self.meta.list_deployments().await
    }

    /// Removes a deployment (site admin).
    pub async fn undeploy(&self, principal: &Principal, name: &str) -> Result<()> {
        let admin = principal.site_admin()?;
        // Not under a route: its callers would be left without a model.
        if let Some(route) = self.meta.list_routes().await?.into_iter().find(|r| r.stable == name || r.canary.as_ref().is_some_and(|(c, _)| c == name)) {
            return Err(Error::conflict(format!("route {} points at {name}; move the route first", route.name)));
        }
        let event = AuditEvent::new(&admin.name, "deployment.delete", format!("deployment:{name}"), json!({}));
        self.meta.delete_deployment(name, event).await
    }

    /// The deployments a caller may run: those whose repo it can see. A token is required.
    pub async fn runnable_deployments(&self, principal: &Principal) -> Result<Vec<Deployment>> {
        principal.user()?;
        let mut runnable = Vec::new();
        for deployment in self.meta.list_deployments().await? {
            if self.visible_repo(principal, deployment.kind, &deployment.repo).await.is_ok() {
                runnable.push(deployment);
            }
        }
        Ok(runnable)
    }

    /// One deployment the caller may run; an invisible one is `NotFound`, like a missing one.
    pub async fn runnable_deployment(&self, principal: &Principal, name: &str) -> Result<Deployment> {
        principal.user()?;
        let missing = || Error::NotFound(format!("The model `{name}` does not exist or you do not have access to it."));
        let deployment = self.meta.get_deployment(name).await?.ok_or_else(missing)?;
        self.visible_repo(principal, deployment.kind, &deployment.repo).await.map_err(|_| missing())?;
        Ok(deployment)
    }

    /// Checks, just before a deployment's bytes are loaded, that its revision still passes its
    /// org's policy (a policy may have tightened since it was deployed).
    pub async fn check_loadable(&self, deployment: &Deployment) -> Result<()> {
        let repo = self.meta.get_repo(deployment.kind, &deployment.repo).await?.ok_or_else(|| Error::NotFound(format!("repository {} is gone", deployment.repo)))?;
        let (_, verdict) = self.vetting(&repo, deployment.commit.as_str()).await?;
        if verdict.blocked {
            return Err(Error::forbidden(format!("{}@{} may no longer run: {}", deployment.repo, deployment.commit, verdict.reasons.join("; "))));
        }
        Ok(())
    }
}
