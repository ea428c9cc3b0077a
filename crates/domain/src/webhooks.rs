//! Webhooks, in OpenAI's shape (`webhook_endpoints`) and signed with the Standard Webhooks scheme
//! OpenAI uses (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`
//! over `id.timestamp.body`, `whsec_` secrets, several signatures while a rotated secret is still
//! honoured). Events are read from the audit log, so an event exists exactly when its change
//! committed: a dispatcher (one replica at a time, under a lease on the log cursor) turns new
//! audit rows into deliveries for the endpoints subscribed, in one transaction with the cursor.

use serde_json::{json, Value};

use crate::audit::{AuditEvent, AuditRecord};
use crate::error::Result;

/// The event types Mantle sends.
pub const EVENT_TYPES: &[&str] = &[
    "eval.run.succeeded",
    "eval.run.failed",
    "eval.run.canceled",
    "route.canary",
    "route.promoted",
    "route.rolled_back",
    "deployment.created",
    "deployment.deleted",
    "repo.push",
    "pipeline.run.created",
    "pipeline.run.succeeded",
    "pipeline.run.failed",
    "pipeline.run.canceled",
    "scan.completed",
];

/// A webhook endpoint, owned by an account.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// `we_...`.
    pub id: String,
    pub owner: String,
    pub name: String,
    pub url: String,
    pub event_types: Vec<String>,
    /// Signing secrets (`whsec_...`), newest first, each with when it stops being used (a
    /// rotated secret signs for a while beside the new one).
    pub secrets: Vec<(String, Option<String>)>,
    pub created_at: String,
    pub updated_at: String,
    /// The audit sequence of its creation (set by the store): it gets the events after it.
    pub created_seq: i64,
}

/// A delivery to one endpoint, and what became of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub endpoint_id: String,
    /// `evt_...`, the same for every retry (`webhook-id`).
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub next_at: String,
    pub last_status: Option<u16>,
    pub last_error: String,
    pub created_at: String,
}

/// Who may receive an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Audience {
    /// The owner of the eval run the event names.
    RunOwner,
    /// Members (and site admins) of a namespace.
    Namespace(String),
    /// Site admins only (routes, deployments).
    Admins,
}

/// The webhook event an audit row stands for, if any: its type, data and audience.
pub fn event_of(record: &AuditRecord) -> Option<(&'static str, Value, Audience)> {
    let target = record.target.as_str();
    let id = |prefix: &str| target.strip_prefix(prefix).map(str::to_owned);
    let details: Value = serde_json::from_str(&record.details).unwrap_or(Value::Null);
    Some(match record.action.as_str() {
        "eval.run.succeeded" => ("eval.run.succeeded", json!({ "id": id("evalrun:")? }), Audience::RunOwner),
        "eval.run.failed" => ("eval.run.failed", json!({ "id": id("evalrun:")? }), Audience::RunOwner),
        "eval.run.cancel" => ("eval.run.canceled", json!({ "id": id("evalrun:")? }), Audience::RunOwner),
        "route.canary" => ("route.canary", json!({ "id": id("route:")?, "from": details["from"], "to": details["to"], "reason": details["reason"] }), Audience::Admins),
        "route.promote" => ("route.promoted", json!({ "id": id("route:")?, "from": details["from"], "to": details["to"], "reason": details["reason"] }), Audience::Admins),
        "route.rollback" => ("route.rolled_back", json!({ "id": id("route:")?, "from": details["from"], "to": details["to"], "reason": details["reason"], "analysis": details["analysis"] }), Audience::Admins),
        "deployment.create" => ("deployment.created", json!({ "id": id("deployment:")?, "repo": details["repo"], "commit": details["commit"] }), Audience::Admins),
        "deployment.delete" => ("deployment.deleted", json!({ "id": id("deployment:")? }), Audience::Admins),
        // A blob may be in many tenants' repos: only site admins hear of its scans.
        "scan.completed" => ("scan.completed", json!({ "id": id("blob:")?, "file_type": details["hint"], "format": details["format"], "findings": details["findings"], "level": details["level"] }), Audience::Admins),
        "pipeline.run.create" | "pipeline.run.succeeded" | "pipeline.run.failed" | "pipeline.run.cancel" => {
            let event = match record.action.as_str() {
                "pipeline.run.create" => "pipeline.run.created",
                "pipeline.run.succeeded" => "pipeline.run.succeeded",
                "pipeline.run.failed" => "pipeline.run.failed",
                _ => "pipeline.run.canceled",
            };
            // The pushing team hears of its revision's pipeline; site admins of every one.
            let audience = match details["repo"].as_str().and_then(|repo| repo.split('/').next()) {
                Some(namespace) => Audience::Namespace(namespace.to_owned()),
                None => Audience::Admins,
            };
            (event, json!({ "id": id("pipeline:")?, "route": details["route"], "repo": details["repo"], "commit": details["commit"], "stage": details["stage"], "reason": details["reason"] }), audience)
        }
        "repo.commit" => {
            let (kind, repo) = target.split_once(':')?;
            let namespace = repo.split('/').next()?.to_owned();
            ("repo.push", json!({ "id": repo, "repo_type": kind, "branch": details["branch"], "title": details["title"], "actor": record.actor }), Audience::Namespace(namespace))
        }
        _ => return None,
    })
}

/// The body of an event, as OpenAI's webhook events are shaped.
pub fn payload(event_id: &str, event_type: &str, created_at: i64, data: &Value) -> String {
    json!({ "id": event_id, "object": "event", "type": event_type, "created_at": created_at, "data": data }).to_string()
}

/// The `webhook-signature` header: one `v1,<base64>` per secret, space-separated.
pub fn signature(secrets: &[&str], event_id: &str, timestamp: i64, body: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    secrets
        .iter()
        .map(|secret| {
            let key = secret.strip_prefix("whsec_").and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok()).unwrap_or_else(|| secret.as_bytes().to_vec());
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
            mac.update(format!("{event_id}.{timestamp}.{body}").as_bytes());
            format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A fresh signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
}

/// A delivery to create.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
}

/// Storage of endpoints, the dispatcher's cursor over the audit log, and deliveries.
#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores an endpoint with its audit row; its `created_seq` is that row's sequence.
    async fn create_endpoint(&self, endpoint: &Endpoint, event: AuditEvent) -> Result<()>;
    async fn get_endpoint(&self, id: &str) -> Result<Option<Endpoint>>;
    /// Endpoints of `owner` (all for `None`), oldest first.
    async fn list_endpoints(&self, owner: Option<&str>) -> Result<Vec<Endpoint>>;
    async fn update_endpoint(&self, endpoint: &Endpoint, event: AuditEvent) -> Result<()>;
    /// Deletes an endpoint and its deliveries; NotFound if missing.
    async fn delete_endpoint(&self, id: &str, event: AuditEvent) -> Result<()>;
    /// The last audit sequence dispatched (`None` before the first dispatcher ran); a read.
    async fn webhook_cursor(&self) -> Result<Option<i64>>;
    /// Takes the dispatcher's lease on the audit-log cursor for `holder` if it is free or
    /// expired (or already `holder`'s); the cursor (last audit seq dispatched) when taken.
    async fn claim_webhook_cursor(&self, holder: &str, now: &str, lease_until: &str) -> Result<Option<i64>>;
    /// Stores deliveries and moves the cursor to `seq`, in one transaction, if `holder` still
    /// holds the lease.
    async fn enqueue_deliveries(&self, holder: &str, deliveries: &[NewDelivery], seq: i64, now: &str) -> Result<bool>;
    /// Pending deliveries due at `now` (at most `limit`), each held until `lease_until` so no
    /// other replica sends it meanwhile.
    async fn due_deliveries(&self, now: &str, lease_until: &str, limit: i64) -> Result<Vec<Delivery>>;
    /// Records an attempt: delivered, retried at `retry_at`, or failed for good (`None`).
    async fn record_attempt(&self, id: i64, delivered: bool, status: Option<u16>, error: &str, retry_at: Option<&str>) -> Result<()>;
    /// An endpoint's newest deliveries.
    async fn deliveries(&self, endpoint_id: &str, limit: i64) -> Result<Vec<Delivery>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str, target: &str, details: Value) -> AuditRecord {
        AuditRecord { seq: 1, time: "2026-01-01T00:00:00.000Z".into(), actor: "system".into(), action: action.into(), target: target.into(), details: details.to_string(), prev_hash: String::new(), hash: "ab".repeat(32) }
    }

    #[test]
    fn pipeline_runs_are_events_for_the_pushing_namespace() {
        let (kind, data, audience) = event_of(&record("pipeline.run.failed", "pipeline:pipe_1", json!({ "route": "chat", "repo": "acme/m", "commit": "c", "stage": "gate", "reason": "gates failed" }))).unwrap();
        assert_eq!((kind, audience), ("pipeline.run.failed", Audience::Namespace("acme".into())));
        assert_eq!((data["id"].as_str(), data["reason"].as_str(), data["stage"].as_str()), (Some("pipe_1"), Some("gates failed"), Some("gate")));
        assert_eq!(event_of(&record("pipeline.run.cancel", "pipeline:pipe_1", json!({}))).unwrap().2, Audience::Admins);
        assert_eq!(event_of(&record("pipeline.run.create", "pipeline:pipe_1", json!({ "repo": "acme/m" }))).unwrap().0, "pipeline.run.created");
        assert!(event_of(&record("pipeline.run.stage", "pipeline:pipe_1", json!({}))).is_none(), "stage changes are audited, not sent");
        assert!(EVENT_TYPES.contains(&"pipeline.run.succeeded"));
        let (kind, data, audience) = event_of(&record("scan.completed", "blob:abc", json!({ "hint": "gguf", "format": "gguf", "findings": 0, "level": "safe" }))).unwrap();
        assert_eq!((kind, data["id"].as_str(), data["level"].as_str(), audience), ("scan.completed", Some("abc"), Some("safe"), Audience::Admins));
    }
}
