//! A pipeline's specification: `.mantle/pipeline.yaml` in the repo (or the text an admin set on
//! the route), read as a bounded YAML subset (no anchors or aliases, no tags, one document) and
//! checked field by field: a key Mantle does not know is an error naming it, never ignored.

use serde_json::{json, Map, Value};

use crate::hub::RolloutPlan;
use crate::routes::Slo;
use crate::{Error, Result};

/// The largest pipeline file read.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;
const MAX_EVENTS: usize = 20_000;
const MAX_DEPTH: usize = 32;
const MAX_SUITES: usize = 8;
const MAX_GATES: usize = 16;

/// What a pipeline does with a pushed revision.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineSpec {
    pub deploy: DeployPlan,
    pub suites: Vec<Suite>,
    pub gates: Vec<Gate>,
    /// A route pointed at the candidate once the gates pass, before the canary.
    pub staging: Option<String>,
    /// The canary on the production route; without one, a candidate that passes its gates is
    /// promoted at once.
    pub canary: Option<RolloutPlan>,
}

/// How the candidate is deployed.
#[derive(Clone, Debug, PartialEq)]
pub struct DeployPlan {
    pub file: Option<String>,
    pub context: u32,
    pub max_batch: u32,
    pub threads: u32,
}

/// One evaluation suite: an eval (OpenAI's Evals API shape) run on the candidate and, for
/// relative gates, on the production revision over the same pinned data.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    pub name: String,
    /// `datasets/ns/name@rev:path.jsonl` (pinned to its commit when the run starts), or items.
    pub data: SuiteData,
    pub item_schema: Option<Value>,
    /// Chat templates: when given, the model under test answers each item (a `completions` run).
    pub input_messages: Option<Value>,
    pub sampling_params: Option<Value>,
    /// `testing_criteria`; a grader that names no `model` is given the model under test.
    pub graders: Vec<Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SuiteData {
    Hub(String),
    Items(Vec<Value>),
}

/// What a gate reads from a grader's results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Over the whole data (lower is better).
    Perplexity,
    PassRate,
    MeanScore,
    Acc,
    AccNorm,
}

impl Metric {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "perplexity" => Metric::Perplexity,
            "pass_rate" => Metric::PassRate,
            "mean_score" => Metric::MeanScore,
            "acc" => Metric::Acc,
            "acc_norm" => Metric::AccNorm,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Perplexity => "perplexity",
            Metric::PassRate => "pass_rate",
            Metric::MeanScore => "mean_score",
            Metric::Acc => "acc",
            Metric::AccNorm => "acc_norm",
        }
    }
}

/// A gate on one grader of one suite: absolute bounds on the candidate's value, and at most
/// `max_regression` worse than production (relative for perplexity, absolute points otherwise),
/// judged by a paired bootstrap over the items.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    pub suite: String,
    pub grader: String,
    pub metric: Metric,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub max_regression: Option<f64>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid(format!("pipeline: {}", message.into()))
}

fn only(value: &Value, allowed: &[&str], at: &str) -> Result<()> {
    let object = value.as_object().ok_or_else(|| invalid(format!("{at} must be a mapping")))?;
    match object.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(invalid(format!("{at}.{key} is not a field Mantle knows (known: {})", allowed.join(", ")))),
        None => Ok(()),
    }
}

fn text(value: &Value, key: &str, at: &str) -> Result<Option<String>> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 512 => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{at}.{key} must be a string of 1 to 512 characters"))),
    }
}

fn number(value: &Value, key: &str, at: &str) -> Result<Option<f64>> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().filter(|n| n.is_finite()).map(Some).ok_or_else(|| invalid(format!("{at}.{key} must be a number"))),
    }
}

fn count(value: &Value, key: &str, at: &str, default: u64, max: u64) -> Result<u64> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().filter(|n| *n <= max).ok_or_else(|| invalid(format!("{at}.{key} must be a whole number up to {max}"))),
    }
}

impl PipelineSpec {
    /// Reads and checks a pipeline file.
    pub fn parse(yaml: &str) -> Result<Self> {
        Self::from_json(&yaml_to_json(yaml).map_err(invalid)?)
    }

    /// Checks a pipeline given as JSON (the YAML's data model).
    pub fn from_json(value: &Value) -> Result<Self> {
        only(value, &["deploy", "suites", "gates", "staging", "canary"], "pipeline")?;
        let deploy = match value.get("deploy") {
            None | Some(Value::Null) => &json!({}),
            Some(d) => d,
        };
        only(deploy, &["file", "context", "max_batch", "threads"], "deploy")?;
        let deploy = DeployPlan {
            file: text(deploy, "file", "deploy")?,
            context: count(deploy, "context", "deploy", 2048, 1 << 20)?.max(1) as u32,
            max_batch: count(deploy, "max_batch", "deploy", 4, 1024)?.max(1) as u32,
            threads: count(deploy, "threads", "deploy", 2, 256)?.max(1) as u32,
        };
        let list = |key: &str, max: usize| -> Result<Vec<Value>> {
            match value.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) if items.len() <= max => Ok(items.clone()),
                Some(_) => Err(invalid(format!("{key} must be a list of at most {max}"))),
            }
        };
        let mut suites = Vec::new();
        for (i, suite) in list("suites", MAX_SUITES)?.iter().enumerate() {
            let at = format!("suites[{i}]");
            only(suite, &["name", "data", "items", "item_schema", "input_messages", "sampling_params", "graders"], &at)?;
            let name = text(suite, "name", &at)?.filter(|n| n.chars().count() <= 64).ok_or_else(|| invalid(format!("{at}.name is required, at most 64 characters")))?;
            if suites.iter().any(|s: &Suite| s.name == name) {
                return Err(invalid(format!("two suites are named {name}")));
            }
            let data = match (text(suite, "data", &at)?, suite.get("items")) {
                (Some(reference), None) => SuiteData::Hub(reference),
                (None, Some(Value::Array(items))) if !items.is_empty() && items.len() <= 1000 => SuiteData::Items(items.clone()),
                _ => return Err(invalid(format!("{at} needs either data (datasets/ns/name@rev:path.jsonl) or items (1 to 1000)"))),
            };
            let graders = match suite.get("graders") {
                Some(Value::Array(g)) if !g.is_empty() && g.len() <= 16 => g.clone(),
                _ => return Err(invalid(format!("{at}.graders must list 1 to 16 graders"))),
            };
            let optional = |key: &str| suite.get(key).filter(|v| !v.is_null()).cloned();
            suites.push(Suite { name, data, item_schema: optional("item_schema"), input_messages: optional("input_messages"), sampling_params: optional("sampling_params"), graders });
        }
        let mut gates = Vec::new();
        for (i, gate) in list("gates", MAX_GATES)?.iter().enumerate() {
            let at = format!("gates[{i}]");
            only(gate, &["suite", "grader", "metric", "min", "max", "max_regression"], &at)?;
            let suite_name = text(gate, "suite", &at)?.ok_or_else(|| invalid(format!("{at}.suite is required")))?;
            let suite = suites.iter().find(|s| s.name == suite_name).ok_or_else(|| invalid(format!("{at}.suite names no suite {suite_name}")))?;
            let names: Vec<&str> = suite.graders.iter().filter_map(|g| g.get("name").and_then(Value::as_str)).collect();
            let grader = match text(gate, "grader", &at)? {
                Some(name) if names.contains(&name.as_str()) => name,
                Some(name) => return Err(invalid(format!("{at}.grader names no grader {name} of suite {suite_name}"))),
                None if names.len() == 1 => names[0].to_owned(),
                None => return Err(invalid(format!("{at}.grader is required: suite {suite_name} has {} graders", names.len()))),
            };
            let kind = suite.graders.iter().find(|g| g.get("name").and_then(Value::as_str) == Some(grader.as_str())).and_then(|g| g.get("type")).and_then(Value::as_str).unwrap_or("");
            let metric = match text(gate, "metric", &at)? {
                Some(m) => Metric::parse(&m).ok_or_else(|| invalid(format!("{at}.metric must be perplexity, pass_rate, mean_score, acc or acc_norm")))?,
                None if kind == "perplexity" => Metric::Perplexity,
                None if kind == "multiple_choice" => Metric::Acc,
                None => Metric::PassRate,
            };
            let gate = Gate { suite: suite_name, grader, metric, min: number(gate, "min", &at)?, max: number(gate, "max", &at)?, max_regression: number(gate, "max_regression", &at)? };
            if gate.min.is_none() && gate.max.is_none() && gate.max_regression.is_none() {
                return Err(invalid(format!("{at} sets no bound: give min, max or max_regression")));
            }
            if gate.max_regression.is_some_and(|r| r < 0.0) {
                return Err(invalid(format!("{at}.max_regression must not be negative")));
            }
            gates.push(gate);
        }
        let staging = text(value, "staging", "pipeline")?;
        let canary = match value.get("canary") {
            None | Some(Value::Null) => None,
            Some(canary) => Some(rollout(canary)?),
        };
        Ok(PipelineSpec { deploy, suites, gates, staging, canary })
    }
}

fn rollout(canary: &Value) -> Result<RolloutPlan> {
    only(canary, &["steps", "bake_secs", "shadow_secs", "min_requests", "failure_limit", "slo"], "canary")?;
    let steps = match canary.get("steps") {
        Some(Value::Array(steps)) => steps.iter().map(|s| s.as_u64().filter(|p| *p <= 100).map(|p| p as u8)).collect::<Option<Vec<u8>>>(),
        _ => None,
    }
    .ok_or_else(|| invalid("canary.steps must list percentages, e.g. [5, 25, 50, 100]"))?;
    let slo = canary.get("slo").cloned().unwrap_or(json!({}));
    only(&slo, &["max_error_rate", "max_latency_p95_ms", "max_ttft_p95_ms", "min_tokens_per_sec", "max_ttft_regression"], "canary.slo")?;
    let millis = |key: &str| count(&slo, key, "canary.slo", 0, 86_400_000).map(|v| slo.get(key).map(|_| v));
    Ok(RolloutPlan {
        steps,
        bake_secs: count(canary, "bake_secs", "canary", 60, 7 * 86_400)?,
        shadow_secs: count(canary, "shadow_secs", "canary", 0, 7 * 86_400)?,
        min_requests: count(canary, "min_requests", "canary", 20, 1_000_000)?,
        failure_limit: count(canary, "failure_limit", "canary", 0, 100)? as u32,
        slo: Slo {
            max_error_rate: number(&slo, "max_error_rate", "canary.slo")?,
            max_latency_p95_ms: millis("max_latency_p95_ms")?,
            max_ttft_p95_ms: millis("max_ttft_p95_ms")?,
            min_tokens_per_sec: number(&slo, "min_tokens_per_sec", "canary.slo")?,
            max_ttft_regression: number(&slo, "max_ttft_regression", "canary.slo")?,
        },
    })
}

/// Reads a YAML document into JSON's data model, under a budget: events, depth and size are
/// bounded, and anchors, aliases and tags are refused (a pipeline has no use for them, and
/// they are how YAML bombs are made).
pub fn yaml_to_json(yaml: &str) -> std::result::Result<Value, String> {
    use yaml_rust2::parser::{Event, Parser};
    use yaml_rust2::scanner::TScalarStyle;
    if yaml.len() > MAX_SPEC_BYTES {
        return Err(format!("the file is larger than {MAX_SPEC_BYTES} bytes"));
    }
    enum Open {
        List(Vec<Value>),
        Map(Map<String, Value>, Option<String>),
    }
    let mut parser = Parser::new_from_str(yaml);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Value> = None;
    let mut documents = 0;
    for _ in 0..MAX_EVENTS {
        let (event, mark) = parser.next_token().map_err(|err| format!("invalid YAML: {err}"))?;
        let at = || format!("line {}", mark.line());
        let value = match event {
            Event::StreamEnd => return root.ok_or_else(|| "the file is empty".to_owned()),
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err("the file holds more than one YAML document".into());
                }
                continue;
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::Alias(_) => return Err(format!("anchors and aliases are not allowed ({})", at())),
            Event::Scalar(_, _, anchor, tag) | Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) if anchor != 0 || tag.is_some() => {
                return Err(format!("anchors, aliases and tags are not allowed ({})", at()));
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH} levels"));
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) { Open::List(Vec::new()) } else { Open::Map(Map::new(), None) });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::List(items)) => Value::Array(items),
                Some(Open::Map(map, _)) => Value::Object(map),
                None => return Err("unbalanced YAML".into()),
            },
            Event::Scalar(text, style, _, _) => {
                if style != TScalarStyle::Plain {
                    Value::String(text)
                } else {
                    match text.as_str() {
                        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
                        "true" | "True" | "TRUE" => Value::Bool(true),
                        "false" | "False" | "FALSE" => Value::Bool(false),
                        _ => text.parse::<i64>().map(Value::from).ok().or_else(|| text.parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::from)).unwrap_or(Value::String(text)),
                    }
                }
            }
        };
        match stack.last_mut() {
            None => root = Some(value),
            Some(Open::List(items)) => items.push(value),
            Some(Open::Map(map, key)) => match key.take() {
                None => match value {
                    Value::String(k) => *key = Some(k),
                    Value::Null | Value::Bool(_) | Value::Number(_) => *key = Some(value.to_string()),
                    _ => return Err(format!("a mapping key must be a scalar ({})", at())),
                },
                Some(k) => {
                    if map.insert(k.clone(), value).is_some() {
                        return Err(format!("the key {k} appears twice ({})", at()));
                    }
                }
            },
        }
    }
    Err(format!("the file is too complex: more than {MAX_EVENTS} YAML events"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
deploy:
  context: 1024
suites:
  - name: wiki
    data: datasets/acme/wiki@main:test.jsonl
    graders:
      - {type: perplexity, name: ppl, input: "{{item.text}}"}
  - name: qa
    items:
      - {question: "2+2?", answer: "4"}
    input_messages:
      - {role: user, content: "{{item.question}}"}
    graders:
      - {type: string_check, name: exact, input: "{{sample.output_text}}", reference: "{{item.answer}}", operation: eq}
gates:
  - {suite: wiki, max: 40, max_regression: 0.02}
  - {suite: qa, min: 0.5}
staging: chat-staging
canary:
  steps: [10, 50, 100]
  bake_secs: 30
  slo: {max_error_rate: 0.05, max_ttft_p95_ms: 2000}
"#;

    #[test]
    fn a_pipeline_file_is_read_and_checked() {
        let spec = PipelineSpec::parse(SPEC).unwrap();
        assert_eq!(spec.deploy, DeployPlan { file: None, context: 1024, max_batch: 4, threads: 2 });
        assert_eq!(spec.suites.len(), 2);
        assert_eq!(spec.suites[0].data, SuiteData::Hub("datasets/acme/wiki@main:test.jsonl".into()));
        assert_eq!(spec.gates[0], Gate { suite: "wiki".into(), grader: "ppl".into(), metric: Metric::Perplexity, min: None, max: Some(40.0), max_regression: Some(0.02) });
        assert_eq!(spec.gates[1].metric, Metric::PassRate);
        let canary = spec.canary.unwrap();
        assert_eq!((canary.steps, canary.bake_secs, canary.slo.max_ttft_p95_ms, canary.min_requests), (vec![10, 50, 100], 30, Some(2000), 20));
        assert_eq!(spec.staging.as_deref(), Some("chat-staging"));
    }

    #[test]
    fn unknown_fields_bad_references_and_yaml_bombs_are_refused() {
        let refused = |yaml: &str, needle: &str| {
            let err = PipelineSpec::parse(yaml).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        };
        refused("deploy: {gpus: 2}", "deploy.gpus");
        refused("suites: [{name: a, items: [{}], graders: [{name: g}]}]\ngates: [{suite: b, min: 1}]", "names no suite b");
        refused("suites: [{name: a, items: [{}], graders: [{name: g}]}]\ngates: [{suite: a}]", "sets no bound");
        refused("a: &x [1]\nb: *x", "anchors");
        refused("a: !!str 1", "tags");
        refused("a: 1\na: 2", "twice");
        refused(&"[".repeat(100), "deeper");
        refused("canary: {steps: [10, 100], slo: {p99: 1}}", "canary.slo.p99");
        assert!(yaml_to_json(&"x".repeat(MAX_SPEC_BYTES + 1)).is_err());
        assert_eq!(yaml_to_json("a: [1, 2.5, 'x', true, ~]").unwrap(), json!({"a": [1, 2.5, "x", true, null]}));
    }
}
