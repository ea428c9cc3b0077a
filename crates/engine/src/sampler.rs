//! Sampling from logits: temperature, top-k, top-p, min-p, repetition/frequency/presence
//! penalties, and a seeded RNG so the same request gives the same output.

use rand::{Rng as _, SeedableRng as _};

use crate::Token;

/// Sampling settings of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means off.
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    /// Multiplicative penalty on tokens already seen (1.0 is off), as llama.cpp applies it.
    pub repetition_penalty: f32,
    /// OpenAI's: subtract `frequency * count` and `presence` once, for tokens already generated.
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// How many of the latest tokens the penalties look at; 0 means all of them.
    pub penalty_last_n: usize,
    pub seed: Option<u64>,
    /// Never end on an end-of-generation token (benchmarks use it to fix output lengths).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, frequency_penalty: 0.0, presence_penalty: 0.0, penalty_last_n: 0, seed: None, ignore_eos: false }
    }
}

/// A sampler with its own RNG stream.
pub struct Sampler {
    params: SamplingParams,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    /// A sampler seeded from `params.seed`, or from entropy.
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_entropy(),
        };
        Sampler { params, rng }
    }

    /// Picks the next token. `history` is prompt plus generated tokens.
    pub fn sample(&mut self, logits: &[f32], history: &[Token]) -> Token {
        let mut scores: Vec<(Token, f32)> = logits.iter().enumerate().map(|(i, l)| (i as Token, *l)).collect();
        let p = &self.params;
        if p.repetition_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            let mut counts = std::collections::HashMap::<Token, u32>::new();
            let window = if p.penalty_last_n > 0 { &history[history.len().saturating_sub(p.penalty_last_n)..] } else { history };
            for token in window {
                *counts.entry(*token).or_default() += 1;
            }
            for (token, score) in scores.iter_mut() {
                if let Some(count) = counts.get(token) {
                    if p.repetition_penalty != 1.0 {
                        *score = if *score > 0.0 { *score / p.repetition_penalty } else { *score * p.repetition_penalty };
                    }
                    *score -= p.frequency_penalty * *count as f32 + p.presence_penalty;
                }
            }
        }
        if p.temperature <= 0.0 {
            // Greedy; ties go to the lowest id, so the choice is stable.
            return scores.iter().fold((0, f32::NEG_INFINITY), |best, (t, s)| if *s > best.1 { (*t, *s) } else { best }).0;
        }
        // Masked tokens (ignore_eos, grammars) are never candidates, whatever the rounding.
        scores.retain(|(_, s)| *s > f32::NEG_INFINITY);
        if scores.is_empty() {
            return 0;
        }
        scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 {
            scores.truncate(p.top_k.max(1));
        }
        let max = scores[0].1;
        let mut probs: Vec<(Token, f32)> = scores.iter().map(|(t, s)| (*t, ((s - max) / p.temperature).exp())).collect();
        let total: f32 = probs.iter().map(|(_, q)| q).sum();
        for (_, q) in probs.iter_mut() {
            *q /= total;
        }
        if p.min_p > 0.0 {
            let floor = probs[0].1 * p.min_p;
            probs.retain(|(_, q)| *q >= floor);
        }
        if p.top_p < 1.0 {
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (i, (_, q)) in probs.iter().enumerate() {
                cumulative += q;
                if cumulative >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep.max(1));
        }
        let total: f32 = probs.iter().map(|(_, q)| q).sum();
        let mut pick = self.rng.gen::<f32>() * total;
        for (token, q) in &probs {
            if pick < *q {
                return *token;
            }
            pick -= q;
        }
        probs.last().expect("at least one candidate").0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(params: SamplingParams, logits: &[f32], history: &[Token], expect: Token) {
        assert_eq!(Sampler::new(params).sample(logits, history), expect);
    }

    #[test]
    fn greedy_and_penalties() {
        let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
        check(greedy.clone(), &[0.1, 2.0, 1.9], &[], 1);
        check(SamplingParams { presence_penalty: 0.5, ..greedy.clone() }, &[0.1, 2.0, 1.9], &[1], 2);
        check(SamplingParams { repetition_penalty: 1.2, ..greedy }, &[0.1, 2.0, 1.9], &[1], 2);
        check(SamplingParams { temperature: 0.8, top_k: 1, ..Default::default() }, &[0.1, 2.0, 1.9], &[], 1);
    }

    #[test]
    fn seeds_repeat() {
        let params = SamplingParams { temperature: 1.0, seed: Some(7), ..Default::default() };
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let a: Vec<Token> = {
            let mut s = Sampler::new(params.clone());
            (0..20).map(|_| s.sample(&logits, &[])).collect()
        };
        let b: Vec<Token> = {
            let mut s = Sampler::new(params);
            (0..20).map(|_| s.sample(&logits, &[])).collect()
        };
        assert_eq!(a, b);
    }
}
