//! Signed checkpoints of the audit chain. The hash chain alone proves the rows agree with each
//! other, not that nobody with database access dropped the newest rows or rewrote the whole
//! chain consistently. So the chain head is signed with an Ed25519 key kept outside the database
//! (a file or `MANTLE_AUDIT_KEY`) and the signed checkpoint is written to the blob store,
//! periodically and on demand; `verify` checks rows against checkpoints under a public key the
//! verifier brings (CloudTrail's signed digest files work the same way).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use api::admin::AuditCheckpoint;
use base64::Engine as _;
use domain::audit::{AuditRecord, ChainVerifier};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

use crate::AppState;

/// Where checkpoints live in the blob store.
const PREFIX: &str = "audit/checkpoints";
/// Checkpoints read for a verification: the newest one alone covers every row up to it (each
/// row's hash covers all before it), a few more survive the newest ones being deleted.
const CHECKPOINTS_READ: usize = 16;

/// The key that signs checkpoints.
pub struct AuditSigner {
    key: SigningKey,
}

impl AuditSigner {
    /// The key from `MANTLE_AUDIT_KEY` (hex seed), else from `file` (default
    /// `DATA_DIR/audit-signing.key`), created there (mode 0600, through a rename) if absent.
    pub fn load_or_create(file: Option<&Path>, data_dir: &Path) -> anyhow::Result<Self> {
        if let Ok(seed) = std::env::var("MANTLE_AUDIT_KEY") {
            return Self::from_hex(seed.trim()).context("read MANTLE_AUDIT_KEY");
        }
        let path: PathBuf = file.map_or_else(|| data_dir.join("audit-signing.key"), Path::to_path_buf);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_hex(text.trim()).with_context(|| format!("read the audit key {}", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                use rand::RngCore as _;
                let mut seed = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut seed);
                write_private(&path, &hex::encode(seed)).with_context(|| format!("write the audit key {}", path.display()))?;
                tracing::info!(file = %path.display(), "generated the audit signing key");
                Ok(AuditSigner { key: SigningKey::from_bytes(&seed) })
            }
            Err(err) => Err(err).with_context(|| format!("read the audit key {}", path.display())),
        }
    }

    fn from_hex(text: &str) -> anyhow::Result<Self> {
        let seed: [u8; 32] = hex::decode(text).ok().and_then(|bytes| bytes.try_into().ok()).context("an audit key is 64 hex digits (a 32-byte Ed25519 seed)")?;
        Ok(AuditSigner { key: SigningKey::from_bytes(&seed) })
    }

    /// Hex of the public key.
    pub fn public_key(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    fn sign(&self, seq: i64, hash: &str, time: &str) -> AuditCheckpoint {
        let signature = self.key.sign(message(seq, hash, time).as_bytes());
        AuditCheckpoint { seq, hash: hash.to_owned(), time: time.to_owned(), signature: base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()), public_key: self.public_key() }
    }
}

/// The exact bytes a checkpoint signs.
fn message(seq: i64, hash: &str, time: &str) -> String {
    format!("mantle-audit-checkpoint/v1\nseq={seq}\nhash={hash}\ntime={time}\n")
}

/// Signs the current chain head and stores the checkpoint; `None` when the log is empty.
pub async fn checkpoint(state: &AppState) -> Result<Option<AuditCheckpoint>, domain::Error> {
    let Some(head) = state.hub.audit_head().await? else { return Ok(None) };
    let signed = state.audit_signer.sign(head.seq, &head.hash, &domain::now_rfc3339());
    let key = format!("{PREFIX}/{:020}-{}.json", signed.seq, chrono::Utc::now().timestamp_millis());
    let bytes = serde_json::to_vec(&signed).map_err(domain::Error::internal)?;
    state.hub.put_record(&key, bytes.into()).await?;
    tracing::info!(seq = signed.seq, "wrote a signed audit checkpoint");
    Ok(Some(signed))
}

/// The newest stored checkpoints, oldest first (keys sort by sequence number); an unreadable
/// object is skipped with a warning, so junk cannot hide the others.
pub async fn checkpoints(state: &AppState) -> Result<Vec<AuditCheckpoint>, domain::Error> {
    let records = state.hub.records(PREFIX, CHECKPOINTS_READ).await?;
    Ok(records.iter().filter_map(|(key, bytes)| serde_json::from_slice(bytes).map_err(|err| tracing::warn!(key, "skipped an unreadable audit checkpoint: {err}")).ok()).collect())
}

/// Writes a checkpoint every `interval` while the chain grows, until `shutdown`.
pub async fn run_checkpoints(state: AppState, interval: std::time::Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut last = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        match state.hub.audit_head().await {
            Ok(Some(head)) if last != Some(head.seq) => match checkpoint(&state).await {
                Ok(written) => last = written.map(|c| c.seq),
                Err(err) => tracing::error!("failed to write an audit checkpoint: {err}"),
            },
            Ok(_) => {}
            Err(err) => tracing::error!("failed to read the audit chain head: {err}"),
        }
    }
}

/// What checking the rows against the checkpoints found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verification {
    /// Rows whose links were checked.
    pub checked: u64,
    /// The first problem, if any.
    pub broken: Option<String>,
    /// The newest checkpoint signed by a trusted key that the rows agree with.
    pub verified_through: Option<i64>,
    /// Checkpoints signed by keys not trusted here (another replica's own key, or a forgery):
    /// they prove nothing and are left aside.
    pub ignored: usize,
}

/// Checks the audit rows (all of them, oldest first) for an unbroken chain, then against every
/// checkpoint that names one of the `trusted` public keys (hex): it must carry a valid signature
/// by that key, and the row at its sequence number must exist with exactly its hash. Dropping
/// rows a checkpoint covers, or rewriting the chain (even consistently), fails; rows after the
/// newest checkpoint are only as good as the chain. Replicas that share one key
/// (`MANTLE_AUDIT_KEY`) are all checked under it; with a key each, trust each replica's key.
pub fn verify(trusted: &[String], checkpoints: &[AuditCheckpoint], rows: &[AuditRecord]) -> Verification {
    let mut check = CheckpointCheck::new(trusted, checkpoints);
    for row in rows {
        if !check.row(row) {
            break;
        }
    }
    check.finish()
}

/// `verify` over exported entries (what `mantle audit verify --pubkey` fetches): the server wrote
/// each row's details as compact JSON, which is what they serialize back to.
pub fn verify_entries(trusted: &[String], checkpoints: &[AuditCheckpoint], entries: &[api::admin::AuditEntry]) -> Verification {
    let rows: Vec<AuditRecord> = entries
        .iter()
        .map(|e| AuditRecord { seq: e.seq, time: e.time.clone(), actor: e.actor.clone(), action: e.action.clone(), target: e.target.clone(), details: e.details.to_string(), prev_hash: e.prev_hash.clone(), hash: e.hash.clone() })
        .collect();
    verify(trusted, checkpoints, &rows)
}

/// `verify` fed one row at a time (the server pages through its own log).
pub struct CheckpointCheck {
    chain: ChainVerifier,
    /// Trusted checkpoints not yet matched with their row, by sequence number.
    pending: std::collections::BTreeMap<i64, Vec<AuditCheckpoint>>,
    verification: Verification,
}

impl CheckpointCheck {
    /// Checks the trusted checkpoints' signatures up front.
    pub fn new(trusted: &[String], checkpoints: &[AuditCheckpoint]) -> Self {
        let mut check = CheckpointCheck { chain: ChainVerifier::default(), pending: Default::default(), verification: Verification::default() };
        let mut keys = std::collections::HashMap::new();
        for text in trusted {
            let text = text.trim().to_ascii_lowercase();
            let Some(key) = hex::decode(&text).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).and_then(|b| VerifyingKey::from_bytes(&b).ok()) else {
                check.verification.broken = Some(format!("the public key {text:?} is not 64 hex digits of an Ed25519 key"));
                return check;
            };
            keys.insert(text, key);
        }
        for checkpoint in checkpoints {
            let Some(key) = keys.get(&checkpoint.public_key.trim().to_ascii_lowercase()) else {
                check.verification.ignored += 1;
                continue;
            };
            let signature = base64::engine::general_purpose::STANDARD.decode(&checkpoint.signature).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()).map(|b| ed25519_dalek::Signature::from_bytes(&b));
            if signature.is_none_or(|signature| key.verify(message(checkpoint.seq, &checkpoint.hash, &checkpoint.time).as_bytes(), &signature).is_err()) {
                check.verification.broken = Some(format!("the checkpoint at seq {} ({}) is not signed by this key", checkpoint.seq, checkpoint.time));
                return check;
            }
            check.pending.entry(checkpoint.seq).or_default().push(checkpoint.clone());
        }
        check
    }

    /// Checks the next row; `false` once something is broken.
    pub fn row(&mut self, row: &AuditRecord) -> bool {
        if self.verification.broken.is_some() {
            return false;
        }
        if let Err(broken) = self.chain.check(row) {
            self.verification.broken = Some(format!("the chain breaks at seq {}: {}", broken.seq, broken.reason));
            return false;
        }
        // Checkpoints below this row's seq never met their row: it was dropped.
        if let Some((&seq, checkpoints)) = self.pending.range(..row.seq).next() {
            self.verification.broken = Some(format!("row {seq} is covered by the checkpoint of {} but missing: rows were dropped", checkpoints[0].time));
            return false;
        }
        for checkpoint in self.pending.remove(&row.seq).unwrap_or_default() {
            if checkpoint.hash != row.hash {
                self.verification.broken = Some(format!("row {} does not have the hash signed at {}: the chain was rewritten", row.seq, checkpoint.time));
                return false;
            }
            self.verification.verified_through = self.verification.verified_through.max(Some(row.seq));
        }
        true
    }

    /// The outcome; checkpoints past the last row mean the newest rows were dropped.
    pub fn finish(mut self) -> Verification {
        self.verification.checked = self.chain.checked;
        if self.verification.broken.is_none() {
            if let Some((seq, checkpoints)) = self.pending.iter().next() {
                self.verification.broken = Some(format!("row {seq} is covered by the checkpoint of {} but missing: the newest rows were dropped", checkpoints[0].time));
            }
        }
        self.verification
    }
}

/// Verifies this server's own log against its own checkpoints, page by page (site admin).
pub async fn verify_stored(state: &AppState, principal: &domain::auth::Principal) -> Result<Verification, domain::Error> {
    principal.site_admin()?;
    let mut check = CheckpointCheck::new(&[state.audit_signer.public_key()], &checkpoints(state).await?);
    let mut after = 0;
    'pages: loop {
        let rows = state.hub.audit_page(principal, after, 1000).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in &rows {
            if !check.row(row) {
                break 'pages;
            }
        }
    }
    Ok(check.finish())
}

/// Writes `text` to `path` readable by the owner only, through a temporary file and a rename.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use domain::audit::{AuditEvent, AuditRecord, GENESIS_HASH};

    use super::{verify, AuditSigner};

    /// `n` chained rows whose details carry `tag` (a different tag is a consistent rewrite).
    fn chain(n: i64, tag: &str) -> Vec<AuditRecord> {
        let mut rows: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let prev = rows.last().map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
            rows.push(AuditRecord::next(&prev, seq, format!("2026-11-29T00:00:{seq:02}.000Z"), &AuditEvent::new("ann", "repo.commit", "model:ann/x", serde_json::json!({ "tag": tag }))));
        }
        rows
    }

    fn check(rows: &[AuditRecord], checkpoints: &[api::admin::AuditCheckpoint], key: &str, broken: Option<&str>, through: Option<i64>) {
        let got = verify(&[key.to_owned()], checkpoints, rows);
        match broken {
            None => assert_eq!(got.broken, None),
            Some(needle) => assert!(got.broken.as_deref().is_some_and(|b| b.contains(needle)), "{got:?} should mention {needle:?}"),
        }
        assert_eq!(got.verified_through, through, "{got:?}");
    }

    #[test]
    fn r11_checkpoints_catch_dropped_rows_and_rewritten_chains() {
        let signer = AuditSigner::from_hex(&"11".repeat(32)).unwrap();
        let key = signer.public_key();
        let rows = chain(10, "real");
        let at_6 = signer.sign(6, &rows[5].hash, "t6");
        let at_10 = signer.sign(10, &rows[9].hash, "t10");
        check(&rows, &[at_6.clone(), at_10.clone()], &key, None, Some(10));
        // Rows written after the newest checkpoint are covered by the chain alone.
        check(&chain(12, "real"), &[at_6.clone(), at_10.clone()], &key, None, Some(10));
        // The newest rows dropped: the chain alone still holds, the checkpoint does not.
        check(&rows[..8], &[at_6.clone(), at_10.clone()], &key, Some("newest rows were dropped"), Some(6));
        // The whole chain rewritten consistently: every link holds, the signed hash does not.
        check(&chain(10, "forged"), &[at_6.clone(), at_10.clone()], &key, Some("rewritten"), None);
        // A checkpoint altered by whoever holds the storage: the trusted key did not sign that.
        let mut altered = at_10.clone();
        altered.hash = chain(10, "forged")[9].hash.clone();
        check(&chain(10, "forged"), &[altered], &key, Some("not signed by this key"), None);
        // One made with another key (say the forger's own) proves nothing and is left aside: the
        // rewritten chain is still caught by the trusted checkpoint.
        let forger = AuditSigner::from_hex(&"22".repeat(32)).unwrap();
        let forged = forger.sign(10, &chain(10, "forged")[9].hash, "t10");
        check(&chain(10, "forged"), &[forged.clone(), at_6.clone()], &key, Some("rewritten"), None);
        let got = verify(std::slice::from_ref(&key), &[forged, at_10.clone()], &rows);
        assert_eq!((got.broken, got.verified_through, got.ignored), (None, Some(10), 1));
        check(&rows, &[], "not a key", Some("public key"), None);
    }
}
