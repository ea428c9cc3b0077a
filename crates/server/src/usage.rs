//! Usage accounting: every inference request becomes one `UsageRecord` (account, token,
//! deployment, API, outcome, tokens, latency, cost at the deployment's prices), queued here and
//! written by one background task in batches, so a request never waits on the database for it.
//! Records still queued when the process dies are lost; everything written is in the metadata
//! store, shared by replicas, and `GET /api/usage` reports from there.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use domain::meta::{MetaStore, UsageRecord};

/// The most records written in one transaction.
const BATCH: usize = 512;

/// A cheap handle to the usage writer.
#[derive(Clone)]
pub struct UsageLog {
    queue: tokio::sync::mpsc::UnboundedSender<UsageRecord>,
    /// Records queued and not yet written (or given up on).
    pending: Arc<AtomicUsize>,
    written: Arc<tokio::sync::Notify>,
}

impl UsageLog {
    /// Starts the writer task.
    pub fn start(meta: Arc<dyn MetaStore>) -> Self {
        let (queue, mut inbox) = tokio::sync::mpsc::unbounded_channel::<UsageRecord>();
        let pending = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(tokio::sync::Notify::new());
        let (pending_seen, written_seen) = (pending.clone(), written.clone());
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while inbox.recv_many(&mut batch, BATCH).await > 0 {
                let mut attempt = 0;
                loop {
                    match meta.record_usage(&batch).await {
                        Ok(()) => break,
                        Err(err) if attempt < 5 => {
                            attempt += 1;
                            tracing::warn!("failed to write {} usage records (attempt {attempt}): {err}", batch.len());
                            tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                        }
                        Err(err) => {
                            tracing::error!("dropped {} usage records after repeated failures: {err}", batch.len());
                            break;
                        }
                    }
                }
                pending_seen.fetch_sub(batch.len(), Ordering::AcqRel);
                batch.clear();
                written_seen.notify_waiters();
            }
        });
        UsageLog { queue, pending, written }
    }

    /// Queues one record.
    pub fn record(&self, record: UsageRecord) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.queue.send(record).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
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
