//! The eval run worker: claims a run (a lease, renewed as it goes, so a run whose worker died
//! is taken over by any replica), samples the model when the data source asks, grades every
//! item, stores one output item each, and ends the run with its counts, per-grader results with
//! 95% intervals, and usage. A resumed run skips the items it already stored.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::auth::Principal;
use domain::evals::{EvalRun, OutputItem, RunStatus};
use engine::grammar::Grammar;
use futures::StreamExt as _;
use serde_json::{json, Value};

use super::grade;
use super::spec::{self, Completions, Grader, Sampling, Source, TemplateMessage, Unit};
use crate::inference::{self, GenerationRequest, InferenceError, Input};
use crate::AppState;

const LEASE_SECS: i64 = 60;
/// Items sampled and graded at once.
const CONCURRENCY: usize = 4;
/// The seed a sample gets when the run names none, so a run can be repeated exactly.
const DEFAULT_SEED: u64 = 42;
/// The most tokens a sample or a judge's answer may have when the run names no limit.
const DEFAULT_MAX_TOKENS: usize = 512;

/// Runs queued runs until `shutdown` (woken at once by `wake`, else every two seconds).
pub async fn run_worker(state: AppState, wake: Arc<tokio::sync::Notify>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        match state.hub.claim_eval_run(LEASE_SECS).await {
            Ok(Some(run)) => {
                process(&state, run).await;
                continue;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!("failed to claim an eval run: {err:#}"),
        }
        tokio::select! {
            () = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs every run that is due now; how many (for tests and tools).
pub async fn run_pending(state: &AppState) -> anyhow::Result<usize> {
    let mut n = 0;
    while let Some(run) = state.hub.claim_eval_run(LEASE_SECS).await? {
        process(state, run).await;
        n += 1;
    }
    Ok(n)
}

/// A likelihood grader's totals.
#[derive(Clone, Default)]
struct Likelihood {
    loglikelihood: f64,
    units: f64,
    acc: u64,
    acc_norm: u64,
    choices: u64,
}

/// What a run has counted so far.
#[derive(Default)]
struct Tally {
    total: u64,
    passed: u64,
    failed: u64,
    errored: u64,
    /// Per grader: passed, failed, scores.
    criteria: BTreeMap<String, (u64, u64, Vec<f64>)>,
    /// Per likelihood grader: log-likelihood and units summed (perplexity), and multiple-choice
    /// hits (acc, acc_norm) over items.
    likelihood: BTreeMap<String, Likelihood>,
    /// Per model: invocations, prompt and completion tokens.
    usage: BTreeMap<String, (u64, u64, u64)>,
    revisions: BTreeMap<String, String>,
}

impl Tally {
    fn add(&mut self, item: &OutputItem) {
        self.total += 1;
        match item.status.as_str() {
            "pass" => self.passed += 1,
            "fail" => self.failed += 1,
            _ => self.errored += 1,
        }
        for result in item.body["results"].as_array().into_iter().flatten() {
            let name = result["name"].as_str().unwrap_or_default().to_owned();
            let entry = self.criteria.entry(name).or_default();
            if result["passed"].as_bool() == Some(true) {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
            if let Some(score) = result["score"].as_f64() {
                entry.2.push(score);
            }
            let sample = &result["sample"];
            if let (Some(ll), Some(units)) = (sample["loglikelihood"].as_f64(), sample["units"].as_f64()) {
                let totals = self.likelihood.entry(result["name"].as_str().unwrap_or_default().to_owned()).or_default();
                totals.loglikelihood += ll;
                totals.units += units;
            }
            if let (Some(acc), Some(acc_norm)) = (sample["acc"].as_f64(), sample["acc_norm"].as_f64()) {
                let totals = self.likelihood.entry(result["name"].as_str().unwrap_or_default().to_owned()).or_default();
                totals.acc += u64::from(acc > 0.5);
                totals.acc_norm += u64::from(acc_norm > 0.5);
                totals.choices += 1;
            }
        }
        for call in item.body["usage_by_model"].as_array().into_iter().flatten() {
            let model = call["model"].as_str().unwrap_or_default().to_owned();
            let entry = self.usage.entry(model.clone()).or_default();
            entry.0 += 1;
            entry.1 += call["prompt_tokens"].as_u64().unwrap_or(0);
            entry.2 += call["completion_tokens"].as_u64().unwrap_or(0);
            if let Some(revision) = call["revision"].as_str() {
                self.revisions.insert(model, revision.to_owned());
            }
        }
    }

    fn summary(&self, criteria: &[Grader], error: Option<(&str, String)>) -> Value {
        let per_criteria: Vec<Value> = criteria
            .iter()
            .map(|grader| {
                let (passed, failed, scores) = self.criteria.get(grader.name()).cloned().unwrap_or_default();
                let (low, high) = grade::wilson(passed, passed + failed);
                let mut result = json!({ "testing_criteria": grader.name(), "passed": passed, "failed": failed, "pass_rate": if passed + failed > 0 { passed as f64 / (passed + failed) as f64 } else { 0.0 }, "pass_rate_ci95": [low, high] });
                if let Some((mean, low, high)) = grade::mean_interval(&scores) {
                    result["mean_score"] = json!(mean);
                    result["mean_score_ci95"] = json!([low, high]);
                }
                if let Some(totals) = self.likelihood.get(grader.name()) {
                    if totals.units > 0.0 {
                        // Over the whole data, as perplexity is reported: not a mean of per-item values.
                        result["perplexity"] = json!((-totals.loglikelihood / totals.units).exp());
                        result["loglikelihood"] = json!(totals.loglikelihood);
                    }
                    if totals.choices > 0 {
                        let n = totals.choices as f64;
                        result["acc"] = json!(totals.acc as f64 / n);
                        result["acc_ci95"] = json!(grade::wilson(totals.acc, totals.choices));
                        result["acc_norm"] = json!(totals.acc_norm as f64 / n);
                        result["acc_norm_ci95"] = json!(grade::wilson(totals.acc_norm, totals.choices));
                    }
                }
                result
            })
            .collect();
        let usage: Vec<Value> = self
            .usage
            .iter()
            .map(|(model, (calls, prompt, completion))| json!({ "model_name": model, "invocation_count": calls, "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion, "cached_tokens": 0 }))
            .collect();
        let error = error.map_or(json!({ "code": "", "message": "" }), |(code, message)| json!({ "code": code, "message": message }));
        json!({
            "result_counts": { "total": self.total, "passed": self.passed, "failed": self.failed, "errored": self.errored },
            "per_testing_criteria_results": per_criteria,
            "per_model_usage": usage,
            "revisions": self.revisions,
            "error": error,
        })
    }
}

async fn process(state: &AppState, run: EvalRun) {
    let span = tracing::info_span!("eval_run", run = %run.id);
    let _enter = span.enter();
    match execute(state, &run).await {
        Ok(Some(summary)) => finish(state, &run, RunStatus::Completed, &summary).await,
        Ok(None) => tracing::info!("the run was canceled or deleted; stopped"),
        Err(summary) => finish(state, &run, RunStatus::Failed, &summary).await,
    }
}

async fn finish(state: &AppState, run: &EvalRun, status: RunStatus, summary: &Value) {
    if let Err(err) = state.hub.finish_eval_run(run, status, summary).await {
        // The lease runs out and another worker takes the run over.
        tracing::error!("failed to store the end of the run: {err:#}");
    }
}

/// Runs the items; `Ok(None)` when the run was canceled or deleted meanwhile, `Err` with the
/// failed run's summary when the run as a whole cannot go on.
async fn execute(state: &AppState, run: &EvalRun) -> Result<Option<Value>, Value> {
    let fail = |code: &str, message: String| {
        tracing::warn!("the run failed: {message}");
        Tally::default().summary(&[], Some((code, message)))
    };
    let eval = match state.hub.eval_of_run(run).await {
        Ok(Some(eval)) => eval,
        Ok(None) => return Ok(None),
        Err(err) => return Err(fail("internal_error", err.to_string())),
    };
    let criteria: Vec<Grader> = eval.testing_criteria.as_array().into_iter().flatten().enumerate().map(|(i, g)| spec::grader(g, &format!("testing_criteria[{i}]"))).collect::<Result<_, _>>().map_err(|err| fail("invalid_eval", err.message()))?;
    let schema = eval.data_source_config.pointer("/schema/properties/item").cloned().unwrap_or(json!({}));
    let validator = spec::validator(&schema).map_err(|err| fail("invalid_eval", err))?;
    let data_source = spec::data_source(&run.spec["data_source"]).map_err(|err| fail("invalid_run", err.message()))?;
    let principal = state.hub.principal_of_token(run.token_id).await.map_err(|err| fail("unauthorized", err.to_string()))?;
    let items = load_items(state, &principal, &data_source.source).await.map_err(|message| fail("invalid_data", message))?;

    let mut tally = Tally::default();
    let stored = state.hub.run_output_items(&run.id).await.map_err(|err| fail("internal_error", err.to_string()))?;
    let done: HashSet<i64> = stored.iter().map(|item| item.index).collect();
    for item in &stored {
        tally.add(item);
    }
    let context = Arc::new(ItemContext { criteria, validator, completions: data_source.completions });
    let pending = items.into_iter().enumerate().filter(|(i, _)| !done.contains(&(*i as i64)));
    let mut graded = futures::stream::iter(pending)
        .map(|(index, (item, sample))| {
            let (state, principal, context, run) = (state.clone(), principal.clone(), context.clone(), run.clone());
            async move { grade_item(&state, &principal, &context, &run, index, item, sample).await }
        })
        .buffer_unordered(CONCURRENCY);
    let mut renewed = Instant::now();
    while let Some(item) = graded.next().await {
        if let Err(err) = state.hub.put_eval_output_item(&item).await {
            if matches!(err, domain::Error::Conflict(_)) {
                return Ok(None);
            }
            return Err(fail("internal_error", err.to_string()));
        }
        tally.add(&item);
        if renewed.elapsed() > Duration::from_secs(5) {
            renewed = Instant::now();
            match state.hub.renew_eval_run(&run.id, LEASE_SECS, &tally.summary(&context.criteria, None)).await {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(err) => tracing::warn!("failed to renew the run's lease: {err:#}"),
            }
        }
    }
    Ok(Some(tally.summary(&context.criteria, None)))
}

/// The run's data items: inline, or the lines of a pinned hub file (read as the run's token).
async fn load_items(state: &AppState, principal: &Principal, source: &Source) -> Result<Vec<(Value, Option<Value>)>, String> {
    match source {
        Source::Inline(items) => Ok(items.clone()),
        Source::Hub { kind, repo, commit, path } => {
            let name = domain::ids::RepoName::parse(repo).map_err(|err| err.to_string())?;
            let (_, bytes) = state.hub.data_file(principal, *kind, &name, commit, path).await.map_err(|err| err.to_string())?;
            parse_data(path, bytes).await
        }
    }
}

/// A data file's items, by its extension: `.jsonl` or `.csv` (up to 64 MiB the caller chose:
/// parsed off the async workers).
pub(crate) async fn parse_data(path: &str, bytes: Vec<u8>) -> Result<Vec<(Value, Option<Value>)>, String> {
    let csv = path.ends_with(".csv");
    inference::prompt::off_async(move || if csv { parse_csv(&bytes) } else { parse_jsonl(&bytes) }).await
}

/// CSV with a header row: each record is an item whose fields are the header's names, as
/// strings (RFC 4180 quoting; a record with more or fewer fields than the header is an error).
fn parse_csv(bytes: &[u8]) -> Result<Vec<(Value, Option<Value>)>, String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let headers: Vec<String> = reader.headers().map_err(|err| format!("the CSV header: {err}"))?.iter().map(str::to_owned).collect();
    if headers.is_empty() || headers.iter().any(String::is_empty) {
        return Err("the CSV header must name every column".into());
    }
    let mut items = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|err| format!("CSV record {}: {err}", n + 1))?;
        let item: serde_json::Map<String, Value> = headers.iter().cloned().zip(record.iter().map(|field| Value::String(field.to_owned()))).collect();
        items.push((Value::Object(item), None));
        if items.len() > spec::MAX_ITEMS {
            return Err(format!("the data file holds more than {} items", spec::MAX_ITEMS));
        }
    }
    if items.is_empty() {
        return Err("the data file holds no items".into());
    }
    Ok(items)
}

/// JSON Lines: one item per non-empty line (`{item, sample?}` or a bare object).
fn parse_jsonl(bytes: &[u8]) -> Result<Vec<(Value, Option<Value>)>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the data file is not UTF-8".to_owned())?;
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line).map_err(|err| format!("line {}: {err}", n + 1))?;
        items.push(spec::split_item(&value).ok_or_else(|| format!("line {} is not a JSON object", n + 1))?);
        if items.len() > spec::MAX_ITEMS {
            return Err(format!("the data file holds more than {} items", spec::MAX_ITEMS));
        }
    }
    if items.is_empty() {
        return Err("the data file holds no items".into());
    }
    Ok(items)
}

struct ItemContext {
    criteria: Vec<Grader>,
    validator: jsonschema::Validator,
    completions: Option<Completions>,
}

/// One chat turn with a served model, gathered.
struct Turn {
    text: String,
    finish_reason: &'static str,
    prompt_tokens: usize,
    completion_tokens: usize,
    revision: String,
}

async fn grade_item(state: &AppState, principal: &Principal, context: &Arc<ItemContext>, run: &EvalRun, index: usize, item: Value, given: Option<Value>) -> OutputItem {
    let mut body = json!({ "datasource_item": item, "datasource_item_id": index, "results": [], "usage_by_model": [] });
    let status = match grade_body(state, principal, context, &item, given, &mut body).await {
        Ok(true) => "pass",
        Ok(false) => "fail",
        Err(message) => {
            body["sample"]["error"] = json!({ "code": "item_error", "message": message });
            "error"
        }
    };
    OutputItem { run_id: run.id.clone(), index: index as i64, id: format!("outputitem_{}", inference::random_id()), status: status.to_owned(), body, created_at: domain::now_rfc3339() }
}

/// Samples (when asked) and grades one item into `body`; whether every grader passed.
async fn grade_body(state: &AppState, principal: &Principal, context: &Arc<ItemContext>, item: &Value, given: Option<Value>, body: &mut Value) -> Result<bool, String> {
    // Schema validation and similarity metrics are CPU work the caller's data decides: off the
    // async workers.
    let (checker, checked) = (context.clone(), item.clone());
    if let Err(err) = inference::prompt::off_async(move || checker.validator.validate(&checked).map_err(|err| err.to_string())).await {
        return Err(format!("the item does not match item_schema: {err}"));
    }
    let sample = match &context.completions {
        Some(completions) => {
            let messages = match (&completions.template, &completions.item_reference) {
                (Some(template), _) => render_messages(template, item, &json!({}))?,
                (None, Some(path)) => item_messages(item, path)?,
                (None, None) => return Err("the run has no input messages".into()),
            };
            let turn = chat(state, principal, &completions.model, messages.clone(), &completions.sampling, None).await?;
            record_usage(body, &completions.model, &turn);
            let sampling = &completions.sampling;
            json!({
                "input": messages, "output": [{ "role": "assistant", "content": turn.text }], "output_text": turn.text,
                "finish_reason": turn.finish_reason, "model": completions.model, "revision": turn.revision,
                "usage": { "prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens, "total_tokens": turn.prompt_tokens + turn.completion_tokens, "cached_tokens": 0 },
                "temperature": sampling.temperature.unwrap_or(1.0), "top_p": sampling.top_p.unwrap_or(1.0), "seed": sampling.seed.unwrap_or(DEFAULT_SEED),
                "max_completion_tokens": sampling.max_completion_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
                "error": { "code": "", "message": "" },
            })
        }
        None => given.unwrap_or_else(|| json!({})),
    };
    body["sample"] = sample.clone();
    let mut all_passed = true;
    let mut results = Vec::new();
    for grader in &context.criteria {
        let (score, passed, judged) = run_grader(state, principal, grader, item, &sample, body).await?;
        all_passed &= passed;
        let mut result = json!({ "name": grader.name(), "type": grader.kind(), "score": score, "passed": passed });
        if let Some(judged) = judged {
            result["sample"] = judged;
        }
        results.push(result);
    }
    body["results"] = Value::Array(results);
    Ok(all_passed)
}

async fn run_grader(state: &AppState, principal: &Principal, grader: &Grader, item: &Value, sample: &Value, body: &mut Value) -> Result<(f64, bool, Option<Value>), String> {
    Ok(match grader {
        Grader::StringCheck { input, reference, operation, .. } => {
            let passed = grade::string_check(&grade::render(input, item, sample)?, &grade::render(reference, item, sample)?, *operation);
            (if passed { 1.0 } else { 0.0 }, passed, None)
        }
        Grader::TextSimilarity { input, reference, metric, pass_threshold, .. } => {
            let (input, reference, metric) = (grade::render(input, item, sample)?, grade::render(reference, item, sample)?, *metric);
            let score = inference::prompt::off_async(move || grade::similarity(&input, &reference, metric)).await;
            (score, score >= *pass_threshold, None)
        }
        Grader::LabelModel { model, input, labels, passing, .. } => {
            let schema = json!({ "type": "object", "properties": { "label": { "type": "string", "enum": labels } }, "required": ["label"], "additionalProperties": false });
            let mut messages = render_messages(input, item, sample)?;
            messages.push(json!({ "role": "system", "content": format!("Answer with a JSON object {{\"label\": ...}} whose label is one of: {}.", labels.join(", ")) }));
            let turn = chat(state, principal, model, messages, &Sampling { temperature: Some(0.0), ..Sampling::default() }, Some(schema)).await?;
            record_usage(body, model, &turn);
            let answer: Value = serde_json::from_str(&turn.text).map_err(|err| format!("the judge's answer is not JSON: {err}"))?;
            let label = answer["label"].as_str().ok_or("the judge gave no label")?.to_owned();
            let passed = passing.contains(&label);
            (if passed { 1.0 } else { 0.0 }, passed, Some(json!({ "output_text": turn.text, "label": label })))
        }
        Grader::ScoreModel { model, input, range, pass_threshold, sampling, .. } => {
            let schema = json!({ "type": "object", "properties": { "score": { "type": "number", "minimum": range.0, "maximum": range.1 } }, "required": ["score"], "additionalProperties": false });
            let mut messages = render_messages(input, item, sample)?;
            messages.push(json!({ "role": "system", "content": format!("Answer with a JSON object {{\"score\": ...}}, a number from {} to {}.", range.0, range.1) }));
            let sampling = Sampling { temperature: sampling.temperature.or(Some(0.0)), ..sampling.clone() };
            let turn = chat(state, principal, model, messages, &sampling, Some(schema)).await?;
            record_usage(body, model, &turn);
            let answer: Value = serde_json::from_str(&turn.text).map_err(|err| format!("the judge's answer is not JSON: {err}"))?;
            let score = answer["score"].as_f64().filter(|s| (range.0..=range.1).contains(s)).ok_or("the judge gave no score within the range")?;
            (score, score >= *pass_threshold, Some(json!({ "output_text": turn.text })))
        }
        Grader::Perplexity { model, input, unit, pass_threshold, .. } => {
            let text = grade::render(input, item, sample)?;
            let scored = score_text(state, principal, model, &text).await?;
            record_usage(body, model, &scored.turn);
            let units = match unit {
                Unit::Token => scored.tokens,
                Unit::Word => text.split_whitespace().count(),
                Unit::Byte => text.len(),
            };
            if units == 0 {
                return Err("the text to score is empty".into());
            }
            let perplexity = (-scored.loglikelihood / units as f64).exp();
            let passed = pass_threshold.is_none_or(|t| perplexity <= t);
            (perplexity, passed, Some(json!({ "loglikelihood": scored.loglikelihood, "units": units, "tokens": scored.tokens, "perplexity": perplexity })))
        }
        Grader::MultipleChoice { model, input, choices, answer, normalized, .. } => {
            let context = grade::render(input, item, sample)?;
            let choices = choice_list(&grade::render(choices, item, sample)?)?;
            let answer = grade::render(answer, item, sample)?;
            let gold = answer.trim().parse::<usize>().ok().filter(|i| *i < choices.len()).or_else(|| choices.iter().position(|c| *c == answer)).ok_or_else(|| format!("the answer {answer:?} is neither an index nor one of the choices"))?;
            let (lls, turn) = score_choices(state, principal, model, &context, &choices).await?;
            record_usage(body, model, &turn);
            let best = |key: &dyn Fn(usize) -> f64| (0..lls.len()).max_by(|a, b| key(*a).total_cmp(&key(*b))).unwrap_or(0);
            let acc = best(&|i| lls[i]);
            // lm-evaluation-harness's acc_norm: per character of the continuation (" " + choice).
            let acc_norm = best(&|i| lls[i] / (choices[i].chars().count() + 1) as f64);
            let chosen = if *normalized { acc_norm } else { acc };
            let passed = chosen == gold;
            (if passed { 1.0 } else { 0.0 }, passed, Some(json!({ "loglikelihoods": lls, "chosen": chosen, "gold": gold, "acc": f64::from(u8::from(acc == gold)), "acc_norm": f64::from(u8::from(acc_norm == gold)) })))
        }
    })
}

/// A multiple-choice grader's rendered `choices`: a JSON list of strings.
fn choice_list(text: &str) -> Result<Vec<String>, String> {
    let list: Vec<Value> = serde_json::from_str(text).map_err(|_| format!("choices must render to a JSON list of strings, not {text:?}"))?;
    let choices: Vec<String> = list
        .into_iter()
        .map(|c| match c {
            Value::String(s) => s,
            other => other.to_string(),
        })
        .collect();
    if choices.len() < 2 || choices.len() > 32 {
        return Err("multiple choice needs 2 to 32 choices".into());
    }
    Ok(choices)
}

/// A text's log-likelihood under a model.
struct Scored {
    loglikelihood: f64,
    tokens: usize,
    turn: Turn,
}

/// Scores every token of `text`: disjoint windows of up to a context length each, every window
/// after the model's prefix token or the last token of the window before it.
async fn score_text(state: &AppState, principal: &Principal, model: &str, text: &str) -> Result<Scored, String> {
    let target = inference::resolve_for_eval(state, principal, model).await.map_err(|err| err.to_string())?;
    let tokens = inference::tokenize(&target, inference::TokenizeInput::Text { text: text.to_owned(), add_special: false }).await.map_err(|err| err.to_string())?;
    let prefix = inference::prefix_token(&target).map_err(|err| err.to_string())?;
    let window = inference::context_length(&target).map_err(|err| err.to_string())?.saturating_sub(1).max(1);
    let prompts: Vec<Vec<engine::Token>> = tokens.chunks(window).enumerate().map(|(k, chunk)| std::iter::once(if k == 0 { prefix } else { tokens[k * window - 1] }).chain(chunk.iter().copied()).collect()).collect();
    let mut loglikelihood = 0.0;
    let mut turn = Turn { text: String::new(), finish_reason: "length", prompt_tokens: 0, completion_tokens: 0, revision: target.served.revision.clone() };
    // A few windows a request, so a long text never fills a deployment's queue by itself.
    for batch in prompts.chunks(16) {
        let (scores, used) = score(state, principal, model, batch.to_vec()).await?;
        loglikelihood += scores.iter().flatten().map(|l| f64::from(*l)).sum::<f64>();
        turn.prompt_tokens += used.prompt_tokens;
    }
    Ok(Scored { loglikelihood, tokens: tokens.len(), turn })
}

/// The log-likelihood of each choice as the continuation of `context` (after a space), split as
/// lm-evaluation-harness splits it: the context's tokens, then the rest of the tokens of both.
async fn score_choices(state: &AppState, principal: &Principal, model: &str, context: &str, choices: &[String]) -> Result<(Vec<f64>, Turn), String> {
    let target = inference::resolve_for_eval(state, principal, model).await.map_err(|err| err.to_string())?;
    // Without special tokens, as the harness encodes; an empty context gets the prefix token.
    let encode = |text: String| inference::tokenize(&target, inference::TokenizeInput::Text { text, add_special: false });
    let mut context_tokens = encode(context.to_owned()).await.map_err(|err| err.to_string())?.len();
    let prefix = (context_tokens == 0).then(|| inference::prefix_token(&target)).transpose().map_err(|err| err.to_string())?;
    context_tokens += usize::from(prefix.is_some());
    let mut prompts = Vec::with_capacity(choices.len());
    let mut starts = Vec::with_capacity(choices.len());
    for choice in choices {
        let whole: Vec<engine::Token> = prefix.into_iter().chain(encode(format!("{context} {choice}")).await.map_err(|err| err.to_string())?).collect();
        // At least one continuation token, and one before it to condition on.
        starts.push(context_tokens.clamp(1, whole.len().saturating_sub(1).max(1)));
        prompts.push(whole);
    }
    let (scores, turn) = score(state, principal, model, prompts).await?;
    // `scores[i][j]` is the log probability of token j + 1 of prompt i.
    let lls = scores.iter().zip(&starts).map(|(scored, start)| scored.iter().skip(start - 1).map(|l| f64::from(*l)).sum()).collect();
    Ok((lls, turn))
}

/// The prompt log probabilities of token-id prompts (each prompt's tokens after its first), in
/// one request with `echo` and nothing generated.
async fn score(state: &AppState, principal: &Principal, model: &str, prompts: Vec<Vec<engine::Token>>) -> Result<(Vec<Vec<f32>>, Turn), String> {
    let request = GenerationRequest {
        api: "evals.run",
        input: Input::Tokens(prompts),
        sampling: crate::inference::Sampling { temperature: Some(0.0), ..Default::default() },
        fallback: engine::SamplingParams::default(),
        max_tokens: Some(0),
        clip_to_context: false,
        stop: Vec::new(),
        n: 1,
        logprobs: Some(0),
        echo: true,
        constraint: None,
        tools: None,
    };
    let target = inference::resolve_for_eval(state, principal, model).await.map_err(|err| err.to_string())?;
    let revision = target.served.revision.clone();
    let answer = inference::generate(state, principal, &target, request).await.map_err(|err| err.to_string())?;
    let collected = answer.collect().await?;
    let scores =
        collected.choices.into_iter().map(|choice| choice.prompt.and_then(|(_, scores)| scores).map(|(_, scored)| scored.into_iter().map(|e| e.logprob).collect()).ok_or("the model gave no prompt scores")).collect::<Result<Vec<Vec<f32>>, _>>()?;
    Ok((scores, Turn { text: String::new(), finish_reason: "length", prompt_tokens: collected.prompt_tokens, completion_tokens: 0, revision }))
}

fn render_messages(template: &[TemplateMessage], item: &Value, sample: &Value) -> Result<Vec<Value>, String> {
    template.iter().map(|m| Ok(json!({ "role": m.role, "content": grade::render(&m.content, item, sample)? }))).collect()
}

/// The chat messages an item holds at `path` (`item_reference`).
fn item_messages(item: &Value, path: &str) -> Result<Vec<Value>, String> {
    let found = path.split('.').try_fold(item, |value, key| value.get(key)).ok_or_else(|| format!("the item has no {path}"))?;
    let list = found.as_array().filter(|l| !l.is_empty()).ok_or_else(|| format!("item.{path} is not a list of messages"))?;
    list.iter()
        .map(|m| match (m.get("role").and_then(Value::as_str), m.get("content").and_then(Value::as_str)) {
            (Some(role @ ("system" | "user" | "assistant")), Some(content)) => Ok(json!({ "role": role, "content": content })),
            _ => Err(format!("item.{path} holds a message without a text role and content")),
        })
        .collect()
}

fn record_usage(body: &mut Value, model: &str, turn: &Turn) {
    if let Some(list) = body["usage_by_model"].as_array_mut() {
        list.push(json!({ "model": model, "prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens, "revision": turn.revision }));
    }
}

/// One chat turn as the run's principal, through the inference service (quotas, usage and
/// metrics as for any request; usage is recorded under `evals.run`). A quota refusal waits and
/// retries a few times.
async fn chat(state: &AppState, principal: &Principal, model: &str, messages: Vec<Value>, sampling: &Sampling, schema: Option<Value>) -> Result<Turn, String> {
    let constraint = match schema {
        Some(schema) => Some(Arc::new(Grammar::from_schema(&schema).map_err(|err| format!("the answer schema cannot be enforced: {err}"))?)),
        None => None,
    };
    let mut attempt = 0;
    loop {
        let request = GenerationRequest {
            api: "evals.run",
            input: Input::Chat(messages.clone()),
            sampling: crate::inference::Sampling { temperature: sampling.temperature, top_p: sampling.top_p, seed: Some(sampling.seed.unwrap_or(DEFAULT_SEED)), ..Default::default() },
            fallback: engine::SamplingParams::default(),
            max_tokens: Some(sampling.max_completion_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
            clip_to_context: true,
            stop: Vec::new(),
            n: 1,
            logprobs: None,
            echo: false,
            constraint: constraint.clone(),
            tools: None,
        };
        let outcome = async {
            let target = inference::resolve_for_eval(state, principal, model).await?;
            let revision = target.served.revision.clone();
            let answer = inference::generate(state, principal, &target, request).await?;
            Ok::<_, InferenceError>((answer, revision))
        }
        .await;
        match outcome {
            Ok((answer, revision)) => {
                let collected = answer.collect().await?;
                let choice = collected.choices.into_iter().next().unwrap_or_default();
                let finish_reason = choice.reason.map_or("stop", |r| r.as_str());
                return Ok(Turn { text: choice.text, finish_reason, prompt_tokens: collected.prompt_tokens, completion_tokens: collected.completion_tokens, revision });
            }
            Err(InferenceError::Quota(_) | InferenceError::Engine(engine::InferError::Overloaded)) if attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(2 * attempt)).await;
            }
            Err(err) => return Err(err.to_string()),
        }
    }
}
