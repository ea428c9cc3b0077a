//! `Hub`: release routes. Site admins create and move routes (audited, with a history entry
//! that records the deployments and revisions before and after, the reason, and the evidence:
//! eval runs are looked up and their results attached). Any caller resolves a route to the
//! deployment its sticky bucket falls on, if it may use that deployment.

use crate::routes::{analyze, bucket, Readings, Rollout, Route, RouteChange, Slo, Verdict};

use super::*;

/// Where a caller's request through a route goes.
#[derive(Clone, Debug)]
pub struct RouteTarget {
    /// The deployment that answers (the caller's side of the canary).
    pub deployment: Deployment,
    /// The deployment that gets a copy, and the percent of requests copied.
    pub shadow: Option<(Deployment, u8)>,
}

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
        self.change_route(principal, current, Route { name: name.to_owned(), stable: stable.to_owned(), canary: None, shadow: None, rollout: None, updated_at: String::new() }, action, note).await
    }

    /// Sends `percent` of the route's callers to `deployment` (a canary), the rest to its stable.
    /// With a `plan`, the canary starts at its first step and the rollout controller moves it
    /// through the steps, promoting it at the end or rolling it back when it breaks its SLOs.
    pub async fn canary_route(&self, principal: &Principal, name: &str, deployment: &str, percent: u8, plan: Option<RolloutPlan>, note: ChangeNote) -> Result<Route> {
        let current = self.route(principal, name).await?;
        if deployment == current.stable {
            return Err(Error::invalid(format!("{deployment} is already the route's stable deployment")));
        }
        let rollout = match plan {
            Some(plan) => Some(plan.check()?),
            None => None,
        };
        self.deployment_named(deployment).await?;
        // A rollout with a shadow phase starts with a copy of every request and no caller on it.
        if let Some(rollout) = rollout.as_ref().filter(|r| r.shadowing) {
            let next = Route { canary: None, shadow: Some((deployment.to_owned(), 100)), rollout: Some(rollout.clone()), ..current.clone() };
            return self.change_route(principal, Some(current), next, "shadow", note).await;
        }
        let percent = rollout.as_ref().map_or(percent, |r| r.steps[0]);
        if !(1..=99).contains(&percent) {
            return Err(Error::invalid("a canary takes 1 to 99 percent of the callers; promote it for all of them"));
        }
        let next = Route { canary: Some((deployment.to_owned(), percent)), rollout, ..current.clone() };
        self.change_route(principal, Some(current), next, "canary", note).await
    }

    /// Sends a copy of `percent` of the route's requests to `deployment` (answers discarded,
    /// outcomes recorded under it); `None` stops it.
    pub async fn shadow_route(&self, principal: &Principal, name: &str, shadow: Option<(&str, u8)>, note: ChangeNote) -> Result<Route> {
        let current = self.route(principal, name).await?;
        if current.rollout.as_ref().is_some_and(|r| r.shadowing) {
            return Err(Error::conflict(format!("route {name} is in a rollout's shadow phase; roll it back or let it run")));
        }
        let shadow = match shadow {
            Some((deployment, percent)) => {
                if !(1..=100).contains(&percent) {
                    return Err(Error::invalid("shadow traffic copies 1 to 100 percent of the requests"));
                }
                if deployment == current.stable {
                    return Err(Error::invalid(format!("{deployment} already answers the route")));
                }
                self.deployment_named(deployment).await?;
                Some((deployment.to_owned(), percent))
            }
            None => None,
        };
        let next = Route { shadow, ..current.clone() };
        self.change_route(principal, Some(current), next, "shadow", note).await
    }

    /// Makes the canary the stable deployment, for every caller.
    pub async fn promote_route(&self, principal: &Principal, name: &str, note: ChangeNote) -> Result<Route> {
        let current = self.route(principal, name).await?;
        let Some((canary, _)) = current.canary.clone() else { return Err(Error::invalid(format!("route {name} has no canary to promote"))) };
        let next = Route { stable: canary, canary: None, shadow: None, rollout: None, ..current.clone() };
        self.change_route(principal, Some(current), next, "promote", note).await
    }

    /// Promotes `deployment` to the route's stable deployment at once (a release without a
    /// canary: recorded as a promotion, with its evidence).
    pub async fn release_route(&self, principal: &Principal, name: &str, deployment: &str, note: ChangeNote) -> Result<Route> {
        let current = self.route(principal, name).await?;
        self.deployment_named(deployment).await?;
        let next = Route { stable: deployment.to_owned(), canary: None, shadow: None, rollout: None, ..current.clone() };
        self.change_route(principal, Some(current), next, "promote", note).await
    }

    /// Ends the canary; without one, points the route back at the stable deployment it had
    /// before its last promotion or change.
    pub async fn rollback_route(&self, principal: &Principal, name: &str, note: ChangeNote) -> Result<Route> {
        let current = self.route(principal, name).await?;
        let next = if current.canary.is_some() || current.shadow.is_some() {
            Route { canary: None, shadow: None, rollout: None, ..current.clone() }
        } else {
            let history = self.meta.route_history(name).await?;
            let previous =
                history.iter().rev().filter_map(|c| c.from.pointer("/stable/deployment").and_then(|d| d.as_str())).find(|d| *d != current.stable).ok_or_else(|| Error::invalid(format!("route {name} has no earlier deployment to go back to")))?;
            self.deployment_named(previous).await?;
            Route { stable: previous.to_owned(), shadow: None, rollout: None, ..current.clone() }
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

    /// The routes a caller may call (its stable deployment is one the caller may use).
    pub async fn runnable_routes(&self, principal: &Principal) -> Result<Vec<Route>> {
        principal.user()?;
        let mut runnable = Vec::new();
        for route in self.meta.list_routes().await? {
            if self.runnable_deployment(principal, &route.stable).await.is_ok() {
                runnable.push(route);
            }
        }
        Ok(runnable)
    }

    /// The deployment a caller reaches through route `name` (its sticky bucket decides between
    /// canary and stable), if the route exists and the caller may use that deployment; with the
    /// route's shadow deployment and the percent of requests it copies, if it has one.
    pub async fn route_target(&self, principal: &Principal, name: &str) -> Result<Option<RouteTarget>> {
        let user = principal.user()?;
        let Some(route) = self.meta.get_route(name).await? else { return Ok(None) };
        let chosen = route.pick(bucket(name, &user.name));
        // The error names the route, never a deployment the caller may not know of.
        let deployment = self.runnable_deployment(principal, chosen).await.map_err(|err| match err {
            Error::NotFound(_) => Error::NotFound(format!("The model `{name}` does not exist or you do not have access to it.")),
            other => other,
        })?;
        let shadow = match route.shadow {
            Some((shadow, percent)) if shadow != deployment.name => self.meta.get_deployment(&shadow).await?.map(|d| (d, percent)),
            _ => None,
        };
        Ok(Some(RouteTarget { deployment, shadow }))
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
        let shadow = match &route.shadow {
            Some((name, percent)) => json!({ "deployment": name, "percent": percent, "revision": revision(self.meta.get_deployment(name).await?) }),
            None => json!(null),
        };
        let rollout = route.rollout.as_ref().map_or(json!(null), Rollout::to_json);
        Ok(json!({ "stable": stable, "canary": canary, "shadow": shadow, "rollout": rollout }))
    }

    async fn change_route(&self, principal: &Principal, current: Option<Route>, next: Route, action: &str, note: ChangeNote) -> Result<Route> {
        let admin = principal.site_admin()?;
        self.record_route(&admin.name, current, next, action, note).await
    }

    /// Stores a route change with its history entry and audit row (as `actor`).
    async fn record_route(&self, actor: &str, current: Option<Route>, mut next: Route, action: &str, note: ChangeNote) -> Result<Route> {
        // Strictly later than the version it replaces, so the compare-and-set on `updated_at`
        // tells every change apart, even two in one millisecond.
        let mut at = chrono::Utc::now();
        if let Some(before) = current.as_ref().and_then(|r| chrono::DateTime::parse_from_rfc3339(&r.updated_at).ok()) {
            at = at.max(before.with_timezone(&chrono::Utc) + chrono::Duration::milliseconds(1));
        }
        next.updated_at = format_time(at);
        if note.reason.chars().count() > 4096 || note.eval_runs.len() > 32 {
            return Err(Error::invalid("a reason may have at most 4096 characters, and at most 32 eval runs may be given as evidence"));
        }
        let mut runs = Vec::with_capacity(note.eval_runs.len());
        for id in &note.eval_runs {
            let run = self.meta.get_run(id).await?.ok_or_else(|| Error::invalid(format!("evidence names no eval run {id}")))?;
            runs.push(json!({ "run": run.id, "eval": run.eval_id, "status": run.status.as_str(), "model": run.spec.get("model"), "revision": run.spec.get("revision"), "result_counts": run.summary.get("result_counts"), "per_testing_criteria_results": run.summary.get("per_testing_criteria_results") }));
        }
        let evidence = json!({ "eval_runs": runs, "extra": note.extra });
        let change = RouteChange {
            route: next.name.clone(),
            at: next.updated_at.clone(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            from: self.snapshot_route(current.as_ref()).await?,
            to: self.snapshot_route(Some(&next)).await?,
            reason: note.reason,
            evidence,
        };
        let event = AuditEvent::new(actor, &format!("route.{action}"), format!("route:{}", next.name), json!({ "from": change.from, "to": change.to, "reason": change.reason, "eval_runs": note.eval_runs, "analysis": note.extra }));
        self.meta.put_route(&next, current.as_ref().map(|r| r.updated_at.as_str()), &change, event).await?;
        Ok(next)
    }
}

/// A stepped rollout as asked for (checked by [`RolloutPlan::check`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutPlan {
    pub steps: Vec<u8>,
    pub bake_secs: u64,
    pub slo: Slo,
    pub min_requests: u64,
    pub failure_limit: u32,
    /// Seconds of shadow traffic before the first step (0: none).
    pub shadow_secs: u64,
}

impl RolloutPlan {
    fn check(self) -> Result<Rollout> {
        let steps = self.steps;
        if steps.len() < 2 || steps.len() > 10 || steps.last() != Some(&100) || steps.windows(2).any(|w| w[0] >= w[1]) || steps[0] == 0 {
            return Err(Error::invalid("steps must be 2 to 10 increasing percentages ending at 100 (promotion), e.g. 5,25,50,100"));
        }
        if self.bake_secs > 7 * 24 * 3600 || self.shadow_secs > 7 * 24 * 3600 {
            return Err(Error::invalid("bake_secs and shadow_secs may be at most a week"));
        }
        if self.slo == Slo::default() {
            return Err(Error::invalid("an analysed rollout needs at least one SLO: max_error_rate, max_latency_p95_ms, max_ttft_p95_ms, min_tokens_per_sec or max_ttft_regression"));
        }
        if self.slo.max_error_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) || self.slo.min_tokens_per_sec.is_some_and(|t| t.is_nan() || t < 0.0) || self.slo.max_ttft_regression.is_some_and(|r| r.is_nan() || r < 0.0) {
            return Err(Error::invalid("max_error_rate must be within 0 to 1, and min_tokens_per_sec and max_ttft_regression not negative"));
        }
        Ok(Rollout {
            steps,
            bake_secs: self.bake_secs,
            slo: self.slo,
            min_requests: self.min_requests.max(1),
            failure_limit: self.failure_limit,
            shadow_secs: self.shadow_secs,
            shadowing: self.shadow_secs > 0,
            step: 0,
            step_started_at: format_time(chrono::Utc::now()),
            failures: 0,
        })
    }
}

impl Hub {
    /// The rollout controller's step (the server's own machinery, run every few seconds by any
    /// replica): every candidate under a rollout whose step has baked is analysed on what its
    /// requests recorded since the step began (beside the stable deployment's readings over the
    /// same time, as a baseline in the evidence). From its shadow phase it moves to the first
    /// step; from a step to the next, or to promotion after the last; it waits when the readings
    /// are inconclusive, and is rolled back once its failures pass the limit. A change lands only
    /// if the route did not change meanwhile (another replica, or an admin), so replicas never
    /// step a route twice. Returns what changed, as `route: action`.
    pub async fn step_rollouts(&self) -> Result<Vec<String>> {
        let now = chrono::Utc::now();
        let mut changed = Vec::new();
        for route in self.meta.list_routes().await? {
            let Some(rollout) = route.rollout.clone() else { continue };
            let candidate = if rollout.shadowing { route.shadow.clone() } else { route.canary.clone() };
            let Some((candidate, _)) = candidate else { continue };
            let started = chrono::DateTime::parse_from_rfc3339(&rollout.step_started_at).map_err(Error::internal)?.with_timezone(&chrono::Utc);
            let bake = if rollout.shadowing { rollout.shadow_secs } else { rollout.bake_secs };
            if (now - started).num_seconds() < bake as i64 {
                continue;
            }
            let readings = Readings::from_outcomes(&self.meta.deployment_outcomes(&candidate, &rollout.step_started_at, 100_000).await?);
            let baseline = Readings::from_outcomes(&self.meta.deployment_outcomes(&route.stable, &rollout.step_started_at, 100_000).await?);
            let verdict = analyze(&readings, &rollout.slo, rollout.min_requests, &baseline);
            let phase = if rollout.shadowing { "shadow".to_owned() } else { format!("{}%", rollout.steps[rollout.step]) };
            let reading = |r: &Readings| json!({ "requests": r.requests, "failed": r.failed, "error_rate": r.error_rate(), "latency_p95_ms": r.latency_p95_ms, "ttft_p95_ms": r.ttft_p95_ms, "tokens_per_sec": r.tokens_per_sec });
            let mut analysis = reading(&readings);
            analysis["step"] = json!(rollout.step);
            analysis["percent"] = json!(if rollout.shadowing { 0 } else { rollout.steps[rollout.step] });
            analysis["phase"] = json!(phase);
            analysis["since"] = json!(rollout.step_started_at);
            analysis["verdict"] = json!(format!("{verdict:?}"));
            analysis["baseline"] = reading(&baseline);
            if let Some((regression, p)) = crate::routes::compare_ttft(&readings, &baseline) {
                analysis["ttft_regression"] = json!(regression);
                analysis["ttft_p_value"] = json!(p);
            }
            let evidence = json!({ "analysis": analysis });
            let note = |reason: String| ChangeNote { reason, eval_runs: Vec::new(), extra: evidence.clone() };
            let last_step = rollout.step + 1 >= rollout.steps.len() || rollout.steps[rollout.step + 1] >= 100;
            let (next, action, reason) = match verdict {
                Verdict::Inconclusive(_) => continue,
                Verdict::Pass if rollout.shadowing => {
                    let percent = rollout.steps[0];
                    let rollout = Rollout { shadowing: false, step: 0, step_started_at: format_time(now), failures: 0, ..rollout.clone() };
                    (Route { canary: Some((candidate.clone(), percent)), shadow: None, rollout: Some(rollout), ..route.clone() }, "canary", format!("shadow analysis passed: canary at {percent}%"))
                }
                Verdict::Pass if last_step => (Route { stable: candidate.clone(), canary: None, shadow: None, rollout: None, ..route.clone() }, "promote", format!("rollout passed its last step at {phase}")),
                Verdict::Pass => {
                    let step = rollout.step + 1;
                    let percent = rollout.steps[step];
                    let rollout = Rollout { step, step_started_at: format_time(now), ..rollout.clone() };
                    (Route { canary: Some((candidate.clone(), percent)), rollout: Some(rollout), ..route.clone() }, "canary", format!("analysis passed: step to {percent}%"))
                }
                Verdict::Fail(why) if rollout.failures + 1 > rollout.failure_limit => {
                    (Route { canary: None, shadow: None, rollout: None, ..route.clone() }, "rollback", format!("{} analysis failed ({why}): rolled back by itself", if rollout.shadowing { "shadow" } else { "canary" }))
                }
                Verdict::Fail(why) => {
                    let rollout = Rollout { failures: rollout.failures + 1, step_started_at: format_time(now), ..rollout.clone() };
                    (Route { rollout: Some(rollout), ..route.clone() }, "analysis", format!("analysis failed ({why}); holding the step"))
                }
            };
            let name = route.name.clone();
            match self.record_route("system", Some(route), next, action, note(reason)).await {
                Ok(_) => changed.push(format!("{name}: {action}")),
                Err(Error::Conflict(_)) => {} // another replica or an admin moved it first
                Err(err) => return Err(err),
            }
        }
        Ok(changed)
    }
}
