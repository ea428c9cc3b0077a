//! Contract suites for the storage ports: the MetaStore suite runs on SQLite always and on
//! PostgreSQL when `TEST_DATABASE_URL` is set; the BlobStore suite runs on a local folder always and
//! on S3 when `TEST_S3_BUCKET` (with `AWS_ENDPOINT_URL` and credentials) is set.

mod blobs;
mod meta;
mod migrate;
mod vectors;

/// An environment variable a suite needs. Without it the suite is skipped with a message, except
/// under CI (`CI` set), where a missing environment must fail rather than pass unseen.
fn needed(name: &str) -> Option<String> {
    let value = std::env::var(name).ok();
    assert!(value.is_some() || std::env::var_os("CI").is_none(), "{name} is not set, and CI is: this suite must not pass without its environment");
    if value.is_none() {
        eprintln!("{name} not set: skipped");
    }
    value
}
