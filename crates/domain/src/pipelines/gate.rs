//! Gates: a candidate's value of one metric held to absolute bounds and, against the production
//! revision on the same items, to a largest regression judged by a paired bootstrap (items are
//! resampled together, so the noise of hard and easy items cancels out of the difference).

use serde_json::{json, Value};

use super::spec::{Gate, Metric};

/// Resamples of the paired bootstrap.
const RESAMPLES: usize = 2000;

/// What one item gave a grader: its score, pass, and for likelihood graders the log-likelihood
/// and units counted (the perplexity of a set is over their sums, not a mean of ratios).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ItemValue {
    pub value: f64,
    pub loglikelihood: f64,
    pub units: f64,
}

impl Metric {
    /// The metric over a set of items.
    pub fn of(self, items: &[&ItemValue]) -> f64 {
        match self {
            Metric::Perplexity => {
                let (ll, units) = items.iter().fold((0.0, 0.0), |(l, u), i| (l + i.loglikelihood, u + i.units));
                if units > 0.0 {
                    (-ll / units).exp()
                } else {
                    f64::NAN
                }
            }
            _ if items.is_empty() => f64::NAN,
            _ => items.iter().map(|i| i.value).sum::<f64>() / items.len() as f64,
        }
    }

    /// How much worse `candidate` is than `production`: a ratio less one for perplexity (lower
    /// is better), points below it for the rest (higher is better).
    pub fn regression(self, candidate: f64, production: f64) -> f64 {
        match self {
            Metric::Perplexity => candidate / production - 1.0,
            _ => production - candidate,
        }
    }
}

/// A gate's outcome, as evidence.
#[derive(Clone, Debug, PartialEq)]
pub struct GateResult {
    pub passed: bool,
    /// Why it failed, or what it found.
    pub reason: String,
    pub evidence: Value,
}

/// The regression's 95% interval by a paired bootstrap over items present in both runs
/// (deterministic: a fixed seed).
pub fn paired_bootstrap(metric: Metric, pairs: &[(ItemValue, ItemValue)]) -> (f64, f64) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let n = pairs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut draws: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let picks: Vec<usize> = (0..n).map(|_| (next() % n as u64) as usize).collect();
            let candidate: Vec<&ItemValue> = picks.iter().map(|&i| &pairs[i].0).collect();
            let production: Vec<&ItemValue> = picks.iter().map(|&i| &pairs[i].1).collect();
            metric.regression(metric.of(&candidate), metric.of(&production))
        })
        .filter(|d| d.is_finite())
        .collect();
    if draws.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    draws.sort_by(f64::total_cmp);
    let at = |q: f64| draws[((draws.len() - 1) as f64 * q).round() as usize];
    (at(0.025), at(0.975))
}

/// Judges a gate on the candidate's items and, when the gate compares, production's (paired by
/// item index).
pub fn judge(gate: &Gate, candidate: &[(i64, ItemValue)], production: Option<&[(i64, ItemValue)]>) -> GateResult {
    let metric = gate.metric;
    let value = metric.of(&candidate.iter().map(|(_, v)| v).collect::<Vec<_>>());
    let mut failed = Vec::new();
    let mut evidence = json!({ "suite": gate.suite, "grader": gate.grader, "metric": metric.as_str(), "candidate": value, "items": candidate.len(), "min": gate.min, "max": gate.max, "max_regression": gate.max_regression });
    if !value.is_finite() {
        failed.push(format!("{} of {} could not be computed (no graded items)", metric.as_str(), gate.grader));
    }
    if let Some(min) = gate.min.filter(|min| value < *min) {
        failed.push(format!("{} {value:.4} below {min}", metric.as_str()));
    }
    if let Some(max) = gate.max.filter(|max| value > *max) {
        failed.push(format!("{} {value:.4} above {max}", metric.as_str()));
    }
    if let Some(margin) = gate.max_regression {
        match production {
            None => evidence["production"] = json!(null),
            Some(production) => {
                let by_index: std::collections::HashMap<i64, &ItemValue> = production.iter().map(|(i, v)| (*i, v)).collect();
                let pairs: Vec<(ItemValue, ItemValue)> = candidate.iter().filter_map(|(i, c)| by_index.get(i).map(|p| (c.clone(), (*p).clone()))).collect();
                let production_value = metric.of(&pairs.iter().map(|(_, p)| p).collect::<Vec<_>>());
                let candidate_value = metric.of(&pairs.iter().map(|(c, _)| c).collect::<Vec<_>>());
                let regression = metric.regression(candidate_value, production_value);
                let (low, high) = paired_bootstrap(metric, &pairs);
                evidence["production"] = json!(production_value);
                evidence["paired_items"] = json!(pairs.len());
                evidence["regression"] = json!(regression);
                evidence["regression_ci95"] = json!([low, high]);
                // Blocked when the candidate is worse than the margin with 95% confidence: the
                // whole interval lies beyond it.
                if pairs.is_empty() || !regression.is_finite() {
                    failed.push("no items were graded on both the candidate and production".to_owned());
                } else if low > margin {
                    failed.push(format!("{} regressed by {regression:.4} (95% interval {low:.4} to {high:.4}) against production, more than the {margin} allowed", metric.as_str()));
                }
            }
        }
    }
    let passed = failed.is_empty();
    evidence["passed"] = json!(passed);
    let reason = if passed { format!("{} {}: {} {value:.4} passed", gate.suite, gate.grader, metric.as_str()) } else { format!("{} {}: {}", gate.suite, gate.grader, failed.join("; ")) };
    GateResult { passed, reason, evidence }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ppl(items: &[(f64, f64)]) -> Vec<(i64, ItemValue)> {
        items.iter().enumerate().map(|(i, (ll, units))| (i as i64, ItemValue { value: (-ll / units).exp(), loglikelihood: *ll, units: *units })).collect()
    }

    fn gate(max_regression: Option<f64>, max: Option<f64>) -> Gate {
        Gate { suite: "wiki".into(), grader: "ppl".into(), metric: Metric::Perplexity, min: None, max, max_regression }
    }

    #[test]
    fn a_degraded_candidate_is_blocked_and_an_equal_one_passes() {
        let production = ppl(&[(-100.0, 40.0), (-80.0, 30.0), (-150.0, 50.0), (-60.0, 20.0), (-90.0, 35.0), (-120.0, 44.0)]);
        // The same model: no regression at all.
        let same = judge(&gate(Some(0.01), Some(30.0)), &production, Some(&production));
        assert!(same.passed, "{}", same.reason);
        assert_eq!(same.evidence["regression"], json!(0.0));
        // Every item 30% less likely per unit: perplexity far up, on every item.
        let worse: Vec<(f64, f64)> = production.iter().map(|(_, v)| (v.loglikelihood * 1.3, v.units)).collect();
        let blocked = judge(&gate(Some(0.05), None), &ppl(&worse), Some(&production));
        assert!(!blocked.passed);
        assert!(blocked.reason.contains("regressed"), "{}", blocked.reason);
        let (low, high) = (blocked.evidence["regression_ci95"][0].as_f64().unwrap(), blocked.evidence["regression_ci95"][1].as_f64().unwrap());
        assert!(low > 0.05 && low <= high, "{low} {high}");
        // An absolute bound alone.
        assert!(!judge(&gate(None, Some(5.0)), &production, None).passed);
    }

    #[test]
    fn noise_within_the_interval_does_not_block() {
        let metric = Metric::PassRate;
        let at = |v: &[f64]| v.iter().enumerate().map(|(i, v)| (i as i64, ItemValue { value: *v, ..ItemValue::default() })).collect::<Vec<_>>();
        let production = at(&[1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0]);
        let candidate = at(&[1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
        let gate = Gate { suite: "qa".into(), grader: "exact".into(), metric, min: None, max: None, max_regression: Some(0.0) };
        let result = judge(&gate, &candidate, Some(&production));
        assert!(result.passed, "{}", result.reason);
        assert!(paired_bootstrap(metric, &[]).0.is_nan());
    }
}
