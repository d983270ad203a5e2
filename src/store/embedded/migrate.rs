//! The embedded store's schema: the numbered SQL files of `migrations/sqlite/`, compiled
//! into the binary and applied, in order, when the store opens.

use crate::store::StoreError;
use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, params};

/// Numbered migrations, applied in order and recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../../../migrations/sqlite/0002_projection_checkpoints.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/sqlite/0003_login_failures.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/sqlite/0004_user_search.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/sqlite/0005_leases.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/sqlite/0006_login_budgets.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/sqlite/0007_user_keys.sql"),
    ),
];

pub(super) fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )?;
    let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for (version, sql) in MIGRATIONS {
        let applied: bool = tx
            .query_row(
                "SELECT 1 FROM schema_migrations WHERE version = ?1",
                [version],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !applied {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, Utc::now().to_rfc3339()],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}
