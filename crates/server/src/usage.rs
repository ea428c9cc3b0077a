//! Usage accounting: every inference request becomes one `UsageRecord` (account, token,
//! deployment, API, outcome, tokens, latency, cost at the deployment's prices), queued here and
//! written by one background task in batches, so a request never waits on the database for it.
//! The queue is bounded; a record that finds it full, or that the database refuses after
//! retries, is dropped with an ERROR log and counted in `/metrics`, never silently. Graceful
//! shutdown waits for the queue to be written. Everything written is in the metadata store,
//! shared by replicas, and `GET /api/usage` reports from there.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use domain::meta::{Charge, MetaStore, UsageRecord};
use domain::quota::Admission;

/// The most records written in one transaction.
const BATCH: usize = 512;
/// How long the writer waits for more records before writing what it has.
const LINGER: std::time::Duration = std::time::Duration::from_millis(100);
/// Records queued at most: minutes of a busy server's requests while the database is slow.
const QUEUE: usize = 65_536;

/// A cheap handle to the usage writer.
#[derive(Clone)]
pub struct UsageLog {
    queue: tokio::sync::mpsc::Sender<(UsageRecord, Option<Admission>)>,
    /// Records queued and not yet written (or given up on).
    pending: Arc<AtomicUsize>,
    written: Arc<tokio::sync::Notify>,
    /// Records lost: the queue was full, or the database refused them after retries.
    dropped: Arc<AtomicUsize>,
}

impl UsageLog {
    /// Starts the writer task; with `store_records` false it only counts completion tokens
    /// against quotas.
    pub fn start(meta: Arc<dyn MetaStore>, store_records: bool) -> Self {
        let (queue, mut inbox) = tokio::sync::mpsc::channel::<(UsageRecord, Option<Admission>)>(QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(tokio::sync::Notify::new());
        let dropped = Arc::new(AtomicUsize::new(0));
        let (pending_seen, written_seen, dropped_seen) = (pending.clone(), written.clone(), dropped.clone());
        tokio::spawn(async move {
            let mut items = Vec::with_capacity(BATCH);
            while inbox.recv_many(&mut items, BATCH).await > 0 {
                // Let a batch gather for a moment: one transaction (one fsync) for many records
                // rather than one per request.
                tokio::time::sleep(LINGER).await;
                while items.len() < BATCH {
                    match inbox.try_recv() {
                        Ok(item) => items.push(item),
                        Err(_) => break,
                    }
                }
                // Tokens go to the quota windows the requests were admitted in, in the same write.
                let charges: Vec<Charge> = items.iter().filter_map(|(record, admission)| admission.as_ref().map(|a| a.token_charges(record.prompt_tokens + record.completion_tokens))).flatten().collect();
                let count = items.len();
                let batch: Vec<UsageRecord> = if store_records {
                    items.drain(..).map(|(record, _)| record).collect()
                } else {
                    items.clear();
                    Vec::new()
                };
                let mut attempt = 0;
                loop {
                    match meta.record_usage(&batch, &charges).await {
                        Ok(()) => break,
                        Err(err) if attempt < 5 => {
                            attempt += 1;
                            tracing::warn!("failed to write {} usage records (attempt {attempt}): {err}", batch.len());
                            tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                        }
                        Err(err) => {
                            tracing::error!("dropped {count} usage records after repeated failures: {err}");
                            dropped_seen.fetch_add(count, Ordering::AcqRel);
                            break;
                        }
                    }
                }
                pending_seen.fetch_sub(count, Ordering::AcqRel);
                written_seen.notify_waiters();
            }
        });
        UsageLog { queue, pending, written, dropped }
    }

    /// Queues one record, with the quota admission its completion tokens count against.
    pub fn record(&self, record: UsageRecord, admission: Option<Admission>) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(err) = self.queue.try_send((record, admission)) {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::AcqRel);
            let (why, (record, _)) = match err {
                tokio::sync::mpsc::error::TrySendError::Full(item) => ("the queue is full", item),
                tokio::sync::mpsc::error::TrySendError::Closed(item) => ("the writer stopped", item),
            };
            tracing::error!(account = %record.account, deployment = %record.deployment, prompt_tokens = record.prompt_tokens, completion_tokens = record.completion_tokens, "dropped a usage record: {why}");
        }
    }

    /// Records lost so far (queue full or database failures), for `/metrics`.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Acquire)
    }

    /// Waits until every record queued so far is written (tests, shutdown).
    pub async fn flush(&self) {
        loop {
            let written = self.written.notified();
            if self.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            written.await;
        }
    }
}
