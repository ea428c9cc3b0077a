//! Serving metrics per deployment, rendered in Prometheus' text format at `/metrics`: requests by
//! outcome, prompt and completion tokens, time to first token, inter-token latency and request
//! duration histograms; queue depth, batch size and loaded models are read live from the runtime.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use engine::InferError;

use crate::runtime::Runtime;

const TTFT_BUCKETS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const ITL_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
const DURATION_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// A cheap handle to this process's serving metrics.
#[derive(Clone, Default)]
pub struct Metrics {
    // A std Mutex: updates are short and never cross an await.
    inner: Arc<Mutex<BTreeMap<String, DeploymentMetrics>>>,
}

#[derive(Default)]
struct DeploymentMetrics {
    requests: BTreeMap<&'static str, u64>,
    prompt_tokens: u64,
    completion_tokens: u64,
    ttft: Histogram,
    itl: Histogram,
    duration: Histogram,
}

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.len() != bounds.len() {
            self.counts = vec![0; bounds.len()];
        }
        for (bound, count) in bounds.iter().zip(self.counts.iter_mut()) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, deployment: &str, bounds: &[f64]) {
        for (i, bound) in bounds.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{deployment=\"{deployment}\",le=\"{bound}\"}} {}", self.counts.get(i).copied().unwrap_or(0));
        }
        let _ = writeln!(out, "{name}_bucket{{deployment=\"{deployment}\",le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{deployment=\"{deployment}\"}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{deployment=\"{deployment}\"}} {}", self.count);
    }
}

/// Times one request; dropped without an outcome, it counts as cancelled (the client left).
pub struct RequestTimer {
    metrics: Metrics,
    deployment: String,
    started: Instant,
    last_token: Option<Instant>,
    // A Cell: `reject` is called from a closure that only borrows the timer.
    outcome: std::cell::Cell<Option<&'static str>>,
    /// Who to bill, when the request is accounted for.
    bill: Option<Bill>,
    tokens: (usize, usize),
    /// The engine's running counts of the request's generations, charged when it ends any
    /// other way than finishing (a client that left still received the work done so far).
    work: Vec<std::sync::Arc<engine::Progress>>,
}

/// The usage record a request leaves when its timer drops.
struct Bill {
    log: crate::usage::UsageLog,
    account: String,
    token_id: i64,
    api: &'static str,
    settings: domain::meta::EngineSettings,
    admission: Option<domain::quota::Admission>,
}

impl Metrics {
    /// Starts timing a request to `deployment`.
    pub fn start(&self, deployment: &str) -> RequestTimer {
        RequestTimer { metrics: self.clone(), deployment: deployment.to_owned(), started: Instant::now(), last_token: None, outcome: std::cell::Cell::new(None), bill: None, tokens: (0, 0), work: Vec::new() }
    }

    fn update(&self, deployment: &str, change: impl FnOnce(&mut DeploymentMetrics)) {
        let mut all = self.inner.lock().expect("metrics not poisoned");
        // Called per generated token: allocate the key only the first time a deployment is seen.
        match all.get_mut(deployment) {
            Some(metrics) => change(metrics),
            None => change(all.entry(deployment.to_owned()).or_default()),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, runtime: &Runtime, usage: &crate::usage::UsageLog) -> String {
        let mut out = String::new();
        let all = self.inner.lock().expect("metrics not poisoned");
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(&mut out, "mantle_requests_total", "counter", "Inference requests by deployment and outcome (ok, rejected, failed, cancelled).");
        for (name, m) in all.iter() {
            for (outcome, count) in &m.requests {
                let _ = writeln!(out, "mantle_requests_total{{deployment=\"{name}\",outcome=\"{outcome}\"}} {count}");
            }
        }
        family(&mut out, "mantle_prompt_tokens_total", "counter", "Prompt tokens of completed requests.");
        for (name, m) in all.iter() {
            let _ = writeln!(out, "mantle_prompt_tokens_total{{deployment=\"{name}\"}} {}", m.prompt_tokens);
        }
        family(&mut out, "mantle_completion_tokens_total", "counter", "Generated tokens of completed requests.");
        for (name, m) in all.iter() {
            let _ = writeln!(out, "mantle_completion_tokens_total{{deployment=\"{name}\"}} {}", m.completion_tokens);
        }
        family(&mut out, "mantle_time_to_first_token_seconds", "histogram", "Time from request to the first generated text.");
        for (name, m) in all.iter() {
            m.ttft.render(&mut out, "mantle_time_to_first_token_seconds", name, TTFT_BUCKETS);
        }
        family(&mut out, "mantle_inter_token_latency_seconds", "histogram", "Time between successive pieces of generated text.");
        for (name, m) in all.iter() {
            m.itl.render(&mut out, "mantle_inter_token_latency_seconds", name, ITL_BUCKETS);
        }
        family(&mut out, "mantle_request_duration_seconds", "histogram", "Time from request to its last token.");
        for (name, m) in all.iter() {
            m.duration.render(&mut out, "mantle_request_duration_seconds", name, DURATION_BUCKETS);
        }
        drop(all);
        let resident = runtime.resident();
        family(&mut out, "mantle_loaded_models", "gauge", "Deployments loaded in this process.");
        let _ = writeln!(out, "mantle_loaded_models {}", resident.len());
        family(&mut out, "mantle_queue_depth", "gauge", "Requests admitted and not finished (running and waiting).");
        for served in &resident {
            let _ = writeln!(out, "mantle_queue_depth{{deployment=\"{}\"}} {}", served.deployment.name, served.in_flight());
        }
        family(&mut out, "mantle_batch_size", "gauge", "Sequences in the engine's latest step.");
        for served in &resident {
            let _ = writeln!(out, "mantle_batch_size{{deployment=\"{}\"}} {}", served.deployment.name, served.batch_size());
        }
        family(&mut out, "mantle_model_load_seconds", "gauge", "How long loading each resident deployment took.");
        for served in &resident {
            let _ = writeln!(out, "mantle_model_load_seconds{{deployment=\"{}\"}} {}", served.deployment.name, served.load_seconds);
        }
        family(&mut out, "mantle_model_memory_bytes", "gauge", "Memory each resident deployment holds (weights and KV cache, estimated), counted against runtime.memory_budget.");
        for served in &resident {
            let _ = writeln!(out, "mantle_model_memory_bytes{{deployment=\"{}\"}} {}", served.deployment.name, served.memory_bytes);
        }
        family(&mut out, "mantle_model_evictions_total", "counter", "Deployments unloaded to make room under the memory budget.");
        for (name, count) in runtime.evictions() {
            let _ = writeln!(out, "mantle_model_evictions_total{{deployment=\"{name}\"}} {count}");
        }
        family(&mut out, "mantle_usage_records_dropped_total", "counter", "Usage records lost (writer queue full, or the database refused them after retries).");
        let _ = writeln!(out, "mantle_usage_records_dropped_total {}", usage.dropped());
        family(&mut out, "mantle_runner_restarts_total", "counter", "Deployments loaded again after their runner thread failed.");
        for (name, count) in runtime.restarts() {
            let _ = writeln!(out, "mantle_runner_restarts_total{{deployment=\"{name}\"}} {count}");
        }
        out
    }
}

impl RequestTimer {
    /// Accounts the request to `principal` in the usage log when it ends (any outcome), at the
    /// deployment's prices; `api` names the route (`openai.chat`, `ollama.embed`, ...).
    /// `admission` is the quota admission the completion tokens count against.
    pub fn billed(mut self, log: &crate::usage::UsageLog, principal: &domain::auth::Principal, api: &'static str, settings: &domain::meta::EngineSettings, admission: domain::quota::Admission) -> Self {
        if let domain::auth::Principal::User(user) = principal {
            let admission = (!admission.subjects.is_empty()).then_some(admission);
            self.bill = Some(Bill { log: log.clone(), account: user.name.clone(), token_id: user.token_id, api, settings: settings.clone(), admission });
        }
        self
    }

    /// Counts a generation's work for the bill if the request does not finish.
    pub fn track(&mut self, progress: std::sync::Arc<engine::Progress>) {
        self.work.push(progress);
    }

    /// A piece of text arrived.
    pub fn token(&mut self) {
        let now = Instant::now();
        let (deployment, previous, started) = (&self.deployment, self.last_token, self.started);
        self.metrics.update(deployment, |m| match previous {
            None => m.ttft.observe(TTFT_BUCKETS, (now - started).as_secs_f64()),
            Some(previous) => m.itl.observe(ITL_BUCKETS, (now - previous).as_secs_f64()),
        });
        self.last_token = Some(now);
    }

    /// The request completed with these token counts.
    pub fn finish(&mut self, prompt_tokens: usize, completion_tokens: usize) {
        self.tokens = (prompt_tokens, completion_tokens);
        let elapsed = self.started.elapsed().as_secs_f64();
        self.metrics.update(&self.deployment, |m| {
            m.prompt_tokens += prompt_tokens as u64;
            m.completion_tokens += completion_tokens as u64;
            m.duration.observe(DURATION_BUCKETS, elapsed);
        });
        self.outcome.set(Some("ok"));
    }

    /// The engine refused the request (full queue, or a prompt it cannot take).
    pub fn reject(&self, err: &InferError) {
        let outcome = match err {
            InferError::Overloaded => "rejected",
            InferError::Invalid(_) => "invalid",
            InferError::Unavailable(_) => "failed",
        };
        self.outcome.set(Some(outcome));
    }

    /// Generation failed.
    pub fn fail(&mut self) {
        self.outcome.set(Some("failed"));
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        let outcome = self.outcome.get().unwrap_or("cancelled");
        self.metrics.update(&self.deployment, |m| *m.requests.entry(outcome).or_default() += 1);
        if let Some(bill) = self.bill.take() {
            // A finished request is charged what it reported; a cancelled or failed one what
            // the engine computed for it before it ended.
            let (prompt, completion) = match outcome {
                "ok" => (self.tokens.0 as u64, self.tokens.1 as u64),
                _ => self.work.iter().fold((0, 0), |(p, c), work| (p + work.prefilled() as u64, c + work.generated() as u64)),
            };
            if outcome != "ok" && prompt + completion > 0 {
                self.metrics.update(&self.deployment, |m| {
                    m.prompt_tokens += prompt;
                    m.completion_tokens += completion;
                });
            }
            bill.log.record(
                domain::meta::UsageRecord {
                    at: domain::format_time(chrono::Utc::now()),
                    account: bill.account,
                    token_id: bill.token_id,
                    deployment: std::mem::take(&mut self.deployment),
                    api: bill.api.to_owned(),
                    outcome: outcome.to_owned(),
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    cost_micros: bill.settings.cost_micros(prompt, completion),
                },
                bill.admission,
            );
        }
    }
}
