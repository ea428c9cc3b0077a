//! The tamper-evident audit log: each row's hash covers its content and the previous row's hash,
//! so editing, deleting or reordering any row breaks the chain from there on.

use sha2::{Digest as _, Sha256};

/// The `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A change to record, built by the domain and appended by the store in the change's transaction.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// A new event.
    pub fn new(actor: impl Into<String>, action: &str, target: impl Into<String>, details: serde_json::Value) -> Self {
        AuditEvent { actor: actor.into(), action: action.to_owned(), target: target.into(), details }
    }
}

/// One stored row of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// The details as the exact JSON text that was hashed.
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of a row: sha256 over length-prefixed fields, so no two field splits collide.
pub fn chain_hash(prev_hash: &str, seq: i64, time: &str, actor: &str, action: &str, target: &str, details: &str) -> String {
    let mut hasher = Sha256::new();
    let seq = seq.to_string();
    for field in [prev_hash, seq.as_str(), time, actor, action, target, details] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

impl AuditRecord {
    /// Builds the next row after `prev_hash` at `seq`, computing its hash.
    pub fn next(prev_hash: &str, seq: i64, time: String, event: &AuditEvent) -> Self {
        let details = event.details.to_string();
        let hash = chain_hash(prev_hash, seq, &time, &event.actor, &event.action, &event.target, &details);
        AuditRecord { seq, time, actor: event.actor.clone(), action: event.action.clone(), target: event.target.clone(), details, prev_hash: prev_hash.to_owned(), hash }
    }
}

/// The first place where the chain does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: String,
}

/// Walks the rows in order and checks every link. Feed rows in `seq` order, starting with the first row.
#[derive(Debug)]
pub struct ChainVerifier {
    prev_hash: String,
    prev_seq: i64,
    /// How many rows were checked.
    pub checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { prev_hash: GENESIS_HASH.to_owned(), prev_seq: 0, checked: 0 }
    }
}

impl ChainVerifier {
    /// Checks the next row; on the first broken link, says which row and why.
    pub fn check(&mut self, row: &AuditRecord) -> Result<(), BrokenLink> {
        let broken = |reason: String| Err(BrokenLink { seq: row.seq, reason });
        if row.seq != self.prev_seq + 1 {
            return broken(format!("expected seq {} after {}, found {} (a row was removed or inserted)", self.prev_seq + 1, self.prev_seq, row.seq));
        }
        if row.prev_hash != self.prev_hash {
            return broken("prev_hash does not match the previous row's hash".to_owned());
        }
        let expected = chain_hash(&row.prev_hash, row.seq, &row.time, &row.actor, &row.action, &row.target, &row.details);
        if row.hash != expected {
            return broken("hash does not match the row's content (the row was edited)".to_owned());
        }
        self.prev_hash = row.hash.clone();
        self.prev_seq = row.seq;
        self.checked += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let event = AuditEvent::new("alice", "repo.create", format!("model:alice/m{seq}"), serde_json::json!({"private": seq % 2 == 0}));
                let row = AuditRecord::next(&prev, seq, format!("2026-01-01T00:00:0{seq}.000Z"), &event);
                prev = row.hash.clone();
                row
            })
            .collect()
    }

    fn check(rows: &[AuditRecord]) -> Result<u64, BrokenLink> {
        let mut verifier = ChainVerifier::default();
        for row in rows {
            verifier.check(row)?;
        }
        Ok(verifier.checked)
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(check(&chain(5)), Ok(5));
    }

    #[test]
    fn edited_row_is_named() {
        let mut rows = chain(5);
        rows[2].target = "model:mallory/m3".into();
        assert_eq!(check(&rows).unwrap_err().seq, 3);
    }

    #[test]
    fn removed_row_is_named() {
        let mut rows = chain(5);
        rows.remove(1);
        assert_eq!(check(&rows).unwrap_err().seq, 3);
    }

    #[test]
    fn rehashed_row_breaks_next_link() {
        let mut rows = chain(5);
        rows[1].details = "{}".into();
        rows[1].hash = chain_hash(&rows[1].prev_hash, 2, &rows[1].time, &rows[1].actor, &rows[1].action, &rows[1].target, &rows[1].details);
        assert_eq!(check(&rows).unwrap_err().seq, 3);
    }
}
