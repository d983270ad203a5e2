//! The login throttle's budgets on Cassandra (`domain::login`): rows changed only by
//! lightweight transactions that check what they read, so every instance counts alike;
//! the [`LoginBudgets`] port.

use super::{CassandraStore, LwtAnswer, classify, internal};
use crate::domain::login::{self, Budget, GuessDecision, GuessOutcome};
use crate::store::{GuessKey, HeldBudget, LoginBudgets, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use scylla::response::query_result::QueryResult;
use scylla::value::CqlValue;
use std::time::Duration;

/// Attempts at a guess budget's lightweight transaction before giving up: each lost
/// round returns the values that beat it, so attempts are only lost to a writer that
/// changed the budget in between.
pub(super) const BUDGET_ATTEMPTS: usize = 16;

impl CassandraStore {
    /// A login attempt's two budgets: the client's, then the account's.
    pub(super) async fn read_budgets(
        &self,
        email_key: &str,
        client: &str,
    ) -> Result<(Option<Budget>, Option<Budget>), StoreError> {
        let result = self
            .session()
            .execute_unpaged(
                &self.statements.select_budgets,
                (email_key, client, login::ACCOUNT_SCOPE),
            )
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        let (mut client_budget, mut account_budget) = (None, None);
        for row in rows
            .rows::<(String, i32, Option<i32>, i64)>()
            .map_err(internal)?
        {
            let (scope, used, pending, window_start) = row.map_err(internal)?;
            let budget = Some(Budget {
                used: u32::try_from(used).unwrap_or(0),
                pending: u32::try_from(pending.unwrap_or(0)).unwrap_or(0),
                window_start,
            });
            if scope == client {
                client_budget = budget;
            } else {
                account_budget = budget;
            }
        }
        Ok((client_budget, account_budget))
    }

    /// Every budget of an email key, in scope order (the clustering order).
    pub(super) async fn read_all_budgets(
        &self,
        email_key: &str,
    ) -> Result<Vec<crate::store::HeldBudget>, StoreError> {
        let result = self
            .session()
            .execute_unpaged(&self.statements.select_all_budgets, (email_key,))
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        rows.rows::<(String, i32, Option<i32>, i64)>()
            .map_err(internal)?
            .map(|row| {
                let (scope, used, pending, window_start) = row.map_err(internal)?;
                Ok(crate::store::HeldBudget {
                    scope,
                    budget: Budget {
                        used: u32::try_from(used).unwrap_or(0),
                        pending: u32::try_from(pending.unwrap_or(0)).unwrap_or(0),
                        window_start,
                    },
                })
            })
            .collect()
    }

    /// Applies `change` to one guess budget with a lightweight transaction that checks
    /// the budget is still `current`; a lost round retries with the values that won.
    /// `change` returning `Err` leaves the budget as it is, and that is the answer.
    pub(super) async fn change_budget(
        &self,
        email_key: &str,
        scope: &str,
        mut current: Option<Budget>,
        change: impl Fn(Option<Budget>) -> Result<Budget, Duration>,
    ) -> Result<Result<Budget, Duration>, StoreError> {
        let ttl = i32::try_from(login::LOCKOUT_WINDOW.as_secs()).unwrap_or(i32::MAX);
        for _ in 0..BUDGET_ATTEMPTS {
            let next = match change(current) {
                Ok(next) => next,
                Err(wait) => return Ok(Err(wait)),
            };
            let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
            let result = match current {
                None => {
                    self.session()
                        .execute_unpaged(
                            &self.statements.insert_budget_if_absent,
                            (
                                email_key,
                                scope,
                                count(next.used),
                                count(next.pending),
                                next.window_start,
                                ttl,
                            ),
                        )
                        .await
                }
                Some(seen) => {
                    self.session()
                        .execute_unpaged(
                            &self.statements.update_budget_if_unchanged,
                            (
                                ttl,
                                count(next.used),
                                count(next.pending),
                                next.window_start,
                                email_key,
                                scope,
                                count(seen.used),
                                count(seen.pending),
                                seen.window_start,
                            ),
                        )
                        .await
                }
            }
            .map_err(classify)?;
            match lwt_outcome_budget(result)? {
                LwtBudget::Applied => return Ok(Ok(next)),
                LwtBudget::Lost(now_there) => current = now_there,
            }
        }
        Err(StoreError::unavailable(format!(
            "the login budget of one account kept changing ({BUDGET_ATTEMPTS} rounds lost)"
        )))
    }
}

/// The outcome of a budget's lightweight transaction.
pub(super) enum LwtBudget {
    /// It applied.
    Applied,
    /// Another writer changed the budget first; this is what it holds now.
    Lost(Option<Budget>),
}

/// Reads a budget LWT's result ([`LwtAnswer`]): applied, or lost with the values that
/// beat it (none when the row is gone).
pub(super) fn lwt_outcome_budget(result: QueryResult) -> Result<LwtBudget, StoreError> {
    let answer = LwtAnswer::read(result)?;
    if answer.applied {
        return Ok(LwtBudget::Applied);
    }
    let budget = match (
        answer.current("used"),
        answer.current("pending"),
        answer.current("window_start"),
    ) {
        (Some(CqlValue::Int(used)), pending, Some(CqlValue::BigInt(window_start))) => {
            let pending = match pending {
                Some(CqlValue::Int(pending)) => *pending,
                _ => 0,
            };
            Some(Budget {
                used: u32::try_from(*used).unwrap_or(0),
                pending: u32::try_from(pending).unwrap_or(0),
                window_start: *window_start,
            })
        }
        _ => None,
    };
    Ok(LwtBudget::Lost(budget))
}

#[async_trait]
impl LoginBudgets for CassandraStore {
    async fn reserve_guess(
        &self,
        key: GuessKey<'_>,
        now: DateTime<Utc>,
    ) -> Result<GuessDecision, StoreError> {
        let GuessKey { email_key, client } = key;
        let now = now.timestamp_micros();
        let (client_budget, account_budget) = self.read_budgets(email_key, client).await?;
        // The address first: an address whose own budget is spent must not be able to
        // spend the account's, which would lock its owner out everywhere.
        let scopes = [
            (client, client_budget, login::MAX_FAILURES),
            (
                login::ACCOUNT_SCOPE,
                account_budget,
                login::MAX_GUESSES_PER_ACCOUNT,
            ),
        ];
        for (scope, budget, limit) in scopes {
            let change = |current: Option<Budget>| Budget::reserve(current, limit, now);
            if let Err(wait) = self.change_budget(email_key, scope, budget, change).await? {
                return Ok(GuessDecision::Throttled(wait));
            }
        }
        Ok(GuessDecision::Evaluate)
    }

    async fn settle_guess(
        &self,
        key: GuessKey<'_>,
        outcome: GuessOutcome,
    ) -> Result<(), StoreError> {
        let GuessKey { email_key, client } = key;
        let (client_budget, account_budget) = self.read_budgets(email_key, client).await?;
        // An absent budget (expired) has nothing to settle: `Err` leaves it absent.
        let settle_client = |current: Option<Budget>| {
            current
                .map(|budget| budget.settle_client(outcome))
                .ok_or(Duration::ZERO)
        };
        let _ = self
            .change_budget(email_key, client, client_budget, settle_client)
            .await?;
        if outcome != GuessOutcome::Failed {
            let settle_account = |current: Option<Budget>| {
                current
                    .and_then(|budget| budget.settle_account(outcome))
                    .ok_or(Duration::ZERO)
            };
            let _ = self
                .change_budget(
                    email_key,
                    login::ACCOUNT_SCOPE,
                    account_budget,
                    settle_account,
                )
                .await?;
        }
        Ok(())
    }

    async fn guess_budgets(&self, email_key: &str) -> Result<Vec<HeldBudget>, StoreError> {
        self.read_all_budgets(email_key).await
    }
}
