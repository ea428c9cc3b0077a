//! The `mantle` binary: `serve` runs the server; every other subcommand is an HTTP client of a
//! running server (`--url`/`MANTLE_URL`, `--token`/`MANTLE_TOKEN`).

mod client;
mod extract;
mod pipelines;
mod routes;
mod scan;
mod transfer;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mantle", version, about = "A self-hosted model hub that is also the runtime")]
struct Cli {
    /// URL of the Mantle server.
    #[arg(long, global = true, env = "MANTLE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Access token.
    #[arg(long, global = true, env = "MANTLE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SQLite + local folder by default).
    Serve(ServeArgs),
    /// Read a PDF on stdin and write its text on stdout, under resource limits (the server runs
    /// this as a child process for vector-store ingestion).
    #[command(hide = true)]
    ExtractText,
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage orgs.
    #[command(subcommand)]
    Orgs(OrgsCommand),
    /// Manage tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Upload a folder as one commit (creates the repo if needed).
    Push {
        dir: PathBuf,
        repo: String,
        #[arg(short, long)]
        message: Option<String>,
        /// Repo type: model or dataset.
        #[arg(long = "type", default_value = "model")]
        kind: String,
        #[arg(long, default_value = "main")]
        branch: String,
        /// Create the repo as private if it does not exist.
        #[arg(long)]
        private: bool,
    },
    /// Download a repo at a revision into a folder.
    Pull {
        /// REPO or REPO@REVISION.
        repo: String,
        dir: PathBuf,
        #[arg(long = "type", default_value = "model")]
        kind: String,
    },
    /// List the files of a repo at a revision.
    Ls {
        /// REPO or REPO@REVISION.
        repo: String,
        #[arg(long = "type", default_value = "model")]
        kind: String,
    },
    /// Delete unreferenced blobs older than --min-age.
    Gc {
        /// Like 1h, 30m, 0s.
        #[arg(long, default_value = "1h")]
        min_age: String,
    },
    /// Verify or export the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Show the vetting verdict of a revision; exit code 1 when it is blocked.
    Vet {
        /// REPO or REPO@REVISION.
        repo: String,
        #[arg(long = "type", default_value = "model")]
        kind: String,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the CycloneDX 1.6 AI-BOM of a revision.
    Bom {
        /// REPO@REVISION.
        repo: String,
        #[arg(long = "type", default_value = "model")]
        kind: String,
        /// Output file (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Deploy one file of a vetted revision under a name (pinned to the commit).
    Deploy {
        name: String,
        /// REPO@REVISION (default revision: main).
        repo: String,
        #[arg(long = "type", default_value = "model")]
        kind: String,
        /// The file to serve (default: the first .gguf, else model.safetensors).
        #[arg(long)]
        file: Option<String>,
        /// Context length of each sequence, in tokens.
        #[arg(long, default_value_t = 2048)]
        context: u32,
        /// Sequences generated together (each gets its own KV cache of `context` tokens).
        #[arg(long, default_value_t = 8)]
        max_batch: u32,
        /// CPU threads of the engine.
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// Price of a million prompt tokens (for usage costs; default free).
        #[arg(long)]
        price_prompt: Option<f64>,
        /// Price of a million completion tokens.
        #[arg(long)]
        price_completion: Option<f64>,
        /// The longest an ordinary caller's Ollama `keep_alive` keeps the model resident, in seconds (default 300).
        #[arg(long)]
        keep_alive_max: Option<u64>,
        /// Default sampling temperature for requests that set none (default: the revision's
        /// generation_config.json, then the model file's recommendation, then the API's 1.0).
        #[arg(long)]
        temperature: Option<f32>,
        /// Default nucleus sampling mass.
        #[arg(long)]
        top_p: Option<f32>,
        /// Default top-k (0: off).
        #[arg(long)]
        top_k: Option<u32>,
        /// Default min-p.
        #[arg(long)]
        min_p: Option<f32>,
        /// Default repetition penalty (1: off).
        #[arg(long)]
        repetition_penalty: Option<f32>,
        /// Default answer length limit, in tokens, for requests that set none.
        #[arg(long)]
        max_tokens: Option<u32>,
        /// Seconds to wait for pending scans before giving up.
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
    /// List deployments.
    Deployments,
    /// Release routes: the names clients call, with canaries, promotions, rollbacks and history.
    #[command(subcommand)]
    Routes(routes::RouteCommand),
    /// Pipelines: pushes released through vetting, evaluations, gates and a canary.
    #[command(subcommand)]
    Pipelines(pipelines::PipelineCommand),
    /// Quotas per token, per user or per org: requests and tokens per minute, tokens per month.
    #[command(subcommand)]
    Quotas(QuotaCommand),
    /// Requests, tokens and cost: your own, or (with an admin token) anyone's.
    Usage {
        /// Only this org's members.
        #[arg(long)]
        org: Option<String>,
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        /// From this date or RFC 3339 time on.
        #[arg(long)]
        since: Option<String>,
        /// Before this date or time.
        #[arg(long)]
        until: Option<String>,
        /// Group by day, token, deployment or account.
        #[arg(long, default_value = "day")]
        by: String,
        /// Print the JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Remove a deployment.
    Undeploy { name: String },
    /// Show or change a namespace's vetting policy and overrides.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Scan local files or folders offline; exit code 1 when anything is unsafe.
    Scan {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print findings as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Config file (TOML); see the defaults in crates/server/src/default.toml.
    #[arg(long, env = "MANTLE_CONFIG")]
    config: Option<PathBuf>,
    /// Data folder (SQLite database, blobs, admin token).
    #[arg(long)]
    data: Option<String>,
    /// Address to listen on, HOST:PORT.
    #[arg(long)]
    addr: Option<String>,
    /// postgres://... for scale-out metadata.
    #[arg(long)]
    database_url: Option<String>,
    /// s3://BUCKET/PREFIX for scale-out blobs.
    #[arg(long)]
    blob_url: Option<String>,
    /// File holding the admin token.
    #[arg(long)]
    admin_token_file: Option<String>,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a user.
    Create {
        name: String,
        #[arg(long)]
        org: Option<String>,
    },
    /// List users and orgs.
    List,
}

#[derive(Subcommand)]
enum OrgsCommand {
    /// Create an org.
    Create { name: String },
    /// Add a user to an org.
    AddMember { org: String, user: String },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create a token; the secret is printed alone on the last line.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: Option<String>,
        /// Like 30d, 12h.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Revoke a token by id.
    Revoke { id: i64 },
    /// List tokens.
    List,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Show a namespace's policy and overrides.
    Get { namespace: String },
    /// Change a namespace's policy; unnamed settings keep their value.
    Set {
        namespace: String,
        #[arg(long)]
        allow_pickle: Option<bool>,
        /// Comma-separated licence ids, or "any".
        #[arg(long)]
        licenses: Option<String>,
        #[arg(long)]
        suspicious_blocks: Option<bool>,
    },
    /// Accept one finding on one blob, with a written justification.
    Override {
        namespace: String,
        #[arg(long)]
        sha256: String,
        #[arg(long)]
        code: String,
        #[arg(long, default_value = "")]
        subject: String,
        #[arg(long = "why")]
        justification: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain and check it against the signed checkpoints; exit code 1 names
    /// the first problem. With `--pubkey`, the rows and checkpoints are fetched and checked here,
    /// under a key you trust, so a tampered server or database cannot vouch for itself.
    Verify {
        /// A trusted audit public key (64 hex digits, or a file holding them), from `mantle audit
        /// pubkey`; repeat it for replicas that sign with keys of their own.
        #[arg(long)]
        pubkey: Vec<String>,
    },
    /// Sign the current chain head now and store the checkpoint.
    Checkpoint,
    /// Print the public key that audit checkpoints are signed with.
    Pubkey,
    /// Write the log as JSONL.
    Export {
        /// Only events at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Output file (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    if let Some(missing) = missing_cpu_features() {
        eprintln!("error: this CPU lacks {missing}; this mantle build (and llama.cpp inside it) needs an x86-64-v3 CPU (AVX2, FMA, F16C), see .cargo/config.toml");
        return std::process::ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::ExtractText) {
        return extract::run();
    }
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tower_http=warn,sqlx=warn".into())).with_writer(std::io::stderr).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("build the tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The instruction-set extensions the build assumes (from `-C target-cpu`) that this CPU lacks.
/// Checked first thing, so an old CPU gets a message instead of an illegal-instruction crash.
fn missing_cpu_features() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut missing = Vec::new();
        if cfg!(target_feature = "avx2") && !std::arch::is_x86_feature_detected!("avx2") {
            missing.push("AVX2");
        }
        if cfg!(target_feature = "fma") && !std::arch::is_x86_feature_detected!("fma") {
            missing.push("FMA");
        }
        if cfg!(target_feature = "f16c") && !std::arch::is_x86_feature_detected!("f16c") {
            missing.push("F16C");
        }
        if !missing.is_empty() {
            return Some(missing.join(", "));
        }
    }
    None
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let client = || client::Client::new(&cli.url, cli.token.clone());
    match cli.command {
        Command::ExtractText => unreachable!("handled before the runtime starts"),
        Command::Serve(args) => {
            let flags = server::FlagOverrides { addr: args.addr, data_dir: args.data, database_url: args.database_url, blob_url: args.blob_url, admin_token_file: args.admin_token_file };
            let raw = server::RawConfig::load(args.config.as_deref(), &flags)?;
            let config = server::Config::from_raw(raw)?;
            server::run(config, shutdown_signal()).await?;
        }
        Command::Users(UsersCommand::Create { name, org }) => {
            let account: api::admin::Account = client()?.post_json("/api/admin/users", &api::admin::CreateUser { name, org }).await?;
            println!("created user {} (id {})", account.name, account.id);
        }
        Command::Users(UsersCommand::List) => {
            let accounts: Vec<api::admin::Account> = client()?.get_json("/api/admin/users").await?;
            for a in accounts {
                println!("{:<6} {:<5} {}{}", a.id, a.kind, a.name, if a.is_admin { " (admin)" } else { "" });
            }
        }
        Command::Orgs(OrgsCommand::Create { name }) => {
            let account: api::admin::Account = client()?.post_json("/api/admin/orgs", &api::admin::CreateOrg { name }).await?;
            println!("created org {} (id {})", account.name, account.id);
        }
        Command::Orgs(OrgsCommand::AddMember { org, user }) => {
            let path = format!("/api/admin/orgs/{}/members", client::encode(&org));
            let _: serde_json::Value = client()?.post_json(&path, &api::admin::AddMember { user: user.clone() }).await?;
            println!("added {user} to {org}");
        }
        Command::Tokens(TokensCommand::Create { user, role, name, expires_in }) => {
            let token: api::admin::Token = client()?.post_json("/api/admin/tokens", &api::admin::CreateToken { user, role, name, expires_in }).await?;
            println!("created token {} for {} (role {}, expires {})", token.id, token.user, token.role, token.expires_at.as_deref().unwrap_or("never"));
            println!("{}", token.token.context("the server returned no token secret")?);
        }
        Command::Tokens(TokensCommand::Revoke { id }) => {
            let token: api::admin::Token = client()?.delete_json(&format!("/api/admin/tokens/{id}")).await?;
            println!("revoked token {} of {}", token.id, token.user);
        }
        Command::Tokens(TokensCommand::List) => {
            let tokens: Vec<api::admin::Token> = client()?.get_json("/api/admin/tokens").await?;
            for t in tokens {
                let state = if t.revoked_at.is_some() { "revoked" } else { "active" };
                println!("{:<6} {:<16} {:<6} {:<8} {:<20} expires {}", t.id, t.user, t.role, state, t.name, t.expires_at.as_deref().unwrap_or("never"));
            }
        }
        Command::Push { dir, repo, message, kind, branch, private } => {
            transfer::push(&client()?, &dir, &repo, &kind, &branch, message.as_deref(), private).await?;
        }
        Command::Pull { repo, dir, kind } => transfer::pull(&client()?, &repo, &kind, &dir).await?,
        Command::Ls { repo, kind } => transfer::ls(&client()?, &repo, &kind).await?,
        Command::Gc { min_age } => {
            let min_age = domain_duration_secs(&min_age)?;
            let report: api::admin::GcReport = client()?.post_json("/api/admin/gc", &api::admin::GcRequest { min_age_secs: Some(min_age) }).await?;
            println!(
                "gc: {} blobs seen, {} deleted, {} Xet files and {} xorbs deleted ({} bytes freed), {} temporary objects removed",
                report.blobs_seen, report.blobs_deleted, report.xet_files_deleted, report.xorbs_deleted, report.bytes_freed, report.temporary_deleted
            );
        }
        Command::Audit(AuditCommand::Verify { pubkey }) if !pubkey.is_empty() => {
            let keys: Vec<String> = pubkey.into_iter().map(|key| std::fs::read_to_string(&key).map_or(key, |text| text.trim().to_owned())).collect();
            let client = client()?;
            let checkpoints: Vec<api::admin::AuditCheckpoint> = client.get_json("/api/admin/audit/checkpoints").await?;
            let mut entries: Vec<api::admin::AuditEntry> = Vec::new();
            loop {
                let after = entries.last().map_or(0, |e| e.seq);
                let page: Vec<api::admin::AuditEntry> = client.get_json(&format!("/api/admin/audit?after={after}&limit=10000")).await?;
                if page.is_empty() {
                    break;
                }
                entries.extend(page);
            }
            let report = server::audit_log::verify_entries(&keys, &checkpoints, &entries);
            match report.broken {
                None => println!(
                    "audit log intact: {} events verified; {} checkpoints signed by a trusted key match through seq {} ({} by other keys left aside)",
                    report.checked,
                    checkpoints.len() - report.ignored,
                    report.verified_through.map_or_else(|| "none".to_owned(), |s| s.to_string()),
                    report.ignored
                ),
                Some(reason) => {
                    println!("audit log BROKEN: {reason} ({} events verified)", report.checked);
                    return Ok(std::process::ExitCode::from(1));
                }
            }
        }
        Command::Audit(AuditCommand::Checkpoint) => {
            let checkpoint: Option<api::admin::AuditCheckpoint> = client()?.post_json("/api/admin/audit/checkpoint", &serde_json::json!({})).await?;
            match checkpoint {
                Some(c) => println!("signed checkpoint at seq {} ({}): {}", c.seq, c.time, c.hash),
                None => println!("the audit log is empty: nothing to sign"),
            }
        }
        Command::Audit(AuditCommand::Pubkey) => {
            let key: api::admin::AuditPublicKey = client()?.get_json("/api/audit/public-key").await?;
            println!("{}", key.public_key);
        }
        Command::Audit(AuditCommand::Verify { .. }) => {
            let report: api::admin::AuditVerify = client()?.get_json("/api/admin/audit/verify").await?;
            if report.ok {
                println!("audit chain intact: {} events verified; signed checkpoints match through seq {}", report.checked, report.verified_through.map_or_else(|| "none".to_owned(), |s| s.to_string()));
            } else {
                println!("audit chain BROKEN at seq {}: {} ({} events verified before it)", report.broken_seq.unwrap_or(0), report.reason.unwrap_or_default(), report.checked);
                return Ok(std::process::ExitCode::from(1));
            }
        }
        Command::Audit(AuditCommand::Export { since, output }) => transfer::export_audit(&client()?, since.as_deref(), output.as_deref()).await?,
        Command::Vet { repo, kind, json } => {
            if !transfer::vet(&client()?, &repo, &kind, json).await? {
                return Ok(std::process::ExitCode::from(1));
            }
        }
        Command::Deploy { name, repo, kind, file, context, max_batch, threads, price_prompt, price_completion, keep_alive_max, temperature, top_p, top_k, min_p, repetition_penalty, max_tokens, wait } => {
            let sampling = api::admin::SamplingDefaults { temperature, top_p, top_k, min_p, repetition_penalty, max_tokens };
            let sampling = (sampling != api::admin::SamplingDefaults::default()).then_some(sampling);
            let (repo, revision) = repo.split_once('@').map(|(r, v)| (r.to_owned(), v.to_owned())).unwrap_or((repo.clone(), "main".to_owned()));
            let body = api::admin::CreateDeployment { name, repo, revision, kind: Some(kind), file, context, max_batch, threads, price_prompt, price_completion, keep_alive_max, sampling };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
            let created: api::admin::Deployment = loop {
                match client()?.post_json("/api/admin/deployments", &body).await {
                    Ok(created) => break created,
                    // Scans of a fresh push take a moment: wait for them rather than fail.
                    Err(err) if format!("{err:#}").contains("scans are still running") && std::time::Instant::now() < deadline => {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                    Err(err) => return Err(err),
                }
            };
            println!("deployed {} = {}@{} ({}, sha256 {})", created.name, created.repo, created.commit, created.file, created.sha256);
        }
        Command::Usage { org, account, since, until, by, json } => {
            let mut query = vec![format!("by={}", client::encode(&by))];
            for (key, value) in [("org", org), ("account", account), ("since", since), ("until", until)] {
                if let Some(value) = value {
                    query.push(format!("{key}={}", client::encode(&value)));
                }
            }
            let report: api::admin::UsageReport = client()?.get_json(&format!("/api/usage?{}", query.join("&"))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{:<24} {:>9} {:>7} {:>14} {:>14} {:>12}", by, "requests", "errors", "prompt tokens", "completion", "cost");
                for row in report.rows.iter().chain(std::iter::once(&api::admin::UsageRow { key: "total".into(), ..report.total.clone() })) {
                    println!("{:<24} {:>9} {:>7} {:>14} {:>14} {:>12.6}", row.key, row.requests, row.errors, row.prompt_tokens, row.completion_tokens, row.cost);
                }
            }
        }
        Command::Quotas(command) => {
            let subject = |token: Option<i64>, user: Option<String>, org: Option<String>| -> anyhow::Result<String> {
                match (token, user, org) {
                    (Some(id), None, None) => Ok(format!("token/{id}")),
                    (None, Some(user), None) => Ok(format!("user/{}", client::encode(&user))),
                    (None, None, Some(org)) => Ok(format!("org/{}", client::encode(&org))),
                    _ => anyhow::bail!("name exactly one of --token-id ID, --user USER or --org ORG"),
                }
            };
            match command {
                QuotaCommand::Set { token_id, user, org, rpm, tpm, monthly_tokens } => {
                    let body = api::admin::SetQuota { requests_per_minute: rpm, tokens_per_minute: tpm, tokens_per_month: monthly_tokens };
                    let quota: api::admin::Quota = client()?.put_json(&format!("/api/admin/quotas/{}", subject(token_id, user, org)?), &body).await?;
                    print_quota(&quota);
                }
                QuotaCommand::List => {
                    let quotas: Vec<api::admin::Quota> = client()?.get_json("/api/admin/quotas").await?;
                    for quota in &quotas {
                        print_quota(quota);
                    }
                }
                QuotaCommand::Clear { token_id, user, org } => {
                    let _: serde_json::Value = client()?.delete_json(&format!("/api/admin/quotas/{}", subject(token_id, user, org)?)).await?;
                    println!("cleared");
                }
            }
        }
        Command::Deployments => {
            let deployments: Vec<api::admin::Deployment> = client()?.get_json("/api/admin/deployments").await?;
            for d in deployments {
                let resident = if d.resident { "resident" } else { "not loaded" };
                // Resident: the defaults in effect, with the model file's own recommendation under the stored ones.
                let sampling = sampling_text(d.effective_sampling.as_ref().unwrap_or(&d.sampling));
                println!("{:<20} {}@{}  {}  context={} max_batch={} threads={}{sampling}  {resident}", d.name, d.repo, &d.commit[..12], d.file, d.context, d.max_batch, d.threads);
            }
        }
        Command::Routes(command) => routes::run(&client()?, command).await?,
        Command::Pipelines(command) => pipelines::run(&client()?, command).await?,
        Command::Undeploy { name } => {
            let _: serde_json::Value = client()?.delete_json(&format!("/api/admin/deployments/{}", client::encode(&name))).await?;
            println!("undeployed {name}");
        }
        Command::Bom { repo, kind, output } => transfer::bom(&client()?, &repo, &kind, output.as_deref()).await?,
        Command::Policy(PolicyCommand::Get { namespace }) => {
            let path = format!("/api/policies/{}", client::encode(&namespace));
            let policy: api::vetting::Policy = client()?.get_json(&path).await?;
            let overrides: Vec<api::vetting::Override> = client()?.get_json(&format!("{path}/overrides")).await?;
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "policy": policy, "overrides": overrides }))?);
        }
        Command::Policy(PolicyCommand::Set { namespace, allow_pickle, licenses, suspicious_blocks }) => {
            let path = format!("/api/policies/{}", client::encode(&namespace));
            let current: api::vetting::Policy = client()?.get_json(&path).await?;
            let allowed_licenses = match licenses.as_deref() {
                None => current.allowed_licenses,
                Some("any") | Some("") => None,
                Some(list) => Some(list.split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect()),
            };
            let new = api::vetting::Policy { allow_pickle: allow_pickle.unwrap_or(current.allow_pickle), allowed_licenses, suspicious_blocks: suspicious_blocks.unwrap_or(current.suspicious_blocks) };
            let saved: api::vetting::Policy = client()?.send(client()?.request(reqwest::Method::PUT, &path).json(&new)).await?.json().await?;
            println!("{}", serde_json::to_string_pretty(&saved)?);
        }
        Command::Policy(PolicyCommand::Override { namespace, sha256, code, subject, justification }) => {
            let path = format!("/api/policies/{}/overrides", client::encode(&namespace));
            let saved: api::vetting::Override = client()?.post_json(&path, &api::vetting::CreateOverride { sha256, code, subject, justification }).await?;
            println!("override {} accepts {} {} on {}", saved.id, saved.code, saved.subject, saved.sha256);
        }
        Command::Scan { paths, json } => {
            let unsafe_found = tokio::task::spawn_blocking(move || scan::scan_paths(&paths, json)).await??;
            if unsafe_found {
                return Ok(std::process::ExitCode::from(1));
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn domain_duration_secs(text: &str) -> anyhow::Result<i64> {
    if text == "0" || text == "0s" {
        return Ok(0);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let number: i64 = number.parse().with_context(|| format!("invalid duration {text:?}"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => anyhow::bail!("invalid duration {text:?}: use s, m, h or d"),
    };
    Ok(number * factor)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

#[derive(Subcommand)]
enum QuotaCommand {
    /// Sets (replaces) the limits of a token, a user or an org; limits not given are unlimited.
    Set {
        /// The token's id (`mantle tokens list`).
        #[arg(long)]
        token_id: Option<i64>,
        /// A user's name (all of the user's tokens count together).
        #[arg(long)]
        user: Option<String>,
        /// The org's name (its members' requests count together).
        #[arg(long)]
        org: Option<String>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u64>,
        /// Tokens (prompt and completion) per minute.
        #[arg(long)]
        tpm: Option<u64>,
        /// Tokens per calendar month (UTC).
        #[arg(long)]
        monthly_tokens: Option<u64>,
    },
    /// Lists every quota.
    List,
    /// Removes the quota of a token, a user or an org.
    Clear {
        /// The token's id (`mantle tokens list`).
        #[arg(long)]
        token_id: Option<i64>,
        /// A user's name (all of the user's tokens count together).
        #[arg(long)]
        user: Option<String>,
        /// The org's name (its members' requests count together).
        #[arg(long)]
        org: Option<String>,
    },
}

fn print_quota(quota: &api::admin::Quota) {
    let show = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
    println!("{} {:<20} rpm={} tpm={} monthly_tokens={}", quota.scope, quota.subject, show(quota.limits.requests_per_minute), show(quota.limits.tokens_per_minute), show(quota.limits.tokens_per_month));
}

/// A deployment's default sampling as `mantle deployments` shows it: ` temperature=0.2 top_p=0.9`.
fn sampling_text(s: &api::admin::SamplingDefaults) -> String {
    let mut out = String::new();
    let floats = [("temperature", s.temperature), ("top_p", s.top_p), ("min_p", s.min_p), ("repetition_penalty", s.repetition_penalty)];
    for (name, value) in floats {
        if let Some(value) = value {
            out.push_str(&format!(" {name}={value}"));
        }
    }
    for (name, value) in [("top_k", s.top_k), ("max_tokens", s.max_tokens)] {
        if let Some(value) = value {
            out.push_str(&format!(" {name}={value}"));
        }
    }
    out
}
