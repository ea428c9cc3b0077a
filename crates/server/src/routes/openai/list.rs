//! OpenAI's list pages: items newest first unless `order=asc`, a window after `after` and before
//! `before` (by item id), `limit` items at most, with `first_id`, `last_id` and `has_more`.

use serde_json::{json, Value};

use super::OpenAiError;

/// How one list endpoint pages: its default and largest `limit`.
pub(crate) struct Bounds {
    pub(crate) default: usize,
    pub(crate) max: usize,
}

/// A page of `items` (given newest first).
pub(crate) fn page(mut items: Vec<Value>, limit: Option<i64>, order: Option<&str>, after: Option<&str>, before: Option<&str>, bounds: Bounds) -> Result<Value, OpenAiError> {
    let limit = match limit {
        None => bounds.default,
        Some(n) if n >= 1 && n as usize <= bounds.max => n as usize,
        Some(_) => return Err(OpenAiError::invalid(format!("limit must be between 1 and {}", bounds.max), Some("limit"))),
    };
    match order {
        None | Some("desc") => {}
        Some("asc") => items.reverse(),
        Some(other) => return Err(OpenAiError::invalid(format!("order must be asc or desc, not {other:?}"), Some("order"))),
    }
    let position = |id: &str, param: &str| items.iter().position(|item| item["id"] == id).ok_or_else(|| OpenAiError::invalid(format!("no item {id}"), Some(param)));
    let start = match after {
        Some(after) => position(after, "after")? + 1,
        None => 0,
    };
    let end = match before {
        Some(before) => position(before, "before")?,
        None => items.len(),
    };
    let window: Vec<Value> = items.get(start..end.max(start)).unwrap_or_default().iter().take(limit).cloned().collect();
    let has_more = start + window.len() < end;
    let first_id = window.first().map(|i| i["id"].clone()).unwrap_or(Value::Null);
    let last_id = window.last().map(|i| i["id"].clone()).unwrap_or(Value::Null);
    Ok(json!({ "object": "list", "data": window, "first_id": first_id, "last_id": last_id, "has_more": has_more }))
}
