//! Turns: a fixed set of async locks, one taken per key, so that work on one key
//! (an email's guess budgets, a user's version-checked write) runs one at a time within
//! this process. The store's own atomicity is what is correct across instances; turns
//! only keep one process from contending with itself for the same lightweight
//! transaction, which on a cluster costs Paxos rounds and, past a handful of rivals,
//! their timeouts. A fixed set, so a flood of distinct keys cannot grow it; keys that
//! share a lock merely wait for each other.

use std::hash::{BuildHasher, Hash};
use tokio::sync::{Mutex, MutexGuard};

/// How many locks a set of turns has.
const LOCKS: usize = 64;

/// A set of turns.
pub struct Turns {
    locks: Vec<Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Turns {
    fn default() -> Self {
        Self {
            locks: (0..LOCKS).map(|_| Mutex::new(())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

/// A key's turn: held until dropped.
pub struct Turn<'a> {
    _lock: MutexGuard<'a, ()>,
    /// Whether another holder had to finish first: what it did may have changed what
    /// the caller read before it waited.
    pub waited: bool,
}

impl Turns {
    /// Waits for `key`'s turn.
    pub async fn take(&self, key: &impl Hash) -> Turn<'_> {
        let lock = &self.locks[(self.hasher.hash_one(key) % LOCKS as u64) as usize];
        match lock.try_lock() {
            Ok(guard) => Turn {
                _lock: guard,
                waited: false,
            },
            Err(_) => Turn {
                _lock: lock.lock().await,
                waited: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_taker_waits_for_the_first() {
        let turns = std::sync::Arc::new(Turns::default());
        let first = turns.take(&"a").await;
        assert!(!first.waited);
        let second = tokio::spawn({
            let turns = std::sync::Arc::clone(&turns);
            async move { turns.take(&"a").await.waited }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "the second waits");
        drop(first);
        assert!(second.await.unwrap(), "and knows it waited");
    }
}
