//! `Hub`: release routes. Site admins create and move routes (audited, with a history entry
//! that records the deployments and revisions before and after, the reason, and the evidence:
//! eval runs are looked up and their results attached). Any caller resolves a route to the
//! deployment its sticky bucket falls on, if it may use that deployment.

use crate::routes::{bucket, Route, RouteChange};

use super::*;

/// Why and on what a route change rests.
#[derive(Clone, Debug, Default)]
pub struct ChangeNote {
    pub reason: String,
    /// Eval run ids whose results justify the change.
    pub eval_runs: Vec<String>,
    /// Other evidence (SLO readings, an automatic analysis), as given.
    pub extra: serde_json::Value,
}

impl Hub {
    /// The routes, by name (site admin).
    pub async fn routes(&self, principal: &Principal) -> Result<Vec<Route>> {
        principal.site_admin()?;
        self.meta.list_routes().await
    }

    /// One route (site admin).
    pub async fn route(&self, principal: &Principal, name: &str) -> Result<Route> {
        principal.site_admin()?;
        self.meta.get_route(name).await?.ok_or_else(|| Error::NotFound(format!("no route named {name}")))
    }

    /// A route's history, oldest first (site admin).
    pub async fn route_history(&self, principal: &Principal, name: &str) -> Result<Vec<RouteChange>> {
        principal.site_admin()?;
        self.meta.route_history(name).await
    }

    /// Creates a route, or points an existing one at `stable` alone (its canary, if any, ends).
    pub async fn set_route(&self, principal: &Principal, name: &str, stable: &str, note: ChangeNote) -> Result<Route> {
        principal.site_admin()?;
        AccountName::parse(name).map_err(|_| Error::invalid(format!("invalid route name {name:?}: letters, digits, '-', '_' and '.'")))?;
        if self.meta.get_deployment(name).await?.is_some() {
            return Err(Error::conflict(format!("{name} is a deployment; a route needs a name of its own")));
        }
        self.deployment_named(stable).await?;
        let current = self.meta.get_route(name).await?;
        let action = if current.is_some() { "set" } else { "create" };
        self.change_route(principal, current, Route { name: name.to_owned(), stable: stable.to_owned(), canary: None, updated_at: String::new() }, action, note).await
    }

    /// Sends `percent` of the route's callers to `deployment` (a canary), the rest to its stable.
    pub async fn canary_route(&self, principal: &Principal, name: &str, deployment: &str, percent: u8, note: ChangeNote) -> Result<Route> {
        let current = self.route(principal, name).await?;
        if !(1..=99).contains(&percent) {
            return Err(Error::invalid("a canary takes 1 to 99 percent of the callers; promote it for all of them"));
        }
        if deployment == current.stable {
            return Err(Error::invalid(format!("{deployment} is already the route's stable deployment")));
        }
        self.deployment_named(deployment).await?;
        let next = Route { canary: Some((deployment.to_owned(), percent)), ..current.clone() };
        self.change_route(principal, Some(current), next, "canary", note).await
    }

    /// Makes the canary the stable deployment, for every caller.
    pub async fn promote_route(&self, principal: &Principal, name: &str, note: ChangeNote) -> Result<Route> {
        let current = self.route(principal, name).await?;
        let Some((canary, _)) = current.canary.clone() else { return Err(Error::invalid(format!("route {name} has no canary to promote"))) };
        let next = Route { stable: canary, canary: None, ..current.clone() };
        self.change_route(principal, Some(current), next, "promote", note).await
    }

    /// Ends the canary; without one, points the route back at the stable deployment it had
    /// before its last promotion or change.
    pub async fn rollback_route(&self, principal: &Principal, name: &str, note: ChangeNote) -> Result<Route> {
        let current = self.route(principal, name).await?;
        let next = if current.canary.is_some() {
            Route { canary: None, ..current.clone() }
        } else {
            let history = self.meta.route_history(name).await?;
            let previous =
                history.iter().rev().filter_map(|c| c.from.pointer("/stable/deployment").and_then(|d| d.as_str())).find(|d| *d != current.stable).ok_or_else(|| Error::invalid(format!("route {name} has no earlier deployment to go back to")))?;
            self.deployment_named(previous).await?;
            Route { stable: previous.to_owned(), ..current.clone() }
        };
        self.change_route(principal, Some(current), next, "rollback", note).await
    }

    /// Deletes a route; its history stays.
    pub async fn delete_route(&self, principal: &Principal, name: &str, note: ChangeNote) -> Result<()> {
        let admin = principal.site_admin()?;
        let current = self.route(principal, name).await?;
        let change =
            RouteChange { route: name.to_owned(), at: format_time(chrono::Utc::now()), actor: admin.name.clone(), action: "delete".into(), from: self.snapshot_route(Some(&current)).await?, to: json!(null), reason: note.reason, evidence: json!({}) };
        let event = AuditEvent::new(&admin.name, "route.delete", format!("route:{name}"), json!({ "from": change.from }));
        self.meta.delete_route(name, &change, event).await
    }

    /// The deployment a caller reaches through route `name` (its sticky bucket decides between
    /// canary and stable), if the route exists and the caller may use that deployment.
    pub async fn route_target(&self, principal: &Principal, name: &str) -> Result<Option<Deployment>> {
        let user = principal.user()?;
        let Some(route) = self.meta.get_route(name).await? else { return Ok(None) };
        let chosen = route.pick(bucket(name, &user.name));
        // The error names the route, never a deployment the caller may not know of.
        self.runnable_deployment(principal, chosen).await.map(Some).map_err(|err| match err {
            Error::NotFound(_) => Error::NotFound(format!("The model `{name}` does not exist or you do not have access to it.")),
            other => other,
        })
    }

    async fn deployment_named(&self, name: &str) -> Result<Deployment> {
        self.meta.get_deployment(name).await?.ok_or_else(|| Error::NotFound(format!("no deployment named {name}")))
    }

    /// A route with the revision each of its deployments serves.
    async fn snapshot_route(&self, route: Option<&Route>) -> Result<serde_json::Value> {
        let Some(route) = route else { return Ok(json!(null)) };
        let revision = |deployment: Option<Deployment>| deployment.map(|d| format!("{}@{}", d.repo, d.commit.as_str()));
        let stable = json!({ "deployment": route.stable, "revision": revision(self.meta.get_deployment(&route.stable).await?) });
        let canary = match &route.canary {
            Some((name, percent)) => json!({ "deployment": name, "percent": percent, "revision": revision(self.meta.get_deployment(name).await?) }),
            None => json!(null),
        };
        Ok(json!({ "stable": stable, "canary": canary }))
    }

    async fn change_route(&self, principal: &Principal, current: Option<Route>, mut next: Route, action: &str, note: ChangeNote) -> Result<Route> {
        let admin = principal.site_admin()?;
        next.updated_at = format_time(chrono::Utc::now());
        let mut runs = Vec::with_capacity(note.eval_runs.len());
        for id in &note.eval_runs {
            let run = self.meta.get_run(id).await?.ok_or_else(|| Error::invalid(format!("evidence names no eval run {id}")))?;
            runs.push(json!({ "run": run.id, "eval": run.eval_id, "status": run.status.as_str(), "model": run.spec.get("model"), "revision": run.spec.get("revision"), "result_counts": run.summary.get("result_counts"), "per_testing_criteria_results": run.summary.get("per_testing_criteria_results") }));
        }
        let evidence = json!({ "eval_runs": runs, "extra": note.extra });
        let change = RouteChange {
            route: next.name.clone(),
            at: next.updated_at.clone(),
            actor: admin.name.clone(),
            action: action.to_owned(),
            from: self.snapshot_route(current.as_ref()).await?,
            to: self.snapshot_route(Some(&next)).await?,
            reason: note.reason,
            evidence,
        };
        let event = AuditEvent::new(&admin.name, &format!("route.{action}"), format!("route:{}", next.name), json!({ "from": change.from, "to": change.to, "reason": change.reason, "eval_runs": note.eval_runs }));
        self.meta.put_route(&next, current.as_ref().map(|r| r.updated_at.as_str()), &change, event).await?;
        Ok(next)
    }
}
