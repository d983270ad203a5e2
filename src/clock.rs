//! Where event ids come from: the system clock, made strictly monotonic per process.
//!
//! An event's id is a v1 time UUID whose timestamp is also the write time of every cell
//! the event projects. Strict monotonicity means two events of one process never share a
//! write time, so last-write-wins never has to fall back to comparing values between
//! them; the random node id keeps ids of different processes apart.

use crate::domain::events::{EventId, event_id_at};
use std::sync::atomic::{AtomicI64, Ordering};

/// Hands out event ids whose times only go forward.
#[derive(Debug)]
pub struct EventClock {
    last_micros: AtomicI64,
    node: [u8; 6],
}

impl Default for EventClock {
    fn default() -> Self {
        Self::new()
    }
}

impl EventClock {
    /// A clock with a random node id.
    pub fn new() -> Self {
        let mut node: [u8; 6] = rand::random();
        // Multicast bit set: marks the node id as random rather than a MAC (RFC 9562 §6.10).
        node[0] |= 0x01;
        Self {
            last_micros: AtomicI64::new(0),
            node,
        }
    }

    /// The next event id: now, or one microsecond after the previous id if the clock
    /// has not moved on (or went backwards).
    pub fn next_event_id(&self) -> EventId {
        let now = chrono::Utc::now().timestamp_micros();
        let mut previous = self.last_micros.load(Ordering::Relaxed);
        loop {
            let candidate = now.max(previous + 1);
            match self.last_micros.compare_exchange_weak(
                previous,
                candidate,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return event_id_at(candidate, rand::random(), self.node),
                Err(actual) => previous = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::event_micros;

    #[test]
    fn ids_strictly_increase_in_time() {
        let clock = EventClock::new();
        let mut last = 0;
        for _ in 0..10_000 {
            let micros = event_micros(clock.next_event_id().uuid()).unwrap();
            assert!(micros > last);
            last = micros;
        }
    }
}
