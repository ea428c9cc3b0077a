//! Quotas: requests per minute, tokens per minute and tokens per calendar month (UTC), per token
//! and per org (all members together). Counters live in the metadata store and are added to in
//! one atomic statement each, so replicas sharing one PostgreSQL enforce one limit, not one each.
//! Windows are fixed (the calendar minute, the calendar month). Requests per minute are exact:
//! a request is counted, then refused and uncounted if that went over. Token limits are checked
//! against what was used before the request (its prompt included); completion tokens are added
//! when it ends, so requests running together can pass a token limit by what they generate.

use chrono::{Datelike as _, Timelike as _};

use crate::auth::Principal;
use crate::meta::{MetaStore, Quota, QuotaSubject};
use crate::{Error, Result};

/// Why a request was refused, with what the rate-limit headers say.
#[derive(Clone, Debug, PartialEq)]
pub struct Exceeded {
    pub message: String,
    /// Seconds until the window that was full starts again.
    pub retry_after: u64,
    pub limits: Limits,
}

/// The tightest limits that applied, for `x-ratelimit-*` headers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    pub requests: Option<(u64, u64)>,
    pub tokens: Option<(u64, u64)>,
    /// Seconds until the minute window resets.
    pub reset_seconds: u64,
}

/// A request admitted under quotas: the subjects to charge its completion tokens to.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    pub subjects: Vec<QuotaSubject>,
    pub minute: String,
    pub month: String,
    pub limits: Limits,
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

/// Admits a request of `prompt_tokens` for `principal`, or says which limit it hit.
pub async fn admit(meta: &dyn MetaStore, principal: &Principal, prompt_tokens: u64) -> Result<std::result::Result<Admission, Exceeded>> {
    let user = principal.user()?;
    let quotas = meta.quotas_for(user.token_id, &user.orgs).await?;
    let now = chrono::Utc::now();
    let (minute, month) = periods(now);
    let (minute_left, month_left) = resets(now);
    let mut limits = Limits { reset_seconds: minute_left, ..Limits::default() };
    if quotas.is_empty() {
        return Ok(Ok(Admission { subjects: Vec::new(), minute, month, limits }));
    }
    let name = |q: &Quota| match &q.subject {
        QuotaSubject::Token(id) => format!("token {id}"),
        QuotaSubject::Org(org) => format!("org {org}"),
    };
    let tighter = |slot: &mut Option<(u64, u64)>, limit: u64, used: u64| {
        let remaining = limit.saturating_sub(used);
        if slot.is_none_or(|(_, r)| remaining < r) {
            *slot = Some((limit, remaining));
        }
    };
    // Token limits first (reading the counters), so a refused request costs no request slot.
    for quota in &quotas {
        if let Some(limit) = quota.tokens_per_month {
            let (_, used) = meta.charge(&quota.subject, &month, 0, 0).await?;
            let used = used.max(0) as u64;
            if used.saturating_add(prompt_tokens) > limit {
                let message = format!("{} has used {used} of its {limit} tokens this month; this request needs {prompt_tokens} more", name(quota));
                return Ok(Err(Exceeded { message, retry_after: month_left, limits }));
            }
        }
        if let Some(limit) = quota.tokens_per_minute {
            let (_, used) = meta.charge(&quota.subject, &minute, 0, 0).await?;
            let used = used.max(0) as u64;
            tighter(&mut limits.tokens, limit, used.saturating_add(prompt_tokens));
            if used.saturating_add(prompt_tokens) > limit {
                let message = if prompt_tokens > limit {
                    format!("this request's {prompt_tokens} prompt tokens exceed the {limit} tokens per minute of {}", name(quota))
                } else {
                    format!("{} has used {used} of its {limit} tokens this minute", name(quota))
                };
                return Ok(Err(Exceeded { message, retry_after: minute_left, limits }));
            }
        }
    }
    let mut counted: Vec<&Quota> = Vec::new();
    for quota in &quotas {
        if let Some(limit) = quota.requests_per_minute {
            let (requests, _) = meta.charge(&quota.subject, &minute, 1, 0).await?;
            let requests = requests.max(0) as u64;
            tighter(&mut limits.requests, limit, requests);
            if requests > limit {
                // Uncount it everywhere it was counted, this one included.
                for undo in counted.iter().chain(std::iter::once(&quota)) {
                    meta.charge(&undo.subject, &minute, -1, 0).await?;
                }
                let message = format!("{} allows {limit} requests per minute", name(quota));
                return Ok(Err(Exceeded { message, retry_after: minute_left, limits }));
            }
            counted.push(quota);
        }
    }
    let subjects: Vec<QuotaSubject> = quotas.iter().map(|q| q.subject.clone()).collect();
    let prompt = i64::try_from(prompt_tokens).unwrap_or(i64::MAX);
    for subject in &subjects {
        meta.charge(subject, &minute, 0, prompt).await?;
        meta.charge(subject, &month, 0, prompt).await?;
    }
    Ok(Ok(Admission { subjects, minute, month, limits }))
}

/// Adds a finished request's completion tokens to the windows it was admitted in.
pub async fn charge_completion(meta: &dyn MetaStore, admission: &Admission, completion_tokens: u64) -> Result<()> {
    if completion_tokens == 0 {
        return Ok(());
    }
    let tokens = i64::try_from(completion_tokens).unwrap_or(i64::MAX);
    for subject in &admission.subjects {
        meta.charge(subject, &admission.minute, 0, tokens).await?;
        meta.charge(subject, &admission.month, 0, tokens).await?;
    }
    Ok(())
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
    fn windows_and_resets() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-31T23:59:45Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(periods(now), ("m:2026-12-31T23:59".to_owned(), "M:2026-12".to_owned()));
        assert_eq!(resets(now), (15, 15));
        let now = chrono::DateTime::parse_from_rfc3339("2026-02-10T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(resets(now), (60, 19 * 86_400));
    }
}
