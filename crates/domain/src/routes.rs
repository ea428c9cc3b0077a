//! Release routes: the name clients put in `model` that points at a stable deployment and, while
//! a revision is being tried, a canary deployment taking a share of the callers. Each caller
//! lands on the same side for a given share (sticky), and a larger share keeps the callers a
//! smaller one had. Every change is a history entry (who, when, from which deployments and
//! revisions to which, why, and the evidence given), written with its audit row.

use serde_json::Value;

use crate::audit::AuditEvent;
use crate::error::Result;

/// A route.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub name: String,
    /// The deployment that answers callers not on the canary.
    pub stable: String,
    /// The deployment being tried and the share of callers (percent, 1..=99) it answers.
    pub canary: Option<(String, u8)>,
    pub updated_at: String,
}

impl Route {
    /// The deployment that answers a caller whose sticky bucket (0..10000) is `bucket`.
    pub fn pick(&self, bucket: u32) -> &str {
        match &self.canary {
            Some((canary, percent)) if bucket < u32::from(*percent) * 100 => canary,
            _ => &self.stable,
        }
    }
}

/// The sticky bucket (0..10000) of a caller on a route: the same caller always gets the same one.
pub fn bucket(route: &str, caller: &str) -> u32 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{route}\u{0}{caller}").as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 10_000
}

/// One change of a route.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteChange {
    pub route: String,
    pub at: String,
    pub actor: String,
    /// `create`, `canary`, `promote`, `rollback`, `delete`.
    pub action: String,
    /// The route before and after, with the revision each deployment served.
    pub from: Value,
    pub to: Value,
    pub reason: String,
    /// What the change rests on (eval run ids and their results, SLO readings).
    pub evidence: Value,
}

/// Storage of routes and their history.
#[async_trait::async_trait]
pub trait RouteStore: Send + Sync {
    /// Creates or replaces a route and appends its change, audited, in one transaction. With
    /// `expected` (the `updated_at` read before), a route changed meanwhile is a conflict.
    async fn put_route(&self, route: &Route, expected: Option<&str>, change: &RouteChange, event: AuditEvent) -> Result<()>;
    async fn get_route(&self, name: &str) -> Result<Option<Route>>;
    async fn list_routes(&self) -> Result<Vec<Route>>;
    /// Deletes a route (its history stays), audited; NotFound if missing.
    async fn delete_route(&self, name: &str, change: &RouteChange, event: AuditEvent) -> Result<()>;
    /// A route's changes, oldest first.
    async fn route_history(&self, name: &str) -> Result<Vec<RouteChange>>;
}
