//! Serving metrics per deployment, in the OpenMetrics text format at `/metrics` (through
//! `prometheus-client`, which escapes labels and keeps counters in atomics): requests by outcome,
//! prompt and completion tokens, time to first token, inter-token latency and request duration
//! histograms; queue depth, batch size, loaded models, memory, evictions and restarts are read
//! live from the runtime on each scrape. A request takes its deployment's histograms once, when it
//! starts, so a generated token touches only that deployment's histogram, never a process-wide lock.

use std::time::Instant;

use engine::InferError;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::runtime::Runtime;

const TTFT_BUCKETS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const ITL_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
const DURATION_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// A metric's labels: `deployment` and, for requests, `outcome`.
type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// A cheap handle to this process's serving metrics.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<Labels, Counter>,
    prompt_tokens: Family<Labels, Counter>,
    completion_tokens: Family<Labels, Counter>,
    ttft: HistogramFamily,
    itl: HistogramFamily,
    duration: HistogramFamily,
    /// Xorb bytes received (accepted uploads) and newly stored, by this process.
    xet_received: Counter,
    xet_stored: Counter,
    xet_reconstructions: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            prompt_tokens: Family::default(),
            completion_tokens: Family::default(),
            ttft: Family::new_with_constructor(|| Histogram::new(TTFT_BUCKETS.iter().copied())),
            itl: Family::new_with_constructor(|| Histogram::new(ITL_BUCKETS.iter().copied())),
            duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS.iter().copied())),
            xet_received: Counter::default(),
            xet_stored: Counter::default(),
            xet_reconstructions: Counter::default(),
        }
    }
}

fn deployment_labels(deployment: &str) -> Labels {
    vec![("deployment", deployment.to_owned())]
}

/// Times one request; dropped without an outcome, it counts as cancelled (the client left).
pub struct RequestTimer {
    metrics: Metrics,
    deployment: String,
    labels: Labels,
    /// This deployment's histograms, taken once.
    ttft: Histogram,
    itl: Histogram,
    started: Instant,
    /// When the first text came (time to first token, kept in the usage record).
    first_token: Option<Instant>,
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
        let labels = deployment_labels(deployment);
        let ttft = self.ttft.get_or_create(&labels).clone();
        let itl = self.itl.get_or_create(&labels).clone();
        RequestTimer { metrics: self.clone(), deployment: deployment.to_owned(), labels, ttft, itl, started: Instant::now(), first_token: None, last_token: None, outcome: std::cell::Cell::new(None), bill: None, tokens: (0, 0), work: Vec::new() }
    }

    /// A xorb upload was accepted: `size` bytes received, stored anew or not.
    pub fn xorb_uploaded(&self, size: u64, inserted: bool) {
        self.xet_received.inc_by(size);
        if inserted {
            self.xet_stored.inc_by(size);
        }
    }

    /// A reconstruction was handed out.
    pub fn reconstruction_served(&self) {
        self.xet_reconstructions.inc();
    }

    /// The exposition (OpenMetrics text), with what the runtime and the usage log hold now.
    pub fn render(&self, runtime: &Runtime, usage: &crate::usage::UsageLog) -> String {
        let mut registry = Registry::default();
        registry.register("mantle_requests", "Inference requests by deployment and outcome (ok, rejected, invalid, failed, cancelled).", self.requests.clone());
        registry.register("mantle_prompt_tokens", "Prompt tokens of requests (a cancelled or failed one: those computed).", self.prompt_tokens.clone());
        registry.register("mantle_completion_tokens", "Generated tokens of requests (a cancelled or failed one: those computed).", self.completion_tokens.clone());
        registry.register("mantle_time_to_first_token_seconds", "Time from request to the first generated text.", self.ttft.clone());
        registry.register("mantle_inter_token_latency_seconds", "Time between successive pieces of generated text.", self.itl.clone());
        registry.register("mantle_request_duration_seconds", "Time from request to its last token.", self.duration.clone());
        registry.register("mantle_xet_received_bytes", "Bytes of xorbs received through accepted Xet uploads.", self.xet_received.clone());
        registry.register("mantle_xet_stored_bytes", "Bytes of xorbs stored anew (not already held).", self.xet_stored.clone());
        registry.register("mantle_xet_reconstructions", "File reconstructions handed to Xet clients.", self.xet_reconstructions.clone());
        registry.register_collector(Box::new(Live { runtime: runtime.clone(), usage: usage.clone() }));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

/// What is read from the runtime and the usage log at each scrape.
struct Live {
    runtime: Runtime,
    usage: crate::usage::UsageLog,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

/// One family of values labelled by deployment.
fn encode_family<M: prometheus_client::encoding::EncodeMetric>(encoder: &mut DescriptorEncoder, name: &str, help: &str, kind: MetricType, values: Vec<(String, M)>) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (deployment, value) in values {
        value.encode(family.encode_family(&deployment_labels(&deployment))?)?;
    }
    Ok(())
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let resident = self.runtime.resident();
        let per = |value: &dyn Fn(&crate::runtime::Served) -> i64| resident.iter().map(|s| (s.deployment.name.clone(), ConstGauge::new(value(s)))).collect::<Vec<_>>();
        let seconds = resident.iter().map(|s| (s.deployment.name.clone(), ConstGauge::new(s.load_seconds))).collect::<Vec<_>>();
        let counts = |values: Vec<(String, u64)>| values.into_iter().map(|(name, n)| (name, ConstCounter::new(n))).collect::<Vec<_>>();
        ConstGauge::new(resident.len() as i64).encode(encoder.encode_descriptor("mantle_loaded_models", "Deployments loaded in this process.", None, MetricType::Gauge)?)?;
        encode_family(&mut encoder, "mantle_queue_depth", "Requests admitted and not finished (running and waiting).", MetricType::Gauge, per(&|s| s.in_flight() as i64))?;
        encode_family(&mut encoder, "mantle_batch_size", "Sequences in the engine's latest step.", MetricType::Gauge, per(&|s| s.batch_size() as i64))?;
        encode_family(&mut encoder, "mantle_model_load_seconds", "How long loading each resident deployment took.", MetricType::Gauge, seconds)?;
        encode_family(
            &mut encoder,
            "mantle_model_memory_bytes",
            "Memory each resident deployment holds (weights and KV cache, estimated), counted against runtime.memory_budget.",
            MetricType::Gauge,
            per(&|s| i64::try_from(s.memory_bytes).unwrap_or(i64::MAX)),
        )?;
        encode_family(&mut encoder, "mantle_model_evictions", "Deployments unloaded to make room under the memory budget.", MetricType::Counter, counts(self.runtime.evictions()))?;
        encode_family(&mut encoder, "mantle_runner_restarts", "Deployments loaded again after their runner thread failed.", MetricType::Counter, counts(self.runtime.restarts()))?;
        ConstCounter::new(self.usage.dropped() as u64).encode(encoder.encode_descriptor("mantle_usage_records_dropped", "Usage records lost (writer queue full, or the database refused them after retries).", None, MetricType::Counter)?)?;
        Ok(())
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

    /// Accounts a shadow copy of a request in the usage log: under the account `shadow` (not the
    /// caller's: its requests and quotas are its own), API `shadow`, at no cost.
    pub fn shadowed(mut self, log: &crate::usage::UsageLog, settings: &domain::meta::EngineSettings) -> Self {
        let settings = domain::meta::EngineSettings { price_prompt_micros: 0, price_completion_micros: 0, ..settings.clone() };
        self.bill = Some(Bill { log: log.clone(), account: "shadow".into(), token_id: 0, api: "shadow", settings, admission: None });
        self
    }

    /// Counts a generation's work for the bill if the request does not finish.
    pub fn track(&mut self, progress: std::sync::Arc<engine::Progress>) {
        self.work.push(progress);
    }

    /// A piece of text arrived.
    pub fn token(&mut self) {
        let now = Instant::now();
        match self.last_token {
            None => {
                self.ttft.observe((now - self.started).as_secs_f64());
                self.first_token = Some(now);
            }
            Some(previous) => self.itl.observe((now - previous).as_secs_f64()),
        }
        self.last_token = Some(now);
    }

    /// The request completed with these token counts.
    pub fn finish(&mut self, prompt_tokens: usize, completion_tokens: usize) {
        self.tokens = (prompt_tokens, completion_tokens);
        self.metrics.prompt_tokens.get_or_create(&self.labels).inc_by(prompt_tokens as u64);
        self.metrics.completion_tokens.get_or_create(&self.labels).inc_by(completion_tokens as u64);
        self.metrics.duration.get_or_create(&self.labels).observe(self.started.elapsed().as_secs_f64());
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
        let mut labels = self.labels.clone();
        labels.push(("outcome", outcome.to_owned()));
        self.metrics.requests.get_or_create(&labels).inc();
        if let Some(bill) = self.bill.take() {
            // A finished request is charged what it reported; a cancelled or failed one what
            // the engine computed for it before it ended.
            let (prompt, completion) = match outcome {
                "ok" => (self.tokens.0 as u64, self.tokens.1 as u64),
                _ => self.work.iter().fold((0, 0), |(p, c), work| (p + work.prefilled() as u64, c + work.generated() as u64)),
            };
            if outcome != "ok" && prompt + completion > 0 {
                self.metrics.prompt_tokens.get_or_create(&self.labels).inc_by(prompt);
                self.metrics.completion_tokens.get_or_create(&self.labels).inc_by(completion);
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
                    ttft_ms: self.first_token.map(|at| u64::try_from((at - self.started).as_millis()).unwrap_or(u64::MAX)),
                    cost_micros: bill.settings.cost_micros(prompt, completion),
                },
                bill.admission,
            );
        }
    }
}
