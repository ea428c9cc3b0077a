//! Webhook delivery: which hosts may be called (`webhooks.allowed_hosts`: names, addresses,
//! networks; everything else is refused, at creation and again at every delivery), and the
//! worker that turns audit rows into deliveries (`Hub::dispatch_webhooks`) and sends them, signed
//! (Standard Webhooks, as OpenAI signs), without following redirects, retrying with backoff.

use std::net::IpAddr;
use std::time::Duration;

use domain::webhooks::{signature, Delivery, Endpoint};

use crate::AppState;

/// Attempts before a delivery is given up.
const MAX_ATTEMPTS: u32 = 8;
const LEASE_SECS: i64 = 30;

/// One entry of `webhooks.allowed_hosts`.
#[derive(Clone, Debug, PartialEq)]
pub enum AllowedHost {
    Name(String),
    Network(IpAddr, u8),
}

impl AllowedHost {
    /// `host.name`, `10.0.0.7`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        if let Some((ip, bits)) = entry.split_once('/') {
            let ip: IpAddr = ip.parse().map_err(|_| "not an IP network".to_owned())?;
            let bits: u8 = bits.parse().map_err(|_| "not a prefix length".to_owned())?;
            if bits > if ip.is_ipv4() { 32 } else { 128 } {
                return Err("prefix length too long".into());
            }
            return Ok(AllowedHost::Network(ip, bits));
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return Ok(AllowedHost::Network(ip, if ip.is_ipv4() { 32 } else { 128 }));
        }
        if entry.is_empty() || !entry.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
            return Err("not a host name, address or network".into());
        }
        Ok(AllowedHost::Name(entry.to_ascii_lowercase()))
    }

    fn allows(&self, host: &url::Host<&str>) -> bool {
        match (self, host) {
            (AllowedHost::Name(name), url::Host::Domain(domain)) => name == &domain.to_ascii_lowercase(),
            (AllowedHost::Network(net, bits), url::Host::Ipv4(ip)) => in_network(IpAddr::V4(*ip), *net, *bits),
            (AllowedHost::Network(net, bits), url::Host::Ipv6(ip)) => in_network(IpAddr::V6(*ip), *net, *bits),
            _ => false,
        }
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// Checks a webhook URL against the allowed hosts: http(s), no credentials, an allowed host.
pub(crate) fn check_url(allowed: &[AllowedHost], text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|err| format!("url {text:?}: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() || url.password().is_some() {
        return Err("url must be http(s) without credentials".into());
    }
    let host = url.host().ok_or("url has no host")?;
    if !allowed.iter().any(|entry| entry.allows(&host)) {
        return Err(format!("{host} is not in webhooks.allowed_hosts; an admin must allow it"));
    }
    Ok(url)
}

/// Dispatches and delivers until `shutdown`.
pub async fn run_worker(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let holder = format!("replica-{}", crate::inference::random_id());
    let client = match http_client() {
        Ok(client) => client,
        Err(err) => {
            tracing::error!("webhooks are off: no HTTP client ({err})");
            return;
        }
    };
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Err(err) = pump(&state, &client, &holder).await {
            tracing::warn!("webhooks: {err:#}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The client deliveries go through: no redirects, bounded time.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(15)).user_agent(concat!("Mantle-Webhooks/", env!("CARGO_PKG_VERSION"))).build()
}

/// One round: new audit rows become deliveries, due deliveries are sent.
pub async fn pump(state: &AppState, client: &reqwest::Client, holder: &str) -> anyhow::Result<usize> {
    state.hub.dispatch_webhooks(holder, LEASE_SECS).await?;
    let due = state.hub.due_webhook_deliveries(LEASE_SECS, 32).await?;
    let n = due.len();
    for (delivery, endpoint) in due {
        let outcome = match endpoint {
            Some(endpoint) => send(&state.config.webhook_hosts, client, &endpoint, &delivery).await,
            None => Err((None, "the endpoint was deleted".to_owned())),
        };
        let (delivered, status, error) = match outcome {
            Ok(status) => (true, Some(status), String::new()),
            Err((status, error)) => (false, status, error),
        };
        let retry = (!delivered && delivery.attempts + 1 < MAX_ATTEMPTS).then(|| chrono::Utc::now() + chrono::Duration::seconds((5i64 << delivery.attempts.min(10)).min(3600)));
        state.hub.record_webhook_attempt(delivery.id, delivered, status, &error, retry).await?;
    }
    Ok(n)
}

/// Sends one delivery, signed with every active secret; the status on a 2xx.
pub(crate) async fn send(allowed: &[AllowedHost], client: &reqwest::Client, endpoint: &Endpoint, delivery: &Delivery) -> Result<u16, (Option<u16>, String)> {
    let url = check_url(allowed, &endpoint.url).map_err(|err| (None, err))?;
    let now = domain::now_rfc3339();
    let secrets: Vec<&str> = endpoint.secrets.iter().filter(|(_, expires)| expires.as_deref().is_none_or(|e| e > now.as_str())).map(|(s, _)| s.as_str()).collect();
    let timestamp = chrono::Utc::now().timestamp();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &delivery.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(&secrets, &delivery.event_id, timestamp, &delivery.payload))
        .body(delivery.payload.clone())
        .send()
        .await
        .map_err(|err| (None, format!("request failed: {err}")))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        Ok(status)
    } else {
        Err((Some(status), format!("the endpoint answered {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_hosts_and_networks_pass() {
        let allowed: Vec<AllowedHost> = ["ci.internal", "10.0.0.0/8", "::1"].iter().map(|e| AllowedHost::parse(e).unwrap()).collect();
        assert!(check_url(&allowed, "https://ci.internal/hook").is_ok());
        assert!(check_url(&allowed, "http://10.2.3.4:8080/x").is_ok());
        assert!(check_url(&allowed, "http://[::1]:9/x").is_ok());
        for bad in ["http://11.0.0.1/", "http://169.254.169.254/latest/meta-data", "https://ci.internal.evil.com/", "ftp://ci.internal/", "http://user:pw@ci.internal/", "http://127.0.0.1/", "http://localhost/", "not a url"] {
            assert!(check_url(&allowed, bad).is_err(), "{bad}");
        }
        assert!(AllowedHost::parse("10.0.0.0/40").is_err());
        assert!(AllowedHost::parse("a b").is_err());
    }
}
