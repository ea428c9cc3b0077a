//! Release routes: the name clients put in `model` that points at a stable deployment and, while
//! a revision is being tried, a canary deployment taking a share of the callers. Each caller
//! lands on the same side for a given share (sticky), and a larger share keeps the callers a
//! smaller one had. Every change is a history entry (who, when, from which deployments and
//! revisions to which, why, and the evidence given), written with its audit row.

use serde_json::Value;

use crate::audit::AuditEvent;
use crate::error::Result;

/// A route.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub name: String,
    /// The deployment that answers callers not on the canary.
    pub stable: String,
    /// The deployment being tried and the share of callers (percent, 1..=99) it answers.
    pub canary: Option<(String, u8)>,
    /// A deployment that gets a copy of a share (percent, 1..=100) of the route's requests; its
    /// answers are discarded, its outcomes recorded (shadow traffic).
    pub shadow: Option<(String, u8)>,
    /// A stepped rollout of the canary under analysis, while one runs.
    pub rollout: Option<Rollout>,
    pub updated_at: String,
}

/// A canary rolled out in steps, each held for a bake time and analysed against service-level
/// objectives read from what the canary's requests recorded (across replicas, from the usage
/// log), as Argo Rollouts analyses: a step passes, fails (past `failure_limit` failures the
/// canary is rolled back by itself), or is inconclusive (too few requests: it waits).
#[derive(Clone, Debug, PartialEq)]
pub struct Rollout {
    /// Percentages of callers, increasing; the last is 100 (promotion).
    pub steps: Vec<u8>,
    pub bake_secs: u64,
    pub slo: Slo,
    /// Requests a step needs before it can pass or fail.
    pub min_requests: u64,
    /// Failed analyses tolerated before rolling back.
    pub failure_limit: u32,
    /// Seconds of shadow traffic before the first step (0: none): the candidate gets a copy of
    /// every request, no caller sees its answers, and it must hold the SLOs to go on.
    pub shadow_secs: u64,
    /// Whether the rollout is in its shadow phase.
    pub shadowing: bool,
    /// Where it is: the step, when it began, failures so far.
    pub step: usize,
    pub step_started_at: String,
    pub failures: u32,
}

impl Rollout {
    /// The stored form.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "steps": self.steps, "bake_secs": self.bake_secs, "min_requests": self.min_requests, "failure_limit": self.failure_limit,
            "slo": { "max_error_rate": self.slo.max_error_rate, "max_latency_p95_ms": self.slo.max_latency_p95_ms, "max_ttft_p95_ms": self.slo.max_ttft_p95_ms, "min_tokens_per_sec": self.slo.min_tokens_per_sec, "max_ttft_regression": self.slo.max_ttft_regression },
            "step": self.step, "step_started_at": self.step_started_at, "failures": self.failures,
            "shadow_secs": self.shadow_secs, "shadowing": self.shadowing,
        })
    }

    /// Reads the stored form.
    pub fn from_json(value: &Value) -> Option<Self> {
        let slo = &value["slo"];
        Some(Rollout {
            steps: value["steps"].as_array()?.iter().map(|s| s.as_u64().map(|p| p.min(100) as u8)).collect::<Option<_>>()?,
            bake_secs: value["bake_secs"].as_u64()?,
            slo: Slo {
                max_error_rate: slo["max_error_rate"].as_f64(),
                max_latency_p95_ms: slo["max_latency_p95_ms"].as_u64(),
                max_ttft_p95_ms: slo["max_ttft_p95_ms"].as_u64(),
                min_tokens_per_sec: slo["min_tokens_per_sec"].as_f64(),
                max_ttft_regression: slo["max_ttft_regression"].as_f64(),
            },
            min_requests: value["min_requests"].as_u64()?,
            failure_limit: value["failure_limit"].as_u64()? as u32,
            step: value["step"].as_u64()? as usize,
            step_started_at: value["step_started_at"].as_str()?.to_owned(),
            failures: value["failures"].as_u64()? as u32,
            shadow_secs: value["shadow_secs"].as_u64().unwrap_or(0),
            shadowing: value["shadowing"].as_bool().unwrap_or(false),
        })
    }
}

/// What a canary must hold to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Slo {
    /// Failed requests over all requests.
    pub max_error_rate: Option<f64>,
    /// Request latency (end to end), 95th percentile.
    pub max_latency_p95_ms: Option<u64>,
    /// Time to first token, 95th percentile.
    pub max_ttft_p95_ms: Option<u64>,
    /// Completion tokens per second of request time, at least.
    pub min_tokens_per_sec: Option<f64>,
    /// Against the stable deployment over the same window: the candidate's median time to first
    /// token may be at most this fraction above the baseline's, unless a one-sided Mann-Whitney
    /// U test finds no significant difference (p >= 0.05), so noise alone never fails it.
    pub max_ttft_regression: Option<f64>,
}

/// What one request recorded (from the usage log).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// `ok`, `failed`, `cancelled`, `rejected`, `invalid`.
    pub outcome: String,
    pub latency_ms: u64,
    pub completion_tokens: u64,
    /// Time to the first generated text, when any came.
    pub ttft_ms: Option<u64>,
}

/// What a deployment's requests recorded in a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readings {
    pub requests: u64,
    pub failed: u64,
    pub latency_p95_ms: u64,
    /// Time to first token, 95th percentile, over requests that produced text.
    pub ttft_p95_ms: u64,
    pub tokens_per_sec: f64,
    /// Every time to first token, for the comparison with a baseline.
    pub ttft_samples: Vec<u64>,
}

/// The 95th percentile of `values` (0 for none).
fn p95(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get((values.len() * 95).div_ceil(100).saturating_sub(1)).copied().unwrap_or(0)
}

impl Readings {
    /// Readings from what requests recorded; requests the caller cancelled or that were refused
    /// count neither way.
    pub fn from_outcomes(rows: &[Outcome]) -> Self {
        let counted: Vec<&Outcome> = rows.iter().filter(|o| o.outcome == "ok" || o.outcome == "failed").collect();
        let (tokens, millis) = counted.iter().fold((0u64, 0u64), |(t, m), o| (t + o.completion_tokens, m + o.latency_ms));
        Readings {
            requests: counted.len() as u64,
            failed: counted.iter().filter(|o| o.outcome == "failed").count() as u64,
            latency_p95_ms: p95(counted.iter().map(|o| o.latency_ms).collect()),
            ttft_p95_ms: p95(counted.iter().filter_map(|o| o.ttft_ms).collect()),
            ttft_samples: counted.iter().filter_map(|o| o.ttft_ms).collect(),
            tokens_per_sec: if millis > 0 { tokens as f64 * 1000.0 / millis as f64 } else { 0.0 },
        }
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failed as f64 / self.requests as f64
        }
    }
}

/// An analysis' outcome.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Inconclusive(String),
}

/// How much slower the candidate's median time to first token is than the baseline's (a
/// fraction), and the one-sided p-value of a Mann-Whitney U test that the candidate's are
/// larger (normal approximation with tie correction); `None` without samples on both sides.
pub fn compare_ttft(candidate: &Readings, baseline: &Readings) -> Option<(f64, f64)> {
    let (a, b) = (&candidate.ttft_samples, &baseline.ttft_samples);
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let median = |values: &[u64]| {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        if n % 2 == 1 {
            sorted[n / 2] as f64
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0
        }
    };
    let regression = median(a) / median(b).max(1.0) - 1.0;
    // Ranks over both samples, ties averaged.
    let mut all: Vec<(u64, bool)> = a.iter().map(|&v| (v, true)).chain(b.iter().map(|&v| (v, false))).collect();
    all.sort_unstable_by_key(|&(v, _)| v);
    let (n1, n2, n) = (a.len() as f64, b.len() as f64, all.len() as f64);
    let (mut rank_sum, mut ties, mut i) = (0.0, 0.0, 0);
    while i < all.len() {
        let j = all[i..].iter().position(|&(v, _)| v != all[i].0).map_or(all.len(), |k| i + k);
        let t = (j - i) as f64;
        let rank = (i + j + 1) as f64 / 2.0;
        rank_sum += rank * all[i..j].iter().filter(|(_, from_candidate)| *from_candidate).count() as f64;
        ties += t * t * t - t;
        i = j;
    }
    let u = rank_sum - n1 * (n1 + 1.0) / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)).max(1.0));
    let p = if variance <= 0.0 { 0.5 } else { 1.0 - normal_cdf((u - n1 * n2 / 2.0 - 0.5) / variance.sqrt()) };
    Some((regression, p.clamp(0.0, 1.0)))
}

/// The standard normal CDF (Abramowitz and Stegun 7.1.26 for erf; error below 1.5e-7).
fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Holds `readings` to `slo`; `baseline` is the stable deployment's readings over the same
/// window (for `max_ttft_regression`).
pub fn analyze(readings: &Readings, slo: &Slo, min_requests: u64, baseline: &Readings) -> Verdict {
    if readings.requests < min_requests.max(1) {
        return Verdict::Inconclusive(format!("{} requests of the {} needed", readings.requests, min_requests.max(1)));
    }
    if slo.max_ttft_regression.is_some() && baseline.ttft_samples.len() < min_requests.max(1) as usize {
        return Verdict::Inconclusive(format!("the baseline has {} requests of the {} needed to compare", baseline.ttft_samples.len(), min_requests.max(1)));
    }
    let mut broken = Vec::new();
    if let Some(max) = slo.max_error_rate.filter(|max| readings.error_rate() > *max) {
        broken.push(format!("error rate {:.3} above {max}", readings.error_rate()));
    }
    if let Some(max) = slo.max_latency_p95_ms.filter(|max| readings.latency_p95_ms > *max) {
        broken.push(format!("latency p95 {} ms above {max} ms", readings.latency_p95_ms));
    }
    if let Some(max) = slo.max_ttft_p95_ms.filter(|max| readings.ttft_p95_ms > *max) {
        broken.push(format!("time to first token p95 {} ms above {max} ms", readings.ttft_p95_ms));
    }
    if let Some(min) = slo.min_tokens_per_sec.filter(|min| readings.tokens_per_sec < *min) {
        broken.push(format!("{:.1} tokens/s below {min}", readings.tokens_per_sec));
    }
    if let (Some(max), Some((regression, p))) = (slo.max_ttft_regression, compare_ttft(readings, baseline)) {
        if p < 0.05 && regression > max {
            broken.push(format!("median time to first token {:.0}% above the baseline's (Mann-Whitney p = {p:.4}), more than {:.0}%", regression * 100.0, max * 100.0));
        }
    }
    if broken.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(broken.join("; "))
    }
}

impl Route {
    /// The deployment that answers a caller whose sticky bucket (0..10000) is `bucket`.
    pub fn pick(&self, bucket: u32) -> &str {
        match &self.canary {
            Some((canary, percent)) if bucket < u32::from(*percent) * 100 => canary,
            _ => &self.stable,
        }
    }
}

/// The sticky bucket (0..10000) of a caller on a route: the same caller always gets the same one.
pub fn bucket(route: &str, caller: &str) -> u32 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{route}\u{0}{caller}").as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 10_000
}

/// One change of a route.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteChange {
    pub route: String,
    pub at: String,
    pub actor: String,
    /// `create`, `canary`, `promote`, `rollback`, `delete`.
    pub action: String,
    /// The route before and after, with the revision each deployment served.
    pub from: Value,
    pub to: Value,
    pub reason: String,
    /// What the change rests on (eval run ids and their results, SLO readings).
    pub evidence: Value,
}

/// Storage of routes and their history.
#[async_trait::async_trait]
pub trait RouteStore: Send + Sync {
    /// Creates or replaces a route and appends its change, audited, in one transaction. With
    /// `expected` (the `updated_at` read before), a route changed meanwhile is a conflict.
    async fn put_route(&self, route: &Route, expected: Option<&str>, change: &RouteChange, event: AuditEvent) -> Result<()>;
    async fn get_route(&self, name: &str) -> Result<Option<Route>>;
    async fn list_routes(&self) -> Result<Vec<Route>>;
    /// Deletes a route (its history stays), audited; NotFound if missing.
    async fn delete_route(&self, name: &str, change: &RouteChange, event: AuditEvent) -> Result<()>;
    /// A route's changes, oldest first.
    async fn route_history(&self, name: &str) -> Result<Vec<RouteChange>>;
    /// What a deployment's requests recorded since `since`, at most `limit` of the newest.
    async fn deployment_outcomes(&self, deployment: &str, since: &str, limit: i64) -> Result<Vec<Outcome>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ok: usize, failed: usize, latency: u64) -> Vec<Outcome> {
        let one = |outcome: &str, tokens: u64, ttft: Option<u64>| Outcome { outcome: outcome.into(), latency_ms: latency, completion_tokens: tokens, ttft_ms: ttft };
        std::iter::repeat_n(one("ok", 10, Some(latency / 4)), ok).chain(std::iter::repeat_n(one("failed", 0, None), failed)).chain([Outcome { outcome: "cancelled".into(), latency_ms: 1, completion_tokens: 0, ttft_ms: Some(99_999) }]).collect()
    }

    #[test]
    fn a_canary_passes_fails_or_waits_for_requests() {
        let slo = Slo { max_error_rate: Some(0.05), max_latency_p95_ms: Some(500), max_ttft_p95_ms: Some(100), ..Slo::default() };
        let none = Readings::default();
        assert_eq!(analyze(&Readings::from_outcomes(&rows(40, 1, 100)), &slo, 20, &none), Verdict::Pass);
        assert!(matches!(analyze(&Readings::from_outcomes(&rows(30, 10, 100)), &slo, 20, &none), Verdict::Fail(why) if why.contains("error rate")));
        assert!(matches!(analyze(&Readings::from_outcomes(&rows(40, 0, 900)), &slo, 20, &none), Verdict::Fail(why) if why.contains("latency p95") && why.contains("first token")));
        assert!(matches!(analyze(&Readings::from_outcomes(&rows(40, 0, 480)), &slo, 20, &none), Verdict::Fail(why) if why.contains("first token p95 120")));
        assert!(matches!(analyze(&Readings::from_outcomes(&rows(5, 5, 100)), &slo, 20, &none), Verdict::Inconclusive(_)));
        let readings = Readings::from_outcomes(&rows(2, 0, 500));
        assert_eq!((readings.requests, readings.tokens_per_sec, readings.ttft_p95_ms), (2, 20.0, 125));
    }

    #[test]
    fn a_canary_slower_than_its_baseline_fails_only_when_significant() {
        let readings = |ttfts: &[u64]| Readings::from_outcomes(&ttfts.iter().map(|&t| Outcome { outcome: "ok".into(), latency_ms: t * 2, completion_tokens: 4, ttft_ms: Some(t) }).collect::<Vec<_>>());
        let slo = Slo { max_ttft_regression: Some(0.2), ..Slo::default() };
        let baseline = readings(&[100, 104, 98, 101, 99, 103, 97, 102, 100, 105, 96, 101]);
        // 50% slower on every request: significant and past 20%.
        let slow = readings(&[150, 155, 148, 152, 149, 151, 147, 153, 150, 156, 146, 152]);
        let (regression, p) = compare_ttft(&slow, &baseline).unwrap();
        assert!(regression > 0.45 && p < 0.001, "{regression} {p}");
        assert!(matches!(analyze(&slow, &slo, 10, &baseline), Verdict::Fail(why) if why.contains("Mann-Whitney")));
        // The same distribution: no significant difference.
        let same = readings(&[101, 99, 103, 98, 100, 102, 97, 104, 100, 96, 105, 101]);
        assert!(compare_ttft(&same, &baseline).unwrap().1 > 0.05);
        assert_eq!(analyze(&same, &slo, 10, &baseline), Verdict::Pass);
        // Two slow requests among few: 50% above the median is not enough evidence.
        let noisy = readings(&[100, 150, 98, 151]);
        assert_eq!(analyze(&noisy, &slo, 4, &readings(&[100, 99, 101, 150])), Verdict::Pass);
        // Too little baseline to compare: it waits.
        assert!(matches!(analyze(&slow, &slo, 10, &readings(&[100])), Verdict::Inconclusive(why) if why.contains("baseline")));
    }

    #[test]
    fn buckets_are_sticky_and_spread() {
        assert_eq!(bucket("chat", "ann"), bucket("chat", "ann"));
        let route = Route { name: "chat".into(), stable: "a".into(), canary: Some(("b".into(), 30)), shadow: None, rollout: None, updated_at: String::new() };
        let rollout = Rollout {
            steps: vec![5, 50, 100],
            bake_secs: 60,
            slo: Slo { max_error_rate: Some(0.1), max_ttft_p95_ms: Some(300), ..Slo::default() },
            min_requests: 10,
            failure_limit: 1,
            shadow_secs: 30,
            shadowing: true,
            step: 1,
            step_started_at: "t".into(),
            failures: 1,
        };
        assert_eq!(Rollout::from_json(&rollout.to_json()), Some(rollout));
        let on_canary = (0..1000).filter(|i| route.pick(bucket("chat", &format!("user{i}"))) == "b").count();
        assert!((220..380).contains(&on_canary), "{on_canary}");
    }
}
