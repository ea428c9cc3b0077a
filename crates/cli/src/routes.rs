//! `mantle routes`: release routes (the name clients put in `model`), their canaries,
//! promotions, rollbacks and history.

use clap::Subcommand;

use crate::client::{self, Client};

#[derive(Subcommand)]
pub(crate) enum RouteCommand {
    /// List routes.
    List,
    /// Create a route, or point it at one deployment (ending any canary).
    Set {
        name: String,
        /// The deployment that answers every caller.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        note: Note,
    },
    /// Send a share of the route's callers to a deployment (each caller stays on its side).
    Canary {
        name: String,
        #[arg(long)]
        to: String,
        /// Percent of the callers, 1 to 99 (without --steps).
        #[arg(long, required_unless_present = "steps")]
        weight: Option<u8>,
        /// Roll out in steps under analysis instead: increasing percentages ending at 100
        /// (e.g. 5,25,50,100); promoted after the last, rolled back when an SLO breaks.
        #[arg(long, value_delimiter = ',')]
        steps: Option<Vec<u8>>,
        /// Seconds each step runs before it is analysed.
        #[arg(long, default_value_t = 300)]
        bake: u64,
        /// SLO: the most failed requests over all.
        #[arg(long)]
        max_error_rate: Option<f64>,
        /// SLO: the longest request latency at the 95th percentile.
        #[arg(long)]
        max_latency_p95_ms: Option<u64>,
        /// SLO: the longest time to first token at the 95th percentile.
        #[arg(long)]
        max_ttft_p95_ms: Option<u64>,
        /// SLO: the fewest completion tokens per second of request time.
        #[arg(long)]
        min_tokens_per_sec: Option<f64>,
        /// SLO against the stable deployment: the largest fraction by which the canary's median
        /// time to first token may exceed it when significantly slower (Mann-Whitney, p < 0.05).
        #[arg(long)]
        max_ttft_regression: Option<f64>,
        /// Requests a step needs before it is judged.
        #[arg(long, default_value_t = 20)]
        min_requests: u64,
        /// Failed analyses tolerated before the rollback.
        #[arg(long, default_value_t = 0)]
        failure_limit: u32,
        /// With --steps: seconds of shadow traffic first (a copy of every request, answers
        /// discarded, held to the same SLOs).
        #[arg(long, default_value_t = 0)]
        shadow_secs: u64,
        #[command(flatten)]
        note: Note,
    },
    /// Copy a share of the route's requests to a deployment (its answers are discarded; its
    /// outcomes are recorded, in the usage log at no cost and in /metrics).
    Shadow {
        name: String,
        #[arg(long, required_unless_present = "stop")]
        to: Option<String>,
        /// Percent of the requests copied.
        #[arg(long, default_value_t = 100)]
        percent: u8,
        /// Stop copying.
        #[arg(long, conflicts_with = "to")]
        stop: bool,
        #[command(flatten)]
        note: Note,
    },
    /// Make the canary the route's deployment for every caller.
    Promote {
        name: String,
        #[command(flatten)]
        note: Note,
    },
    /// End the canary, or go back to the deployment the route had before.
    Rollback {
        name: String,
        #[command(flatten)]
        note: Note,
    },
    /// Delete a route (its history stays).
    Delete {
        name: String,
        #[command(flatten)]
        note: Note,
    },
    /// Release every push to a repo's branch to this route through a pipeline: the repo's
    /// `.mantle/pipeline.yaml`, or the file given with --spec (then the repo's is not read).
    Pipeline {
        name: String,
        /// `namespace/name` of the repo whose pushes are released.
        #[arg(long, required_unless_present = "remove")]
        repo: Option<String>,
        #[arg(long, default_value = "main")]
        branch: String,
        #[arg(long, default_value = "model")]
        repo_type: String,
        /// A pipeline file set on the route itself.
        #[arg(long)]
        spec: Option<std::path::PathBuf>,
        /// Unbind the route's pipeline instead.
        #[arg(long, conflicts_with_all = ["repo", "spec"])]
        remove: bool,
    },
    /// Every change of a route: who, when, from which revision to which, why, on what evidence.
    History {
        name: String,
        /// Print the JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Why a route changes.
#[derive(clap::Args)]
pub(crate) struct Note {
    /// Why (kept in the history).
    #[arg(long)]
    reason: Option<String>,
    /// Eval runs that justify the change (comma-separated ids); their results are kept.
    #[arg(long, value_delimiter = ',')]
    evidence: Vec<String>,
}

impl Note {
    fn wire(self) -> api::admin::RouteNote {
        api::admin::RouteNote { reason: self.reason, eval_runs: self.evidence }
    }
}

fn show(route: &api::admin::Route) {
    let shadow = route.shadow.as_ref().map(|s| format!("  shadow {s} ({}% copied)", route.shadow_percent)).unwrap_or_default();
    match &route.canary {
        Some(canary) => println!("{:<20} {} ({}%)  canary {} ({}%){shadow}", route.name, route.stable, 100 - u32::from(route.canary_percent), canary, route.canary_percent),
        None => println!("{:<20} {} (100%){shadow}", route.name, route.stable),
    }
}

fn side(state: &serde_json::Value) -> String {
    if state.is_null() {
        return "-".into();
    }
    let part = |v: &serde_json::Value| format!("{} [{}]", v["deployment"].as_str().unwrap_or("?"), v["revision"].as_str().unwrap_or("?"));
    let shadow = state.get("shadow").filter(|s| !s.is_null()).map(|s| format!(" (shadow {} on {}% of requests)", part(s), s["percent"])).unwrap_or_default();
    match state.get("canary").filter(|c| !c.is_null()) {
        Some(canary) => format!("{} + canary {} at {}%{shadow}", part(&state["stable"]), part(canary), canary["percent"]),
        None => format!("{}{shadow}", part(&state["stable"])),
    }
}

pub(crate) async fn run(client: &Client, command: RouteCommand) -> anyhow::Result<()> {
    let path = |name: &str| format!("/api/admin/routes/{}", client::encode(name));
    match command {
        RouteCommand::List => {
            let routes: Vec<api::admin::Route> = client.get_json("/api/admin/routes").await?;
            routes.iter().for_each(show);
        }
        RouteCommand::Set { name, to, note } => {
            let note = note.wire();
            let body = api::admin::SetRoute { stable: to, reason: note.reason, eval_runs: note.eval_runs };
            show(&client.put_json(&path(&name), &body).await?);
        }
        RouteCommand::Canary { name, to, weight, steps, bake, max_error_rate, max_latency_p95_ms, max_ttft_p95_ms, min_tokens_per_sec, max_ttft_regression, min_requests, failure_limit, shadow_secs, note } => {
            let note = note.wire();
            let analysis = steps.map(|steps| api::admin::RolloutAnalysis {
                steps,
                bake_secs: Some(bake),
                max_error_rate,
                max_latency_p95_ms,
                max_ttft_p95_ms,
                min_tokens_per_sec,
                max_ttft_regression,
                min_requests: Some(min_requests),
                failure_limit: Some(failure_limit),
                shadow_secs: Some(shadow_secs),
            });
            let body = api::admin::CanaryRoute { deployment: to, percent: weight, analysis, reason: note.reason, eval_runs: note.eval_runs };
            show(&client.post_json(&format!("{}/canary", path(&name)), &body).await?);
        }
        RouteCommand::Shadow { name, to, percent, stop: _, note } => {
            let note = note.wire();
            let body = api::admin::ShadowRoute { deployment: to, percent: Some(percent), reason: note.reason, eval_runs: note.eval_runs };
            show(&client.post_json(&format!("{}/shadow", path(&name)), &body).await?);
        }
        RouteCommand::Promote { name, note } => show(&client.post_json(&format!("{}/promote", path(&name)), &note.wire()).await?),
        RouteCommand::Rollback { name, note } => show(&client.post_json(&format!("{}/rollback", path(&name)), &note.wire()).await?),
        RouteCommand::Delete { name, note } => {
            let _: serde_json::Value = client.delete_json_with(&path(&name), &note.wire()).await?;
            println!("deleted {name}");
        }
        RouteCommand::Pipeline { name, remove: true, .. } => {
            let _: serde_json::Value = client.delete_json(&format!("{}/pipeline", path(&name))).await?;
            println!("route {name} has no pipeline now");
        }
        RouteCommand::Pipeline { name, repo, branch, repo_type, spec, remove: false } => {
            let spec = spec.map(|file| std::fs::read_to_string(&file).map_err(|err| anyhow::anyhow!("read {}: {err}", file.display()))).transpose()?;
            let body = api::admin::BindPipeline { repo: repo.unwrap_or_default(), repo_type: Some(repo_type), branch: Some(branch), spec };
            let bound: api::admin::PipelineBinding = client.put_json(&format!("{}/pipeline", path(&name)), &body).await?;
            let from = if bound.spec.is_some() { "the spec set on the route" } else { ".mantle/pipeline.yaml in each pushed revision" };
            println!("pushes to {} {}@{} now release to route {} through {from}", bound.repo_type, bound.repo, bound.branch, bound.route);
        }
        RouteCommand::History { name, json } => {
            let history: Vec<api::admin::RouteChange> = client.get_json(&format!("{}/history", path(&name))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&history)?);
                return Ok(());
            }
            for change in history {
                let runs: Vec<String> = change.evidence["eval_runs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| format!("{} {} passed {}/{}", r["run"].as_str().unwrap_or("?"), r["status"].as_str().unwrap_or("?"), r["result_counts"]["passed"], r["result_counts"]["total"]))
                    .collect();
                println!("{}  {:<8} {:<9} {} -> {}", change.at, change.actor, change.action, side(&change.from), side(&change.to));
                if !change.reason.is_empty() {
                    println!("    reason: {}", change.reason);
                }
                for run in runs {
                    println!("    evidence: {run}");
                }
            }
        }
    }
    Ok(())
}
