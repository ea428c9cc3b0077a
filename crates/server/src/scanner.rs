//! The scan worker: claims jobs from the queue in the metadata store, copies the blob to a local
//! temporary file (scanners need to seek), runs the `vet` scanners on a blocking thread, and stores
//! the result. Failures retry with exponential backoff; several replicas share one queue.

use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

use domain::vetting::{Finding, Level, ScanJob, ScanResult};
use futures::StreamExt as _;

use crate::AppState;

/// Attempts before a job is marked failed for good.
const MAX_ATTEMPTS: i64 = 5;
/// How long a claim holds before another worker may take the job over; a running scan renews it
/// every third of that, so only a worker that died loses its job.
const LEASE_SECS: i64 = 600;

/// Runs until `shutdown` is notified; wakes early when `wake` is notified (a commit queued work).
pub async fn run_worker(state: AppState, wake: std::sync::Arc<tokio::sync::Notify>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        match state.hub.claim_scan_job(LEASE_SECS).await {
            Ok(Some(job)) => {
                process(&state, job).await;
                continue;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!("failed to claim a scan job: {err:#}"),
        }
        tokio::select! {
            () = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Processes every job that is due now, then returns how many it processed (for tests and tools).
pub async fn scan_pending(state: &AppState) -> anyhow::Result<usize> {
    let mut n = 0;
    while let Some(job) = state.hub.claim_scan_job(LEASE_SECS).await? {
        process(state, job).await;
        n += 1;
    }
    Ok(n)
}

async fn process(state: &AppState, job: ScanJob) {
    let version = &state.hub.config.scanner_version;
    // A blob already scanned by this version (under this hint) is not scanned again.
    match state.hub.scan_results(&[job.sha256.to_string()], version).await {
        Ok(results) => {
            if let Some(done) = results.into_iter().find(|r| r.hint == job.hint) {
                if let Err(err) = state.hub.finish_scan_job(&job, &done).await {
                    tracing::warn!("failed to close scan job {}: {err:#}", job.id);
                }
                return;
            }
        }
        Err(err) => tracing::warn!("failed to look up scan results: {err:#}"),
    }
    let started = std::time::Instant::now();
    let Some(outcome) = scan_holding_lease(state, &job, LEASE_SECS).await else {
        tracing::warn!(sha256 = %job.sha256, "another worker took over this scan (the lease lapsed); leaving it to them");
        return;
    };
    match outcome {
        Ok(result) => {
            tracing::info!(sha256 = %job.sha256, format = %result.format, findings = result.findings.len(), elapsed_ms = started.elapsed().as_millis() as u64, "scanned blob");
            if let Err(err) = state.hub.finish_scan_job(&job, &result).await {
                tracing::warn!("failed to store the scan of {}: {err:#}", job.sha256);
            }
        }
        Err(err) => {
            let run_after = (job.attempts < MAX_ATTEMPTS).then(|| {
                let backoff = chrono::Duration::seconds(2i64.pow(job.attempts.clamp(1, 10) as u32) * 5);
                domain::format_time(chrono::Utc::now() + backoff)
            });
            tracing::warn!(sha256 = %job.sha256, attempt = job.attempts, "failed to scan blob: {err:#}");
            if let Err(err) = state.hub.retry_scan_job(&job, &format!("{err:#}"), run_after).await {
                tracing::warn!("failed to reschedule scan job {}: {err:#}", job.id);
            }
        }
    }
}

/// Scans the job's blob while renewing its lease; `None` if the lease was lost to another worker.
async fn scan_holding_lease(state: &AppState, job: &ScanJob, lease_secs: i64) -> Option<anyhow::Result<ScanResult>> {
    let scan = scan_blob(state, job);
    tokio::pin!(scan);
    let mut renew = tokio::time::interval(Duration::from_secs((lease_secs / 3).max(1) as u64));
    renew.tick().await; // the first tick is immediate; the claim itself just set the lease
    loop {
        tokio::select! {
            outcome = &mut scan => return Some(outcome),
            _ = renew.tick() => match state.hub.renew_scan_job(job, lease_secs).await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(err) => tracing::warn!("failed to renew the lease of scan job {}: {err:#}", job.id),
            },
        }
    }
}

async fn scan_blob(state: &AppState, job: &ScanJob) -> anyhow::Result<ScanResult> {
    let dir = state.config.data_dir.join("scan-tmp");
    tokio::fs::create_dir_all(&dir).await?;
    let temp = tempfile::NamedTempFile::new_in(&dir)?;
    // Written through tokio's file, so a multi-gigabyte copy never blocks an async worker.
    let mut writer = tokio::fs::File::from_std(temp.as_file().try_clone()?);
    let mut stream = state.hub.blob_stream(&job.sha256, None).await?;
    while let Some(chunk) = stream.next().await {
        writer.write_all(&chunk?).await?;
    }
    writer.flush().await?;
    drop(writer);
    let name = if job.hint.is_empty() { "blob".to_owned() } else { format!("blob.{}", job.hint) };
    let report = tokio::task::spawn_blocking(move || {
        let mut file = temp.reopen()?;
        vet::scan_file(&name, &mut file, &vet::Limits::default())
    })
    .await??;
    Ok(ScanResult {
        sha256: job.sha256.clone(),
        hint: job.hint.clone(),
        scanner_version: state.hub.config.scanner_version.clone(),
        format: report.format.as_str().to_owned(),
        findings: report.findings.into_iter().map(finding).collect(),
        scanned_at: domain::now_rfc3339(),
    })
}

fn finding(f: vet::Finding) -> Finding {
    let level = match f.verdict {
        vet::Verdict::Safe => Level::Safe,
        vet::Verdict::Suspicious => Level::Suspicious,
        vet::Verdict::Error => Level::Error,
        vet::Verdict::Unsafe => Level::Unsafe,
    };
    Finding { level, code: f.code.to_owned(), offset: f.offset, member: f.member, subject: f.subject, reason: f.reason }
}
