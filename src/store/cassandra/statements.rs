//! Every statement of the request path, prepared once, when the store connects.

use super::qualify;
use super::rows::{EVENT_COLUMNS, EVENT_INSERT_COLUMNS, USER_CELLS, projection_cql};
use crate::domain::columns::{COLUMN_SETS, Column};
use crate::domain::search::MAX_PROBE_TERMS;
use crate::store::{StoreError, USERS_TABLE};
use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use std::collections::HashMap;

/// Statements of the request path and the jobs, prepared once at start-up.
pub(super) struct Statements {
    pub(super) ping: PreparedStatement,
    pub(super) select_user: PreparedStatement,
    pub(super) select_credentials: PreparedStatement,
    pub(super) claim_credentials: PreparedStatement,
    /// The same claim, marked idempotent: sent again when the first one's outcome is
    /// unknown, which its condition makes safe (it cannot apply twice).
    pub(super) claim_credentials_again: PreparedStatement,
    pub(super) insert_event: PreparedStatement,
    pub(super) append_event_if_head: PreparedStatement,
    /// The same version-checked append, marked idempotent, for the same reason.
    pub(super) append_event_if_head_again: PreparedStatement,
    /// One `UPDATE users USING TIMESTAMP ...` per column set the projection can produce.
    pub(super) project: HashMap<Vec<Column>, PreparedStatement>,
    pub(super) select_events_newest: PreparedStatement,
    pub(super) select_events_before: PreparedStatement,
    /// The events from a version on, inclusive: what a version-checked append
    /// re-projects after its Paxos round.
    pub(super) select_events_since: PreparedStatement,
    /// The write time of one event row at SERIAL consistency: settles an LWT whose
    /// outcome timed out.
    pub(super) select_event_write_time_serial: PreparedStatement,
    /// The two guess budgets of a login attempt, read at LOCAL_QUORUM: a first guess at
    /// what the lightweight transactions below then check.
    pub(super) select_budgets: PreparedStatement,
    /// Every budget of an email key (one partition), for the data export.
    pub(super) select_all_budgets: PreparedStatement,
    pub(super) insert_budget_if_absent: PreparedStatement,
    pub(super) update_budget_if_unchanged: PreparedStatement,
    /// Per search column and number of terms (1 to `MAX_PROBE_TERMS`): the candidates
    /// whose terms contain them all, in token order from a token on, through the SAI.
    pub(super) search: HashMap<(Column, usize), PreparedStatement>,
    pub(super) select_users_with_status: PreparedStatement,
    pub(super) acquire_lease: PreparedStatement,
    pub(super) release_lease: PreparedStatement,
    /// A user's wrapped data key.
    pub(super) select_data_key: PreparedStatement,
    /// A new user's data key (a plain insert: the user id is new).
    pub(super) insert_data_key: PreparedStatement,
    /// The data key of a user registered before keys existed: first writer wins.
    pub(super) insert_data_key_if_absent: PreparedStatement,
    pub(super) delete_data_key: PreparedStatement,
    pub(super) register_kek: PreparedStatement,
    /// Erasure: the credentials of an email, if they are the erased user's.
    pub(super) delete_credentials_of: PreparedStatement,
    pub(super) delete_budgets: PreparedStatement,
    pub(super) delete_user_row: PreparedStatement,
    /// Every event of a user, oldest first: what erasure overwrites.
    pub(super) select_all_events: PreparedStatement,
    pub(super) overwrite_payload: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session, keyspace: &str) -> Result<Self, StoreError> {
        let prepare = |cql: String, idempotent: bool| async move {
            let cql = qualify(keyspace, &cql);
            let mut statement = session
                .prepare(cql.clone())
                .await
                .map_err(|err| match err {
                    scylla::errors::PrepareError::ConnectionPoolError(_) => {
                        StoreError::unavailable(err.to_string())
                    }
                    _ => StoreError::SchemaMissing(format!("cannot prepare `{cql}`: {err}")),
                })?;
            statement.set_is_idempotent(idempotent);
            Ok::<_, StoreError>(statement)
        };
        // A read of named columns: what its result holds is fixed by its text, so the
        // driver decodes it with the metadata it received when preparing, and Cassandra
        // is asked not to encode the column specifications into every result again
        // (`SKIP_METADATA`: 15 specs for a users row, on the auth read and the
        // refetch of every PUT). Never an LWT, whose result has other columns when it
        // does not apply, and never `SELECT *`, whose columns follow the table's.
        let prepare_read = |cql: String| async move {
            let mut statement = prepare(cql, true).await?;
            statement.set_use_cached_result_metadata(true);
            Ok::<_, StoreError>(statement)
        };
        // The statement a lightweight transaction is sent with again when its first
        // attempt's outcome is unknown: its condition makes a second round harmless, so
        // this one may be retried and raced on another coordinator like any idempotent
        // statement. The first attempt never is: a duplicate round racing the first
        // can complete it under a later ballot, after its writer has read it back
        // (docs/consistency.md, "Retries and idempotence").
        let resend = |statement: &PreparedStatement| {
            let mut again = statement.clone();
            again.set_is_idempotent(true);
            again
        };
        let mut project = HashMap::new();
        for columns in COLUMN_SETS {
            // Writes with an explicit timestamp are idempotent: a retry rewrites the same
            // cells with the same timestamp.
            project.insert(
                columns.to_vec(),
                prepare(projection_cql(USERS_TABLE, columns), true).await?,
            );
        }
        let mut search = HashMap::new();
        for (column, _) in Column::SEARCH {
            for count in 1..=MAX_PROBE_TERMS {
                let contains = vec![format!("{} CONTAINS ?", column.name()); count].join(" AND ");
                search.insert(
                    (column, count),
                    prepare_read(format!(
                        "SELECT {USER_CELLS}, token(userid) FROM users WHERE {contains} \
                         AND token(userid) >= ? LIMIT ?"
                    ))
                    .await?,
                );
            }
        }
        let claim_credentials = prepare(
            "INSERT INTO user_credentials (email, password, userid, account_locked) \
             VALUES (?, ?, ?, ?) IF NOT EXISTS"
                .into(),
            false,
        )
        .await?;
        let append_event_if_head = prepare(
            "UPDATE user_events SET event_type = ?, schema_version = ?, payload = ?, actor = ?, \
             request_id = ?, head = ? WHERE userid = ? AND event_id = ? IF head = ?"
                .into(),
            false,
        )
        .await?;
        Ok(Self {
            // A row of a replicated table at LOCAL_QUORUM: it answers only when a
            // quorum of replicas does, which `system.local` (the coordinator's own
            // table) would not tell.
            ping: prepare_read("SELECT name FROM schema_migrations WHERE version = 1".into()).await?,
            select_user: prepare_read(format!("SELECT {USER_CELLS} FROM users WHERE userid = ?")).await?,
            select_credentials: prepare_read(
                "SELECT password, userid, account_locked FROM user_credentials WHERE email = ?".into(),
            )
            .await?,
            claim_credentials_again: resend(&claim_credentials),
            claim_credentials,
            insert_event: prepare(
                format!("INSERT INTO user_events ({EVENT_INSERT_COLUMNS}, head) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"),
                true,
            )
            .await?,
            append_event_if_head_again: resend(&append_event_if_head),
            append_event_if_head,
            project,
            select_events_newest: prepare_read(
                format!("SELECT {EVENT_COLUMNS} FROM user_events WHERE userid = ? LIMIT ?"),
            )
            .await?,
            select_events_before: prepare_read(
                format!("SELECT {EVENT_COLUMNS} FROM user_events WHERE userid = ? AND event_id < ? LIMIT ?"),
            )
            .await?,
            select_events_since: prepare_read(
                format!("SELECT {EVENT_COLUMNS} FROM user_events WHERE userid = ? AND event_id >= ?"),
            )
            .await?,
            select_event_write_time_serial: {
                let mut statement = prepare_read(
                    "SELECT WRITETIME(payload) FROM user_events WHERE userid = ? AND event_id = ?".into(),
                )
                .await?;
                statement.set_consistency(Consistency::LocalSerial);
                statement
            },
            select_budgets: prepare_read(
                "SELECT scope, used, pending, window_start FROM login_budgets WHERE email = ? AND scope IN (?, ?)"
                    .into(),
            )
            .await?,
            select_all_budgets: prepare_read(
                "SELECT scope, used, pending, window_start FROM login_budgets WHERE email = ?".into(),
            )
            .await?,
            insert_budget_if_absent: prepare(
                "INSERT INTO login_budgets (email, scope, used, pending, window_start) \
                 VALUES (?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
                    .into(),
                false,
            )
            .await?,
            update_budget_if_unchanged: prepare(
                "UPDATE login_budgets USING TTL ? SET used = ?, pending = ?, window_start = ? \
                 WHERE email = ? AND scope = ? IF used = ? AND pending = ? AND window_start = ?"
                    .into(),
                false,
            )
            .await?,
            search,
            select_users_with_status: prepare_read(
                "SELECT userid FROM users WHERE account_status = ? LIMIT ?".into(),
            )
            .await?,
            acquire_lease: prepare(
                "INSERT INTO leases (name, owner) VALUES (?, ?) IF NOT EXISTS USING TTL ?".into(),
                false,
            )
            .await?,
            release_lease: prepare("DELETE FROM leases WHERE name = ? IF owner = ?".into(), false)
                .await?,
            select_data_key: prepare_read(
                "SELECT kek_id, wrapped FROM user_keys WHERE userid = ?".into(),
            )
            .await?,
            // The same bytes again on a retry: idempotent.
            insert_data_key: prepare(
                "INSERT INTO user_keys (userid, kek_id, wrapped) VALUES (?, ?, ?)".into(),
                true,
            )
            .await?,
            insert_data_key_if_absent: prepare(
                "INSERT INTO user_keys (userid, kek_id, wrapped) VALUES (?, ?, ?) IF NOT EXISTS"
                    .into(),
                false,
            )
            .await?,
            delete_data_key: prepare("DELETE FROM user_keys WHERE userid = ?".into(), true).await?,
            register_kek: prepare(
                "INSERT INTO key_encryption_keys (kek_id, registered_at) VALUES (?, toTimestamp(now()))"
                    .into(),
                true,
            )
            .await?,
            // Sent twice, it deletes nothing more: idempotent in effect.
            delete_credentials_of: prepare(
                "DELETE FROM user_credentials WHERE email = ? IF userid = ?".into(),
                true,
            )
            .await?,
            delete_budgets: prepare("DELETE FROM login_budgets WHERE email = ?".into(), true).await?,
            delete_user_row: prepare(
                "DELETE FROM users USING TIMESTAMP ? WHERE userid = ?".into(),
                true,
            )
            .await?,
            select_all_events: prepare_read(format!(
                "SELECT {EVENT_COLUMNS} FROM user_events WHERE userid = ?"
            ))
            .await?,
            overwrite_payload: prepare(
                "UPDATE user_events USING TIMESTAMP ? SET payload = ? WHERE userid = ? AND event_id = ?"
                    .into(),
                true,
            )
            .await?,
        })
    }
}
