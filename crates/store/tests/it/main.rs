//! Contract suites for the storage ports: the MetaStore suite runs on SQLite always and on
//! PostgreSQL when `TEST_DATABASE_URL` is set; the BlobStore suite runs on a local folder always and
//! on S3 when `TEST_S3_BUCKET` (with `AWS_ENDPOINT_URL` and credentials) is set.

mod blobs;
mod meta;
