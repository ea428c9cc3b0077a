//! Which SQL dialect a pool speaks.

/// The two databases Mantle runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}
