//! API tests: the router driven in-process with `oneshot`, one fresh SQLite + local-folder state
//! per test. They cover access rules, bad input (nothing written), and the audit trail.

mod access;
mod bad_input;
mod console;
mod evals;
mod files;
mod hardening;
mod harness;
mod inference;
mod likelihood;
mod openai;
mod pipelines;
mod quotas;
mod residency;
mod responses;
mod routes;
mod structured;
mod tidy;
mod usage;
mod vector_stores;
mod vetting;
mod webhooks;
mod xet;
