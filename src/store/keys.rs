//! The data keys as the stores hold them: the configured key-encryption keys, a bounded
//! in-process cache of unwrapped data keys, and the rules both backends share for the
//! `user_keys` and `key_encryption_keys` tables. The tables themselves are each
//! backend's (`embedded/keys.rs`, `cassandra/keys.rs`).

use super::StoreError;
use super::sealing::{DataKey, Kek, KeyRing};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The KEKs configured for a store: `KILLRVIDEO_KEY_ENCRYPTION_KEY` and
/// `KILLRVIDEO_OLD_KEY_ENCRYPTION_KEYS`.
#[derive(Debug, Clone, Default)]
pub struct KekSettings {
    /// Wraps new data keys (and opens the ones it wrapped). `None`: the development
    /// default (see [`KekSettings::ring`]).
    pub current: Option<Kek>,
    /// Only open the data keys they wrapped before a rotation.
    pub old: Vec<Kek>,
    /// Where the development KEK is kept when there is no `current` one: the data
    /// directory (`KILLRVIDEO_DATA_DIR`), for either backend. `None`: a random KEK that
    /// dies with the process.
    pub development_dir: Option<PathBuf>,
}

/// The development KEK's file name, inside the data directory.
pub const DEVELOPMENT_KEK_FILE: &str = "development-key-encryption-key";

impl KekSettings {
    /// Settings with just this KEK.
    pub fn with(current: Kek) -> Self {
        Self {
            current: Some(current),
            ..Self::default()
        }
    }

    /// These settings, keeping a development KEK in `dir` (unless one is configured).
    pub fn keeping_development_key_in(mut self, dir: &Path) -> Self {
        self.development_dir = Some(dir.to_owned());
        self
    }

    /// The ring of configured KEKs. Without a current one, as with the JWT secret, a
    /// random KEK is made with a loud warning; but data keys outlive the process, so
    /// it is kept in the [`development_dir`](Self::development_dir), so that the next
    /// `cargo run` (or `verify`, or a restart of `serve` against the same Cassandra
    /// keyspace) opens what this one sealed. A KEK kept on the machine that runs the
    /// service protects nothing against a copy of that machine: development only.
    pub fn ring(&self) -> Result<KeyRing, StoreError> {
        if let Some(current) = &self.current {
            return Ok(KeyRing::new(current.clone(), self.old.clone()));
        }
        let current = match &self.development_dir {
            None => {
                tracing::warn!(
                    "KILLRVIDEO_KEY_ENCRYPTION_KEY is not set: using a random key-encryption key. \
                     Every data key it wraps is lost with this process, and the next start will \
                     refuse this keyspace. Set KILLRVIDEO_KEY_ENCRYPTION_KEY in production!"
                );
                Kek::random()
            }
            Some(dir) => {
                let path = dir.join(DEVELOPMENT_KEK_FILE);
                let kek = development_kek(&path)?;
                tracing::warn!(
                    path = %path.display(),
                    "KILLRVIDEO_KEY_ENCRYPTION_KEY is not set: using a development key-encryption \
                     key kept in this file, which protects nothing against a copy of the \
                     machine, and which every process against this store must share (same \
                     KILLRVIDEO_DATA_DIR). Set KILLRVIDEO_KEY_ENCRYPTION_KEY in production!"
                );
                kek
            }
        };
        Ok(KeyRing::new(current, self.old.clone()))
    }
}

/// Reads the development KEK at `path`, or makes one there (mode 0600), with its
/// directory.
fn development_kek(path: &Path) -> Result<Kek, StoreError> {
    let unreadable = |err: String| {
        StoreError::WrongKey(format!(
            "cannot use the development key-encryption key {}: {err}",
            path.display()
        ))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|err| unreadable(err.to_string()))?;
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Kek::from_base64(&text).map_err(|err| unreadable(err.to_string())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let kek = Kek::random();
            // Written whole under a name of its own, then linked into place: a process
            // reading the key never sees it half-written, and of two making one at
            // once, the second's link fails and it reads the first's.
            let temporary = path.with_extension(format!("{:016x}.tmp", rand::random::<u64>()));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let written = options
                .open(&temporary)
                .and_then(|mut file| {
                    use std::io::Write;
                    file.write_all(kek.to_base64().as_bytes())?;
                    file.sync_all()
                })
                .and_then(|()| std::fs::hard_link(&temporary, path));
            let _ = std::fs::remove_file(&temporary);
            match written {
                Ok(()) => Ok(kek),
                // Another process made it first: use theirs.
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    development_kek(path)
                }
                Err(err) => Err(unreadable(err.to_string())),
            }
        }
        Err(err) => Err(unreadable(err.to_string())),
    }
}

/// Unwrapped data keys kept in memory: at most this many users.
const CACHED_KEYS: usize = 100_000;
/// How long a cached key is used before it is read again: bounds how long another
/// instance keeps using a key that an erasure deleted (docs/adr/0002-crypto-shredding.md).
pub const CACHED_KEY_LIFETIME: Duration = Duration::from_secs(60);

/// A data key as `user_keys` stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The id of the KEK that wrapped it.
    pub kek_id: String,
    /// [`KeyRing::wrap`]'s bytes.
    pub wrapped: Vec<u8>,
}

/// The configured KEKs and the cache of unwrapped data keys, shared by a store's tasks.
pub struct DataKeys {
    ring: KeyRing,
    cache: quick_cache::sync::Cache<Uuid, (Arc<DataKey>, Instant)>,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("current_kek", &self.ring.current_id())
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl DataKeys {
    /// Keys unwrapped by `ring`.
    pub fn new(ring: KeyRing) -> Self {
        Self {
            ring,
            cache: quick_cache::sync::Cache::new(CACHED_KEYS),
        }
    }

    /// The configured KEKs.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// The user's key if this process read it less than [`CACHED_KEY_LIFETIME`] ago.
    pub fn cached(&self, user_id: Uuid) -> Option<Arc<DataKey>> {
        self.cache
            .get(&user_id)
            .filter(|(_, read_at)| read_at.elapsed() < CACHED_KEY_LIFETIME)
            .map(|(key, _)| key)
    }

    /// Unwraps a key read from `user_keys` and caches it.
    pub fn unwrap(&self, user_id: Uuid, stored: &WrappedKey) -> Result<Arc<DataKey>, StoreError> {
        let key = self.ring.unwrap(user_id, &stored.wrapped).map_err(|err| {
            StoreError::WrongKey(format!("the data key of user {user_id}: {err}"))
        })?;
        Ok(self.remember(user_id, key))
    }

    /// A new data key for `user_id`, wrapped by the current KEK, not cached until it is
    /// stored ([`DataKeys::remember`]).
    pub fn create(&self, user_id: Uuid) -> (DataKey, WrappedKey) {
        let (key, wrapped) = self.ring.new_data_key(user_id);
        (
            key,
            WrappedKey {
                kek_id: self.ring.current_id(),
                wrapped,
            },
        )
    }

    /// Caches a key that is stored.
    pub fn remember(&self, user_id: Uuid, key: DataKey) -> Arc<DataKey> {
        let key = Arc::new(key);
        self.cache
            .insert(user_id, (Arc::clone(&key), Instant::now()));
        key
    }

    /// Drops the user's key from this process: at erasure.
    pub fn forget(&self, user_id: Uuid) {
        self.cache.remove(&user_id);
    }

    /// The start-up check against the KEKs that have wrapped keys in this store
    /// (`registered`): unless the store has none yet, at least one configured KEK must
    /// be among them, or every key here would fail to unwrap. A wrong
    /// `KILLRVIDEO_KEY_ENCRYPTION_KEY` is refused here, with one line, rather than
    /// found as garbage later.
    pub fn check_registered(&self, registered: &[String]) -> Result<(), StoreError> {
        if registered.is_empty() || registered.iter().any(|id| self.ring.knows(id)) {
            return Ok(());
        }
        Err(StoreError::WrongKey(format!(
            "the configured key-encryption key (id {}) is not one that wrapped the data keys \
             in this store (ids {}): set KILLRVIDEO_KEY_ENCRYPTION_KEY to the right key, or \
             list the previous one in KILLRVIDEO_OLD_KEY_ENCRYPTION_KEYS when rotating",
            self.ring.current_id(),
            registered.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_whose_keys_no_configured_kek_wrapped_is_refused() {
        let (old, new) = (Kek::random(), Kek::random());
        let keys = DataKeys::new(KeyRing::new(new.clone(), vec![]));
        assert!(keys.check_registered(&[]).is_ok());
        assert!(keys.check_registered(&[new.id()]).is_ok());
        let err = keys.check_registered(&[old.id()]).unwrap_err().to_string();
        assert!(err.contains(&old.id()) && err.contains(&new.id()), "{err}");
        let rotated = DataKeys::new(KeyRing::new(new, vec![old.clone()]));
        assert!(rotated.check_registered(&[old.id()]).is_ok());
    }

    #[test]
    fn the_development_kek_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let settings = KekSettings::default().keeping_development_key_in(dir.path());
        let first = settings.ring().unwrap();
        let second = settings.ring().unwrap();
        assert_eq!(first.current_id(), second.current_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DEVELOPMENT_KEK_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn cached_keys_are_forgotten() {
        let keys = DataKeys::new(KeyRing::new(Kek::random(), vec![]));
        let user = Uuid::new_v4();
        let (key, wrapped) = keys.create(user);
        assert!(keys.cached(user).is_none());
        keys.remember(user, key.clone());
        assert_eq!(*keys.cached(user).unwrap(), key);
        keys.forget(user);
        assert!(keys.cached(user).is_none());
        assert_eq!(*keys.unwrap(user, &wrapped).unwrap(), key);
        assert!(keys.unwrap(Uuid::new_v4(), &wrapped).is_err());
    }
}
