//! The embedded backend: SQLite, in one crash-safe file under the data directory.
//!
//! Why SQLite and how it is configured: docs/adr/0001-embedded-store.md. Every write is
//! one transaction covering the event, its projection and (for registration) the
//! credentials, so there is no window in which the log and the table disagree.
//!
//! - `mod.rs`: the store and the port (`UserStore`);
//! - `rows.rs`: the row codecs and the projection's writes;
//! - `versioned.rs`: the version-checked append;
//! - `login_budgets.rs`: the login throttle's budgets;
//! - `jobs.rs`: the projection jobs' port (`ProjectionStore`);
//! - `migrate.rs`: the schema;
//! - `database_thread.rs`: the one writing connection and its group commit;
//! - `checkpoint.rs`: the WAL checkpointer.

use super::{
    CandidateQuery, Credentials, EventPage, GuessKey, HeldBudget, Precondition, SearchKey,
    StoreError, UserStore,
};
use crate::domain::events::{EventEnvelope, event_micros};
use crate::domain::login::{self, Budget, GuessDecision, GuessOutcome};
use crate::domain::user::UserRow;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use database_thread::DatabaseThread;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

mod checkpoint;
mod database_thread;
mod jobs;
mod keys;
mod login_budgets;
mod migrate;
mod rows;
mod versioned;

use crate::store::keys::{DataKeys, KekSettings};
use login_budgets::{LoginSweep, read_all_budgets, read_budget, write_budget};
use rows::{USER_COLUMNS, append_in, load_row, read_cells, stored_event, uuid_column};
use versioned::append_checked;

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

    async fn raw_row(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
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
                        user_id: Uuid::parse_str(&user_id).map_err(|e| StoreError::internal(e.to_string()))?,
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
        let keys = Arc::clone(&self.keys);
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
                append_in(tx, &keys, &registered)
            })
            .await
    }

    async fn append(
        &self,
        event: &EventEnvelope,
        precondition: Precondition,
    ) -> Result<(), StoreError> {
        let event = event.clone();
        let keys = Arc::clone(&self.keys);
        self.database
            .write(move |tx| append_checked(tx, &keys, &event, precondition))
            .await
    }

    async fn append_and_refetch(
        &self,
        event: &EventEnvelope,
        precondition: Precondition,
    ) -> Result<Option<UserRow>, StoreError> {
        let event = event.clone();
        let keys = Arc::clone(&self.keys);
        // One write of the database thread: the refetch reads the row back inside the
        // write's own transaction, after its update, rather than in a later batch.
        self.database
            .write(move |tx| {
                append_checked(tx, &keys, &event, precondition)?;
                Ok(load_row(tx, event.user_id)?
                    .filter(UserRow::is_registered)
                    .map(UserRow::without_search))
            })
            .await
    }

    async fn guess_budgets(&self, email_key: &str) -> Result<Vec<HeldBudget>, StoreError> {
        let email_key = email_key.to_owned();
        self.with_reader(move |c| read_all_budgets(c, &email_key))
            .await
    }

    async fn search_candidates(
        &self,
        query: &CandidateQuery<'_>,
    ) -> Result<Vec<(SearchKey, UserRow)>, StoreError> {
        if query.field.search_source().is_none() || query.terms.is_empty() {
            return Err(StoreError::internal(format!(
                "search by {:?} with {} terms",
                query.field,
                query.terms.len()
            )));
        }
        // Driven by the first term's rows, which the primary key keeps in user order
        // (so `LIMIT` stops the walk early); each further term is one key lookup.
        let further: String = (1..query.terms.len())
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
            query.field.name().to_owned().into(),
            query.terms[0].clone().into(),
            query
                .after
                .map(|key| key.user_id.to_string())
                .unwrap_or_default()
                .into(),
            i64::try_from(query.limit).unwrap_or(i64::MAX).into(),
        ];
        values.extend(
            query.terms[1..]
                .iter()
                .cloned()
                .map(rusqlite::types::Value::from),
        );
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

    async fn events(
        &self,
        user_id: Uuid,
        page: EventPage,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let keys = Arc::clone(&self.keys);
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
            let stored = statement
                .query_map(
                    params![user_id.to_string(), before_time, before_id, limit],
                    stored_event,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            // The key as stored now, not as cached: a history read right after an
            // erasure must not open values with a key that was just deleted.
            keys::open_events(c, &keys, stored, true)
        })
        .await
    }

    async fn delete_data_key(&self, user_id: Uuid) -> Result<(), StoreError> {
        let keys = Arc::clone(&self.keys);
        self.database
            .write(move |tx| keys::securely(tx, |tx| keys::delete_key(tx, &keys, user_id)))
            .await?;
        // `secure_delete` zeroed the key in the page the delete wrote; the page as it
        // was is still in the database file (until a checkpoint copies the new one over
        // it) and perhaps in older frames of the WAL. A truncating checkpoint does both
        // now: erasures are rare, and this one waits for no reader.
        let busy = self
            .database
            .exclusive(|c| {
                Ok(c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    row.get::<_, i64>(0)
                })?)
            })
            .await?;
        if busy != 0 {
            tracing::warn!(
                %user_id,
                "a reader held the WAL: the erased data key stays in the WAL file until the \
                 next checkpoint that catches up (within seconds)"
            );
        }
        Ok(())
    }

    async fn delete_account(
        &self,
        user_id: Uuid,
        email_key: Option<&str>,
    ) -> Result<(), StoreError> {
        let email_key = email_key.map(str::to_owned);
        self.database
            .write(move |tx| {
                keys::securely(tx, |tx| {
                    let user = user_id.to_string();
                    if let Some(email_key) = &email_key {
                        tx.prepare_cached(
                            "DELETE FROM user_credentials WHERE email = ?1 AND userid = ?2",
                        )?
                        .execute(params![email_key, user])?;
                        tx.prepare_cached("DELETE FROM login_budgets WHERE email = ?1")?
                            .execute([email_key])?;
                    }
                    tx.prepare_cached("DELETE FROM users_search_terms WHERE userid = ?1")?
                        .execute([&user])?;
                    tx.prepare_cached("DELETE FROM users WHERE userid = ?1")?
                        .execute([&user])?;
                    Ok(())
                })
            })
            .await
    }

    async fn overwrite_plain_values(&self, user_id: Uuid) -> Result<u64, StoreError> {
        self.database
            .write(move |tx| keys::securely(tx, |tx| {
                let stored = tx
                    .prepare_cached(
                        "SELECT userid, event_id, event_type, schema_version, payload, actor, request_id
                         FROM user_events WHERE userid = ?1 AND schema_version = ?2",
                    )?
                    .query_map(
                        params![user_id.to_string(), crate::domain::events::PLAIN_SCHEMA_VERSION],
                        stored_event,
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut overwritten = 0;
                for event in stored {
                    let payload = event.plain_values_erased().map_err(|err| {
                        StoreError::internal_from(format!("event {} does not decode", event.event_id), err)
                    })?;
                    if let Some(payload) = payload {
                        tx.prepare_cached(
                            "UPDATE user_events SET payload = ?1 WHERE userid = ?2 AND event_id = ?3",
                        )?
                        .execute(params![payload, user_id.to_string(), event.event_id.to_string()])?;
                        overwritten += 1;
                    }
                }
                Ok(overwritten)
            }))
            .await
    }
}
