//! Wire types: the Hugging Face Hub JSON that `huggingface_hub` reads and writes, the Git LFS
//! batch API, Mantle's admin API, and error bodies. Only this crate derives Serialize/Deserialize.

pub mod admin;
pub mod hub;
pub mod lfs;
pub mod ollama;
pub mod openai;
pub mod responses;
pub mod vetting;

use serde::{Deserialize, Serialize};

/// Every error body: `{"error": "message"}`, the shape `huggingface_hub` reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
