//! The login throttle's budgets on SQLite (`domain::login`): read and written inside
//! the database thread's transactions, swept once a minute; the [`LoginBudgets`] port.

use super::EmbeddedStore;
use crate::domain::login::{self, Budget, GuessDecision, GuessOutcome};
use crate::store::{GuessKey, HeldBudget, LoginBudgets, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::atomic::Ordering;

/// One guess budget, if there is one.
pub(super) fn read_budget(
    tx: &Connection,
    email_key: &str,
    scope: &str,
) -> Result<Option<Budget>, StoreError> {
    Ok(tx
        .prepare_cached(
            "SELECT used, pending, window_start FROM login_budgets WHERE email = ?1 AND scope = ?2",
        )?
        .query_row(params![email_key, scope], |row| {
            Ok(Budget {
                used: row.get(0)?,
                pending: row.get(1)?,
                window_start: row.get(2)?,
            })
        })
        .optional()?)
}

/// Every budget of an email key, in scope order.
pub(super) fn read_all_budgets(
    c: &Connection,
    email_key: &str,
) -> Result<Vec<crate::store::HeldBudget>, StoreError> {
    let mut statement = c.prepare_cached(
        "SELECT scope, used, pending, window_start FROM login_budgets WHERE email = ?1 ORDER BY scope",
    )?;
    let rows = statement.query_map([email_key], |row| {
        Ok(crate::store::HeldBudget {
            scope: row.get(0)?,
            budget: Budget {
                used: row.get(1)?,
                pending: row.get(2)?,
                window_start: row.get(3)?,
            },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn write_budget(
    tx: &Connection,
    email_key: &str,
    scope: &str,
    budget: Budget,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO login_budgets (email, scope, used, pending, window_start, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (email, scope) DO UPDATE SET used = excluded.used,
             pending = excluded.pending, window_start = excluded.window_start,
             expires_at = excluded.expires_at",
    )?
    .execute(params![
        email_key,
        scope,
        budget.used,
        budget.pending,
        budget.window_start,
        budget.expires_at()
    ])?;
    Ok(())
}

/// When the expired guess budgets were last swept away: at most once a minute, inside
/// a reservation, so the table holds about one window's worth of budgets.
#[derive(Debug, Default)]
pub(super) struct LoginSweep {
    last: std::sync::atomic::AtomicI64,
}

impl LoginSweep {
    /// Sweep period, microseconds.
    pub(super) const EVERY: i64 = 60_000_000;

    /// True (and the sweep recorded) when a sweep is due at `now`.
    pub(super) fn due(&self, now: i64) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        now - last >= Self::EVERY
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[async_trait]
impl LoginBudgets for EmbeddedStore {
    async fn reserve_guess(
        &self,
        key: GuessKey<'_>,
        now: DateTime<Utc>,
    ) -> Result<GuessDecision, StoreError> {
        let (email_key, client) = (key.email_key.to_owned(), key.client.to_owned());
        let now = now.timestamp_micros();
        let sweep = self.login_sweep.due(now);
        // One write of the database thread: both budgets are read and reserved in one
        // transaction, so parallel guesses are counted one after the other.
        self.database
            .write(move |tx| {
                if sweep {
                    // Budgets whose window has passed say nothing any more.
                    tx.prepare_cached("DELETE FROM login_budgets WHERE expires_at < ?1")?
                        .execute([now])?;
                }
                let client_budget = match Budget::reserve(
                    read_budget(tx, &email_key, &client)?,
                    login::MAX_FAILURES,
                    now,
                ) {
                    Ok(budget) => budget,
                    Err(wait) => return Ok(GuessDecision::Throttled(wait)),
                };
                let account_budget = match Budget::reserve(
                    read_budget(tx, &email_key, login::ACCOUNT_SCOPE)?,
                    login::MAX_GUESSES_PER_ACCOUNT,
                    now,
                ) {
                    Ok(budget) => budget,
                    Err(wait) => return Ok(GuessDecision::Throttled(wait)),
                };
                write_budget(tx, &email_key, &client, client_budget)?;
                write_budget(tx, &email_key, login::ACCOUNT_SCOPE, account_budget)?;
                Ok(GuessDecision::Evaluate)
            })
            .await
    }

    async fn settle_guess(
        &self,
        key: GuessKey<'_>,
        outcome: GuessOutcome,
    ) -> Result<(), StoreError> {
        let (email_key, client) = (key.email_key.to_owned(), key.client.to_owned());
        self.database
            .write(move |tx| {
                if let Some(budget) = read_budget(tx, &email_key, &client)? {
                    write_budget(tx, &email_key, &client, budget.settle_client(outcome))?;
                }
                let account = read_budget(tx, &email_key, login::ACCOUNT_SCOPE)?
                    .and_then(|budget| budget.settle_account(outcome));
                if let Some(account) = account {
                    write_budget(tx, &email_key, login::ACCOUNT_SCOPE, account)?;
                }
                Ok(())
            })
            .await
    }

    async fn guess_budgets(&self, email_key: &str) -> Result<Vec<HeldBudget>, StoreError> {
        let email_key = email_key.to_owned();
        self.with_reader(move |c| read_all_budgets(c, &email_key))
            .await
    }
}
