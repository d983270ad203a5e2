//! The users table's DDL for both backends, from the row's shape in
//! `domain::columns`, and the one rule for names that may be spliced into CQL or SQL.
//!
//! The live `users` table is created by each backend's migrations; side tables
//! (`rebuild --into`) are created from here, and each backend's tests hold the two
//! equal.

use crate::domain::columns::{Column, ColumnKind};

/// A side table on Cassandra: the key, every column of [`Column::ALL`] and
/// `last_event_id`. No search indexes: searches read `users`.
pub fn cassandra_users_table(keyspace: &str, table: &str) -> String {
    let columns: Vec<String> = Column::ALL
        .iter()
        .map(|column| {
            let kind = match column.kind() {
                ColumnKind::Text => "text",
                ColumnKind::Timestamp => "timestamp",
                ColumnKind::Terms => "set<text>",
            };
            format!("{} {kind}", column.name())
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {keyspace}.{table} (userid uuid PRIMARY KEY, {}, \
         last_event_id timeuuid)",
        columns.join(", ")
    )
}

/// The users columns as SQLite stores them, in [`Column`] order: each value with its
/// write time beside it (`<name>_wt`, microseconds; SQLite has no per-cell write time).
/// A search column keeps only its write time in the row: its terms are rows of the
/// table's terms table ([`sqlite_terms_table`]), where a search finds them by index.
pub fn sqlite_users_columns() -> Vec<(String, &'static str)> {
    let mut columns = Vec::new();
    for column in Column::ALL {
        match column.kind() {
            ColumnKind::Text => columns.push((column.name().to_owned(), "TEXT")),
            // Milliseconds since the epoch.
            ColumnKind::Timestamp => columns.push((column.name().to_owned(), "INTEGER")),
            ColumnKind::Terms => {}
        }
        columns.push((format!("{}_wt", column.name()), "INTEGER"));
    }
    columns.push(("last_event_id".into(), "TEXT"));
    columns.push(("last_event_id_wt".into(), "INTEGER"));
    columns
}

/// The terms table beside a SQLite users table: `users_search_terms` for `users`.
pub fn sqlite_terms_table(table: &str) -> String {
    format!("{table}_search_terms")
}

/// A side table on SQLite, with its terms table.
pub fn sqlite_users_table(table: &str) -> String {
    let columns: Vec<String> = sqlite_users_columns()
        .into_iter()
        .map(|(name, kind)| format!("{name} {kind}"))
        .collect();
    let terms = sqlite_terms_table(table);
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (userid TEXT PRIMARY KEY, {}) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS {terms} (field TEXT NOT NULL, term TEXT NOT NULL, \
         userid TEXT NOT NULL, PRIMARY KEY (field, term, userid)) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS {terms}_by_user ON {terms} (userid, field);",
        columns.join(", ")
    )
}

/// A name that may be spliced into CQL or SQL (a keyspace, a table): CQL's unquoted
/// identifier, a letter then up to 47 letters, digits or underscores.
pub fn validate_identifier(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        Err("a letter followed by up to 47 letters, digits or underscores".into())
    }
}

/// The service's own tables: no job may write into them.
const OWN_TABLES: [&str; 8] = [
    "user_events",
    "user_credentials",
    "schema_migrations",
    "schema_migration_lease",
    "projection_checkpoints",
    "login_budgets",
    "leases",
    "user_keys",
];

/// A table a job may create and write (`rebuild --into`): an identifier that is not one
/// of the service's own tables nor a SQLite terms table.
pub fn validate_table_name(name: &str) -> Result<(), String> {
    const RULE: &str = "a letter followed by up to 47 letters, digits or underscores, \
                        not one of the service's own tables";
    validate_identifier(name).map_err(|_| RULE.to_owned())?;
    if OWN_TABLES.contains(&name) || name.ends_with("_search_terms") {
        return Err(RULE.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_table_names() {
        assert!(validate_identifier("killrvideo").is_ok());
        assert!(validate_identifier("t_123").is_ok());
        for bad in ["", "1abc", "a-b", "a;DROP", &"k".repeat(49)] {
            assert!(validate_identifier(bad).is_err(), "{bad}");
        }
        assert!(validate_table_name("users_rebuild").is_ok());
        for bad in [
            "",
            "user_events",
            "a;b",
            "1x",
            "leases",
            "users_search_terms",
        ] {
            assert!(validate_table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_column_is_in_both_side_tables() {
        let cql = cassandra_users_table("ks", "t");
        let sql = sqlite_users_table("t");
        for column in Column::ALL {
            assert!(cql.contains(&format!(" {} ", column.name())), "{column:?}");
            assert!(
                sql.contains(&format!(" {}_wt ", column.name())),
                "{column:?}"
            );
        }
    }
}
