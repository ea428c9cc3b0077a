//! Quotas: requests per minute, tokens per minute and tokens per calendar month (UTC), per token
//! and per org (all members together). Counters live in the metadata store and are added to in
//! one atomic statement each, so replicas sharing one PostgreSQL enforce one limit, not one each.
//! Windows are fixed (the calendar minute, the calendar month). Requests per minute are exact:
//! a request is counted, then refused and uncounted if that went over. Token limits are checked
//! against the tokens of requests that have ended plus this request's prompt; a request's
//! tokens are added when it ends (with its usage record, in one batched write), so requests
//! running together can pass a token limit by what they use.

use chrono::{Datelike as _, Timelike as _};

use crate::auth::Principal;
use crate::meta::{Charge, MetaStore, Quota, QuotaSubject};
use crate::{Error, Result};

/// Why a request was refused, with what the rate-limit headers say.
#[derive(Clone, Debug, PartialEq)]
pub struct Exceeded {
    pub message: String,
    /// The monthly budget is spent (OpenAI's `insufficient_quota`), not a per-minute limit.
    pub monthly: bool,
    /// Seconds until the window that was full starts again.
    pub retry_after: u64,
    pub limits: Limits,
}

/// The tightest limits that applied (limit, remaining), for the `x-ratelimit-*` headers of a
/// refusal and of an admitted request alike.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    pub requests: Option<(u64, u64)>,
    pub tokens: Option<(u64, u64)>,
    /// Seconds until the minute window resets.
    pub reset_seconds: u64,
}

/// A request admitted under quotas: the subjects and windows its tokens count against.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    pub subjects: Vec<QuotaSubject>,
    pub minute: String,
    pub month: String,
    pub limits: Limits,
}

impl Admission {
    /// The counter additions for a request that used `tokens` (prompt and completion), made
    /// when it ends, together with its usage record.
    pub fn token_charges(&self, tokens: u64) -> Vec<Charge> {
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        if tokens == 0 {
            return Vec::new();
        }
        self.subjects.iter().flat_map(|subject| [&self.minute, &self.month].map(|period| Charge { subject: subject.clone(), period: period.clone(), requests: 0, tokens })).collect()
    }
}

/// The period keys of `now`: its minute and its month.
pub fn periods(now: chrono::DateTime<chrono::Utc>) -> (String, String) {
    (format!("m:{}", now.format("%Y-%m-%dT%H:%M")), format!("M:{}", now.format("%Y-%m")))
}

/// Seconds from `now` to the next minute and to the next month.
fn resets(now: chrono::DateTime<chrono::Utc>) -> (u64, u64) {
    let minute = 60 - u64::from(now.second());
    let (year, month) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    let next = chrono::NaiveDate::from_ymd_opt(year, month, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
    let month_left = next.map_or(86_400, |t| (t - now).num_seconds().max(1) as u64);
    (minute, month_left)
}

/// Admits a request of `prompt_tokens` for `principal`, or says which limit it hit: one read of
/// the quotas and one transaction on the counters (a second one to uncount a refused request);
/// tokens are added when the request ends.
pub async fn admit(meta: &dyn MetaStore, principal: &Principal, all: &[Quota], prompt_tokens: u64) -> Result<std::result::Result<Admission, Exceeded>> {
    let user = principal.user()?;
    let quotas: Vec<&Quota> = all.iter().filter(|q| q.applies_to(user.token_id, &user.name, &user.orgs)).collect();
    let now = chrono::Utc::now();
    let (minute, month) = periods(now);
    let (minute_left, month_left) = resets(now);
    let mut limits = Limits { reset_seconds: minute_left, ..Limits::default() };
    if quotas.is_empty() {
        return Ok(Ok(Admission { subjects: Vec::new(), minute, month, limits }));
    }
    let name = |q: &&Quota| match &q.subject {
        QuotaSubject::Token(id) => format!("token {id}"),
        QuotaSubject::User(name) => format!("user {name}"),
        QuotaSubject::Org(org) => format!("org {org}"),
    };
    let tighter = |slot: &mut Option<(u64, u64)>, limit: u64, used: u64| {
        let remaining = limit.saturating_sub(used);
        if slot.is_none_or(|(_, r)| remaining < r) {
            *slot = Some((limit, remaining));
        }
    };
    // One transaction: count the request in each minute window that limits requests (the
    // others are charged nothing, which still returns their totals), read the month windows.
    let charges: Vec<Charge> = quotas.iter().map(|q| Charge { subject: q.subject.clone(), period: minute.clone(), requests: i64::from(q.requests_per_minute.is_some()), tokens: 0 }).collect();
    let months: Vec<(QuotaSubject, String)> = quotas.iter().map(|q| (q.subject.clone(), month.clone())).collect();
    let (minutes, months) = meta.charge(&charges, &months).await?;
    let refuse = |exceeded: Exceeded| async {
        let undo: Vec<Charge> = charges.iter().filter(|c| c.requests > 0).map(|c| Charge { requests: -1, ..c.clone() }).collect();
        if !undo.is_empty() {
            meta.charge(&undo, &[]).await?;
        }
        Ok(Err(exceeded))
    };
    for (i, quota) in quotas.iter().enumerate() {
        let (minute_requests, minute_tokens) = minutes[i];
        let (_, month_tokens) = months[i];
        if let Some(limit) = quota.tokens_per_month {
            let used = month_tokens.max(0) as u64;
            if used.saturating_add(prompt_tokens) > limit {
                let message = format!("{} has used {used} of its {limit} tokens this month; this request needs {prompt_tokens} more", name(quota));
                return refuse(Exceeded { message, monthly: true, retry_after: month_left, limits }).await;
            }
        }
        if let Some(limit) = quota.tokens_per_minute {
            let used = minute_tokens.max(0) as u64;
            tighter(&mut limits.tokens, limit, used.saturating_add(prompt_tokens));
            if used.saturating_add(prompt_tokens) > limit {
                let message =
                    if prompt_tokens > limit { format!("this request's {prompt_tokens} prompt tokens exceed the {limit} tokens per minute of {}", name(quota)) } else { format!("{} has used {used} of its {limit} tokens this minute", name(quota)) };
                return refuse(Exceeded { message, monthly: false, retry_after: minute_left, limits }).await;
            }
        }
        if let Some(limit) = quota.requests_per_minute {
            let requests = minute_requests.max(0) as u64;
            tighter(&mut limits.requests, limit, requests);
            if requests > limit {
                let message = format!("{} allows {limit} requests per minute", name(quota));
                return refuse(Exceeded { message, monthly: false, retry_after: minute_left, limits }).await;
            }
        }
    }
    Ok(Ok(Admission { subjects: quotas.iter().map(|q| q.subject.clone()).collect(), minute, month, limits }))
}

/// Checks a quota an admin sets: at least one limit, none of them zero.
pub fn validate(quota: &Quota) -> Result<()> {
    let limits = [quota.requests_per_minute, quota.tokens_per_minute, quota.tokens_per_month];
    if limits.iter().all(Option::is_none) {
        return Err(Error::invalid("a quota needs at least one of requests_per_minute, tokens_per_minute, tokens_per_month"));
    }
    if limits.iter().flatten().any(|n| *n == 0 || *n > i64::MAX as u64) {
        return Err(Error::invalid("quota limits must be positive"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_apply_to_their_token_and_the_members_of_their_org() {
        let quota = |subject| Quota { subject, requests_per_minute: Some(1), tokens_per_minute: None, tokens_per_month: None, updated_at: String::new() };
        let orgs = ["acme".to_owned()];
        assert!(quota(QuotaSubject::Token(7)).applies_to(7, "ann", &[]));
        assert!(!quota(QuotaSubject::Token(7)).applies_to(8, "ann", &orgs));
        assert!(quota(QuotaSubject::User("ann".into())).applies_to(8, "ann", &[]));
        assert!(!quota(QuotaSubject::User("ann".into())).applies_to(7, "bob", &orgs));
        assert!(quota(QuotaSubject::Org("acme".into())).applies_to(8, "ann", &orgs));
        assert!(!quota(QuotaSubject::Org("other".into())).applies_to(7, "ann", &orgs));
    }

    #[test]
    fn windows_and_resets() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-31T23:59:45Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(periods(now), ("m:2026-12-31T23:59".to_owned(), "M:2026-12".to_owned()));
        assert_eq!(resets(now), (15, 15));
        let now = chrono::DateTime::parse_from_rfc3339("2026-02-10T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(resets(now), (60, 19 * 86_400));
    }
}
