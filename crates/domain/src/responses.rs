//! Stored responses (OpenAI's Responses API with `store`): what a response was asked (its input
//! items) and what it answered (the response object), so a later request can continue from it
//! (`previous_response_id`) and its owner can read or delete it. A response belongs to the
//! account whose token made it; anyone else gets `NotFound`.

use async_trait::async_trait;
use serde_json::Value;

use crate::audit::AuditEvent;
use crate::error::Result;

/// One stored response.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResponse {
    /// `resp_...`.
    pub id: String,
    /// The account that made it.
    pub owner: String,
    pub previous_id: Option<String>,
    pub model: String,
    /// This response's own input items (a JSON array, each item with its id).
    pub input: Value,
    /// The response object as the API returned it.
    pub body: Value,
    pub created_at: String,
}

/// Persistence of stored responses.
#[async_trait]
pub trait ResponseStore: Send + Sync {
    /// Stores a response. Not audited: like a usage record, it is the record of a request (its
    /// tokens are in the usage log); deleting one is audited.
    async fn put_response(&self, response: &StoredResponse) -> Result<()>;
    async fn get_response(&self, id: &str) -> Result<Option<StoredResponse>>;
    /// Deletes a response, audited; `NotFound` if missing.
    async fn delete_response(&self, id: &str, event: AuditEvent) -> Result<()>;
}
