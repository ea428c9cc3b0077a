//! `Hub`: garbage collection and audit verification.

use super::*;

impl Hub {
    /// Deletes blobs no commit references and abandoned temporary objects, both only when older
    /// than `min_age`, so uploads that are not yet committed survive. Site admin only.
    pub async fn gc(&self, principal: &Principal, min_age: chrono::Duration) -> Result<GcReport> {
        let admin = principal.site_admin()?;
        let cutoff = chrono::Utc::now() - min_age;
        // Multipart parts live at least as long as the URLs that upload them.
        let url_lifetime = chrono::Duration::try_seconds(i64::try_from(self.config.upload_url_ttl_secs).unwrap_or(i64::MAX)).unwrap_or(chrono::Duration::days(3650));
        let parts_cutoff = cutoff.min(chrono::Utc::now() - url_lifetime - chrono::Duration::hours(1));
        let referenced = self.meta.referenced_blobs().await?;
        let mut report = GcReport::default();
        for object in self.blobs.list_blobs().await? {
            report.blobs_seen += 1;
            let Some(sha256) = &object.sha256 else { continue };
            if object.last_modified > cutoff || referenced.contains(sha256.as_str()) {
                continue;
            }
            // Written again since the listing (an upload of the same bytes): not garbage.
            if self.blobs.modified(sha256).await?.is_none_or(|modified| modified > cutoff) {
                continue;
            }
            // Claim it in the serialized write path: a commit that landed since the listing wins;
            // one that comes later is refused while the tombstone stands, so no commit can ever
            // name a deleted object. Writers of the same bytes meanwhile are told to retry.
            let Some(claim) = self.meta.condemn_blob(sha256.as_str(), &stale_claims()).await? else { continue };
            if let Err(err) = self.blobs.delete_key(&object.key).await {
                // The object stays: lift the claim, so commits and uploads of it are not refused.
                self.meta.clear_tombstone(&claim).await?;
                return Err(err);
            }
            self.meta.blob_deleted(&claim).await?;
            report.blobs_deleted += 1;
            report.bytes_freed += object.size;
        }
        for object in self.blobs.list_temporary().await? {
            let cutoff = if object.key.starts_with("parts/") { parts_cutoff } else { cutoff };
            if object.last_modified <= cutoff {
                self.blobs.delete_key(&object.key).await?;
                report.temporary_deleted += 1;
            }
        }
        self.gc_xet(cutoff, &mut report).await?;
        let event =
            AuditEvent::new(&admin.name, "blobs.gc", "blobs", json!({ "deleted": report.blobs_deleted, "bytes": report.bytes_freed, "temporary": report.temporary_deleted, "xet_files": report.xet_files_deleted, "xorbs": report.xorbs_deleted }));
        self.meta.append_audit(event).await?;
        Ok(report)
    }

    /// Xet storage: files no commit references (and no recent upload grant mentions), then
    /// xorbs no file uses. A xorb's row goes first, in the serialized write path, leaving a
    /// tombstone; a shard that names it afterwards fails its foreign key, and a re-upload of the
    /// same bytes while the object is being deleted is told to retry.
    async fn gc_xet(&self, cutoff: chrono::DateTime<chrono::Utc>, report: &mut GcReport) -> Result<()> {
        let before = format_time(cutoff);
        for hash in self.meta.unreferenced_xet_files(&before).await? {
            if self.meta.delete_xet_file(&hash, &before).await? {
                report.xet_files_deleted += 1;
            }
        }
        for hash in self.meta.unreferenced_xorbs(&before).await? {
            let size = self.meta.xorb(&hash).await?.map_or(0, |x| x.size);
            if !self.meta.condemn_xorb(&hash, &before).await? {
                continue;
            }
            self.blobs.delete_xorb(&hash).await?;
            self.meta.xorb_deleted(&hash).await?;
            report.xorbs_deleted += 1;
            report.bytes_freed += size;
        }
        Ok(())
    }

    /// Recomputes the audit chain and names the first broken link. Site admin only.
    pub async fn verify_audit(&self, principal: &Principal) -> Result<AuditVerification> {
        principal.site_admin()?;
        let mut verifier = ChainVerifier::default();
        let mut after = 0;
        loop {
            let rows = self.meta.audit_after(after, 1000).await?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            for row in &rows {
                if let Err(broken) = verifier.check(row) {
                    return Ok(AuditVerification { checked: verifier.checked, broken: Some(broken) });
                }
            }
        }
        Ok(AuditVerification { checked: verifier.checked, broken: None })
    }

    /// Audit rows after `after_seq`, at most `limit`. Site admin only.
    pub async fn audit_page(&self, principal: &Principal, after_seq: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        principal.site_admin()?;
        self.meta.audit_after(after_seq, limit.clamp(1, 10_000)).await
    }
}
