//! `Hub`: stored responses. A response belongs to the account whose token made it, or to the org
//! the request acted for: only that account (through any of its tokens; an org: its members)
//! reads it or continues from it; anyone else, site admins
//! included, gets `NotFound` (a conversation is private data, not site configuration). Deleting
//! takes a write token and is audited.

use crate::responses::StoredResponse;

use super::*;

/// The most responses one conversation may chain through `previous_response_id`.
pub const MAX_CHAIN: usize = 256;
/// The most bytes of stored items one conversation may carry into a new request.
pub const MAX_CHAIN_BYTES: usize = 16 * 1024 * 1024;

impl Hub {
    /// Stores a response made by the caller.
    pub async fn store_response(&self, principal: &Principal, mut response: StoredResponse) -> Result<()> {
        let user = principal.user()?;
        response.owner = user.owner().to_owned();
        self.meta.put_response(&response).await
    }

    /// One of the caller's responses.
    pub async fn response(&self, principal: &Principal, id: &str) -> Result<StoredResponse> {
        let user = principal.user()?;
        match self.meta.get_response(id).await? {
            Some(response) if user.shares(&response.owner) => Ok(response),
            _ => Err(Error::NotFound(format!("no response {id}"))),
        }
    }

    /// The conversation a new response continues: the response `id` and those it continued,
    /// oldest first. Every one must be the caller's; the chain is bounded in length and bytes.
    pub async fn conversation(&self, principal: &Principal, id: &str) -> Result<Vec<StoredResponse>> {
        let mut chain = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some(id.to_owned());
        while let Some(id) = next {
            if chain.len() == MAX_CHAIN {
                return Err(Error::invalid(format!("the conversation is longer than {MAX_CHAIN} responses")));
            }
            let response = self.response(principal, &id).await?;
            bytes += response.input.to_string().len() + response.body.get("output").map_or(0, |o| o.to_string().len());
            if bytes > MAX_CHAIN_BYTES {
                return Err(Error::invalid(format!("the conversation holds more than {} MiB", MAX_CHAIN_BYTES >> 20)));
            }
            next = response.previous_id.clone();
            chain.push(response);
        }
        chain.reverse();
        Ok(chain)
    }

    /// Records a built-in tool's run for a response (who, the tool, what it read and found).
    pub async fn record_tool_run(&self, principal: &Principal, tool: &str, response_id: &str, details: serde_json::Value) -> Result<()> {
        let user = principal.user()?;
        self.meta.append_audit(AuditEvent::new(&user.name, &format!("tool.{tool}"), format!("response:{response_id}"), details)).await
    }

    /// Deletes one of the caller's responses.
    pub async fn delete_response(&self, principal: &Principal, id: &str) -> Result<()> {
        let user = principal.user()?;
        if user.role < Role::Write {
            return Err(Error::forbidden("this needs a write token"));
        }
        self.response(principal, id).await?;
        self.meta.delete_response(id, AuditEvent::new(&user.name, "response.delete", format!("response:{id}"), json!({}))).await
    }
}
