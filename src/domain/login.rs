//! The login lockout policy: repeated failures lock an email out for a while.
//!
//! Failures are counted per email key whether or not an account exists, so the
//! lockout itself tells nobody which accounts exist.

use std::time::Duration;

/// Failures within [`LOCKOUT_WINDOW`] after which logins are refused.
pub const MAX_FAILURES: u32 = 5;

/// How far back failures count; a lockout lifts once the oldest counted failure ages
/// out of it.
pub const LOCKOUT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// True when `recent_failures` (within the window) lock the email out.
pub fn is_locked_out(recent_failures: u32) -> bool {
    recent_failures >= MAX_FAILURES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock() {
        assert!(!is_locked_out(0));
        assert!(!is_locked_out(MAX_FAILURES - 1));
        assert!(is_locked_out(MAX_FAILURES));
    }
}
