//! argon2id password hashing, run off the async threads.

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use std::sync::Arc;

/// Hashes and checks passwords. Holds a hash of a random password so that a login for an
/// unknown email costs one verification too, like a login with a wrong password.
#[derive(Clone)]
pub struct Passwords {
    decoy_hash: Arc<str>,
    /// argon2id takes 19 MiB and tens of milliseconds per hash: at most one per core
    /// runs at once, so a burst of logins queues instead of exhausting memory and
    /// starving every other request of CPU.
    permits: Arc<tokio::sync::Semaphore>,
}

/// A hashing failure (not a mismatch): an internal error.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

fn hash_blocking(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| HashError(err.to_string()))
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
    /// Prepares the decoy hash (one argon2 run at start-up).
    pub fn new() -> Result<Self, HashError> {
        let decoy: [u8; 16] = rand::random();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            decoy_hash: hash_blocking(&format!("{decoy:?}"))?.into(),
            permits: Arc::new(tokio::sync::Semaphore::new(cores)),
        })
    }

    /// Hashes a new password (argon2id, default parameters, random salt).
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|err| HashError(err.to_string()))?;
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(|err| HashError(err.to_string()))?
    }

    /// Checks a password against a stored hash; with `None`, checks it against the decoy
    /// so the caller spends the same time and learns nothing. The comparison of the
    /// derived keys inside argon2 is constant-time.
    pub async fn verify(&self, password: String, stored: Option<String>) -> bool {
        let decoy = stored.is_none();
        let phc = stored.unwrap_or_else(|| self.decoy_hash.to_string());
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let matched = tokio::task::spawn_blocking(move || verify_blocking(&password, &phc))
            .await
            .unwrap_or(false);
        matched && !decoy
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
        );
        assert!(!passwords.verify("wrong horse".into(), Some(hash)).await);
        assert!(!passwords.verify("anything".into(), None).await);
    }
}
