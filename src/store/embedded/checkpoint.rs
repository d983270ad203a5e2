//! The WAL checkpointer: a thread of its own that copies the WAL back into the database
//! file off the request path, and the writes-out that keep its syncs short.

use super::SyncMode;
use crate::store::StoreError;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How often the background checkpointer copies the WAL back into the database.
pub(super) const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// How often, between checkpoints, the checkpointer writes the WAL out to disk.
pub(super) const WAL_SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// WAL syncs per checkpoint pass, the last of them being the pass's own.
pub(super) const WAL_SYNCS_PER_PASS: u128 =
    CHECKPOINT_EVERY.as_millis() / WAL_SYNC_EVERY.as_millis();

/// WAL length (in 4 KiB frames) past which the checkpointer has the WAL start over.
pub(super) const RESTART_WAL_FRAMES: i64 = 16 * 1024;

/// Runs passive WAL checkpoints on a connection of its own, off the request path, until
/// the store is dropped. A passive checkpoint never blocks readers or the writer; the
/// WAL is copied back as far as readers allow.
///
/// Under a steady stream of commits that alone lets the WAL grow without bound: SQLite
/// only starts the WAL over once a checkpoint has caught up with the last commit, and
/// the writer is always a little ahead. In the benchmark it passed 1 GiB in 20 s, and
/// the checkpoints of such a WAL stalled requests for over 100 ms. So once the WAL is
/// longer than RESTART_WAL_FRAMES, the checkpointer sets `catch_up` and the database
/// thread finishes the job between two batches (database_thread::catch_up_checkpoint).
/// An earlier version ran a RESTART checkpoint here instead; it held the writer back
/// through SQLite's sleeping busy handler and cost stalls of about 100 ms
/// (docs/performance.md, "What mattered").
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
/// that left requests waiting for tens of milliseconds (docs/performance.md, "What mattered"). With
/// [`SyncMode::Full`] every commit has synced the WAL already, so there is nothing to
/// write out and these syncs are skipped.
pub(super) fn spawn_checkpointer(
    path: &Path,
    alive: std::sync::Weak<Vec<Mutex<Connection>>>,
    catch_up: Arc<AtomicBool>,
    sync: SyncMode,
) -> Result<(), StoreError> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    let database_file = std::fs::File::open(path)
        .map_err(|err| StoreError::unavailable(format!("cannot open {}: {err}", path.display())))?;
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
        .map_err(|err| StoreError::internal(format!("cannot start the checkpointer: {err}")))?;
    Ok(())
}

/// Most extra passes before handing the rest of a long WAL to the database thread.
pub(super) const CATCH_UP_PASSES: usize = 4;
/// A pass this quick leaves little for the database thread to do.
pub(super) const SHORT_PASS: std::time::Duration = std::time::Duration::from_millis(10);

/// The WAL file's path: SQLite names it after the database.
pub(super) fn wal_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Writes the WAL out to disk a little at a time, so that the sync a checkpoint starts
/// with finds little left to write ([`SyncMode::Normal`] only). Durability never
/// depends on it: SQLite syncs the WAL itself before every checkpoint.
pub(super) struct WalWriteback {
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
pub(super) struct WalProgress {
    /// Frames in the WAL.
    frames: i64,
    /// Of those, frames copied back into the database file.
    copied: i64,
}

/// One passive checkpoint.
pub(super) fn checkpoint_passive(connection: &Connection) -> rusqlite::Result<WalProgress> {
    // The row is (busy, frames in the WAL, frames copied back).
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(WalProgress {
            frames: row.get(1)?,
            copied: row.get(2)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
