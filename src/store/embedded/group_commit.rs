//! The database thread: one SQLite connection, owned by one OS thread, that runs the
//! hot path (the auth read, the append and the refetch) for every request, in batches.
//!
//! Why a thread and batches (measured in docs/performance.md): SQLite serialises
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
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Most jobs of one kind taken into one batch: bounds how long the first caller of a
/// batch waits for the last one's work.
const MAX_BATCH: usize = 256;

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;
type WriteWork = Box<dyn FnOnce(&Connection) -> Result<(), StoreError> + Send>;
type ExclusiveJob = Box<dyn FnOnce(&mut Connection) + Send>;

enum Job {
    /// Runs inside the batch's read transaction and answers for itself.
    Read(ReadJob),
    /// Runs inside a savepoint of the batch's write transaction; answered after commit.
    Write {
        work: WriteWork,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Gets the connection to itself, between batches (jobs that manage their own
    /// transactions: projection jobs, DDL, checkpoints of a rebuild).
    Exclusive(ExclusiveJob),
}

/// Handle to the database thread; cloning it is cheap. The thread stops, closing the
/// connection, when the last handle is dropped.
#[derive(Clone)]
pub struct DatabaseThread {
    jobs: mpsc::Sender<Job>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the embedded database thread has stopped".into())
}

impl DatabaseThread {
    /// Moves `connection` onto a new thread named `sqlite-db`.
    pub fn spawn(connection: Connection) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-db".into())
            .spawn(move || run(connection, queue))
            .map_err(|err| {
                StoreError::Internal(format!("cannot start the sqlite thread: {err}"))
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
    /// waiting. `Ok` means committed.
    pub async fn write<F>(&self, work: F) -> Result<(), StoreError>
    where
        F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job::Write {
            work: Box::new(work),
            reply,
        };
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
fn run(mut connection: Connection, queue: mpsc::Receiver<Job>) {
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    let mut exclusives = Vec::new();
    while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Read(job) => reads.push(job),
                Job::Write { work, reply } => writes.push((work, reply)),
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

type PendingWrite = (WriteWork, oneshot::Sender<Result<(), StoreError>>);

/// All writes of a batch in one transaction, each in a savepoint; answers after commit.
fn run_writes(connection: &Connection, writes: &mut Vec<PendingWrite>) {
    if writes.is_empty() {
        return;
    }
    if let Err(err) = exec(connection, "BEGIN IMMEDIATE") {
        let err = StoreError::from(err);
        for (_, reply) in writes.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
        return;
    }
    let mut outcomes = Vec::with_capacity(writes.len());
    for (work, reply) in writes.drain(..) {
        outcomes.push((in_savepoint(connection, work), reply));
    }
    match exec(connection, "COMMIT") {
        Ok(()) => {
            for (outcome, reply) in outcomes {
                let _ = reply.send(outcome);
            }
        }
        Err(err) => {
            let _ = exec(connection, "ROLLBACK");
            let err = StoreError::from(err);
            for (_, reply) in outcomes {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// Runs one write so that its failure undoes only its own changes.
fn in_savepoint(connection: &Connection, work: WriteWork) -> Result<(), StoreError> {
    exec(connection, "SAVEPOINT write")?;
    let outcome = work(connection);
    let undone = match outcome {
        Ok(()) => Ok(()),
        Err(_) => exec(connection, "ROLLBACK TO write"),
    };
    match (
        outcome,
        undone.and_then(|()| exec(connection, "RELEASE write")),
    ) {
        (Ok(()), Err(err)) => Err(err.into()),
        (outcome, _) => outcome,
    }
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
        (dir, DatabaseThread::spawn(connection).expect("thread"))
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
        assert!(matches!(failed, Err(StoreError::Internal(_))), "{failed:?}");
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
