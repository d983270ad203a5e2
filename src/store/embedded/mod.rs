//! The embedded backend: SQLite, in one crash-safe file under the data directory.
//!
//! Why SQLite and how it is configured: docs/adr/0001-embedded-store.md. Every write is
//! one transaction covering the event, its projection and (for registration) the
//! credentials, so there is no window in which the log and the table disagree.

use super::{
    Credentials, EventPage, EventStream, Precondition, ProjectionStore, RowStream, ScanRange,
    SearchKey, StoreError, USERS_TABLE, UserStore, validate_table_name,
};
use crate::domain::events::{Actor, EventEnvelope, SCHEMA_VERSION, UserEvent, event_micros};
use crate::domain::login::{self, Budget, GuessDecision, GuessOutcome};
use crate::domain::projection::{CellValue, Column, project};
use crate::domain::user::{Cell, UserRow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use group_commit::DatabaseThread;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

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
];

mod group_commit;

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "killrvideo-users.db";

/// SQLite: the hot path (auth read, append, refetch) on one database thread that
/// group-commits (see group_commit.rs), everything else on a few read-only connections.
#[derive(Clone)]
pub struct EmbeddedStore {
    /// The one connection that writes, and reads rows for the request path.
    database: DatabaseThread,
    /// Read-only connections for history, scans and logins: in WAL mode readers never
    /// wait for the writer.
    readers: Arc<Vec<Mutex<Connection>>>,
    /// Round-robin start for picking a reader.
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
    /// When expired guess budgets were last deleted.
    login_sweep: Arc<LoginSweep>,
    path: PathBuf,
}

/// Read connections per store: two cores, a few readers keep them busy.
const READERS: usize = 4;
/// Page cache of the database thread's connection, in KiB (SQLite's default is 2 MiB).
///
/// Bigger is not free. When a b-tree page splits, SQLite swaps page numbers through a
/// temporary one, the "pending byte" page (1 GiB / page size + 1), and the cache then
/// believes it holds a page that far out. The commit that follows truncates the cache
/// to the database's size and, finding its largest key so far past the end, walks the
/// whole hash table of cached pages. With the event log splitting a page every dozen
/// updates of a user, that is most commits: at 64 MiB (16k pages) the walk was 9% of
/// this thread, and the embedded driver floor ran 16% faster at 8 MiB
/// (docs/performance.md). 8 MiB still holds 2,048 pages: the users rows and the tails
/// of the event log of a couple of thousand active users.
const WRITER_CACHE_KIB: i64 = 8 * 1024;
/// How much of the database file each connection may map.
const MMAP_BYTES: i64 = 256 * 1024 * 1024;

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Unavailable(err.to_string())
            }
            _ => StoreError::Internal(err.to_string()),
        }
    }
}

/// When the embedded store acknowledges a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `synchronous=FULL`: a commit is acknowledged once the WAL holding it is on disk,
    /// so an acknowledged write survives a power loss. Group commit makes that one
    /// sync per group of writers, not per request (docs/adr/0001-embedded-store.md).
    #[default]
    Full,
    /// `synchronous=NORMAL`: the WAL is synced at checkpoints only, so a power loss
    /// (not a crash of the process) may drop the last commits, already answered.
    /// Opt-in: `KILLRVIDEO_EMBEDDED_SYNC=normal`.
    Normal,
}

impl SyncMode {
    fn pragma(self) -> &'static str {
        match self {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        }
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database in `data_dir` and migrates it, durable.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, SyncMode::Full)
    }

    /// [`EmbeddedStore::open`] with a chosen durability.
    pub fn open_with(data_dir: &Path, sync: SyncMode) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|err| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {err}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DATABASE_FILE);
        let mut connection = Connection::open(&path)?;
        // WAL: a crash (of the process or the machine) never corrupts the file or tears a
        // transaction. FULL syncs the WAL at every commit (one per group of writers),
        // so what was acknowledged survives a power loss too; NORMAL syncs it only at
        // checkpoints. See SyncMode.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", sync.pragma())?;
        // Checkpoints run on a background thread, not in the middle of a request's
        // commit: see spawn_checkpointer.
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        connection.pragma_update(None, "mmap_size", MMAP_BYTES)?;
        // Pages still in the WAL are read with pread, not through the map: a cache big
        // enough for the hot rows and the tails of the event log avoids those reads.
        connection.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.set_prepared_statement_cache_capacity(64);
        migrate(&mut connection)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(&path)?;
            reader.busy_timeout(std::time::Duration::from_secs(5))?;
            reader.pragma_update(None, "query_only", "ON")?;
            // Reads through a memory map instead of a pread per page: a reader's own
            // page cache is dropped whenever another connection commits.
            reader.pragma_update(None, "mmap_size", MMAP_BYTES)?;
            reader.set_prepared_statement_cache_capacity(64);
            readers.push(Mutex::new(reader));
        }
        let readers = Arc::new(readers);
        let catch_up = Arc::new(AtomicBool::new(false));
        spawn_checkpointer(&path, Arc::downgrade(&readers), catch_up.clone(), sync)?;
        Ok(Self {
            database: DatabaseThread::spawn(connection, catch_up)?,
            readers,
            next_reader: Arc::default(),
            login_sweep: Arc::default(),
            path,
        })
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writing connection's `PRAGMA synchronous`: 2 is FULL, 1 is NORMAL.
    pub async fn synchronous(&self) -> Result<i64, StoreError> {
        self.database
            .read(|c| Ok(c.query_row("PRAGMA synchronous", [], |row| row.get(0))?))
            .await
    }

    /// Runs a read on one of the read connections, preferring one that is free.
    async fn with_reader<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let count = self.readers.len();
        for offset in 0..count {
            if let Ok(mut guard) = self.readers[(start + offset) % count].try_lock() {
                return work(&mut guard);
            }
        }
        let mut guard = self.readers[start % count]
            .lock()
            .map_err(|_| StoreError::Internal("sqlite reader mutex poisoned".into()))?;
        work(&mut guard)
    }
}

/// How often the background checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// How often, between checkpoints, the checkpointer writes the WAL out to disk.
const WAL_SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// WAL syncs per checkpoint pass, the last of them being the pass's own.
const WAL_SYNCS_PER_PASS: u128 = CHECKPOINT_EVERY.as_millis() / WAL_SYNC_EVERY.as_millis();

/// WAL length (in 4 KiB frames) past which the checkpointer has the WAL start over.
const RESTART_WAL_FRAMES: i64 = 16 * 1024;

/// Runs passive WAL checkpoints on a connection of its own, off the request path, until
/// the store is dropped. A passive checkpoint never blocks readers or the writer; the
/// WAL is copied back as far as readers allow.
///
/// Under a steady stream of commits that alone lets the WAL grow without bound: SQLite
/// only starts the WAL over once a checkpoint has caught up with the last commit, and
/// the writer is always a little ahead. In the benchmark it passed 1 GiB in 20 s, and
/// the checkpoints of such a WAL stalled requests for over 100 ms. So once the WAL is
/// longer than RESTART_WAL_FRAMES, the checkpointer sets `catch_up` and the database
/// thread finishes the job between two batches (group_commit::catch_up_checkpoint).
/// An earlier version ran a RESTART checkpoint here instead; it held the writer back
/// through SQLite's sleeping busy handler and cost stalls of about 100 ms
/// (docs/performance.md).
///
/// Each pass also syncs the database file. SQLite syncs it only at the end of a
/// checkpoint that copied the whole WAL, which under load is only ever the database
/// thread's catch-up: that sync then had every page copied by the passes since the
/// last hand-over to write out, and took about 25 ms, during which no request was
/// served. Synced here, off the request path, what is left for the catch-up's sync is
/// only the pages it copies itself.
///
/// Between two passes the WAL is synced every WAL_SYNC_EVERY ([`WalWriteback`]). A
/// checkpoint begins by syncing the WAL, and without these syncs that one wrote out
/// half a second of commits at once (tens of MB at full load): a burst of disk work
/// that left requests waiting for tens of milliseconds (docs/performance.md). With
/// [`SyncMode::Full`] every commit has synced the WAL already, so there is nothing to
/// write out and these syncs are skipped.
fn spawn_checkpointer(
    path: &Path,
    alive: std::sync::Weak<Vec<Mutex<Connection>>>,
    catch_up: Arc<AtomicBool>,
    sync: SyncMode,
) -> Result<(), StoreError> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    let database_file = std::fs::File::open(path)
        .map_err(|err| StoreError::Unavailable(format!("cannot open {}: {err}", path.display())))?;
    let mut wal_writeback = (sync == SyncMode::Normal).then(|| WalWriteback::new(wal_path(path)));
    // An idle store's passes copy nothing; the file is synced only when a pass saw the
    // WAL move, so an idle service does not flush the disk twice a second.
    let mut last_seen = None;
    let mut checkpoint_and_sync = move |connection: &Connection| {
        let progress = checkpoint_passive(connection)?;
        if last_seen.replace(progress) != Some(progress)
            && let Err(err) = database_file.sync_data()
        {
            tracing::warn!(error = %err, "syncing the database file after a checkpoint failed");
        }
        Ok::<_, rusqlite::Error>(progress.frames)
    };
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while alive.upgrade().is_some() {
                for _ in 1..WAL_SYNCS_PER_PASS {
                    std::thread::sleep(WAL_SYNC_EVERY);
                    if let Some(writeback) = wal_writeback.as_mut() {
                        writeback.sync_if_written();
                    }
                }
                std::thread::sleep(WAL_SYNC_EVERY);
                match checkpoint_and_sync(&connection) {
                    Ok(frames) if frames > RESTART_WAL_FRAMES => {
                        // What the database thread copies and syncs is whatever was
                        // committed after the last pass here began: passes in quick
                        // succession shrink it to a few milliseconds' worth.
                        for _ in 0..CATCH_UP_PASSES {
                            let started = std::time::Instant::now();
                            if checkpoint_and_sync(&connection).is_err()
                                || started.elapsed() < SHORT_PASS
                            {
                                break;
                            }
                        }
                        catch_up.store(true, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "WAL checkpoint failed; will retry"),
                }
            }
            // Last one, so a clean shutdown leaves a small WAL.
            let _ = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .map_err(|err| StoreError::Internal(format!("cannot start the checkpointer: {err}")))?;
    Ok(())
}

/// Most extra passes before handing the rest of a long WAL to the database thread.
const CATCH_UP_PASSES: usize = 4;
/// A pass this quick leaves little for the database thread to do.
const SHORT_PASS: std::time::Duration = std::time::Duration::from_millis(10);

/// The WAL file's path: SQLite names it after the database.
fn wal_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Writes the WAL out to disk a little at a time, so that the sync a checkpoint starts
/// with finds little left to write ([`SyncMode::Normal`] only). Durability never
/// depends on it: SQLite syncs the WAL itself before every checkpoint.
struct WalWriteback {
    path: PathBuf,
    /// Opened once it exists (SQLite creates it at the first write).
    file: Option<std::fs::File>,
    /// Length and modification time at the last sync: an unchanged WAL is not synced,
    /// so an idle store does not flush the disk ten times a second.
    last_synced: Option<(u64, Option<std::time::SystemTime>)>,
}

impl WalWriteback {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            last_synced: None,
        }
    }

    /// Syncs the WAL's data if it was written since the last sync; `true` when it did.
    fn sync_if_written(&mut self) -> bool {
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        let Some(file) = &self.file else {
            return false;
        };
        let Ok(metadata) = file.metadata() else {
            return false;
        };
        let stamp = (metadata.len(), metadata.modified().ok());
        if self.last_synced == Some(stamp) {
            return false;
        }
        if let Err(err) = file.sync_data() {
            tracing::warn!(error = %err, "syncing the WAL between checkpoints failed");
            return false;
        }
        self.last_synced = Some(stamp);
        true
    }
}

/// Where a checkpoint left the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WalProgress {
    /// Frames in the WAL.
    frames: i64,
    /// Of those, frames copied back into the database file.
    copied: i64,
}

/// One passive checkpoint.
fn checkpoint_passive(connection: &Connection) -> rusqlite::Result<WalProgress> {
    // The row is (busy, frames in the WAL, frames copied back).
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(WalProgress {
            frames: row.get(1)?,
            copied: row.get(2)?,
        })
    })
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
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

/// The users columns as SQLite stores them, in [`Column`] order: each value with its
/// write time beside it (`<name>_wt`, microseconds). A search column keeps only its
/// write time here; its terms are rows of the table's terms table
/// ([`search_terms_table`]), where a search can find them by index.
fn stored_columns() -> Vec<(String, &'static str)> {
    let mut columns = Vec::new();
    for column in Column::ALL {
        if column.search_source().is_none() {
            let kind = match column {
                Column::CreatedDate | Column::LastLoginDate => "INTEGER", // milliseconds
                _ => "TEXT",
            };
            columns.push((column.name().to_owned(), kind));
        }
        columns.push((format!("{}_wt", column.name()), "INTEGER"));
    }
    columns.push(("last_event_id".into(), "TEXT"));
    columns.push(("last_event_id_wt".into(), "INTEGER"));
    columns
}

/// The stored columns, comma-separated, as selected by every row read.
static USER_COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    stored_columns()
        .into_iter()
        .map(|(name, _)| name)
        .collect::<Vec<_>>()
        .join(", ")
});

/// The terms table beside a users table: `users_search_terms` for `users`.
fn search_terms_table(table: &str) -> String {
    format!("{table}_search_terms")
}

/// The DDL of a users table and its terms table: the one definition side tables are
/// created from (`rebuild --into`), kept equal to what the migrations give `users` by
/// a unit test.
fn users_table_ddl(table: &str) -> String {
    let columns: Vec<String> = stored_columns()
        .into_iter()
        .map(|(name, kind)| format!("{name} {kind}"))
        .collect();
    let terms = search_terms_table(table);
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (userid TEXT PRIMARY KEY, {}) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS {terms} (field TEXT NOT NULL, term TEXT NOT NULL, \
         userid TEXT NOT NULL, PRIMARY KEY (field, term, userid)) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS {terms}_by_user ON {terms} (userid, field);",
        columns.join(", ")
    )
}

fn text_cell(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<Cell<String>>> {
    let value: Option<String> = row.get(at)?;
    let written_at: Option<i64> = row.get(at + 1)?;
    Ok(value
        .zip(written_at)
        .map(|(value, written_at)| Cell { value, written_at }))
}

fn time_cell(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<Cell<DateTime<Utc>>>> {
    let millis: Option<i64> = row.get(at)?;
    let written_at: Option<i64> = row.get(at + 1)?;
    Ok(millis
        .and_then(DateTime::from_timestamp_millis)
        .zip(written_at)
        .map(|(value, written_at)| Cell { value, written_at }))
}

fn uuid_cell(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<Cell<Uuid>>> {
    let cell = text_cell(row, at)?;
    Ok(cell.and_then(|c| {
        Uuid::parse_str(&c.value).ok().map(|value| Cell {
            value,
            written_at: c.written_at,
        })
    }))
}

/// A user id column: a value that is not a UUID is an error, never the nil UUID.
fn uuid_column(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(at)?;
    Uuid::parse_str(&text).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(at, rusqlite::types::Type::Text, Box::new(err))
    })
}

/// A search column's write time, as a cell whose terms are not read yet (an empty set).
fn terms_written_at(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Option<Cell<BTreeSet<String>>>> {
    let written_at: Option<i64> = row.get(at)?;
    Ok(written_at.map(|written_at| Cell {
        value: BTreeSet::new(),
        written_at,
    }))
}

/// Reads the cells of a row selected with [`USER_COLUMNS`] starting at column `at`. The
/// search cells carry their write times only; [`read_terms`] fills their terms in.
fn read_cells(row: &rusqlite::Row<'_>, user_id: Uuid, at: usize) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        user_id,
        email: text_cell(row, at)?,
        firstname: text_cell(row, at + 2)?,
        lastname: text_cell(row, at + 4)?,
        account_status: text_cell(row, at + 6)?,
        created_date: time_cell(row, at + 8)?,
        last_login_date: time_cell(row, at + 10)?,
        email_search: terms_written_at(row, at + 12)?,
        firstname_search: terms_written_at(row, at + 13)?,
        lastname_search: terms_written_at(row, at + 14)?,
        last_event_id: uuid_cell(row, at + 15)?,
    })
}

/// Reads the row's search terms from the terms table of `table` into its search cells:
/// what a search finds the user by, so the jobs compare exactly that with the log.
fn read_terms(connection: &Connection, table: &str, row: &mut UserRow) -> Result<(), StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT field, term FROM {} WHERE userid = ?1",
        search_terms_table(table)
    ))?;
    let terms = statement.query_map([row.user_id.to_string()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for entry in terms {
        let (field, term) = entry?;
        let column = Column::SEARCH
            .iter()
            .map(|(search, _)| *search)
            .find(|c| c.name() == field);
        if let Some(Some(cell)) = column.and_then(|c| row.terms_slot(c)) {
            cell.value.insert(term);
        }
    }
    Ok(())
}

/// Reads the raw row of the live table, registered or not, as the request path needs
/// it: the search cells carry their write times only.
fn load_row(connection: &Connection, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
    load_row_from(connection, USERS_TABLE, user_id)
}

/// Reads the raw row of `table` (validated by the caller), search terms not read.
fn load_row_from(
    connection: &Connection,
    table: &str,
    user_id: Uuid,
) -> Result<Option<UserRow>, StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {} FROM {table} WHERE userid = ?1",
        *USER_COLUMNS
    ))?;
    let row = statement
        .query_row([user_id.to_string()], |row| read_cells(row, user_id, 0))
        .optional()?;
    Ok(row)
}

/// Reads the whole row of `table`, search terms included: what the jobs compare.
fn load_full_row(
    connection: &Connection,
    table: &str,
    user_id: Uuid,
) -> Result<Option<UserRow>, StoreError> {
    let Some(mut row) = load_row_from(connection, table, user_id)? else {
        return Ok(None);
    };
    read_terms(connection, table, &mut row)?;
    Ok(Some(row))
}

/// One column's value and write time as SQLite parameters (not for search columns,
/// whose terms are rows of their own).
fn column_values(row: &UserRow, column: Column) -> (rusqlite::types::Value, Option<i64>) {
    use rusqlite::types::Value;
    match row.cell(column) {
        Some((CellValue::Text(text), at)) => (Value::Text(text), Some(at)),
        Some((CellValue::Time(time), at)) => (Value::Integer(time.timestamp_millis()), Some(at)),
        Some((CellValue::Terms(_), at)) => (Value::Null, Some(at)),
        None => (Value::Null, None),
    }
}

/// Inserts the event and projects it, inside the caller's transaction.
fn append_in(tx: &Connection, envelope: &EventEnvelope) -> Result<(), StoreError> {
    let event_time = event_micros(envelope.event_id)
        .ok_or_else(|| StoreError::Internal("event id is not a time UUID".into()))?;
    tx.prepare_cached(
        "INSERT INTO user_events (userid, event_time, event_id, event_type, schema_version, payload, actor, request_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        envelope.user_id.to_string(),
        event_time,
        envelope.event_id.to_string(),
        envelope.event.event_type(),
        SCHEMA_VERSION,
        envelope.event.payload_json(),
        envelope.actor.encode(),
        envelope.request_id,
    ])?;
    apply_projection(tx, USERS_TABLE, envelope)
}

/// The precondition check and the append, as one write of the database thread: writes
/// queued before this one are already visible to the check.
fn append_checked(
    tx: &Connection,
    event: &EventEnvelope,
    precondition: Precondition,
) -> Result<(), StoreError> {
    if let Precondition::LatestEvent(expected) = precondition {
        let current = load_row(tx, event.user_id)?.and_then(|row| row.version());
        if current != Some(expected) {
            return Err(StoreError::Conflict(
                "the user has changed since that version".into(),
            ));
        }
    }
    append_in(tx, event)
}

/// How a projection's set of terms lands on what the terms table holds, decided by
/// write time as Cassandra decides it for a `set<text>` ([`Cell::merge_terms`]).
enum TermsWrite {
    /// Newer than the stored set (or there is none): it replaces it.
    Replace,
    /// The same write time: the sets are merged.
    Union,
}

/// Folds the event's projection into the row with the shared last-write-wins merge and
/// writes back only the cells that changed. Search terms follow the same rule by
/// their write time: a newer set replaces the stored rows, one of the same time adds
/// to them, an older one changes nothing.
fn apply_projection(
    tx: &Connection,
    table: &str,
    envelope: &EventEnvelope,
) -> Result<(), StoreError> {
    use rusqlite::types::Value;
    let projection = project(envelope);
    let existing = load_row_from(tx, table, envelope.user_id)?;
    let before = existing
        .clone()
        .unwrap_or_else(|| UserRow::empty(envelope.user_id));
    let mut after = before.clone();
    after.apply(&projection);

    let mut assignments = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    for column in Column::ALL {
        if column.search_source().is_some() {
            continue;
        }
        let new = column_values(&after, column);
        if new != column_values(&before, column) {
            assignments.push(format!("{0} = ?, {0}_wt = ?", column.name()));
            values.push(new.0);
            values.push(new.1.map_or(Value::Null, Value::Integer));
        }
    }
    let mut terms_writes = Vec::new();
    for (column, value) in &projection.writes {
        let CellValue::Terms(terms) = value else {
            continue;
        };
        let stored = before.terms_cell(*column).map(|cell| cell.written_at);
        let write = match stored {
            Some(at) if at > projection.write_time => continue,
            Some(at) if at == projection.write_time => TermsWrite::Union,
            _ => {
                assignments.push(format!("{}_wt = ?", column.name()));
                values.push(Value::Integer(projection.write_time));
                TermsWrite::Replace
            }
        };
        terms_writes.push((*column, terms, write));
    }
    if after.last_event_id != before.last_event_id {
        assignments.push("last_event_id = ?, last_event_id_wt = ?".into());
        let cell = after.last_event_id.as_ref();
        values.push(cell.map_or(Value::Null, |c| Value::Text(c.value.to_string())));
        values.push(cell.map_or(Value::Null, |c| Value::Integer(c.written_at)));
    }
    if assignments.is_empty() && terms_writes.is_empty() {
        return Ok(());
    }
    let user_id = envelope.user_id.to_string();
    if existing.is_none() {
        tx.prepare_cached(&format!("INSERT INTO {table} (userid) VALUES (?1)"))?
            .execute([&user_id])?;
    }
    if !assignments.is_empty() {
        values.push(Value::Text(user_id.clone()));
        // Column names come from the fixed Column enum, never from input.
        let sql = format!(
            "UPDATE {table} SET {} WHERE userid = ?",
            assignments.join(", ")
        );
        tx.prepare_cached(&sql)?
            .execute(rusqlite::params_from_iter(values))?;
    }
    let terms_table = search_terms_table(table);
    for (column, terms, write) in terms_writes {
        if let TermsWrite::Replace = write {
            tx.prepare_cached(&format!(
                "DELETE FROM {terms_table} WHERE userid = ?1 AND field = ?2"
            ))?
            .execute(params![user_id, column.name()])?;
        }
        let mut insert = tx.prepare_cached(&format!(
            "INSERT OR IGNORE INTO {terms_table} (field, term, userid) VALUES (?1, ?2, ?3)"
        ))?;
        for term in terms {
            insert.execute(params![column.name(), term, user_id])?;
        }
    }
    Ok(())
}

/// One guess budget, if there is one.
fn read_budget(
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

fn write_budget(
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
struct LoginSweep {
    last: std::sync::atomic::AtomicI64,
}

impl LoginSweep {
    /// Sweep period, microseconds.
    const EVERY: i64 = 60_000_000;

    /// True (and the sweep recorded) when a sweep is due at `now`.
    fn due(&self, now: i64) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        now - last >= Self::EVERY
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

fn decode_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<EventEnvelope, StoreError>> {
    let user_id: String = row.get(0)?;
    let event_id: String = row.get(1)?;
    let event_type: String = row.get(2)?;
    let schema_version: i32 = row.get(3)?;
    let payload: String = row.get(4)?;
    let actor: String = row.get(5)?;
    let request_id: Option<String> = row.get(6)?;
    Ok((|| {
        let internal = |e: uuid::Error| StoreError::Internal(e.to_string());
        Ok(EventEnvelope::new(
            Uuid::parse_str(&user_id).map_err(internal)?,
            Uuid::parse_str(&event_id).map_err(internal)?,
            Actor::decode(&actor),
            request_id,
            UserEvent::decode(&event_type, schema_version, &payload)
                .map_err(|e| StoreError::Internal(e.to_string()))?,
        ))
    })())
}

#[async_trait]
impl UserStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_reader(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn load_row(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        self.database
            .read(move |c| Ok(load_row(c, user_id)?.map(UserRow::without_search)))
            .await
    }

    async fn find_credentials(&self, email_key: &str) -> Result<Option<Credentials>, StoreError> {
        let email_key = email_key.to_owned();
        self.with_reader(move |c| {
            let found = c
                .prepare_cached(
                    "SELECT password, userid, account_locked FROM user_credentials WHERE email = ?1",
                )?
                .query_row([&email_key], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, bool>(2)?))
                })
                .optional()?;
            found
                .map(|(password_hash, user_id, account_locked)| {
                    Ok(Credentials {
                        email_key: email_key.clone(),
                        password_hash,
                        user_id: Uuid::parse_str(&user_id).map_err(|e| StoreError::Internal(e.to_string()))?,
                        account_locked,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn register(
        &self,
        credentials: &Credentials,
        registered: &EventEnvelope,
    ) -> Result<(), StoreError> {
        let credentials = credentials.clone();
        let registered = registered.clone();
        // One write of the database thread: atomic, and committed when it returns Ok.
        self.database
            .write(move |tx| {
                let claimed = tx
                    .prepare_cached(
                        "INSERT INTO user_credentials (email, password, userid, account_locked)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (email) DO NOTHING",
                    )?
                    .execute(params![
                        credentials.email_key,
                        credentials.password_hash,
                        credentials.user_id.to_string(),
                        credentials.account_locked
                    ])?;
                if claimed == 0 {
                    return Err(StoreError::Conflict("email already registered".into()));
                }
                append_in(tx, &registered)
            })
            .await
    }

    async fn append(
        &self,
        event: &EventEnvelope,
        precondition: Precondition,
    ) -> Result<(), StoreError> {
        let event = event.clone();
        self.database
            .write(move |tx| append_checked(tx, &event, precondition))
            .await
    }

    async fn append_and_refetch(
        &self,
        event: &EventEnvelope,
        precondition: Precondition,
    ) -> Result<Option<UserRow>, StoreError> {
        let event = event.clone();
        // One write of the database thread: the refetch reads the row back inside the
        // write's own transaction, after its update, rather than in a later batch.
        self.database
            .write(move |tx| {
                append_checked(tx, &event, precondition)?;
                Ok(load_row(tx, event.user_id)?
                    .filter(UserRow::is_registered)
                    .map(UserRow::without_search))
            })
            .await
    }

    async fn search_candidates(
        &self,
        field: Column,
        terms: &[String],
        after: Option<SearchKey>,
        limit: usize,
    ) -> Result<Vec<(SearchKey, UserRow)>, StoreError> {
        if field.search_source().is_none() || terms.is_empty() {
            return Err(StoreError::Internal(format!(
                "search by {field:?} with {} terms",
                terms.len()
            )));
        }
        // Driven by the first term's rows, which the primary key keeps in user order
        // (so `LIMIT` stops the walk early); each further term is one key lookup.
        let further: String = (1..terms.len())
            .map(|i| {
                format!(
                    " AND EXISTS (SELECT 1 FROM users_search_terms t{i} WHERE t{i}.field = ?1 \
                     AND t{i}.term = ?{} AND t{i}.userid = t0.userid)",
                    i + 4
                )
            })
            .collect();
        let sql = format!(
            "SELECT t0.userid, {} FROM users_search_terms t0 JOIN users u ON u.userid = t0.userid \
             WHERE t0.field = ?1 AND t0.term = ?2 AND t0.userid > ?3{further} \
             ORDER BY t0.userid LIMIT ?4",
            USER_COLUMNS
                .split(", ")
                .map(|c| format!("u.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut values: Vec<rusqlite::types::Value> = vec![
            field.name().to_owned().into(),
            terms[0].clone().into(),
            after
                .map(|key| key.user_id.to_string())
                .unwrap_or_default()
                .into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
        ];
        values.extend(terms[1..].iter().cloned().map(rusqlite::types::Value::from));
        self.with_reader(move |c| {
            let mut statement = c.prepare_cached(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
                let user_id = uuid_column(row, 0)?;
                Ok((
                    SearchKey { token: 0, user_id },
                    read_cells(row, user_id, 1)?,
                ))
            })?;
            let mut found = Vec::new();
            for row in rows {
                let (key, row) = row?;
                if row.is_registered() {
                    found.push((key, row.without_search()));
                }
            }
            Ok(found)
        })
        .await
    }

    async fn users_with_status(&self, status: &str, limit: usize) -> Result<Vec<Uuid>, StoreError> {
        let status = status.to_owned();
        // The database thread: a status just changed by a write is already visible.
        self.database
            .read(move |c| {
                let mut statement = c.prepare_cached(
                    "SELECT userid FROM users WHERE account_status = ?1 LIMIT ?2",
                )?;
                let ids = statement.query_map(
                    params![status, i64::try_from(limit).unwrap_or(i64::MAX)],
                    |row| uuid_column(row, 0),
                )?;
                Ok(ids.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        owner: Uuid,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        let now = Utc::now().timestamp_micros();
        let expires_at = now.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        self.database
            .write(move |c| {
                // Taken if free, lapsed, or already ours.
                let taken = c
                    .prepare_cached(
                        "INSERT INTO leases (name, owner, expires_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,
                             expires_at = excluded.expires_at
                         WHERE leases.expires_at < ?4 OR leases.owner = excluded.owner",
                    )?
                    .execute(params![name, owner.to_string(), expires_at, now])?;
                Ok(taken == 1)
            })
            .await
    }

    async fn release_lease(&self, name: &str, owner: Uuid) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.database
            .write(move |c| {
                c.prepare_cached("DELETE FROM leases WHERE name = ?1 AND owner = ?2")?
                    .execute(params![name, owner.to_string()])?;
                Ok(())
            })
            .await
    }

    async fn reserve_guess(
        &self,
        email_key: &str,
        client: &str,
        now: DateTime<Utc>,
    ) -> Result<GuessDecision, StoreError> {
        let (email_key, client) = (email_key.to_owned(), client.to_owned());
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
        email_key: &str,
        client: &str,
        outcome: GuessOutcome,
    ) -> Result<(), StoreError> {
        let (email_key, client) = (email_key.to_owned(), client.to_owned());
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

    async fn events(
        &self,
        user_id: Uuid,
        page: EventPage,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.with_reader(move |c| {
            let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
            let (before_time, before_id) = match page.before {
                Some(id) => (event_micros(id).unwrap_or(i64::MAX), id.to_string()),
                None => (i64::MAX, String::new()),
            };
            let mut statement = c.prepare_cached(
                "SELECT userid, event_id, event_type, schema_version, payload, actor, request_id
                 FROM user_events
                 WHERE userid = ?1 AND (event_time, event_id) < (?2, ?3)
                 ORDER BY event_time DESC, event_id DESC LIMIT ?4",
            )?;
            let rows = statement.query_map(
                params![user_id.to_string(), before_time, before_id, limit],
                decode_event,
            )?;
            let mut events = Vec::new();
            for row in rows {
                events.push(row??);
            }
            Ok(events)
        })
        .await
    }
}

/// Rows read per page when a job scans.
const SCAN_PAGE_ROWS: i64 = 1000;

/// User ids are stored as lowercase hyphenated text, so the first two hex digits split
/// them into 256 buckets; a range is a run of buckets, `[start, end)`.
fn bucket_bound(bucket: i64) -> String {
    if bucket >= 256 {
        "g".into() // sorts after every hex digit
    } else {
        format!("{bucket:02x}")
    }
}

fn checked_table(table: &str) -> Result<(), StoreError> {
    if table == USERS_TABLE {
        return Ok(());
    }
    validate_table_name(table)
        .map_err(|accepts| StoreError::Internal(format!("invalid table `{table}`: {accepts}")))
}

/// Pages through a range with keyset pagination, one blocking query per page, so memory
/// stays at one page whatever the size of the table. `fetch` returns up to
/// SCAN_PAGE_ROWS items after the cursor, each with its cursor key; a short page is the
/// last one.
fn paged<T, F>(store: EmbeddedStore, fetch: F) -> BoxStream<'static, Result<T, StoreError>>
where
    T: Send + 'static,
    F: Fn(&Connection, Option<String>) -> Result<Vec<(String, T)>, StoreError>
        + Send
        + Sync
        + Clone
        + 'static,
{
    let pages = futures::stream::unfold(Some(None::<String>), move |cursor| {
        let store = store.clone();
        let fetch = fetch.clone();
        async move {
            let after = cursor?;
            match store.with_reader(move |c| fetch(c, after)).await {
                Ok(mut keyed) => {
                    let next = if keyed.len() as i64 == SCAN_PAGE_ROWS {
                        keyed.last_mut().map(|(key, _)| Some(std::mem::take(key)))
                    } else {
                        None
                    };
                    let items: Vec<T> = keyed.into_iter().map(|(_, item)| item).collect();
                    Some((Ok(items), next))
                }
                Err(err) => Some((Err(err), None)),
            }
        }
    });
    pages
        .map(|page| match page {
            Ok(items) => futures::stream::iter(items.into_iter().map(Ok)).boxed(),
            Err(err) => futures::stream::once(async move { Err(err) }).boxed(),
        })
        .flatten()
        .boxed()
}

#[async_trait]
impl ProjectionStore for EmbeddedStore {
    fn scan_ranges(&self, splits: usize) -> Vec<ScanRange> {
        let splits = splits.clamp(1, 256) as i64;
        (0..splits)
            .map(|i| ScanRange {
                start: i * 256 / splits,
                end: (i + 1) * 256 / splits,
            })
            .collect()
    }

    async fn scan_events(&self, range: ScanRange) -> Result<EventStream<'_>, StoreError> {
        let (low, high) = (bucket_bound(range.start), bucket_bound(range.end));
        Ok(paged(self.clone(), move |c, after| {
            // Keyset cursor: "userid|event_time|event_id" of the last row of the page.
            let (user, time, id) = match after
                .as_deref()
                .map(|a| a.splitn(3, '|').collect::<Vec<_>>())
            {
                Some(parts) if parts.len() == 3 => (
                    parts[0].to_owned(),
                    parts[1].parse::<i64>().unwrap_or(i64::MIN),
                    parts[2].to_owned(),
                ),
                _ => (low.clone(), i64::MIN, String::new()),
            };
            let mut statement = c.prepare_cached(
                "SELECT userid, event_id, event_type, schema_version, payload, actor, request_id, event_time
                 FROM user_events
                 WHERE (userid, event_time, event_id) > (?1, ?2, ?3) AND userid >= ?4 AND userid < ?5
                 ORDER BY userid, event_time, event_id LIMIT ?6",
            )?;
            let rows =
                statement.query_map(params![user, time, id, low, high, SCAN_PAGE_ROWS], |row| {
                    let key = format!(
                        "{}|{}|{}",
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(7)?,
                        row.get::<_, String>(1)?
                    );
                    Ok((key, decode_event(row)?))
                })?;
            let mut keyed = Vec::new();
            for row in rows {
                let (key, event) = row?;
                keyed.push((key, event?));
            }
            Ok(keyed)
        }))
    }

    async fn scan_rows(&self, table: &str, range: ScanRange) -> Result<RowStream<'_>, StoreError> {
        checked_table(table)?;
        let (low, high) = (bucket_bound(range.start), bucket_bound(range.end));
        let sql = format!(
            "SELECT userid, {} FROM {table}
             WHERE userid > ?1 AND userid >= ?2 AND userid < ?3 ORDER BY userid LIMIT ?4",
            *USER_COLUMNS
        );
        let table = table.to_owned();
        Ok(paged(self.clone(), move |c, after| {
            let mut statement = c.prepare_cached(&sql)?;
            let rows = statement.query_map(
                params![after.unwrap_or_default(), low, high, SCAN_PAGE_ROWS],
                |row| {
                    let id: String = row.get(0)?;
                    Ok((id, read_cells(row, uuid_column(row, 0)?, 1)?))
                },
            )?;
            let mut page = Vec::new();
            for row in rows {
                let (id, mut row) = row?;
                read_terms(c, &table, &mut row)?;
                page.push((id, row));
            }
            Ok(page)
        }))
    }

    async fn prepare_table(&self, table: &str) -> Result<(), StoreError> {
        checked_table(table)?;
        if table == USERS_TABLE {
            return Ok(());
        }
        let ddl = users_table_ddl(table);
        // DDL: with the connection to itself, between batches.
        self.database
            .exclusive(move |c| {
                c.execute_batch(&ddl)?;
                Ok(())
            })
            .await
    }

    async fn row_in(&self, table: &str, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        checked_table(table)?;
        let table = table.to_owned();
        self.with_reader(move |c| load_full_row(c, &table, user_id))
            .await
    }

    async fn project_into(&self, table: &str, event: &EventEnvelope) -> Result<(), StoreError> {
        checked_table(table)?;
        let (table, event) = (table.to_owned(), event.clone());
        // A group-committed write: a rebuild's parallel ranges share commits.
        self.database
            .write(move |c| apply_projection(c, &table, &event))
            .await
    }

    async fn delete_row(&self, table: &str, user_id: Uuid, _at: i64) -> Result<(), StoreError> {
        checked_table(table)?;
        let delete_row = format!("DELETE FROM {table} WHERE userid = ?1");
        let delete_terms = format!(
            "DELETE FROM {} WHERE userid = ?1",
            search_terms_table(table)
        );
        self.database
            .write(move |c| {
                c.execute(&delete_row, [user_id.to_string()])?;
                c.execute(&delete_terms, [user_id.to_string()])?;
                Ok(())
            })
            .await
    }

    async fn delete_cell(
        &self,
        table: &str,
        user_id: Uuid,
        column: Column,
        _at: i64,
    ) -> Result<(), StoreError> {
        checked_table(table)?;
        let (clear, delete_terms) = if column.search_source().is_some() {
            (
                format!(
                    "UPDATE {table} SET {0}_wt = NULL WHERE userid = ?1",
                    column.name()
                ),
                Some(format!(
                    "DELETE FROM {} WHERE userid = ?1 AND field = '{}'",
                    search_terms_table(table),
                    column.name()
                )),
            )
        } else {
            (
                format!(
                    "UPDATE {table} SET {0} = NULL, {0}_wt = NULL WHERE userid = ?1",
                    column.name()
                ),
                None,
            )
        };
        self.database
            .write(move |c| {
                c.execute(&clear, [user_id.to_string()])?;
                if let Some(sql) = &delete_terms {
                    c.execute(sql, [user_id.to_string()])?;
                }
                Ok(())
            })
            .await
    }

    async fn finished_ranges(&self, job: &str) -> Result<Vec<i64>, StoreError> {
        let job = job.to_owned();
        self.database
            .read(move |c| {
                let mut statement = c.prepare_cached(
                    "SELECT range_start FROM projection_checkpoints WHERE job = ?1",
                )?;
                let starts = statement.query_map([job], |row| row.get::<_, i64>(0))?;
                Ok(starts.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn finish_range(
        &self,
        job: &str,
        range: ScanRange,
        events: u64,
    ) -> Result<(), StoreError> {
        let job = job.to_owned();
        self.database.write(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO projection_checkpoints (job, range_start, range_end, events, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![job, range.start, range.end, events as i64, Utc::now().to_rfc3339()])?;
            Ok(())
        })
        .await
    }

    async fn reset_checkpoints(&self, job: &str) -> Result<(), StoreError> {
        let job = job.to_owned();
        self.database
            .write(move |c| {
                c.execute("DELETE FROM projection_checkpoints WHERE job = ?1", [job])?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::EventClock;
    use crate::domain::events::{FieldChange, ProfileUpdated};
    use futures::TryStreamExt;

    /// The WAL is synced between checkpoints only when it was written since the last
    /// sync, and not before SQLite has created it.
    #[test]
    fn the_wal_is_synced_only_after_writes() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("temp dir");
        let database = dir.path().join("x.db");
        assert_eq!(wal_path(&database), dir.path().join("x.db-wal"));
        let mut writeback = WalWriteback::new(wal_path(&database));
        assert!(!writeback.sync_if_written(), "no WAL yet");

        let mut wal = std::fs::File::create(wal_path(&database)).expect("create");
        wal.write_all(&[1; 4096]).expect("write");
        assert!(writeback.sync_if_written(), "first sync of a written WAL");
        assert!(!writeback.sync_if_written(), "nothing written since");
        wal.write_all(&[2; 4096]).expect("write");
        assert!(writeback.sync_if_written(), "written again");
    }

    fn renamed(user_id: Uuid, clock: &EventClock, to: String) -> EventEnvelope {
        EventEnvelope::new(
            user_id,
            clock.next_event_id(),
            Actor::User(user_id),
            None,
            UserEvent::ProfileUpdated(ProfileUpdated {
                firstname: Some(FieldChange { from: None, to }),
                lastname: None,
            }),
        )
    }

    /// A side table built from the one DDL has exactly the columns the migrations gave
    /// `users`, and its terms table those of `users_search_terms`.
    #[test]
    fn side_tables_match_the_migrated_users_table() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let connection = Connection::open(store.path()).expect("connection");
        connection
            .execute_batch(&users_table_ddl("users_side"))
            .expect("side table");
        let columns = |table: &str| -> Vec<(String, String)> {
            let mut statement = connection
                .prepare(&format!("PRAGMA table_info({table})"))
                .expect("pragma");
            let mut columns: Vec<(String, String)> = statement
                .query_map([], |row| Ok((row.get(1)?, row.get(2)?)))
                .expect("columns")
                .collect::<Result<_, _>>()
                .expect("rows");
            columns.sort();
            columns
        };
        assert_eq!(columns("users_side"), columns("users"));
        assert_eq!(
            columns("users_side_search_terms"),
            columns("users_search_terms")
        );
    }

    /// The scans page with a keyset cursor; more rows than one page must come back
    /// exactly once each, in key order.
    #[tokio::test]
    async fn scans_cross_page_boundaries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let clock = EventClock::new();
        let users = SCAN_PAGE_ROWS as usize + 7;
        let events_of_first = SCAN_PAGE_ROWS as usize + 3;
        let user_ids: Vec<Uuid> = (0..users).map(|_| Uuid::new_v4()).collect();
        for (n, user_id) in user_ids.iter().enumerate() {
            let count = if n == 0 { events_of_first } else { 1 };
            for i in 0..count {
                store
                    .append(
                        &renamed(*user_id, &clock, format!("N{i}")),
                        Precondition::None,
                    )
                    .await
                    .expect("append");
            }
        }
        let everything = store.scan_ranges(1)[0];

        let events: Vec<EventEnvelope> = store
            .scan_events(everything)
            .await
            .expect("scan events")
            .try_collect()
            .await
            .expect("events");
        assert_eq!(events.len(), events_of_first + users - 1);
        let mut ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), events.len(), "an event came back twice");
        let first_user = events.iter().filter(|e| e.user_id == user_ids[0]).count();
        assert_eq!(first_user, events_of_first);

        let rows: Vec<UserRow> = store
            .scan_rows(USERS_TABLE, everything)
            .await
            .expect("scan rows")
            .try_collect()
            .await
            .expect("rows");
        let mut scanned: Vec<Uuid> = rows.iter().map(|row| row.user_id).collect();
        let mut expected = user_ids.clone();
        expected.sort_by_key(|id| id.to_string());
        assert_eq!(scanned, expected, "rows in key order, each once");
        scanned.dedup();
        assert_eq!(scanned.len(), users);
        let first = rows
            .iter()
            .find(|row| row.user_id == user_ids[0])
            .expect("first user");
        assert_eq!(
            first.firstname(),
            Some(format!("N{}", events_of_first - 1).as_str())
        );
    }
}
