//! Fault points for the crash tests: a `kill -9` or a failure at an exact step, which a
//! timer could never land on. They exist only with the `faults` cargo feature, which only the
//! test crate turns on; in the release daemon each is an empty function and no environment
//! variable is read.

/// Kills the daemon with `SIGKILL` at `step` when the environment variable
/// `WITNESS_CRASH_AT` names it.
#[cfg(feature = "faults")]
pub fn crash_at(step: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("WITNESS_CRASH_AT").ok());
    if at.as_deref() == Some(step) {
        tracing::warn!(step, "WITNESS_CRASH_AT: killing the daemon here");
        // SAFETY: kill and getpid have no preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Whether the operation at `step` is to fail, as the environment variable `WITNESS_FAIL_AT`
/// asks, so that tests reach error paths that a healthy SQLite never takes.
#[cfg(feature = "faults")]
pub fn fails_at(step: &str) -> bool {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("WITNESS_FAIL_AT").ok());
    at.as_deref() == Some(step)
}

/// Without the `faults` feature: nothing.
#[cfg(not(feature = "faults"))]
#[inline(always)]
pub fn crash_at(_step: &str) {}

/// Without the `faults` feature: never.
#[cfg(not(feature = "faults"))]
#[inline(always)]
pub fn fails_at(_step: &str) -> bool {
    false
}
