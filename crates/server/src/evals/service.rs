//! Creating evals and queuing runs from OpenAI-shaped bodies: what `POST /v1/evals` and
//! `POST /v1/evals/{id}/runs` do, and what pipelines do when they evaluate a candidate.

use domain::auth::Principal;
use domain::evals::{Eval, EvalRun, RunStatus};
use serde_json::{json, Value};

use super::spec::{self, Source};
use crate::inference;
use crate::routes::openai::OpenAiError;
use crate::AppState;

/// Checks an eval body and stores the eval, owned by the caller.
pub(crate) async fn create_eval(state: &AppState, principal: &Principal, body: Value) -> Result<Eval, OpenAiError> {
    let checked = inference::prompt::off_async(move || spec::eval(&body)).await?;
    let eval = Eval {
        id: format!("eval_{}", inference::random_id()),
        owner: String::new(),
        name: checked.name,
        data_source_config: checked.data_source_config,
        testing_criteria: checked.testing_criteria,
        metadata: checked.metadata,
        created_at: String::new(),
    };
    Ok(state.hub.create_eval(principal, eval).await?)
}

/// Checks a run body against its eval (every item must match the eval's schema, the model must
/// be one the caller may use), pins what it names (the hub file's commit, the model's revision),
/// and queues the run.
pub(crate) async fn queue_run(state: &AppState, principal: &Principal, eval_id: &str, body: Value) -> Result<EvalRun, OpenAiError> {
    if let Some(key) = body.as_object().and_then(|o| o.keys().find(|k| !["name", "data_source", "metadata"].contains(&k.as_str()))) {
        return Err(OpenAiError::unsupported(key, key));
    }
    let eval = state.hub.eval(principal, eval_id).await?;
    let mut data_source_json = body.get("data_source").cloned().ok_or_else(|| OpenAiError::invalid("data_source is required", Some("data_source")))?;
    let data_source = spec::data_source(&data_source_json)?;
    let mut spec_json = json!({ "metadata": spec::metadata(body.get("metadata"))? });
    let items = match &data_source.source {
        Source::Inline(items) => items.clone(),
        Source::Hub { kind, repo, commit: revision, path } => {
            let name = domain::ids::RepoName::parse(repo).map_err(|err| OpenAiError::invalid(err.to_string(), Some("data_source.source.id")))?;
            let (commit, bytes) = state.hub.data_file(principal, *kind, &name, revision, path).await?;
            let items = super::runner::parse_data(path, bytes).await.map_err(|err| OpenAiError::invalid(format!("{path}: {err}"), Some("data_source.source.id")))?;
            let prefix = if *kind == domain::ids::RepoKind::Model { "models/" } else { "datasets/" };
            let pinned = format!("{prefix}{repo}@{commit}:{path}");
            data_source_json["source"]["id"] = json!(pinned);
            spec_json["data_revision"] = json!(pinned);
            items
        }
    };
    let schema = eval.data_source_config.pointer("/schema/properties/item").cloned().unwrap_or(json!({}));
    let checked = inference::prompt::off_async(move || {
        let validator = spec::validator(&schema).map_err(|err| OpenAiError::invalid(err, Some("data_source_config")))?;
        for (i, (item, _)) in items.iter().enumerate() {
            if let Err(err) = validator.validate(item) {
                return Err(OpenAiError::invalid(format!("item {i} does not match the eval's item_schema: {err}"), Some("data_source.source")));
            }
        }
        Ok(())
    })
    .await;
    checked?;
    if let Some(completions) = &data_source.completions {
        let unknown = || OpenAiError::invalid(format!("the model {:?} does not exist or you do not have access to it", completions.model), Some("data_source.model"));
        // A deployment, or a release route (the side the run's caller lands on; every item
        // records the revision that answered it).
        let deployment = if completions.model.contains('@') {
            // A revision, evaluated without a deployment: pinned to its commit for the whole run.
            let deployment = state.hub.revision_model(principal, &completions.model).await.map_err(|err| match err {
                domain::Error::RepoNotFound(_) | domain::Error::RevisionNotFound(_) | domain::Error::NotFound(_) => unknown(),
                other => OpenAiError::invalid(other.to_string(), Some("data_source.model")),
            })?;
            data_source_json["model"] = json!(deployment.name);
            deployment
        } else {
            match state.hub.runnable_deployment(principal, &completions.model).await {
                Ok(deployment) => deployment,
                Err(_) => state.hub.route_target(principal, &completions.model).await.ok().flatten().map(|t| t.deployment).ok_or_else(unknown)?,
            }
        };
        spec_json["model"] = data_source_json["model"].clone();
        spec_json["revision"] = json!(format!("{}@{}", deployment.repo, deployment.commit.as_str()));
    }
    spec_json["data_source"] = data_source_json;
    let name = body.get("name").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| format!("run of {}", eval.name));
    let run = EvalRun { id: format!("evalrun_{}", inference::random_id()), eval_id: eval_id.to_owned(), owner: String::new(), token_id: 0, name, status: RunStatus::Queued, spec: spec_json, summary: json!({}), created_at: String::new() };
    let run = state.hub.create_eval_run(principal, run).await?;
    state.eval_wake.notify_one();
    Ok(run)
}
