//! A pipeline run's stages, each a step that is safe to take again (a worker may die between
//! doing it and storing it): `vet` (wait for the scans; a blocked revision stops here; read the
//! pipeline file), `deploy` (the candidate, named after the route and commit), `evaluate` (one
//! eval per suite and model: the candidate and, for relative gates, production, over the same
//! pinned data), `gate`, `staging`, `release` (a canary under analysis, or promotion), `canary`
//! (wait for the rollout controller to promote or roll back).

use domain::auth::Principal;
use domain::evals::RunStatus;
use domain::hub::{ChangeNote, DeployRequest};
use domain::ids::{RepoKind, RepoName};
use domain::meta::{EngineSettings, SamplingDefaults, DEFAULT_KEEP_ALIVE_MAX_SECS};
use domain::pipelines::{judge, yaml_to_json, ItemValue, Metric, PipelineRun, PipelineSpec, PipelineStatus, Suite, SuiteData, PIPELINE_PATH};
use serde_json::{json, Value};

use crate::evals::spec::hub_reference;
use crate::AppState;

/// What the worker does next with a run.
pub(super) enum Next {
    /// Step again at once (the next stage).
    Now,
    /// Look again after this many seconds.
    Wait(i64),
}

type Step = Result<Next, String>;

/// Appends a line to the run's log.
pub(super) fn log(run: &mut PipelineRun, stage: &str, message: &str) {
    let entry = json!({ "at": domain::now_rfc3339(), "stage": stage, "message": message });
    match run.state["log"].as_array_mut() {
        Some(lines) => lines.push(entry),
        None => run.state["log"] = json!([entry]),
    }
}

fn move_to(run: &mut PipelineRun, stage: &str, message: &str) -> Step {
    let from = run.stage.clone();
    log(run, &from, message);
    run.stage = stage.to_owned();
    Ok(Next::Now)
}

fn succeed(run: &mut PipelineRun, message: &str) -> Step {
    let from = run.stage.clone();
    log(run, &from, message);
    run.stage = "done".into();
    run.status = PipelineStatus::Succeeded;
    Ok(Next::Now)
}

/// Takes one step of `run`.
pub(super) async fn advance(state: &AppState, run: &mut PipelineRun) -> Step {
    let hub = &state.hub;
    let binding = hub.binding_of(run).await.map_err(|e| e.to_string())?.ok_or("the route no longer has this pipeline")?;
    // Every step acts as the admin token that bound the route, through the ordinary checks.
    let principal = hub.principal_of_token(binding.token_id).await.map_err(|err| format!("the token that bound the pipeline can no longer act: {err}"))?;
    match run.stage.as_str() {
        "vet" => vet(state, &principal, binding.spec.as_deref(), run).await,
        "deploy" => deploy(state, &principal, run).await,
        "evaluate" => evaluate(state, &principal, run).await,
        "gate" => gate(state, &principal, run).await,
        "staging" => staging(state, &principal, run).await,
        "release" => release(state, &principal, run).await,
        "canary" => canary(state, &principal, run).await,
        other => Err(format!("unknown stage {other}")),
    }
}

fn spec_of(run: &PipelineRun) -> Result<PipelineSpec, String> {
    PipelineSpec::from_json(&run.state["spec"]).map_err(|err| err.to_string())
}

fn candidate_of(run: &PipelineRun) -> Result<String, String> {
    run.state["candidate"].as_str().map(str::to_owned).ok_or_else(|| "the run has no candidate deployment".to_owned())
}

async fn vet(state: &AppState, principal: &Principal, spec_on_route: Option<&str>, run: &mut PipelineRun) -> Step {
    let verdict = state.hub.pipeline_verdict(run).await.map_err(|e| e.to_string())?;
    if !verdict.scans_done {
        return Ok(Next::Wait(2));
    }
    if verdict.blocked {
        return Err(format!("vetting blocked the revision: {}", verdict.reasons.join("; ")));
    }
    let text = match spec_on_route {
        Some(text) => text.to_owned(),
        None => {
            let kind = RepoKind::parse(&run.repo_kind).map_err(|e| e.to_string())?;
            let name = RepoName::parse(&run.repo).map_err(|e| e.to_string())?;
            // Its size first: a large file is refused without being read.
            let commit = domain::ids::CommitId::parse(&run.commit).ok_or("the run names no commit")?;
            let path = domain::ids::RepoPath::parse(PIPELINE_PATH).map_err(|e| e.to_string())?;
            let entry = state.hub.commit_file(&commit, &path).await.map_err(|e| e.to_string())?;
            if entry.is_some_and(|f| f.size > domain::pipelines::MAX_SPEC_BYTES as u64) {
                return Err(format!("{PIPELINE_PATH} is larger than {} bytes", domain::pipelines::MAX_SPEC_BYTES));
            }
            let (_, bytes) = state.hub.data_file(principal, kind, &name, &run.commit, PIPELINE_PATH).await.map_err(|err| format!("the revision has no readable {PIPELINE_PATH}: {err}"))?;
            String::from_utf8(bytes).map_err(|_| format!("{PIPELINE_PATH} is not UTF-8"))?
        }
    };
    // YAML is CPU work the pusher's file decides: off the async workers.
    let parsed = crate::inference::prompt::off_async(move || yaml_to_json(&text).map_err(|err| format!("pipeline: {err}")).and_then(|value| PipelineSpec::from_json(&value).map(|_| value).map_err(|err| err.to_string()))).await?;
    run.state["spec"] = parsed;
    run.state["spec_on_route"] = json!(spec_on_route.is_some());
    run.state["verdict"] = json!(verdict.level.map(|l| l.as_str()));
    let level = verdict.level.map_or("passed", |l| l.as_str());
    move_to(run, "deploy", &format!("vetting: {level}"))
}

async fn deploy(state: &AppState, principal: &Principal, run: &mut PipelineRun) -> Step {
    let spec = spec_of(run)?;
    let name = format!("{}-{}", run.route, &run.commit[..12.min(run.commit.len())]);
    match state.hub.deployment_by_name(&name).await.map_err(|e| e.to_string())? {
        Some(existing) if existing.commit.as_str() == run.commit => {}
        Some(_) => return Err(format!("a deployment named {name} already serves another revision")),
        None => {
            let settings = EngineSettings {
                context: spec.deploy.context,
                max_batch: spec.deploy.max_batch,
                threads: spec.deploy.threads,
                price_prompt_micros: 0,
                price_completion_micros: 0,
                keep_alive_max_secs: DEFAULT_KEEP_ALIVE_MAX_SECS,
                sampling: SamplingDefaults::default(),
            };
            // Prices follow production's, so the candidate's traffic is billed alike.
            let settings = match state.hub.route_now(&run.route).await.map_err(|e| e.to_string())? {
                Some(route) => match state.hub.deployment_by_name(&route.stable).await.map_err(|e| e.to_string())? {
                    Some(production) => EngineSettings { price_prompt_micros: production.settings.price_prompt_micros, price_completion_micros: production.settings.price_completion_micros, ..settings },
                    None => settings,
                },
                None => settings,
            };
            let request = DeployRequest {
                name: name.clone(),
                kind: RepoKind::parse(&run.repo_kind).map_err(|e| e.to_string())?,
                repo: RepoName::parse(&run.repo).map_err(|e| e.to_string())?,
                revision: run.commit.clone(),
                file: spec.deploy.file.clone(),
                settings,
            };
            state.hub.deploy(principal, request).await.map_err(|err| format!("deploying the candidate failed: {err}"))?;
        }
    }
    run.state["candidate"] = json!(name);
    move_to(run, "evaluate", &format!("candidate deployed as {name}"))
}

/// An eval body for one suite on one model: likelihood graders that name no model get it.
fn eval_body(run: &PipelineRun, suite: &Suite, model: &str, role: &str) -> Value {
    let graders: Vec<Value> = suite
        .graders
        .iter()
        .map(|grader| {
            let mut grader = grader.clone();
            let likelihood = matches!(grader.get("type").and_then(Value::as_str), Some("perplexity" | "multiple_choice"));
            if likelihood && grader.get("model").is_none() {
                grader["model"] = json!(model);
            }
            grader
        })
        .collect();
    json!({
        "name": format!("{} {} ({role})", run.id, suite.name),
        "data_source_config": { "type": "custom", "item_schema": suite.item_schema.clone().unwrap_or(json!({ "type": "object" })), "include_sample_schema": suite.input_messages.is_some() },
        "testing_criteria": graders,
        "metadata": { "pipeline": run.id, "suite": suite.name, "role": role },
    })
}

/// A run body for one suite on one model, over `source` (the same pinned data for every model).
fn run_body(suite: &Suite, model: &str, role: &str, source: &Value) -> Value {
    let data_source = match &suite.input_messages {
        Some(template) => {
            let mut body = json!({ "type": "completions", "model": model, "source": source, "input_messages": { "type": "template", "template": template } });
            if let Some(sampling) = &suite.sampling_params {
                body["sampling_params"] = sampling.clone();
            }
            body
        }
        None => json!({ "type": "jsonl", "source": source }),
    };
    json!({ "name": format!("{} on {model} ({role})", suite.name), "data_source": data_source })
}

async fn evaluate(state: &AppState, principal: &Principal, run: &mut PipelineRun) -> Step {
    let spec = spec_of(run)?;
    let candidate = candidate_of(run)?;
    if !run.state["suites"].is_array() {
        // A spec from the repo is its writers': it may name only what the pusher could read.
        if run.state["spec_on_route"] != json!(true) {
            check_reach(state, run, &spec).await?;
        }
        // Production as it is now is what the candidate is compared with.
        let route = state.hub.route_now(&run.route).await.map_err(|e| e.to_string())?.ok_or("the route no longer exists")?;
        let production = (route.stable != candidate).then_some(route.stable);
        let mut suites = Vec::new();
        for suite in &spec.suites {
            let source = match &suite.data {
                SuiteData::Items(items) => json!({ "type": "file_content", "content": items.iter().map(|i| if i.get("item").is_some() { i.clone() } else { json!({ "item": i }) }).collect::<Vec<_>>() }),
                SuiteData::Hub(reference) => {
                    let (kind, repo, revision, path) = hub_reference(reference).ok_or_else(|| format!("suite {}: data must be datasets/ns/name@revision:path (.jsonl or .csv)", suite.name))?;
                    let name = RepoName::parse(&repo).map_err(|e| e.to_string())?;
                    // Pinned once, so every model is evaluated on the same data (the runs read it).
                    let found = state.hub.visible_repo(principal, kind, &name).await.map_err(|err| format!("suite {}: {err}", suite.name))?;
                    let commit = state.hub.resolve(&found, &revision).await.map_err(|err| format!("suite {}: {err}", suite.name))?;
                    let prefix = if kind == RepoKind::Model { "models/" } else { "datasets/" };
                    json!({ "type": "file_id", "id": format!("{prefix}{repo}@{}:{path}", commit.as_str()) })
                }
            };
            let compare = production.is_some() && spec.gates.iter().any(|g| g.suite == suite.name && g.max_regression.is_some());
            let mut entry = json!({ "name": suite.name });
            for (role, model) in [("candidate", Some(candidate.as_str())), ("production", production.as_deref().filter(|_| compare))] {
                let Some(model) = model else { continue };
                let eval = crate::evals::create_eval(state, principal, eval_body(run, suite, model, role)).await.map_err(|err| format!("suite {}: {}", suite.name, err.message()))?;
                let queued = crate::evals::queue_run(state, principal, &eval.id, run_body(suite, model, role, &source)).await.map_err(|err| format!("suite {}: {}", suite.name, err.message()))?;
                entry[role] = json!({ "eval": eval.id, "run": queued.id, "model": model });
            }
            suites.push(entry);
        }
        run.state["production"] = json!(production);
        run.state["suites"] = json!(suites);
        let count = suites.iter().map(|s| usize::from(s["candidate"].is_object()) + usize::from(s["production"].is_object())).sum::<usize>();
        log(run, "evaluate", &format!("{count} eval runs queued"));
        return Ok(Next::Wait(2));
    }
    for suite in run.state["suites"].as_array().cloned().unwrap_or_default() {
        for role in ["candidate", "production"] {
            let Some(entry) = suite.get(role).filter(|e| e.is_object()) else { continue };
            let (eval, id) = (entry["eval"].as_str().unwrap_or_default(), entry["run"].as_str().unwrap_or_default());
            let eval_run = state.hub.eval_run(principal, eval, id).await.map_err(|err| format!("eval run {id}: {err}"))?;
            match eval_run.status {
                RunStatus::Completed => {}
                RunStatus::Failed | RunStatus::Canceled => {
                    let message = eval_run.summary.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
                    return Err(format!("suite {}: the {role}'s eval run {id} {}: {message}", suite["name"].as_str().unwrap_or(""), eval_run.status.as_str()));
                }
                RunStatus::Queued | RunStatus::InProgress => return Ok(Next::Wait(2)),
            }
        }
    }
    move_to(run, "gate", "every eval run completed")
}

/// Refuses a repo's pipeline that names data or models its pusher could not read (the run acts
/// as the binding admin, who can read everything).
async fn check_reach(state: &AppState, run: &PipelineRun, spec: &PipelineSpec) -> Result<(), String> {
    for suite in &spec.suites {
        if let SuiteData::Hub(reference) = &suite.data {
            let reachable = match hub_reference(reference) {
                Some((kind, repo, _, _)) => match RepoName::parse(&repo) {
                    Ok(name) => state.hub.pusher_may_read(run, kind, &name).await.map_err(|e| e.to_string())?,
                    Err(_) => false,
                },
                None => false,
            };
            if !reachable {
                return Err(format!("suite {}: {reference} does not exist or {} may not read it", suite.name, run.pusher));
            }
        }
        for model in suite.graders.iter().filter_map(|g| g.get("model").and_then(Value::as_str)) {
            if !state.hub.pusher_may_use(run, model).await.map_err(|e| e.to_string())? {
                return Err(format!("suite {}: the model {model} does not exist or {} may not use it", suite.name, run.pusher));
            }
        }
    }
    Ok(())
}

/// A grader's value on each graded item of a run, by item index.
async fn item_values(state: &AppState, principal: &Principal, entry: &Value, grader: &str, metric: Metric) -> Result<Vec<(i64, ItemValue)>, String> {
    let (eval, id) = (entry["eval"].as_str().unwrap_or_default(), entry["run"].as_str().unwrap_or_default());
    let items = state.hub.eval_output_items(principal, eval, id).await.map_err(|err| format!("eval run {id}: {err}"))?;
    let mut values = Vec::new();
    for item in items.iter().filter(|i| i.status != "error") {
        let Some(result) = item.body["results"].as_array().and_then(|r| r.iter().find(|r| r["name"].as_str() == Some(grader))) else { continue };
        let sample = &result["sample"];
        let value = match metric {
            Metric::PassRate => f64::from(u8::from(result["passed"].as_bool() == Some(true))),
            Metric::MeanScore | Metric::Perplexity => result["score"].as_f64().unwrap_or(f64::NAN),
            Metric::Acc => sample["acc"].as_f64().unwrap_or(f64::NAN),
            Metric::AccNorm => sample["acc_norm"].as_f64().unwrap_or(f64::NAN),
        };
        let (loglikelihood, units) = (sample["loglikelihood"].as_f64().unwrap_or(0.0), sample["units"].as_f64().unwrap_or(0.0));
        if metric == Metric::Perplexity && units <= 0.0 {
            continue;
        }
        values.push((item.index, ItemValue { value, loglikelihood, units }));
    }
    Ok(values)
}

async fn gate(state: &AppState, principal: &Principal, run: &mut PipelineRun) -> Step {
    let spec = spec_of(run)?;
    let suites = run.state["suites"].as_array().cloned().unwrap_or_default();
    let (mut results, mut failed) = (Vec::new(), Vec::new());
    for gate in &spec.gates {
        let suite = suites.iter().find(|s| s["name"].as_str() == Some(gate.suite.as_str())).ok_or_else(|| format!("suite {} was not evaluated", gate.suite))?;
        let candidate = item_values(state, principal, &suite["candidate"], &gate.grader, gate.metric).await?;
        let production = match suite.get("production").filter(|p| p.is_object()) {
            Some(entry) => Some(item_values(state, principal, entry, &gate.grader, gate.metric).await?),
            None => None,
        };
        let verdict = judge(gate, &candidate, production.as_deref());
        if !verdict.passed {
            failed.push(verdict.reason.clone());
        }
        results.push(verdict.evidence);
    }
    run.state["gates"] = json!(results);
    if !failed.is_empty() {
        retire_candidate(state, principal, run).await;
        return Err(format!("gates failed: {}", failed.join("; ")));
    }
    let next = if spec.staging.is_some() { "staging" } else { "release" };
    move_to(run, next, &format!("{} gates passed", spec.gates.len()))
}

/// Removes a candidate that will not be released (unless a route uses it).
async fn retire_candidate(state: &AppState, principal: &Principal, run: &mut PipelineRun) {
    let Ok(candidate) = candidate_of(run) else { return };
    match state.hub.undeploy(principal, &candidate).await {
        Ok(()) => log(run, &run.stage.clone(), &format!("candidate {candidate} undeployed")),
        Err(err) => tracing::info!("kept the candidate {candidate}: {err}"),
    }
}

/// The evidence a route change by this run rests on: its eval runs and gate results.
fn note(run: &PipelineRun, reason: String) -> ChangeNote {
    let eval_runs = run.state["suites"].as_array().into_iter().flatten().filter_map(|s| s.pointer("/candidate/run").and_then(Value::as_str).map(str::to_owned)).take(32).collect();
    ChangeNote { reason, eval_runs, extra: json!({ "pipeline": run.id, "commit": run.commit, "gates": run.state["gates"] }) }
}

async fn staging(state: &AppState, principal: &Principal, run: &mut PipelineRun) -> Step {
    let spec = spec_of(run)?;
    let candidate = candidate_of(run)?;
    let Some(staging) = spec.staging else { return move_to(run, "release", "no staging route") };
    let current = state.hub.route_now(&staging).await.map_err(|e| e.to_string())?;
    if current.is_none_or(|r| r.stable != candidate) {
        let why = format!("pipeline {}: gates passed for {}@{}", run.id, run.repo, run.commit);
        state.hub.set_route(principal, &staging, &candidate, note(run, why)).await.map_err(|err| format!("pointing the staging route {staging} at the candidate failed: {err}"))?;
    }
    move_to(run, "release", &format!("staging route {staging} serves the candidate"))
}

async fn release(state: &AppState, principal: &Principal, run: &mut PipelineRun) -> Step {
    let spec = spec_of(run)?;
    let candidate = candidate_of(run)?;
    let route = state.hub.route_now(&run.route).await.map_err(|e| e.to_string())?.ok_or("the route no longer exists")?;
    if route.stable == candidate {
        return succeed(run, "the candidate already serves the route");
    }
    if trying(&route, &candidate) {
        return move_to(run, "canary", "the canary is under analysis");
    }
    let why = format!("pipeline {}: {}@{} passed its gates", run.id, run.repo, run.commit);
    match spec.canary {
        Some(plan) => {
            state.hub.canary_route(principal, &run.route, &candidate, 0, Some(plan), note(run, why)).await.map_err(|err| format!("starting the canary failed: {err}"))?;
            move_to(run, "canary", "canary started")
        }
        None => {
            state.hub.release_route(principal, &run.route, &candidate, note(run, why)).await.map_err(|err| format!("promoting the candidate failed: {err}"))?;
            succeed(run, "promoted to production")
        }
    }
}

/// Whether the route is trying `candidate` (its canary, or a rollout's shadow).
fn trying(route: &domain::routes::Route, candidate: &str) -> bool {
    route.canary.as_ref().is_some_and(|(c, _)| c == candidate) || route.shadow.as_ref().is_some_and(|(s, _)| s == candidate)
}

async fn canary(state: &AppState, principal: &Principal, run: &mut PipelineRun) -> Step {
    let candidate = candidate_of(run)?;
    let route = state.hub.route_now(&run.route).await.map_err(|e| e.to_string())?.ok_or("the route no longer exists")?;
    if trying(&route, &candidate) {
        return Ok(Next::Wait(2));
    }
    if route.stable == candidate {
        return succeed(run, "the canary was promoted to production");
    }
    let why = state.hub.last_route_change(&run.route).await.map_err(|e| e.to_string())?.map(|c| c.reason).unwrap_or_default();
    retire_candidate(state, principal, run).await;
    Err(format!("the canary was rolled back: {why}"))
}
