//! `mantle pipelines`: the routes that release pushes through a pipeline, and the runs.

use clap::Subcommand;

use crate::client::{self, Client};

#[derive(Subcommand)]
pub(crate) enum PipelineCommand {
    /// Routes bound to a repo's pushes.
    List,
    /// Pipeline runs, newest first.
    Runs {
        /// Only this route's.
        #[arg(long)]
        route: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One run: its stages, gates and log.
    Show {
        id: String,
        /// Print the JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a running run (a canary it started keeps being analysed).
    Cancel { id: String },
}

fn line(run: &api::admin::PipelineRun) {
    let reason = run.state["reason"].as_str().map(|r| format!("  {r}")).unwrap_or_default();
    println!("{}  {:<10} {:<9} {:<9} {}@{}  {}{reason}", run.id, run.route, run.status, run.stage, run.repo, &run.commit[..12.min(run.commit.len())], run.created_at);
}

pub(crate) async fn run(client: &Client, command: PipelineCommand) -> anyhow::Result<()> {
    match command {
        PipelineCommand::List => {
            let bindings: Vec<api::admin::PipelineBinding> = client.get_json("/api/admin/pipelines").await?;
            for b in bindings {
                let from = if b.spec.is_some() { "spec on the route" } else { ".mantle/pipeline.yaml" };
                println!("{:<20} <- {} {}@{}  ({from}; bound by {} at {})", b.route, b.repo_type, b.repo, b.branch, b.bound_by, b.bound_at);
            }
        }
        PipelineCommand::Runs { route, limit } => {
            let mut path = format!("/api/admin/pipelines/runs?limit={limit}");
            if let Some(route) = route {
                path.push_str(&format!("&route={}", client::encode(&route)));
            }
            let runs: Vec<api::admin::PipelineRun> = client.get_json(&path).await?;
            runs.iter().for_each(line);
        }
        PipelineCommand::Show { id, json } => {
            let run: api::admin::PipelineRun = client.get_json(&format!("/api/admin/pipelines/runs/{}", client::encode(&id))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
                return Ok(());
            }
            line(&run);
            if let Some(candidate) = run.state["candidate"].as_str() {
                println!("    candidate: {candidate}   production: {}", run.state["production"].as_str().unwrap_or("-"));
            }
            for gate in run.state["gates"].as_array().into_iter().flatten() {
                let verdict = if gate["passed"].as_bool() == Some(true) { "pass" } else { "FAIL" };
                let relative = match gate["regression"].as_f64() {
                    Some(r) => format!("  regression {r:.4} (95% {:.4} to {:.4}, allowed {})", gate["regression_ci95"][0].as_f64().unwrap_or(f64::NAN), gate["regression_ci95"][1].as_f64().unwrap_or(f64::NAN), gate["max_regression"]),
                    None => String::new(),
                };
                println!(
                    "    gate {} {} {}: {:.4} on {} items{relative}  {verdict}",
                    gate["suite"].as_str().unwrap_or("?"),
                    gate["grader"].as_str().unwrap_or("?"),
                    gate["metric"].as_str().unwrap_or("?"),
                    gate["candidate"].as_f64().unwrap_or(f64::NAN),
                    gate["items"]
                );
            }
            for entry in run.state["log"].as_array().into_iter().flatten() {
                println!("    {}  {:<9} {}", entry["at"].as_str().unwrap_or(""), entry["stage"].as_str().unwrap_or(""), entry["message"].as_str().unwrap_or(""));
            }
        }
        PipelineCommand::Cancel { id } => {
            let run: api::admin::PipelineRun = client.post_json(&format!("/api/admin/pipelines/runs/{}/cancel", client::encode(&id)), &serde_json::json!({})).await?;
            line(&run);
        }
    }
    Ok(())
}
