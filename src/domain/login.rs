//! The login throttle: how many password guesses are evaluated for one account.
//!
//! Every attempt must first reserve a guess in two budgets, and only a reserved guess
//! is checked against the stored hash:
//! - one per account and client address: [`MAX_FAILURES`] guesses per [`LOCKOUT_WINDOW`];
//! - one per account, across all addresses: [`MAX_GUESSES_PER_ACCOUNT`], against a
//!   guesser spread over many addresses.
//!
//! A success gives its guess back and forgives the address's failures that have been
//! checked (guesses still being checked stay counted), so the owner is never slowed by
//! their own logins, and an attacker's failures from one address do not stop the
//! owner on another. The account's budget only gets the success's own guess back: an
//! owner's login does not hand a distributed guesser a fresh ceiling. Budgets are kept per email key whether or not an
//! account exists, so the throttle tells nobody which accounts exist. Reserving is one
//! atomic step per budget (a transaction on SQLite, a lightweight transaction on
//! Cassandra), so guesses sent in parallel are counted as strictly as guesses sent one
//! after the other.

use std::time::Duration;

/// Guesses evaluated per account and client address within [`LOCKOUT_WINDOW`].
pub const MAX_FAILURES: u32 = 5;

/// Guesses evaluated per account, from all addresses together, within the window.
pub const MAX_GUESSES_PER_ACCOUNT: u32 = 50;

/// The window a budget counts over, from its first guess; the budget is full again
/// once it has passed.
pub const LOCKOUT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The budget scope that counts every address together.
pub const ACCOUNT_SCOPE: &str = "*";

/// What a budget holds: guesses reserved since the window began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Guesses reserved in this window.
    pub used: u32,
    /// Of those, guesses not settled yet: being checked (or lost with a crashed
    /// request, which only means a later success forgives a little less).
    pub pending: u32,
    /// When the window began, microseconds since the epoch.
    pub window_start: i64,
}

/// How a reserved guess ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuessOutcome {
    /// Checked, and wrong (or the account is locked).
    Failed,
    /// Checked, and right.
    Succeeded,
    /// Never checked (no hashing capacity): as if it had not been reserved.
    NotChecked,
}

impl Budget {
    /// The budget after reserving one more guess at `now`, or how long until one is
    /// free again. An expired window starts over.
    pub fn reserve(current: Option<Budget>, limit: u32, now: i64) -> Result<Budget, Duration> {
        let window = i64::try_from(LOCKOUT_WINDOW.as_micros()).unwrap_or(i64::MAX);
        match current {
            Some(budget) if now - budget.window_start < window => {
                if budget.used < limit {
                    Ok(Budget {
                        used: budget.used + 1,
                        pending: budget.pending + 1,
                        ..budget
                    })
                } else {
                    let wait = budget.window_start + window - now;
                    Err(Duration::from_micros(u64::try_from(wait).unwrap_or(0)))
                }
            }
            _ => Ok(Budget {
                used: 1,
                pending: 1,
                window_start: now,
            }),
        }
    }

    /// A client address's budget once one of its guesses has ended. A success
    /// forgives every settled guess: what remains counted is the guesses still being
    /// checked, so a burst sent with the right password among it is still checked no
    /// more than the limit allows.
    pub fn settle_client(self, outcome: GuessOutcome) -> Budget {
        let pending = self.pending.saturating_sub(1);
        match outcome {
            GuessOutcome::Failed => Budget { pending, ..self },
            GuessOutcome::Succeeded => Budget {
                used: pending,
                pending,
                ..self
            },
            GuessOutcome::NotChecked => Budget {
                used: self.used.saturating_sub(1),
                pending,
                ..self
            },
        }
    }

    /// The account's budget once one of its guesses has ended, or `None` when it does
    /// not change: a failure stays counted; a success or an unchecked guess is given
    /// back.
    pub fn settle_account(self, outcome: GuessOutcome) -> Option<Budget> {
        match outcome {
            GuessOutcome::Failed => None,
            GuessOutcome::Succeeded | GuessOutcome::NotChecked => Some(Budget {
                used: self.used.saturating_sub(1),
                pending: self.pending.saturating_sub(1),
                ..self
            }),
        }
    }

    /// When this budget's window ends, microseconds since the epoch: a store may
    /// forget it then.
    pub fn expires_at(self) -> i64 {
        self.window_start
            .saturating_add(i64::try_from(LOCKOUT_WINDOW.as_micros()).unwrap_or(i64::MAX))
    }
}

/// Whether a login attempt may be evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuessDecision {
    /// A guess was reserved: check the password.
    Evaluate,
    /// A budget is spent: refuse without checking, for at least this long.
    Throttled(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000_000;

    #[test]
    fn a_budget_allows_its_limit_per_window_then_waits_for_the_window() {
        let mut budget = None;
        for n in 1..=MAX_FAILURES {
            let next = Budget::reserve(budget, MAX_FAILURES, n as i64).unwrap();
            assert_eq!(next.used, n);
            budget = Some(next);
        }
        let wait = Budget::reserve(budget, MAX_FAILURES, 10 * MINUTE).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_micros((15 * MINUTE - 10 * MINUTE + 1) as u64)
        );
        let renewed = Budget::reserve(budget, MAX_FAILURES, 15 * MINUTE + 1).unwrap();
        assert_eq!((renewed.used, renewed.pending), (1, 1), "a new window");
    }

    #[test]
    fn a_success_forgives_settled_failures_but_not_guesses_in_flight() {
        let reserve = |budget| Budget::reserve(budget, MAX_FAILURES, 0).unwrap();
        // Four failures one after the other, then the right password: all forgiven.
        let mut budget = None;
        for _ in 0..4 {
            budget = Some(reserve(budget).settle_client(GuessOutcome::Failed));
        }
        let success = reserve(budget).settle_client(GuessOutcome::Succeeded);
        assert_eq!((success.used, success.pending), (0, 0));
        // Five reserved at once, the right one among them: the four still being
        // checked stay counted, so one more guess at most.
        let mut burst = None;
        for _ in 0..5 {
            burst = Some(reserve(burst));
        }
        let after = burst.unwrap().settle_client(GuessOutcome::Succeeded);
        assert_eq!((after.used, after.pending), (4, 4));
        assert_eq!(
            burst.unwrap().settle_client(GuessOutcome::NotChecked).used,
            4,
            "an unchecked guess is given back"
        );
        // The account keeps failures; it gives back successes and unchecked guesses.
        let account = reserve(None);
        assert_eq!(account.settle_account(GuessOutcome::Failed), None);
        assert_eq!(
            account
                .settle_account(GuessOutcome::Succeeded)
                .unwrap()
                .used,
            0
        );
    }
}
