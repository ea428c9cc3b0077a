//! Evaluations in OpenAI's Evals API shape (`/v1/evals`): what is checked when an eval or a run
//! arrives (`spec`), creating and queuing them (`service`), how items are graded (`grade`), and
//! the worker that runs them (`runner`). The routes in `routes/openai/evals.rs` only translate;
//! runs sample models through the inference service like any request, as the token that
//! started them.

pub(crate) mod grade;
pub(crate) mod runner;
mod service;
pub(crate) mod spec;

pub use runner::{run_pending, run_worker};
pub(crate) use service::{create_eval, queue_run};
