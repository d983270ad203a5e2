//! The embedded backend: SQLite, in one crash-safe file under the data directory.
//!
//! Why SQLite and how it is configured: docs/adr/0001-embedded-store.md. Every write is
//! one transaction covering the event, its projection and (for registration) the
//! credentials, so there is no window in which the log and the table disagree.
//!
//! - `mod.rs`: the store, its connections and how it opens;
//! - one file per port (`crate::store::ports`): `health.rs`, `event_log.rs`,
//!   `credentials.rs`, `login_budgets.rs`, `search.rs`, `erasure.rs`, `leases.rs`,
//!   and `jobs.rs` (the projection jobs' port);
//! - `rows.rs`: the row codecs and the projection's writes;
//! - `versioned.rs`: the version-checked append;
//! - `keys.rs`: the users' data keys;
//! - `migrate.rs`: the schema;
//! - `database_thread.rs`: the one writing connection and its group commit;
//! - `checkpoint.rs`: the WAL checkpointer.

use super::StoreError;
use database_thread::DatabaseThread;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

mod checkpoint;
mod credentials;
mod database_thread;
mod erasure;
mod event_log;
mod health;
mod jobs;
mod keys;
mod leases;
mod login_budgets;
mod migrate;
mod rows;
mod search;
mod versioned;

use crate::store::keys::{DataKeys, KekSettings};
use login_budgets::LoginSweep;

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "killrvideo-users.db";

/// SQLite: the hot path (auth read, append, refetch) on one database thread that
/// group-commits (see database_thread.rs), everything else on a few read-only connections.
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
    /// The KEKs and the cache of data keys.
    keys: Arc<DataKeys>,
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
/// (docs/performance.md, "What mattered"). 8 MiB still holds 2,048 pages: the users rows and the tails
/// of the event log of a couple of thousand active users.
const WRITER_CACHE_KIB: i64 = 8 * 1024;
/// How much of the database file each connection may map.
const MMAP_BYTES: i64 = 256 * 1024 * 1024;

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::unavailable_from("SQLite is busy", err)
            }
            _ => StoreError::internal_from("SQLite failed", err),
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
    /// Opens (creating if needed) the database in `data_dir` and migrates it, durable,
    /// with the development KEK kept in `data_dir` (see [`KekSettings::ring`]).
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, SyncMode::Full, &KekSettings::default())
    }

    /// [`EmbeddedStore::open`] with a chosen durability and KEKs. Refuses, with
    /// [`StoreError::WrongKey`], KEKs of which none has wrapped the keys stored here.
    pub fn open_with(
        data_dir: &Path,
        sync: SyncMode,
        kek: &KekSettings,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|err| {
            StoreError::unavailable(format!(
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
        migrate::migrate(&mut connection)?;
        let keys = DataKeys::new(kek.clone().keeping_development_key_in(data_dir).ring()?);
        keys.check_registered(&keys::registered_keks(&connection)?)?;
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
        checkpoint::spawn_checkpointer(&path, Arc::downgrade(&readers), catch_up.clone(), sync)?;
        Ok(Self {
            database: DatabaseThread::spawn(connection, catch_up)?,
            readers,
            next_reader: Arc::default(),
            login_sweep: Arc::default(),
            keys: Arc::new(keys),
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
            .map_err(|_| StoreError::internal("sqlite reader mutex poisoned"))?;
        work(&mut guard)
    }
}
