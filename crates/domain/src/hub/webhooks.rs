//! `Hub`: webhook endpoints (owned by the account that creates them; anyone else gets
//! `NotFound`), and the dispatcher's operations: audit rows to deliveries, due deliveries,
//! attempts.

use crate::webhooks::{event_of, payload, Audience, Delivery, Endpoint, NewDelivery, EVENT_TYPES};

use super::*;

/// How long a rotated-out secret keeps signing beside the new one, when asked.
const ROTATION_OVERLAP_HOURS: i64 = 24;

impl Hub {
    /// Creates an endpoint owned by the caller, with a fresh signing secret (returned once).
    /// `url` must already be allowed by the server's network policy.
    pub async fn create_webhook(&self, principal: &Principal, name: &str, url: &str, event_types: Vec<String>) -> Result<Endpoint> {
        let user = writer(principal)?;
        check_types(&event_types)?;
        check_text(name, url)?;
        let now = format_time(chrono::Utc::now());
        let endpoint = Endpoint {
            id: format!("we_{}", uuid::Uuid::new_v4().simple()),
            owner: user.name.clone(),
            name: name.to_owned(),
            url: url.to_owned(),
            event_types,
            secrets: vec![(crate::webhooks::new_secret(), None)],
            created_at: now.clone(),
            updated_at: now,
            created_seq: 0,
        };
        let event = AuditEvent::new(&user.name, "webhook.create", format!("webhook:{}", endpoint.id), json!({ "url": url, "event_types": endpoint.event_types }));
        self.meta.create_endpoint(&endpoint, event).await?;
        Ok(endpoint)
    }

    /// One endpoint the caller owns (or any, for a site admin).
    pub async fn webhook(&self, principal: &Principal, id: &str) -> Result<Endpoint> {
        let user = principal.user()?;
        match self.meta.get_endpoint(id).await? {
            Some(endpoint) if endpoint.owner == user.name || (user.is_admin && user.role == Role::Admin) => Ok(endpoint),
            _ => Err(Error::NotFound(format!("no webhook endpoint {id}"))),
        }
    }

    /// The caller's endpoints.
    pub async fn webhooks(&self, principal: &Principal) -> Result<Vec<Endpoint>> {
        let user = principal.user()?;
        self.meta.list_endpoints(Some(&user.name)).await
    }

    /// Changes an endpoint's name, URL (already allowed) or event types.
    pub async fn update_webhook(&self, principal: &Principal, id: &str, name: Option<String>, url: Option<String>, event_types: Option<Vec<String>>) -> Result<Endpoint> {
        let user = writer(principal)?.name.clone();
        let mut endpoint = self.webhook(principal, id).await?;
        if let Some(types) = &event_types {
            check_types(types)?;
        }
        endpoint.name = name.unwrap_or(endpoint.name);
        endpoint.url = url.unwrap_or(endpoint.url);
        endpoint.event_types = event_types.unwrap_or(endpoint.event_types);
        check_text(&endpoint.name, &endpoint.url)?;
        endpoint.updated_at = format_time(chrono::Utc::now());
        let event = AuditEvent::new(&user, "webhook.update", format!("webhook:{id}"), json!({ "url": endpoint.url, "event_types": endpoint.event_types }));
        self.meta.update_endpoint(&endpoint, event).await?;
        Ok(endpoint)
    }

    /// A new signing secret; with `keep_old`, the previous one keeps signing for a day beside it.
    pub async fn rotate_webhook_secret(&self, principal: &Principal, id: &str, keep_old: bool) -> Result<Endpoint> {
        let user = writer(principal)?.name.clone();
        let mut endpoint = self.webhook(principal, id).await?;
        let now = chrono::Utc::now();
        let until = format_time(now + chrono::Duration::hours(ROTATION_OVERLAP_HOURS));
        let mut secrets = vec![(crate::webhooks::new_secret(), None)];
        if keep_old {
            secrets.extend(endpoint.secrets.iter().filter(|(_, expires)| expires.as_deref().is_none_or(|e| e > format_time(now).as_str())).take(1).map(|(secret, expires)| (secret.clone(), Some(expires.clone().unwrap_or_else(|| until.clone())))));
        }
        endpoint.secrets = secrets;
        endpoint.updated_at = format_time(now);
        self.meta.update_endpoint(&endpoint, AuditEvent::new(&user, "webhook.rotate_secret", format!("webhook:{id}"), json!({ "keep_old": keep_old }))).await?;
        Ok(endpoint)
    }

    /// Deletes an endpoint and its delivery log.
    pub async fn delete_webhook(&self, principal: &Principal, id: &str) -> Result<()> {
        let user = writer(principal)?.name.clone();
        self.webhook(principal, id).await?;
        self.meta.delete_endpoint(id, AuditEvent::new(&user, "webhook.delete", format!("webhook:{id}"), json!({}))).await
    }

    /// An endpoint the caller may send a test event to (a write token: it makes a request).
    pub async fn testable_webhook(&self, principal: &Principal, id: &str) -> Result<Endpoint> {
        writer(principal)?;
        self.webhook(principal, id).await
    }

    /// An endpoint's newest deliveries.
    pub async fn webhook_deliveries(&self, principal: &Principal, id: &str, limit: i64) -> Result<Vec<Delivery>> {
        self.webhook(principal, id).await?;
        self.meta.deliveries(id, limit.clamp(1, 1000)).await
    }

    // ---- the dispatcher (server machinery) ----------------------------------------------------

    /// Turns audit rows after the cursor into deliveries for the endpoints subscribed to them
    /// and allowed to see them, if `holder` holds (or takes) the cursor's lease; how many.
    pub async fn dispatch_webhooks(&self, holder: &str, lease_secs: i64) -> Result<usize> {
        // Reads first: with nothing new in the log, no write lock is taken.
        let head = self.meta.audit_head().await?.map_or(0, |r| r.seq);
        if self.meta.webhook_cursor().await?.is_some_and(|cursor| cursor >= head) {
            return Ok(0);
        }
        let now = chrono::Utc::now();
        let Some(seq) = self.meta.claim_webhook_cursor(holder, &format_time(now), &format_time(now + chrono::Duration::seconds(lease_secs))).await? else { return Ok(0) };
        let records = self.meta.audit_after(seq, 200).await?;
        let Some(last) = records.last().map(|r| r.seq) else { return Ok(0) };
        let endpoints = self.meta.list_endpoints(None).await?;
        let mut deliveries = Vec::new();
        for record in &records {
            let Some((event_type, data, audience)) = event_of(record) else { continue };
            let created = chrono::DateTime::parse_from_rfc3339(&record.time).map(|t| t.timestamp()).unwrap_or(0);
            // One event id per audit row: the same for every endpoint and every retry.
            let event_id = format!("evt_{}", &record.hash[..24.min(record.hash.len())]);
            let body = payload(&event_id, event_type, created, &data);
            // An endpoint gets the events after its own creation in the log (by sequence, not by
            // clock: both can fall in one millisecond), however far behind the dispatcher is.
            let live = |e: &&Endpoint| e.created_seq < record.seq;
            for endpoint in endpoints.iter().filter(live).filter(|e| e.event_types.iter().any(|t| t == event_type)) {
                if self.may_receive(&endpoint.owner, &audience, &data).await? {
                    deliveries.push(NewDelivery { endpoint_id: endpoint.id.clone(), event_id: event_id.clone(), event_type: event_type.to_owned(), payload: body.clone() });
                }
            }
        }
        let n = deliveries.len();
        self.meta.enqueue_deliveries(holder, &deliveries, last, &format_time(now)).await?;
        Ok(n)
    }

    async fn may_receive(&self, owner: &str, audience: &Audience, data: &serde_json::Value) -> Result<bool> {
        let Ok(name) = AccountName::parse(owner) else { return Ok(false) };
        let Some(account) = self.meta.get_account(&name).await? else { return Ok(false) };
        Ok(match audience {
            Audience::Admins => account.is_admin,
            Audience::Namespace(namespace) => account.is_admin || owner == namespace || self.meta.orgs_of(&name).await?.iter().any(|org| org == namespace),
            Audience::RunOwner => match data["id"].as_str() {
                Some(run) => self.meta.get_run(run).await?.is_some_and(|run| run.owner == owner),
                None => false,
            },
        })
    }

    /// Deliveries due now, held for `lease_secs` while they are sent.
    pub async fn due_webhook_deliveries(&self, lease_secs: i64, limit: i64) -> Result<Vec<(Delivery, Option<Endpoint>)>> {
        let now = chrono::Utc::now();
        let due = self.meta.due_deliveries(&format_time(now), &format_time(now + chrono::Duration::seconds(lease_secs)), limit).await?;
        let mut out = Vec::with_capacity(due.len());
        for delivery in due {
            let endpoint = self.meta.get_endpoint(&delivery.endpoint_id).await?;
            out.push((delivery, endpoint));
        }
        Ok(out)
    }

    /// Records one attempt of a delivery.
    pub async fn record_webhook_attempt(&self, id: i64, delivered: bool, status: Option<u16>, error: &str, retry_at: Option<chrono::DateTime<chrono::Utc>>) -> Result<()> {
        self.meta.record_attempt(id, delivered, status, error, retry_at.map(format_time).as_deref()).await
    }
}

/// The caller, if its token may change things (write or admin).
fn writer(principal: &Principal) -> Result<&UserPrincipal> {
    let user = principal.user()?;
    if user.role < Role::Write {
        return Err(Error::forbidden("this needs a write token"));
    }
    Ok(user)
}

/// Names up to 256 characters, URLs up to 2048 bytes.
fn check_text(name: &str, url: &str) -> Result<()> {
    if name.chars().count() > 256 || url.len() > 2048 {
        return Err(Error::invalid("a webhook's name may have at most 256 characters and its url 2048 bytes"));
    }
    Ok(())
}

fn check_types(types: &[String]) -> Result<()> {
    if types.is_empty() || types.len() > 64 {
        return Err(Error::invalid("event_types must name at least one event type"));
    }
    match types.iter().find(|t| !EVENT_TYPES.contains(&t.as_str())) {
        Some(bad) => Err(Error::invalid(format!("event type {bad:?} is not one Mantle sends: {}", EVENT_TYPES.join(", ")))),
        None => Ok(()),
    }
}
