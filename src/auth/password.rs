//! argon2id password hashing, run off the async threads.

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Hashes and checks passwords, with bounded work. Holds a hash of a random password so
/// that a login for an unknown email costs one verification too, like a login with a
/// wrong password.
#[derive(Clone)]
pub struct Passwords {
    decoy_hash: Arc<str>,
    /// argon2id takes 19 MiB and tens of milliseconds per hash: at most one per core
    /// runs at once. The permit moves into the blocking task and is released when the
    /// hash ends, not when the request gives up on it (a request past its timeout is
    /// dropped, its hash is not), so no more than this many hashes are ever in memory.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Requests waiting for a hash or hashing, at most a few per core. Past that, work
    /// is refused at once ([`HashError::Busy`], a 503 with `Retry-After`) rather than
    /// queued behind a deadline it would miss.
    admitted: Arc<tokio::sync::Semaphore>,
    /// Passwords checked so far (the decoy included): what the login throttle bounds.
    verifications: Arc<AtomicU64>,
    /// Hashing slots (the size of `hashing`).
    slots: usize,
}

/// Why no hash came back.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every hashing slot and every place in the queue is taken: try again shortly.
    #[error("password hashing is at capacity")]
    Busy,
    /// The hash itself failed: an internal error.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Requests admitted per hashing slot: waiting ones plus the one hashing. With a hash
/// taking 20-50 ms, the last in line waits a few hundred milliseconds at most.
const ADMITTED_PER_SLOT: usize = 16;

fn hash_blocking(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| HashError::Failed(err.to_string()))
}

fn verify_blocking(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

impl Passwords {
    /// Prepares the decoy hash (one argon2 run at start-up), with one hashing slot per
    /// core.
    pub fn new() -> Result<Self, HashError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_slots(cores)
    }

    /// [`Passwords::new`] with `slots` hashes at once.
    pub fn with_slots(slots: usize) -> Result<Self, HashError> {
        let decoy: [u8; 16] = rand::random();
        let slots = slots.max(1);
        Ok(Self {
            decoy_hash: hash_blocking(&format!("{decoy:?}"))?.into(),
            hashing: Arc::new(tokio::sync::Semaphore::new(slots)),
            admitted: Arc::new(tokio::sync::Semaphore::new(slots * ADMITTED_PER_SLOT)),
            verifications: Arc::default(),
            slots,
        })
    }

    /// Runs `work` on a blocking thread once a hashing slot is free, holding the slot
    /// until `work` returns.
    async fn bounded<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _admitted = self.admitted.try_acquire().map_err(|_| HashError::Busy)?;
        crate::telemetry::hashing_queue(self.waiting(), self.hashing());
        let slot = Arc::clone(&self.hashing)
            .acquire_owned()
            .await
            .map_err(|err| HashError::Failed(err.to_string()))?;
        let outcome = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await
        .map_err(|err| HashError::Failed(err.to_string()));
        crate::telemetry::hashing_queue(self.waiting(), self.hashing());
        outcome
    }

    /// Requests admitted and not finished: waiting for a slot or hashing.
    pub fn waiting(&self) -> usize {
        self.admitted_capacity() - self.admitted.available_permits()
    }

    /// Hashes running now.
    pub fn hashing(&self) -> usize {
        self.slots() - self.hashing.available_permits()
    }

    fn slots(&self) -> usize {
        self.slots
    }

    fn admitted_capacity(&self) -> usize {
        self.slots * ADMITTED_PER_SLOT
    }

    /// Passwords checked so far, decoys included.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Hashes a new password (argon2id, default parameters, random salt).
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.bounded(move || hash_blocking(&password)).await?
    }

    /// Checks a password against a stored hash; with `None`, checks it against the decoy
    /// so the caller spends the same time and learns nothing. The comparison of the
    /// derived keys inside argon2 is constant-time.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let decoy = stored.is_none();
        let phc = stored.unwrap_or_else(|| self.decoy_hash.to_string());
        let verifications = Arc::clone(&self.verifications);
        let matched = self
            .bounded(move || {
                verifications.fetch_add(1, Ordering::Relaxed);
                verify_blocking(&password, &phc)
            })
            .await?;
        Ok(matched && !decoy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_decoys_never_match() {
        let passwords = Passwords::new().unwrap();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            passwords
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(hash))
                .await
                .unwrap()
        );
        assert!(!passwords.verify("anything".into(), None).await.unwrap());
        assert_eq!(passwords.verifications(), 3);
    }

    /// A request that gives up (its future is dropped, as the request timeout drops
    /// it) does not free its hashing slot: the slot stays with the blocking work until
    /// that work ends, so hashes in memory never exceed the slots.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_requests_keep_their_slot_until_the_hash_ends() {
        use std::sync::atomic::AtomicUsize;
        let passwords = Passwords::with_slots(1).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        for _ in 0..6 {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            let work = passwords.bounded(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(40));
                running.fetch_sub(1, Ordering::SeqCst);
            });
            // Given up on long before the work could finish.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(1), work).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "one hash at a time, abandoned or not"
        );
        assert_eq!(passwords.hashing(), 0);
        assert_eq!(passwords.waiting(), 0);
    }

    /// Past the queue's capacity, work is refused at once instead of waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once() {
        let passwords = Passwords::with_slots(1).unwrap();
        let release = Arc::new(std::sync::Barrier::new(2));
        let first = {
            let (passwords, release) = (passwords.clone(), Arc::clone(&release));
            tokio::spawn(async move {
                passwords
                    .bounded(move || {
                        release.wait();
                    })
                    .await
            })
        };
        let mut queued = Vec::new();
        for _ in 1..ADMITTED_PER_SLOT {
            let passwords = passwords.clone();
            queued.push(tokio::spawn(async move { passwords.bounded(|| ()).await }));
        }
        while passwords.waiting() < ADMITTED_PER_SLOT {
            tokio::task::yield_now().await;
        }
        // The first task holds the only slot until `release`, so a call that waited for
        // a slot could not return before it: an answer now is a refusal at once. (The
        // timeout only turns a wrong, waiting implementation into a failure.)
        let refused =
            tokio::time::timeout(std::time::Duration::from_secs(10), passwords.bounded(|| ()))
                .await;
        // Released before any assertion: a failed one must fail the test, not leave the
        // first task's blocking thread waiting forever (the runtime waits for it).
        release.wait();
        assert!(
            matches!(refused, Ok(Err(HashError::Busy))),
            "a full queue refuses without waiting: {refused:?}"
        );
        assert!(first.await.unwrap().is_ok());
        for task in queued {
            assert!(task.await.unwrap().is_ok());
        }
    }
}
