//! One generation request, whatever API it came in on.

use std::sync::Arc;

use domain::meta::SamplingDefaults;
use engine::grammar::Grammar;
use engine::{SamplingParams, Token};
use serde_json::Value;

use super::tools::ToolPlan;

/// A generation request, parsed and checked by its protocol module.
#[derive(Clone)]
pub(crate) struct GenerationRequest {
    /// The API and route, as usage records name it (`openai.chat`, `ollama.generate`, ...).
    pub(crate) api: &'static str,
    pub(crate) input: Input,
    /// What the request set; the rest comes from the deployment's defaults, then `fallback`.
    pub(crate) sampling: Sampling,
    /// The API's own defaults (OpenAI's 1.0/1.0, Ollama's 0.8/40/0.9/1.1...).
    pub(crate) fallback: SamplingParams,
    /// `None`: the deployment's default, else up to the end of the context.
    pub(crate) max_tokens: Option<usize>,
    /// A `max_tokens` past the end of the context is cut to fit (Ollama) rather than refused
    /// (OpenAI).
    pub(crate) clip_to_context: bool,
    pub(crate) stop: Vec<String>,
    /// Choices per prompt.
    pub(crate) n: usize,
    /// `Some(k)`: each token's log probability and its `k` likeliest alternatives.
    pub(crate) logprobs: Option<usize>,
    /// Give the prompt back ahead of the answer, its tokens scored when `logprobs` is set
    /// (OpenAI's `echo`; likelihood evaluation reads it). `max_tokens` may then be 0.
    pub(crate) echo: bool,
    /// Structured output: the answer must match this grammar.
    pub(crate) constraint: Option<Arc<Grammar>>,
    /// Tools offered to a chat (forced calls compile into the constraint).
    pub(crate) tools: Option<ToolPlan>,
}

/// What to generate from.
#[derive(Clone)]
pub(crate) enum Input {
    /// Chat messages as the template sees them (`[{role, content, ...}]`), rendered through the
    /// model's chat template.
    Chat(Vec<Value>),
    /// Prompts taken as they are, one generation (times `n`) each.
    Texts(Vec<String>),
    /// Prompts already tokenized (each id is checked against the vocabulary).
    Tokens(Vec<Vec<Token>>),
}

impl Input {
    /// The request field that holds the input, for errors about it.
    pub(crate) fn param(&self) -> &'static str {
        match self {
            Input::Chat(_) => "messages",
            Input::Texts(_) | Input::Tokens(_) => "prompt",
        }
    }
}

/// The sampling parameters a request set; `None` is "not given".
#[derive(Clone, Debug, Default)]
pub(crate) struct Sampling {
    pub(crate) temperature: Option<f32>,
    pub(crate) top_p: Option<f32>,
    /// 0: off.
    pub(crate) top_k: Option<usize>,
    pub(crate) min_p: Option<f32>,
    pub(crate) repetition_penalty: Option<f32>,
    pub(crate) frequency_penalty: Option<f32>,
    pub(crate) presence_penalty: Option<f32>,
    /// How many recent tokens the penalties look at (0: all of them).
    pub(crate) penalty_last_n: Option<usize>,
    pub(crate) seed: Option<u64>,
    pub(crate) ignore_eos: bool,
}

impl Sampling {
    /// The engine's parameters: what the request set, else the deployment's default, else the
    /// API's.
    pub(crate) fn resolve(&self, defaults: &SamplingDefaults, fallback: &SamplingParams) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature.or(defaults.temperature).unwrap_or(fallback.temperature),
            top_k: self.top_k.or(defaults.top_k.map(|k| k as usize)).unwrap_or(fallback.top_k),
            top_p: self.top_p.or(defaults.top_p).unwrap_or(fallback.top_p),
            min_p: self.min_p.or(defaults.min_p).unwrap_or(fallback.min_p),
            repetition_penalty: self.repetition_penalty.or(defaults.repetition_penalty).unwrap_or(fallback.repetition_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(fallback.frequency_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(fallback.presence_penalty),
            penalty_last_n: self.penalty_last_n.unwrap_or(fallback.penalty_last_n),
            seed: self.seed.or(fallback.seed),
            ignore_eos: self.ignore_eos,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_then_deployment_then_api() {
        let defaults = SamplingDefaults { temperature: Some(0.2), top_p: Some(0.9), ..Default::default() };
        let fallback = SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.95, ..SamplingParams::default() };
        let request = Sampling { temperature: Some(1.5), ..Default::default() };
        let params = request.resolve(&defaults, &fallback);
        assert_eq!((params.temperature, params.top_p, params.top_k), (1.5, 0.9, 40));
        let params = Sampling::default().resolve(&SamplingDefaults::default(), &fallback);
        assert_eq!((params.temperature, params.top_p, params.top_k), (0.8, 0.95, 40));
    }
}
