//! The projection jobs' side of the Cassandra store: token-range scans, projection into
//! any table, tombstones, checkpoints.

use super::rows::{
    EVENT_COLUMNS, EventRow, FullUserCells, SEARCH_CELLS, USER_CELLS, projection_cql,
};
use super::{CassandraStore, classify, internal, qualify};
use crate::domain::columns::{COLUMN_SETS, Column};
use crate::domain::{EventEnvelope, UserRow};
use crate::store::schema::{cassandra_users_table, validate_table_name};
use crate::store::{
    EventStream, FinishedRange, ProjectionStore, RowStream, ScanRange, StoreError, USERS_TABLE,
    split_token_ring,
};
use async_trait::async_trait;
use futures::StreamExt;
use scylla::statement::prepared::PreparedStatement;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Rows per page when scanning.
const SCAN_PAGE_SIZE: i32 = 1000;

/// The statements a job needs against one table.
pub(super) struct TableStatements {
    project: HashMap<Vec<Column>, PreparedStatement>,
    select_row: PreparedStatement,
    scan_rows: PreparedStatement,
    delete_row: PreparedStatement,
    delete_cell: HashMap<Column, PreparedStatement>,
    scan_events: PreparedStatement,
    finished_ranges: PreparedStatement,
    finish_range: PreparedStatement,
    reset_checkpoints: PreparedStatement,
}

impl CassandraStore {
    async fn prepare_job_statement(&self, cql: String) -> Result<PreparedStatement, StoreError> {
        let cql = qualify(&self.keyspace, &cql);
        let mut statement = self
            .session()
            .prepare(cql.clone())
            .await
            .map_err(|err| StoreError::internal(format!("cannot prepare `{cql}`: {err}")))?;
        statement.set_is_idempotent(true);
        statement.set_page_size(SCAN_PAGE_SIZE);
        Ok(statement)
    }

    fn table_statements(&self, table: &str) -> Result<Arc<TableStatements>, StoreError> {
        self.job_statements
            .read()
            .map_err(|_| internal("job statement lock poisoned"))?
            .get(table)
            .cloned()
            .ok_or_else(|| internal(format!("prepare_table(\"{table}\") was not called")))
    }
}

#[async_trait]
impl ProjectionStore for CassandraStore {
    fn scan_ranges(&self, splits: usize) -> Vec<ScanRange> {
        split_token_ring(splits)
    }

    async fn scan_events(&self, range: ScanRange) -> Result<EventStream<'_>, StoreError> {
        let statements = self.table_statements(USERS_TABLE)?;
        let pager = self
            .session()
            .execute_iter(statements.scan_events.clone(), (range.start, range.end))
            .await
            .map_err(|err| StoreError::unavailable(err.to_string()))?;
        let rows = pager.rows_stream::<EventRow>().map_err(internal)?;
        // Each event opened with its user's key, cached: a user's events come one after
        // the other, so a key is read once per user.
        Ok(rows
            .then(move |row| async move {
                let row = row.map_err(|err| StoreError::unavailable(err.to_string()))?;
                self.open_row(row, false).await
            })
            .boxed())
    }

    async fn scan_rows(&self, table: &str, range: ScanRange) -> Result<RowStream<'_>, StoreError> {
        let statements = self.table_statements(table)?;
        let pager = self
            .session()
            .execute_iter(statements.scan_rows.clone(), (range.start, range.end))
            .await
            .map_err(|err| StoreError::unavailable(err.to_string()))?;
        let rows = pager.rows_stream::<FullUserCells>().map_err(internal)?;
        Ok(rows
            .map(|row| {
                row.map(UserRow::from)
                    .map_err(|err| StoreError::unavailable(err.to_string()))
            })
            .boxed())
    }

    async fn prepare_table(&self, table: &str) -> Result<(), StoreError> {
        if table != USERS_TABLE {
            validate_table_name(table)
                .map_err(|accepts| internal(format!("invalid table `{table}`: {accepts}")))?;
            // DDL settles slowly on a loaded node: the schema statement timeout, not
            // the request path's 2 s (a rebuild timed out here in CI).
            self.session()
                .query_unpaged(
                    super::migrate::schema_statement(cassandra_users_table(&self.keyspace, table)),
                    (),
                )
                .await
                .map_err(classify)?;
        }
        let mut project = HashMap::new();
        for columns in COLUMN_SETS {
            project.insert(
                columns.to_vec(),
                self.prepare_job_statement(projection_cql(table, columns))
                    .await?,
            );
        }
        let mut delete_cell = HashMap::new();
        for column in Column::ALL {
            delete_cell.insert(
                column,
                self.prepare_job_statement(format!(
                    "DELETE {} FROM {table} USING TIMESTAMP ? WHERE userid = ?",
                    column.name()
                ))
                .await?,
            );
        }
        let statements = TableStatements {
            project,
            select_row: self
                .prepare_job_statement(format!(
                    "SELECT {USER_CELLS}, {SEARCH_CELLS} FROM {table} WHERE userid = ?"
                ))
                .await?,
            scan_rows: self
                .prepare_job_statement(format!(
                    "SELECT {USER_CELLS}, {SEARCH_CELLS} FROM {table} WHERE token(userid) > ? AND token(userid) <= ?"
                ))
                .await?,
            delete_row: self
                .prepare_job_statement(format!("DELETE FROM {table} USING TIMESTAMP ? WHERE userid = ?"))
                .await?,
            delete_cell,
            scan_events: self
                .prepare_job_statement(format!(
                    "SELECT {EVENT_COLUMNS} FROM user_events WHERE token(userid) > ? AND token(userid) <= ?"
                ))
                .await?,
            finished_ranges: self
                .prepare_job_statement("SELECT range_start FROM projection_checkpoints WHERE job = ?".into())
                .await?,
            finish_range: self
                .prepare_job_statement(
                    "INSERT INTO projection_checkpoints (job, range_start, range_end, events, finished_at) \
                     VALUES (?, ?, ?, ?, toTimestamp(now()))"
                        .into(),
                )
                .await?,
            reset_checkpoints: self
                .prepare_job_statement("DELETE FROM projection_checkpoints WHERE job = ?".into())
                .await?,
        };
        self.job_statements
            .write()
            .map_err(|_| internal("job statement lock poisoned"))?
            .insert(table.to_owned(), Arc::new(statements));
        Ok(())
    }

    async fn table_row(&self, table: &str, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        let statements = self.table_statements(table)?;
        let result = self
            .session()
            .execute_unpaged(&statements.select_row, (user_id,))
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        let row: Option<FullUserCells> = rows.maybe_first_row().map_err(internal)?;
        Ok(row.map(UserRow::from))
    }

    async fn project_into(&self, table: &str, event: &EventEnvelope) -> Result<(), StoreError> {
        let statements = self.table_statements(table)?;
        self.write_projection(&statements.project, event).await
    }

    async fn delete_row(&self, table: &str, user_id: Uuid, at: i64) -> Result<(), StoreError> {
        let statements = self.table_statements(table)?;
        self.session()
            .execute_unpaged(&statements.delete_row, (at, user_id))
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn delete_cell(
        &self,
        table: &str,
        user_id: Uuid,
        column: Column,
        at: i64,
    ) -> Result<(), StoreError> {
        let statements = self.table_statements(table)?;
        let statement = statements
            .delete_cell
            .get(&column)
            .ok_or_else(|| internal(format!("no delete statement for {column:?}")))?;
        self.session()
            .execute_unpaged(statement, (at, user_id))
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn finished_ranges(&self, job: &str) -> Result<Vec<i64>, StoreError> {
        let statements = self.table_statements(USERS_TABLE)?;
        let result = self
            .session()
            .execute_unpaged(&statements.finished_ranges, (job,))
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        rows.rows::<(i64,)>()
            .map_err(internal)?
            .map(|row| row.map(|(start,)| start).map_err(internal))
            .collect()
    }

    async fn finish_range(&self, job: &str, done: FinishedRange) -> Result<(), StoreError> {
        let FinishedRange { range, events } = done;
        let statements = self.table_statements(USERS_TABLE)?;
        self.session()
            .execute_unpaged(
                &statements.finish_range,
                (
                    job,
                    range.start,
                    range.end,
                    i64::try_from(events).unwrap_or(i64::MAX),
                ),
            )
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn reset_checkpoints(&self, job: &str) -> Result<(), StoreError> {
        let statements = self.table_statements(USERS_TABLE)?;
        self.session()
            .execute_unpaged(&statements.reset_checkpoints, (job,))
            .await
            .map_err(classify)?;
        Ok(())
    }
}
