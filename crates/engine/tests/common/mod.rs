//! Helpers shared by the engine's real-model tests.

/// An environment variable this test needs. Without it the test is skipped with a message, except
/// under CI (`CI` set), where a missing environment must fail rather than pass unseen.
pub(crate) fn needed(name: &str) -> Option<String> {
    let value = std::env::var(name).ok();
    assert!(value.is_some() || std::env::var_os("CI").is_none(), "{name} is not set, and CI is: this test must not pass without its environment");
    if value.is_none() {
        eprintln!("{name} not set: skipped");
    }
    value
}
