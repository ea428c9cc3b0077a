//! `Hub`: evaluations. An eval and its runs belong to the account that created them: only it
//! (through a token of it) and site admins see them; anyone else gets `NotFound`. Creating,
//! changing, canceling and deleting are audited; the run worker's operations (claiming, output
//! items, finishing) are the server's own machinery and take no principal.

use crate::evals::{Eval, EvalRun, OutputItem, RunStatus};

use super::*;

/// The most bytes a data file read from a dataset repo may have.
pub const MAX_EVAL_DATA_BYTES: u64 = 64 * 1024 * 1024;

impl Hub {
    /// Stores a new eval owned by the caller (a write token: it starts work billed to it).
    pub async fn create_eval(&self, principal: &Principal, mut eval: Eval) -> Result<Eval> {
        let user = writer(principal)?;
        check_name(&eval.name)?;
        eval.owner = user.name.clone();
        eval.created_at = format_time(chrono::Utc::now());
        let event = AuditEvent::new(&user.name, "eval.create", format!("eval:{}", eval.id), json!({ "name": eval.name, "testing_criteria": eval.testing_criteria.as_array().map_or(0, Vec::len) }));
        self.meta.create_eval(&eval, event).await?;
        Ok(eval)
    }

    /// One eval the caller may see.
    pub async fn eval(&self, principal: &Principal, id: &str) -> Result<Eval> {
        let user = principal.user()?;
        match self.meta.get_eval(id).await? {
            Some(eval) if sees(user, &eval.owner) => Ok(eval),
            _ => Err(Error::NotFound(format!("no eval {id}"))),
        }
    }

    /// The caller's evals, oldest first.
    pub async fn evals(&self, principal: &Principal) -> Result<Vec<Eval>> {
        let user = principal.user()?;
        self.meta.list_evals(Some(&user.name)).await
    }

    /// Renames an eval or replaces its metadata.
    pub async fn update_eval(&self, principal: &Principal, id: &str, name: Option<String>, metadata: Option<serde_json::Value>) -> Result<Eval> {
        let user = writer(principal)?;
        let mut eval = self.eval(principal, id).await?;
        eval.name = name.unwrap_or(eval.name);
        check_name(&eval.name)?;
        eval.metadata = metadata.unwrap_or(eval.metadata);
        let event = AuditEvent::new(&user.name, "eval.update", format!("eval:{id}"), json!({ "name": eval.name }));
        self.meta.update_eval(&eval, event).await?;
        Ok(eval)
    }

    /// Deletes an eval with its runs and their output items.
    pub async fn delete_eval(&self, principal: &Principal, id: &str) -> Result<()> {
        let user = writer(principal)?;
        self.eval(principal, id).await?;
        self.meta.delete_eval(id, AuditEvent::new(&user.name, "eval.delete", format!("eval:{id}"), json!({}))).await
    }

    /// Queues a run of an eval the caller may see; the worker runs it as the caller's token.
    pub async fn create_eval_run(&self, principal: &Principal, mut run: EvalRun) -> Result<EvalRun> {
        let user = writer(principal)?;
        check_name(&run.name)?;
        let eval = self.eval(principal, &run.eval_id).await?;
        run.owner = eval.owner;
        run.token_id = user.token_id;
        run.status = RunStatus::Queued;
        run.created_at = format_time(chrono::Utc::now());
        let details =
            json!({ "eval": run.eval_id, "name": run.name, "data_source": run.spec.pointer("/data_source/type"), "model": run.spec.pointer("/data_source/model"), "revision": run.spec.get("revision"), "data_revision": run.spec.get("data_revision") });
        let event = AuditEvent::new(&user.name, "eval.run.create", format!("evalrun:{}", run.id), details);
        self.meta.create_run(&run, event).await?;
        Ok(run)
    }

    /// One run of an eval the caller may see.
    pub async fn eval_run(&self, principal: &Principal, eval_id: &str, run_id: &str) -> Result<EvalRun> {
        let user = principal.user()?;
        match self.meta.get_run(run_id).await? {
            Some(run) if run.eval_id == eval_id && sees(user, &run.owner) => Ok(run),
            _ => Err(Error::NotFound(format!("no run {run_id} of eval {eval_id}"))),
        }
    }

    /// The runs of an eval the caller may see, oldest first.
    pub async fn eval_runs(&self, principal: &Principal, eval_id: &str) -> Result<Vec<EvalRun>> {
        self.eval(principal, eval_id).await?;
        self.meta.list_runs(eval_id).await
    }

    /// Cancels a run that has not ended; an ended run is returned as it is.
    pub async fn cancel_eval_run(&self, principal: &Principal, eval_id: &str, run_id: &str) -> Result<EvalRun> {
        let user = writer(principal)?;
        self.eval_run(principal, eval_id, run_id).await?;
        self.meta.cancel_run(run_id, AuditEvent::new(&user.name, "eval.run.cancel", format!("evalrun:{run_id}"), json!({ "eval": eval_id }))).await?;
        self.eval_run(principal, eval_id, run_id).await
    }

    /// Deletes a run and its output items.
    pub async fn delete_eval_run(&self, principal: &Principal, eval_id: &str, run_id: &str) -> Result<()> {
        let user = writer(principal)?;
        self.eval_run(principal, eval_id, run_id).await?;
        self.meta.delete_run(run_id, AuditEvent::new(&user.name, "eval.run.delete", format!("evalrun:{run_id}"), json!({ "eval": eval_id }))).await
    }

    /// The output items of a run the caller may see, by index.
    pub async fn eval_output_items(&self, principal: &Principal, eval_id: &str, run_id: &str) -> Result<Vec<OutputItem>> {
        self.eval_run(principal, eval_id, run_id).await?;
        self.meta.output_items(run_id).await
    }

    /// A file of a dataset (or model) repo the caller can read, at a revision: the commit it
    /// resolved to and the bytes (at most [`MAX_EVAL_DATA_BYTES`]), so a run records exactly
    /// which data it used.
    pub async fn data_file(&self, principal: &Principal, kind: RepoKind, name: &RepoName, revision: &str, path: &str) -> Result<(CommitId, Vec<u8>)> {
        let repo = self.visible_repo(principal, kind, name).await?;
        let commit = self.resolve(&repo, revision).await?;
        let files = self.meta.list_files(&commit).await?;
        let file = files.iter().find(|f| f.path.as_str() == path).ok_or_else(|| Error::entry_not_found(path, Some(commit.to_string())))?;
        if file.size > MAX_EVAL_DATA_BYTES {
            return Err(Error::invalid(format!("{path} has {} bytes; evaluation data may have at most {MAX_EVAL_DATA_BYTES}", file.size)));
        }
        let chunks: Vec<Bytes> = futures::TryStreamExt::try_collect(self.blob_stream(&file.sha256, None).await?).await?;
        Ok((commit, chunks.concat()))
    }
}

impl Hub {
    /// A revision to evaluate without deploying it (`ns/name@revision`, a model repo): the
    /// caller must be able to write the repo (its team evaluates its own revisions), the
    /// revision must pass vetting, and its first `.gguf` is served under the name
    /// `ns/name@<commit>` (pinned, at no cost, with default engine settings) for as long as the
    /// runtime keeps it.
    pub async fn revision_model(&self, principal: &Principal, reference: &str) -> Result<Deployment> {
        let (repo_name, revision) = reference.split_once('@').ok_or_else(|| Error::invalid(format!("{reference} is not ns/name@revision")))?;
        let name = RepoName::parse(repo_name)?;
        let repo = self.visible_repo(principal, RepoKind::Model, &name).await?;
        let caller = authorize_write(principal, &repo)?;
        let commit = self.resolve(&repo, revision).await?;
        let (_, verdict) = self.vetting(&repo, commit.as_str()).await?;
        if !verdict.scans_done || verdict.blocked {
            return Err(Error::forbidden(format!("{name}@{commit} may not run: {}", if verdict.blocked { verdict.reasons.join("; ") } else { "its scans are pending".into() })));
        }
        let files = self.meta.list_files(&commit).await?;
        let file = files.iter().find(|f| f.path.as_str().ends_with(".gguf")).ok_or_else(|| Error::invalid(format!("{name}@{commit} has no .gguf file to generate with")))?;
        let settings = EngineSettings { context: 2048, max_batch: 4, threads: 2, price_prompt_micros: 0, price_completion_micros: 0, keep_alive_max_secs: crate::meta::DEFAULT_KEEP_ALIVE_MAX_SECS, sampling: Default::default() };
        Ok(Deployment {
            name: format!("{name}@{}", commit.as_str()),
            kind: RepoKind::Model,
            repo: name,
            commit,
            file_path: file.path.clone(),
            file_sha256: file.sha256.clone(),
            settings,
            created_by: caller.name.clone(),
            created_at: format_time(chrono::Utc::now()),
        })
    }
}

/// The caller, if its token may start work (write or admin).
fn writer(principal: &Principal) -> Result<&UserPrincipal> {
    let user = principal.user()?;
    if user.role < Role::Write {
        return Err(Error::forbidden("this needs a write token"));
    }
    Ok(user)
}

/// Eval and run names: at most 256 characters.
fn check_name(name: &str) -> Result<()> {
    if name.chars().count() > 256 {
        return Err(Error::invalid("a name may have at most 256 characters"));
    }
    Ok(())
}

/// Whether `user` may see what `owner` owns.
fn sees(user: &UserPrincipal, owner: &str) -> bool {
    user.name == owner || (user.is_admin && user.role == Role::Admin)
}
