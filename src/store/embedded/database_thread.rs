//! The database thread: one SQLite connection, owned by one OS thread, that runs the
//! hot path (the auth read, the append and the refetch) for every request, in batches.
//!
//! Why a thread and batches (docs/performance.md, "What mattered"): SQLite serialises
//! writers anyway, and what a small transaction costs is mostly fixed (file locks,
//! WAL frame headers, the shared-memory index) rather than the rows it writes. So
//! whatever requests are waiting when the thread comes round are run together:
//!
//! 1. all waiting reads, in one read transaction: they see exactly what was committed
//!    before the batch began, and are answered at once;
//! 2. all waiting writes, in one `BEGIN IMMEDIATE` transaction, each inside its own
//!    savepoint so that one write's failure (a conflict, a duplicate email) rolls back
//!    only that write; they are answered only after the one `COMMIT`, so no caller
//!    hears "done" for something a failed commit undid.
//!
//! A write's precondition check runs inside the batch, after the writes queued before
//! it, so two `If-Match` updates of one user in one batch still serialise: the second
//! sees the first's event and is refused.
//!
//! Because this connection is the only one in the process that writes, its page cache
//! stays valid between batches: reads are memory lookups, not `pread`s of the WAL.
//! Other processes (`set-role`, `rebuild`) can still open the file; SQLite notices
//! their commits at the next batch's transaction start.

use super::StoreError;
use rusqlite::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Most jobs of one kind taken into one batch: bounds how long the first caller of a
/// batch waits for the last one's work.
const MAX_BATCH: usize = 256;

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;
type ExclusiveJob = Box<dyn FnOnce(&mut Connection) + Send>;

enum Job {
    /// Runs inside the batch's read transaction and answers for itself.
    Read(ReadJob),
    /// Runs inside a savepoint of the batch's write transaction; answered after commit.
    Write(Box<dyn PendingWrite>),
    /// Gets the connection to itself, between batches (jobs that manage their own
    /// transactions: projection jobs, DDL, checkpoints of a rebuild).
    Exclusive(ExclusiveJob),
}

/// A write waiting in a batch, whatever it returns.
trait PendingWrite: Send {
    /// Runs the work; `true` when it succeeded and its changes are to stay.
    fn run(&mut self, connection: &Connection) -> bool;
    /// Answers the caller once the batch's fate is known: the work's own outcome if
    /// `batch` (its savepoint and the commit) went through, else `batch`'s error.
    fn answer(self: Box<Self>, batch: Result<(), StoreError>);
}

struct Write<T, F> {
    work: Option<F>,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> PendingWrite for Write<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, connection: &Connection) -> bool {
        let outcome = self.work.take().map(|work| work(connection));
        let succeeded = matches!(outcome, Some(Ok(_)));
        self.outcome = outcome;
        succeeded
    }

    fn answer(self: Box<Self>, batch: Result<(), StoreError>) {
        let Write { outcome, reply, .. } = *self;
        let outcome = batch.and_then(|()| {
            outcome.unwrap_or_else(|| Err(StoreError::internal("a write never ran")))
        });
        let _ = reply.send(outcome);
    }
}

/// Handle to the database thread; cloning it is cheap. The thread stops, closing the
/// connection, when the last handle is dropped.
#[derive(Clone)]
pub struct DatabaseThread {
    jobs: mpsc::Sender<Job>,
}

fn stopped() -> StoreError {
    StoreError::unavailable("the embedded database thread has stopped")
}

impl DatabaseThread {
    /// Moves `connection` onto a new thread named `sqlite-db`. Whenever `catch_up` is
    /// set (by the checkpointer), the thread finishes the WAL checkpoint itself between
    /// two batches; see [`catch_up_checkpoint`].
    pub fn spawn(connection: Connection, catch_up: Arc<AtomicBool>) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-db".into())
            .spawn(move || run(connection, queue, &catch_up))
            .map_err(|err| {
                StoreError::internal(format!("cannot start the sqlite thread: {err}"))
            })?;
        Ok(Self { jobs })
    }

    /// Reads the committed state (as of the start of the batch the read lands in).
    pub async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job::Read(Box::new(move |connection| {
            let _ = reply.send(work(connection));
        }));
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `work` as one atomic write, group-committed with whatever other writes are
    /// waiting. `Ok` means committed; what `work` returns (read inside the same
    /// transaction, after its own changes) comes back with it.
    pub async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job::Write(Box::new(Write {
            work: Some(work),
            outcome: None,
            reply,
        }));
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `work` with the connection to itself, outside any batch.
    pub async fn exclusive<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job::Exclusive(Box::new(move |connection| {
            let _ = reply.send(work(connection));
        }));
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The thread's loop: wait for one job, take whatever else is already waiting, run it
/// as a batch; until every handle is gone.
fn run(mut connection: Connection, queue: mpsc::Receiver<Job>, catch_up: &AtomicBool) {
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    let mut exclusives = Vec::new();
    while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Read(job) => reads.push(job),
                Job::Write(write) => writes.push(write),
                Job::Exclusive(job) => exclusives.push(job),
            }
            if reads.len() < MAX_BATCH && writes.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        run_reads(&connection, &mut reads);
        run_writes(&connection, &mut writes);
        for job in exclusives.drain(..) {
            job(&mut connection);
        }
        if catch_up.swap(false, Ordering::Relaxed) {
            catch_up_checkpoint(&connection);
        }
    }
}

/// Copies the rest of the WAL back, from the one connection that writes.
///
/// SQLite starts the WAL over only once a checkpoint has copied back every frame, and
/// under a steady stream of commits the background checkpointer never gets there: the
/// writer is always a little ahead. Here, between two batches, nothing is ahead: the
/// checkpointer has already copied (and synced) the bulk, so this copies only what was
/// committed since and syncs it, and the next write starts the WAL from its beginning.
/// Unlike a RESTART checkpoint from another connection, it never makes this thread wait
/// on a lock (SQLite's busy handler sleeps in steps of up to 100 ms).
fn catch_up_checkpoint(connection: &Connection) {
    if let Err(err) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %err, "WAL catch-up checkpoint failed; will retry");
    }
}

/// All reads of a batch in one read transaction: one snapshot, one set of locks.
fn run_reads(connection: &Connection, reads: &mut Vec<ReadJob>) {
    if reads.is_empty() {
        return;
    }
    // If BEGIN fails each read still runs, in its own implicit transaction.
    let in_transaction = exec(connection, "BEGIN DEFERRED").is_ok();
    for job in reads.drain(..) {
        job(connection);
    }
    if in_transaction && exec(connection, "COMMIT").is_err() {
        let _ = exec(connection, "ROLLBACK");
    }
}

/// All writes of a batch in one transaction, each in a savepoint; answers after commit.
fn run_writes(connection: &Connection, writes: &mut Vec<Box<dyn PendingWrite>>) {
    if writes.is_empty() {
        return;
    }
    let mut outcome = exec(connection, "BEGIN IMMEDIATE").map_err(StoreError::from);
    for write in writes.iter_mut() {
        // A savepoint that cannot be opened, undone or released leaves the transaction
        // in a state nobody can vouch for: then the whole batch is rolled back.
        if outcome.is_ok() {
            outcome = in_savepoint(connection, write.as_mut());
        }
    }
    let outcome = outcome.and_then(|()| exec(connection, "COMMIT").map_err(StoreError::from));
    if outcome.is_err() {
        let _ = exec(connection, "ROLLBACK");
    }
    for write in writes.drain(..) {
        write.answer(outcome.clone());
    }
}

/// Runs one write so that its failure undoes only its own changes.
fn in_savepoint(connection: &Connection, write: &mut dyn PendingWrite) -> Result<(), StoreError> {
    exec(connection, "SAVEPOINT write")?;
    if !write.run(connection) {
        exec(connection, "ROLLBACK TO write")?;
    }
    exec(connection, "RELEASE write")?;
    Ok(())
}

/// One statement through the statement cache (these run thousands of times a second).
fn exec(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> (tempfile::TempDir, DatabaseThread) {
        let dir = tempfile::tempdir().expect("temp dir");
        let connection = Connection::open(dir.path().join("t.db")).expect("open");
        connection
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (k INTEGER PRIMARY KEY)")
            .expect("schema");
        let catch_up = Arc::new(AtomicBool::new(false));
        (
            dir,
            DatabaseThread::spawn(connection, catch_up).expect("thread"),
        )
    }

    fn keys(connection: &Connection) -> Result<Vec<i64>, StoreError> {
        let mut statement = connection.prepare("SELECT k FROM t ORDER BY k")?;
        let keys = statement
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }

    /// Writes that arrive together share a transaction, but a failing one takes back
    /// only its own changes, and every caller hears its own outcome.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_undoes_only_itself() {
        let (_dir, database) = database();
        let writes = (0..200_i64).map(|k| {
            let database = database.clone();
            async move {
                database
                    .write(move |c| {
                        c.execute("INSERT INTO t (k) VALUES (?1)", [k])?;
                        if k % 3 == 0 {
                            return Err(StoreError::Conflict(format!("{k} refused")));
                        }
                        Ok(())
                    })
                    .await
            }
        });
        let outcomes = futures::future::join_all(writes).await;
        for (k, outcome) in outcomes.iter().enumerate() {
            match outcome {
                Err(StoreError::Conflict(message)) if k % 3 == 0 => {
                    assert_eq!(message, &format!("{k} refused"));
                }
                Ok(()) if k % 3 != 0 => {}
                other => panic!("write {k}: unexpected {other:?}"),
            }
        }
        let stored = database.read(keys).await.expect("read");
        let expected: Vec<i64> = (0..200).filter(|k| k % 3 != 0).collect();
        assert_eq!(stored, expected);
    }

    /// A write whose closure fails half-way leaves nothing behind, and a later write
    /// of the same key succeeds (the savepoint was released, not left open).
    #[tokio::test]
    async fn the_connection_is_clean_after_a_failure() {
        let (_dir, database) = database();
        let failed = database
            .write(|c| {
                c.execute("INSERT INTO t (k) VALUES (1)", [])?;
                c.execute("INSERT INTO t (k) VALUES (1)", [])?; // duplicate key
                Ok(())
            })
            .await;
        assert!(
            matches!(failed, Err(StoreError::Internal { .. })),
            "{failed:?}"
        );
        assert_eq!(database.read(keys).await.expect("read"), Vec::<i64>::new());
        database
            .write(|c| {
                c.execute("INSERT INTO t (k) VALUES (1)", [])?;
                Ok(())
            })
            .await
            .expect("second write");
        let exclusive = database
            .exclusive(|c| Ok(c.is_autocommit()))
            .await
            .expect("exclusive");
        assert!(exclusive, "no transaction may be left open between batches");
        assert_eq!(database.read(keys).await.expect("read"), vec![1]);
    }
}
