//! Eval and run specifications in OpenAI's Evals API shape, checked once when they arrive: a
//! field that is wrong, or that names a feature Mantle does not serve, is a 400 naming it. What
//! is stored is the checked JSON; the run worker parses it again with the same functions.

use serde_json::{json, Map, Value};

use crate::routes::openai::OpenAiError;

/// The most graders an eval may have.
const MAX_CRITERIA: usize = 16;
/// The most data items one run may grade.
pub(crate) const MAX_ITEMS: usize = 10_000;
/// The most bytes of inline `file_content`.
const MAX_INLINE_BYTES: usize = 16 * 1024 * 1024;

fn invalid(message: impl Into<String>, param: &str) -> OpenAiError {
    OpenAiError::invalid(message, Some(param))
}

fn string<'a>(value: &'a Value, key: &str, param: &str) -> Result<&'a str, OpenAiError> {
    value.get(key).and_then(Value::as_str).ok_or_else(|| invalid(format!("{param}.{key} must be a string"), &format!("{param}.{key}")))
}

/// Refuses keys outside `allowed`: a field is honoured or named in a 400, never dropped.
fn only(value: &Value, allowed: &[&str], param: &str) -> Result<(), OpenAiError> {
    let object = value.as_object().ok_or_else(|| invalid(format!("{param} must be an object"), param))?;
    match object.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(OpenAiError::unsupported(&format!("{param}.{key}"), &format!("{param}.{key}"))),
        None => Ok(()),
    }
}

/// `metadata`: at most 16 string values, keys up to 64 characters, values up to 512.
pub(crate) fn metadata(value: Option<&Value>) -> Result<Value, OpenAiError> {
    match value {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(map)) if map.len() <= 16 && map.iter().all(|(k, v)| k.chars().count() <= 64 && v.as_str().is_some_and(|v| v.chars().count() <= 512)) => Ok(Value::Object(map.clone())),
        Some(_) => Err(invalid("metadata holds at most 16 string values (keys up to 64 characters, values up to 512)", "metadata")),
    }
}

/// A checked `POST /v1/evals` body.
pub(crate) struct EvalSpec {
    pub(crate) name: String,
    /// As answered: `{type: custom, schema: {item, sample?}}`.
    pub(crate) data_source_config: Value,
    pub(crate) testing_criteria: Value,
    pub(crate) metadata: Value,
}

/// Checks an eval: a `custom` data source config with its item schema, and graders Mantle runs.
pub(crate) fn eval(body: &Value) -> Result<EvalSpec, OpenAiError> {
    only(body, &["name", "data_source_config", "testing_criteria", "metadata"], "body")?;
    let name = body.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
    let config = body.get("data_source_config").ok_or_else(|| invalid("data_source_config is required", "data_source_config"))?;
    match config.get("type").and_then(Value::as_str) {
        Some("custom") => {}
        Some(other @ ("logs" | "stored_completions")) => return Err(OpenAiError::unsupported("data_source_config.type", &format!("data_source_config of type {other} (Mantle stores no completions logs)"))),
        _ => return Err(invalid("data_source_config.type must be custom", "data_source_config.type")),
    }
    only(config, &["type", "item_schema", "include_sample_schema"], "data_source_config")?;
    let item_schema = config.get("item_schema").filter(|s| s.is_object()).ok_or_else(|| invalid("data_source_config.item_schema must be a JSON schema object", "data_source_config.item_schema"))?;
    validator(item_schema).map_err(|err| invalid(format!("data_source_config.item_schema: {err}"), "data_source_config.item_schema"))?;
    let with_sample = config.get("include_sample_schema").and_then(Value::as_bool).unwrap_or(false);
    let mut properties = json!({ "item": item_schema });
    let mut required = vec!["item"];
    if with_sample {
        properties["sample"] = json!({ "type": "object", "properties": { "output_text": { "type": "string" }, "model": { "type": "string" }, "finish_reason": { "type": "string" } } });
        required.push("sample");
    }
    let data_source_config = json!({ "type": "custom", "schema": { "type": "object", "properties": properties, "required": required } });
    let criteria = body.get("testing_criteria").and_then(Value::as_array).ok_or_else(|| invalid("testing_criteria must be an array of graders", "testing_criteria"))?;
    if criteria.is_empty() || criteria.len() > MAX_CRITERIA {
        return Err(invalid(format!("testing_criteria must hold 1 to {MAX_CRITERIA} graders"), "testing_criteria"));
    }
    let mut names = std::collections::HashSet::new();
    for (i, criterion) in criteria.iter().enumerate() {
        let grader = grader(criterion, &format!("testing_criteria[{i}]"))?;
        if !names.insert(grader.name().to_owned()) {
            return Err(invalid(format!("two graders are named {:?}", grader.name()), &format!("testing_criteria[{i}].name")));
        }
    }
    Ok(EvalSpec { name, data_source_config, testing_criteria: Value::Array(criteria.clone()), metadata: metadata(body.get("metadata"))? })
}

/// The item schema's validator: no remote references, and patterns in the linear-time regex
/// engine (a caller's pattern cannot make validation backtrack).
pub(crate) fn validator(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options().with_pattern_options(jsonschema::PatternOptions::regex()).build(schema).map_err(|err| err.to_string())
}

/// A string-check comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Eq,
    Ne,
    Like,
    Ilike,
}

/// A text-similarity metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Metric {
    FuzzyMatch,
    Bleu,
    Rouge(usize),
    RougeL,
}

/// One chat message of a model grader's or a sampling template, with `{{...}}` still in it.
#[derive(Clone, Debug)]
pub(crate) struct TemplateMessage {
    pub(crate) role: String,
    pub(crate) content: String,
}

/// A grader, checked.
#[derive(Clone, Debug)]
pub(crate) enum Grader {
    StringCheck {
        name: String,
        input: String,
        reference: String,
        operation: Operation,
    },
    TextSimilarity {
        name: String,
        input: String,
        reference: String,
        metric: Metric,
        pass_threshold: f64,
    },
    /// A served model labels the item, answering under a schema that allows only `labels`.
    LabelModel {
        name: String,
        model: String,
        input: Vec<TemplateMessage>,
        labels: Vec<String>,
        passing: Vec<String>,
    },
    /// A served model scores the item within `range`, answering under a schema.
    ScoreModel {
        name: String,
        model: String,
        input: Vec<TemplateMessage>,
        range: (f64, f64),
        pass_threshold: f64,
        sampling: Sampling,
    },
    /// Mantle's: the perplexity of a text under a served model, from its log-likelihood (every
    /// token scored, in disjoint windows as lm-evaluation-harness's `loglikelihood_rolling`).
    Perplexity {
        name: String,
        model: String,
        input: String,
        unit: Unit,
        pass_threshold: Option<f64>,
    },
    /// Mantle's: multiple choice by log-likelihood: the choice the model finds likeliest after
    /// the context (`acc`), or likeliest per character (`acc_norm`), against the answer.
    MultipleChoice {
        name: String,
        model: String,
        input: String,
        choices: String,
        answer: String,
        normalized: bool,
    },
}

/// What a perplexity is counted per.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    Token,
    Word,
    Byte,
}

impl Grader {
    pub(crate) fn name(&self) -> &str {
        match self {
            Grader::StringCheck { name, .. } | Grader::TextSimilarity { name, .. } | Grader::LabelModel { name, .. } | Grader::ScoreModel { name, .. } | Grader::Perplexity { name, .. } | Grader::MultipleChoice { name, .. } => name,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Grader::StringCheck { .. } => "string_check",
            Grader::TextSimilarity { .. } => "text_similarity",
            Grader::LabelModel { .. } => "label_model",
            Grader::ScoreModel { .. } => "score_model",
            Grader::Perplexity { .. } => "perplexity",
            Grader::MultipleChoice { .. } => "multiple_choice",
        }
    }
}

/// Checks one grader.
pub(crate) fn grader(value: &Value, param: &str) -> Result<Grader, OpenAiError> {
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    let name = string(value, "name", param)?.to_owned();
    match kind {
        "string_check" => {
            only(value, &["type", "name", "input", "reference", "operation"], param)?;
            let operation = match string(value, "operation", param)? {
                "eq" => Operation::Eq,
                "ne" => Operation::Ne,
                "like" => Operation::Like,
                "ilike" => Operation::Ilike,
                other => return Err(invalid(format!("{param}.operation {other:?} is not one of eq, ne, like, ilike"), &format!("{param}.operation"))),
            };
            Ok(Grader::StringCheck { name, input: string(value, "input", param)?.to_owned(), reference: string(value, "reference", param)?.to_owned(), operation })
        }
        "text_similarity" => {
            only(value, &["type", "name", "input", "reference", "evaluation_metric", "pass_threshold"], param)?;
            let metric = match string(value, "evaluation_metric", param)? {
                "fuzzy_match" => Metric::FuzzyMatch,
                "bleu" => Metric::Bleu,
                "rouge_l" => Metric::RougeL,
                other => match other.strip_prefix("rouge_").and_then(|n| n.parse::<usize>().ok()).filter(|n| (1..=5).contains(n)) {
                    Some(n) => Metric::Rouge(n),
                    None => return Err(OpenAiError::unsupported(&format!("{param}.evaluation_metric"), &format!("evaluation_metric {other:?} (served: fuzzy_match, bleu, rouge_1 to rouge_5, rouge_l)"))),
                },
            };
            let pass_threshold = value.get("pass_threshold").and_then(Value::as_f64).ok_or_else(|| invalid(format!("{param}.pass_threshold must be a number"), &format!("{param}.pass_threshold")))?;
            Ok(Grader::TextSimilarity { name, input: string(value, "input", param)?.to_owned(), reference: string(value, "reference", param)?.to_owned(), metric, pass_threshold })
        }
        "label_model" => {
            only(value, &["type", "name", "model", "input", "labels", "passing_labels"], param)?;
            let strings = |key: &str| -> Result<Vec<String>, OpenAiError> {
                let list = value.get(key).and_then(Value::as_array).filter(|l| !l.is_empty() && l.len() <= 64).ok_or_else(|| invalid(format!("{param}.{key} must be 1 to 64 strings"), &format!("{param}.{key}")))?;
                list.iter().map(|l| l.as_str().map(str::to_owned).ok_or_else(|| invalid(format!("{param}.{key} must be strings"), &format!("{param}.{key}")))).collect()
            };
            let (labels, passing) = (strings("labels")?, strings("passing_labels")?);
            if let Some(bad) = passing.iter().find(|p| !labels.contains(p)) {
                return Err(invalid(format!("passing label {bad:?} is not one of the labels"), &format!("{param}.passing_labels")));
            }
            Ok(Grader::LabelModel { name, model: string(value, "model", param)?.to_owned(), input: messages(value.get("input"), &format!("{param}.input"))?, labels, passing })
        }
        "score_model" => {
            only(value, &["type", "name", "model", "input", "range", "pass_threshold", "sampling_params"], param)?;
            let range = match value.get("range") {
                None | Some(Value::Null) => (0.0, 1.0),
                Some(Value::Array(pair)) if pair.len() == 2 && pair.iter().all(Value::is_number) => (pair[0].as_f64().unwrap_or(0.0), pair[1].as_f64().unwrap_or(1.0)),
                Some(_) => return Err(invalid(format!("{param}.range must be [min, max]"), &format!("{param}.range"))),
            };
            if range.0 >= range.1 {
                return Err(invalid(format!("{param}.range must have min below max"), &format!("{param}.range")));
            }
            // Without a threshold, a score in the upper half of the range passes.
            let pass_threshold = value.get("pass_threshold").and_then(Value::as_f64).unwrap_or((range.0 + range.1) / 2.0);
            let sampling = sampling(value.get("sampling_params"), &format!("{param}.sampling_params"))?;
            Ok(Grader::ScoreModel { name, model: string(value, "model", param)?.to_owned(), input: messages(value.get("input"), &format!("{param}.input"))?, range, pass_threshold, sampling })
        }
        "perplexity" => {
            only(value, &["type", "name", "model", "input", "unit", "pass_threshold"], param)?;
            let unit = match value.get("unit").and_then(Value::as_str).unwrap_or("token") {
                "token" => Unit::Token,
                "word" => Unit::Word,
                "byte" => Unit::Byte,
                other => return Err(invalid(format!("{param}.unit {other:?} is not one of token, word, byte"), &format!("{param}.unit"))),
            };
            let pass_threshold = match value.get("pass_threshold") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_f64().filter(|t| *t >= 1.0).ok_or_else(|| invalid(format!("{param}.pass_threshold must be a perplexity (at least 1)"), &format!("{param}.pass_threshold")))?),
            };
            Ok(Grader::Perplexity { name, model: string(value, "model", param)?.to_owned(), input: string(value, "input", param)?.to_owned(), unit, pass_threshold })
        }
        "multiple_choice" => {
            only(value, &["type", "name", "model", "input", "choices", "answer", "normalize"], param)?;
            let normalized = match value.get("normalize").and_then(Value::as_str).unwrap_or("none") {
                "none" => false,
                "chars" => true,
                other => return Err(invalid(format!("{param}.normalize {other:?} is not one of none, chars"), &format!("{param}.normalize"))),
            };
            Ok(Grader::MultipleChoice {
                name,
                model: string(value, "model", param)?.to_owned(),
                input: string(value, "input", param)?.to_owned(),
                choices: string(value, "choices", param)?.to_owned(),
                answer: string(value, "answer", param)?.to_owned(),
                normalized,
            })
        }
        "python" | "multi" => Err(OpenAiError::unsupported(&format!("{param}.type"), &format!("{kind} graders (Mantle runs no caller code)"))),
        other => Err(invalid(format!("{param}.type {other:?} is not one of string_check, text_similarity, label_model, score_model, perplexity, multiple_choice"), &format!("{param}.type"))),
    }
}

/// Template messages: `[{role, content}]` with `content` a string or an `input_text` part
/// (`type: message` allowed).
pub(crate) fn messages(value: Option<&Value>, param: &str) -> Result<Vec<TemplateMessage>, OpenAiError> {
    let list = value.and_then(Value::as_array).filter(|l| !l.is_empty() && l.len() <= 64).ok_or_else(|| invalid(format!("{param} must be 1 to 64 messages"), param))?;
    list.iter()
        .enumerate()
        .map(|(i, message)| {
            let at = format!("{param}[{i}]");
            only(message, &["role", "content", "type"], &at)?;
            let role = string(message, "role", &at)?;
            if !matches!(role, "system" | "developer" | "user" | "assistant") {
                return Err(invalid(format!("{at}.role must be system, developer, user or assistant"), &format!("{at}.role")));
            }
            let content = match message.get("content") {
                Some(Value::String(text)) => text.clone(),
                Some(part) if part.get("type").and_then(Value::as_str) == Some("input_text") => string(part, "text", &format!("{at}.content"))?.to_owned(),
                _ => return Err(OpenAiError::unsupported(&format!("{at}.content"), "content other than text")),
            };
            Ok(TemplateMessage { role: if role == "developer" { "system".into() } else { role.into() }, content })
        })
        .collect()
}

/// `sampling_params` Mantle honours.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sampling {
    pub(crate) temperature: Option<f32>,
    pub(crate) top_p: Option<f32>,
    pub(crate) seed: Option<u64>,
    pub(crate) max_completion_tokens: Option<usize>,
}

pub(crate) fn sampling(value: Option<&Value>, param: &str) -> Result<Sampling, OpenAiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(Sampling::default()) };
    only(value, &["temperature", "top_p", "seed", "max_completion_tokens", "max_tokens"], param)?;
    let number = |key: &str, low: f64, high: f64| -> Result<Option<f64>, OpenAiError> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().filter(|x| (low..=high).contains(x)).map(Some).ok_or_else(|| invalid(format!("{param}.{key} must be between {low} and {high}"), &format!("{param}.{key}"))),
        }
    };
    Ok(Sampling {
        temperature: number("temperature", 0.0, 2.0)?.map(|t| t as f32),
        top_p: number("top_p", 0.0, 1.0)?.map(|t| t as f32),
        seed: number("seed", 0.0, 9.007e15)?.map(|s| s as u64),
        max_completion_tokens: number("max_completion_tokens", 1.0, 1e6)?.or(number("max_tokens", 1.0, 1e6)?).map(|n| n as usize),
    })
}

/// Where a run's items come from.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    /// `file_content`: the items (and optional samples) inline.
    Inline(Vec<(Value, Option<Value>)>),
    /// A file of a hub repo, pinned to a commit when the run was created (`repo@rev:path`).
    Hub { kind: domain::ids::RepoKind, repo: String, commit: String, path: String },
}

/// How a `completions` run samples.
#[derive(Clone, Debug)]
pub(crate) struct Completions {
    pub(crate) model: String,
    /// The messages, from a template or from the item (`item_reference`).
    pub(crate) template: Option<Vec<TemplateMessage>>,
    pub(crate) item_reference: Option<String>,
    pub(crate) sampling: Sampling,
}

/// A checked run data source.
#[derive(Clone, Debug)]
pub(crate) struct DataSource {
    pub(crate) source: Source,
    /// `None`: a `jsonl` run grades the samples the items carry.
    pub(crate) completions: Option<Completions>,
}

/// A hub file reference `[datasets/|models/]ns/name@rev:path` (a plain `ns/name` is a dataset).
pub(crate) fn hub_reference(text: &str) -> Option<(domain::ids::RepoKind, String, String, String)> {
    let (kind, rest) = match text.strip_prefix("models/") {
        Some(rest) => (domain::ids::RepoKind::Model, rest),
        None => (domain::ids::RepoKind::Dataset, text.strip_prefix("datasets/").unwrap_or(text)),
    };
    let (repo, rest) = rest.split_once('@')?;
    let (revision, path) = rest.split_once(':')?;
    (!repo.is_empty() && !revision.is_empty() && !path.is_empty()).then(|| (kind, repo.to_owned(), revision.to_owned(), path.to_owned()))
}

/// Checks a run's `data_source`. A hub file comes back unresolved (`commit` is the revision
/// asked for); the route pins it.
pub(crate) fn data_source(value: &Value) -> Result<DataSource, OpenAiError> {
    let param = "data_source";
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "jsonl" | "completions" => {}
        "responses" => return Err(OpenAiError::unsupported("data_source.type", "responses data sources")),
        _ => return Err(invalid("data_source.type must be jsonl or completions", "data_source.type")),
    }
    let source_value = value.get("source").ok_or_else(|| invalid("data_source.source is required", "data_source.source"))?;
    let source = match source_value.get("type").and_then(Value::as_str) {
        Some("file_content") => {
            only(source_value, &["type", "content"], "data_source.source")?;
            let content = source_value.get("content").and_then(Value::as_array).ok_or_else(|| invalid("data_source.source.content must be an array", "data_source.source.content"))?;
            if content.is_empty() || content.len() > MAX_ITEMS {
                return Err(invalid(format!("data_source.source.content must hold 1 to {MAX_ITEMS} items"), "data_source.source.content"));
            }
            if source_value.to_string().len() > MAX_INLINE_BYTES {
                return Err(invalid(format!("inline content may have at most {MAX_INLINE_BYTES} bytes"), "data_source.source.content"));
            }
            let items = content
                .iter()
                .enumerate()
                .map(|(i, entry)| split_item(entry).ok_or_else(|| invalid(format!("data_source.source.content[{i}] must be {{item: {{...}}, sample?: {{...}}}}"), &format!("data_source.source.content[{i}]"))))
                .collect::<Result<Vec<_>, _>>()?;
            Source::Inline(items)
        }
        Some("file_id") => {
            only(source_value, &["type", "id"], "data_source.source")?;
            let id = string(source_value, "id", "data_source.source")?;
            let (kind, repo, revision, path) = hub_reference(id).ok_or_else(|| OpenAiError::unsupported("data_source.source.id", "file ids other than a hub file, datasets/ns/name@revision:path"))?;
            if !path.ends_with(".jsonl") && !path.ends_with(".csv") {
                return Err(OpenAiError::unsupported("data_source.source.id", "data files other than .jsonl and .csv (parquet is not read)"));
            }
            Source::Hub { kind, repo, commit: revision, path }
        }
        Some(other) => return Err(OpenAiError::unsupported("data_source.source.type", &format!("sources of type {other}"))),
        None => return Err(invalid("data_source.source.type is required", "data_source.source.type")),
    };
    match kind {
        "jsonl" => {
            only(value, &["type", "source"], param)?;
            Ok(DataSource { source, completions: None })
        }
        "completions" => {
            only(value, &["type", "source", "model", "input_messages", "sampling_params"], param)?;
            let model = string(value, "model", param)?.to_owned();
            let input = value.get("input_messages").ok_or_else(|| invalid("data_source.input_messages is required", "data_source.input_messages"))?;
            let (template, item_reference) = match input.get("type").and_then(Value::as_str) {
                Some("template") => {
                    only(input, &["type", "template"], "data_source.input_messages")?;
                    (Some(messages(input.get("template"), "data_source.input_messages.template")?), None)
                }
                Some("item_reference") => {
                    only(input, &["type", "item_reference"], "data_source.input_messages")?;
                    let reference = string(input, "item_reference", "data_source.input_messages")?;
                    let path = reference.strip_prefix("item.").filter(|p| !p.is_empty()).ok_or_else(|| invalid("item_reference must name a field of the item, as item.messages", "data_source.input_messages.item_reference"))?;
                    (None, Some(path.to_owned()))
                }
                _ => return Err(invalid("data_source.input_messages.type must be template or item_reference", "data_source.input_messages.type")),
            };
            let sampling = sampling(value.get("sampling_params"), "data_source.sampling_params")?;
            Ok(DataSource { source, completions: Some(Completions { model, template, item_reference, sampling }) })
        }
        _ => Err(invalid("data_source.type must be jsonl or completions", "data_source.type")),
    }
}

/// One data item as `(item, sample)`: `{item, sample?}`, or a bare object read from a data file.
pub(crate) fn split_item(entry: &Value) -> Option<(Value, Option<Value>)> {
    let object: &Map<String, Value> = entry.as_object()?;
    match object.get("item") {
        Some(item @ Value::Object(_)) => Some((item.clone(), object.get("sample").filter(|s| s.is_object()).cloned())),
        _ => Some((entry.clone(), None)),
    }
}
