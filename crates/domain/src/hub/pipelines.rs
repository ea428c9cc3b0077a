//! `Hub`: pipelines. A site admin binds a route to a repo's branch; every push there starts a
//! pipeline run (found in the audit log by the dispatcher, so a run exists exactly when its push
//! committed). Runs are stepped by the server's worker, acting as the admin token that bound the
//! route, through the same operations (and checks) as any caller.

use crate::pipelines::{Binding, PipelineRun, PipelineSpec, PipelineStatus};

use super::*;

impl Hub {
    /// Binds `route` to pushes on `branch` of a repo (site admin, acting as this token from now
    /// on). With `spec`, the pipeline is the text given here and the repo's own
    /// `.mantle/pipeline.yaml` is not read: a repo's writers then cannot loosen its gates.
    pub async fn bind_pipeline(&self, principal: &Principal, route: &str, kind: RepoKind, repo: &RepoName, branch: &str, spec: Option<String>) -> Result<Binding> {
        let admin = principal.site_admin()?;
        self.route(principal, route).await?;
        self.visible_repo(principal, kind, repo).await?;
        check_ref_name(branch)?;
        if let Some(text) = &spec {
            PipelineSpec::parse(text)?;
        }
        let binding =
            Binding { route: route.to_owned(), repo_kind: kind.as_str().to_owned(), repo: repo.to_string(), branch: branch.to_owned(), spec, token_id: admin.token_id, bound_by: admin.name.clone(), bound_at: format_time(chrono::Utc::now()) };
        let event = AuditEvent::new(&admin.name, "route.pipeline.set", format!("route:{route}"), json!({ "repo": binding.repo, "repo_type": binding.repo_kind, "branch": branch, "spec_on_route": binding.spec.is_some() }));
        self.meta.set_binding(route, Some(&binding), event).await?;
        Ok(binding)
    }

    /// Unbinds a route's pipeline (its runs stay).
    pub async fn unbind_pipeline(&self, principal: &Principal, route: &str) -> Result<()> {
        let admin = principal.site_admin()?;
        if !self.meta.bindings().await?.iter().any(|b| b.route == route) {
            return Err(Error::NotFound(format!("route {route} has no pipeline")));
        }
        self.meta.set_binding(route, None, AuditEvent::new(&admin.name, "route.pipeline.delete", format!("route:{route}"), json!({}))).await
    }

    /// Every route's pipeline binding (site admin).
    pub async fn pipeline_bindings(&self, principal: &Principal) -> Result<Vec<Binding>> {
        principal.site_admin()?;
        self.meta.bindings().await
    }

    /// The newest pipeline runs, of one route or all (site admin).
    pub async fn pipeline_runs(&self, principal: &Principal, route: Option<&str>, limit: i64) -> Result<Vec<PipelineRun>> {
        principal.site_admin()?;
        self.meta.list_pipeline_runs(route, limit.clamp(1, 1000)).await
    }

    /// One pipeline run (site admin).
    pub async fn pipeline_run(&self, principal: &Principal, id: &str) -> Result<PipelineRun> {
        principal.site_admin()?;
        self.meta.get_pipeline_run(id).await?.ok_or_else(|| Error::NotFound(format!("no pipeline run {id}")))
    }

    /// Cancels a running pipeline run (what it already changed stays: a canary it started keeps
    /// being analysed by the rollout controller).
    pub async fn cancel_pipeline_run(&self, principal: &Principal, id: &str) -> Result<PipelineRun> {
        let admin = principal.site_admin()?;
        let run = self.pipeline_run(principal, id).await?;
        let event = AuditEvent::new(&admin.name, "pipeline.run.cancel", format!("pipeline:{id}"), json!({ "route": run.route, "repo": run.repo, "commit": run.commit, "stage": run.stage }));
        if !self.meta.cancel_pipeline_run(id, event).await? {
            return Err(Error::conflict(format!("pipeline run {id} has already ended")));
        }
        self.pipeline_run(principal, id).await
    }

    // ---- the pipeline machinery (server) ------------------------------------------------------

    /// Turns pushes in the audit log after the dispatcher's cursor into pipeline runs of the
    /// routes bound to them, if `holder` holds (or takes) the cursor's lease; how many.
    pub async fn dispatch_pipelines(&self, holder: &str, lease_secs: i64) -> Result<usize> {
        let head = self.meta.audit_head().await?.map_or(0, |r| r.seq);
        if self.meta.pipeline_cursor().await?.is_some_and(|cursor| cursor >= head) {
            return Ok(0);
        }
        let now = chrono::Utc::now();
        let Some(seq) = self.meta.claim_pipeline_cursor(holder, &format_time(now), &format_time(now + chrono::Duration::seconds(lease_secs))).await? else { return Ok(0) };
        let records = self.meta.audit_after(seq, 200).await?;
        let Some(last) = records.last().map(|r| r.seq) else { return Ok(0) };
        let bindings = self.meta.bindings().await?;
        let (mut runs, mut events) = (Vec::new(), Vec::new());
        for record in records.iter().filter(|r| r.action == "repo.commit") {
            let details: serde_json::Value = serde_json::from_str(&record.details).unwrap_or_default();
            let (Some(branch), Some(commit)) = (details["branch"].as_str(), details["commit"].as_str()) else { continue };
            for binding in &bindings {
                // Pushes from before the binding are not its business.
                if record.target != format!("{}:{}", binding.repo_kind, binding.repo) || binding.branch != branch || record.time < binding.bound_at {
                    continue;
                }
                let id = format!("pipe_{}", uuid::Uuid::new_v4().simple());
                let run = PipelineRun {
                    id: id.clone(),
                    route: binding.route.clone(),
                    repo_kind: binding.repo_kind.clone(),
                    repo: binding.repo.clone(),
                    branch: branch.to_owned(),
                    commit: commit.to_owned(),
                    pusher: record.actor.clone(),
                    status: PipelineStatus::Running,
                    stage: "vet".into(),
                    state: json!({ "push_seq": record.seq, "log": [] }),
                    created_at: format_time(now),
                    updated_at: format_time(now),
                };
                events.push(AuditEvent::new("system", "pipeline.run.create", format!("pipeline:{id}"), json!({ "route": run.route, "repo": run.repo, "repo_type": run.repo_kind, "branch": branch, "commit": commit, "pusher": record.actor })));
                runs.push(run);
            }
        }
        let n = runs.len();
        self.meta.enqueue_pipeline_runs(holder, &runs, events, last).await?;
        Ok(n)
    }

    /// Claims a pipeline run that is due, held for `lease_secs` while the worker steps it.
    pub async fn claim_pipeline_run(&self, lease_secs: i64) -> Result<Option<PipelineRun>> {
        let now = chrono::Utc::now();
        self.meta.claim_pipeline_run(&format_time(now), &format_time(now + chrono::Duration::seconds(lease_secs))).await
    }

    /// Stores a stepped run, due again after `wait_secs`; a change of stage or an end is audited.
    pub async fn step_pipeline_run(&self, run: &PipelineRun, previous_stage: &str, wait_secs: i64) -> Result<bool> {
        let next_at = format_time(chrono::Utc::now() + chrono::Duration::seconds(wait_secs));
        let target = format!("pipeline:{}", run.id);
        let event = match run.status {
            PipelineStatus::Succeeded => Some(AuditEvent::new("system", "pipeline.run.succeeded", target, json!({ "route": run.route, "repo": run.repo, "commit": run.commit, "candidate": run.state["candidate"] }))),
            PipelineStatus::Failed => Some(AuditEvent::new("system", "pipeline.run.failed", target, json!({ "route": run.route, "repo": run.repo, "commit": run.commit, "stage": previous_stage, "reason": run.state["reason"] }))),
            _ if run.stage != previous_stage => Some(AuditEvent::new("system", "pipeline.run.stage", target, json!({ "route": run.route, "from": previous_stage, "to": run.stage }))),
            _ => None,
        };
        self.meta.update_pipeline_run(run, &next_at, event).await
    }

    /// The binding a run was started under, if the route still has it.
    pub async fn binding_of(&self, run: &PipelineRun) -> Result<Option<Binding>> {
        Ok(self.meta.bindings().await?.into_iter().find(|b| b.route == run.route && b.repo == run.repo))
    }

    /// The vetting verdict of a run's revision (the server's machinery: no caller).
    pub async fn pipeline_verdict(&self, run: &PipelineRun) -> Result<RevisionVerdict> {
        let kind = RepoKind::parse(&run.repo_kind)?;
        let name = RepoName::parse(&run.repo)?;
        let repo = self.meta.get_repo(kind, &name).await?.ok_or_else(|| Error::NotFound(format!("the repo {} no longer exists", run.repo)))?;
        Ok(self.vetting(&repo, &run.commit).await?.1)
    }

    /// Whether the account that pushed a run may read a repo: a pipeline file written by a repo's
    /// writers acts as the binding admin, so what it names (data, judge models) must be what
    /// the pusher could read, or it would read other tenants' data through the admin.
    pub async fn pusher_may_read(&self, run: &PipelineRun, kind: RepoKind, name: &RepoName) -> Result<bool> {
        let Some(repo) = self.meta.get_repo(kind, name).await? else { return Ok(false) };
        if !repo.private {
            return Ok(true);
        }
        let Ok(pusher) = AccountName::parse(&run.pusher) else { return Ok(false) };
        let Some(account) = self.meta.get_account(&pusher).await? else { return Ok(false) };
        let namespace = name.namespace.as_str();
        Ok(account.is_admin || run.pusher == namespace || self.meta.orgs_of(&pusher).await?.iter().any(|org| org == namespace))
    }

    /// Whether the pusher of a run may use a model (a deployment or a route's stable), by the
    /// repo it serves.
    pub async fn pusher_may_use(&self, run: &PipelineRun, model: &str) -> Result<bool> {
        let deployment = match self.meta.get_deployment(model).await? {
            Some(deployment) => Some(deployment),
            None => match self.meta.get_route(model).await? {
                Some(route) => self.meta.get_deployment(&route.stable).await?,
                None => None,
            },
        };
        match deployment {
            Some(d) => self.pusher_may_read(run, d.kind, &d.repo).await,
            None => Ok(false),
        }
    }

    /// A route's latest change (the worker reads why a canary ended).
    pub async fn last_route_change(&self, route: &str) -> Result<Option<crate::routes::RouteChange>> {
        Ok(self.meta.route_history(route).await?.pop())
    }

    /// A route as it is now (the server's machinery).
    pub async fn route_now(&self, route: &str) -> Result<Option<crate::routes::Route>> {
        self.meta.get_route(route).await
    }
}
