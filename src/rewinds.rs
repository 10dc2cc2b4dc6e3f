//! In-band Nacks of an ordered Consume session, and the entries read
//! before them.
//!
//! A Nack of entry X in partition p sends p's reading back to X: the
//! next read of p delivers X and every later pending entry again, in
//! order. But entries of p later than X may already have been read
//! *before* the Nack took effect, and be on their way to the client (in
//! the gateway's hand-off, or on the wire). A client that took them as new
//! would handle entries of p out of order. So:
//!
//! - Reads of a partition and the Nacks applied to it exclude each other
//!   (a lock per partition), and each Nack that took effect moves the
//!   partition's *epoch* on. Every entry carries the epoch it was read in,
//!   so it was read either wholly before a Nack or wholly after it.
//! - The Nack's Confirm is queued before the lock is let go, and a
//!   session sends Confirms ahead of entries: whatever was read after the
//!   Nack reaches the client after its Confirm.
//! - An entry read before a Nack of X, with an ID from X on, that has not
//!   gone out yet when the Confirm is queued is dropped ([`Rewinds::stale`]):
//!   it is pending, so the rewind delivers it again, in its place.
//!
//! What the client must do is then exact: after sending a Nack of X, hold
//! the entries of X's partition that arrive before the Nack's Confirm; if
//! the Confirm says X was done, drop those later than X (they come again
//! after X), else hand them out.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::ids::StreamId;

/// Nacks remembered for filtering. An entry waits in the hand-off for at
/// most a couple of Nacks of its partition, so a short memory is enough;
/// the oldest are forgotten first.
const REMEMBERED: usize = 256;

/// One ordered session's partitions: their epochs and the Nacks applied.
#[derive(Debug)]
pub struct Rewinds {
    /// Per partition: the epoch, under the lock reads and Nacks take.
    epochs: Vec<Arc<AsyncMutex<u64>>>,
    /// Nacks that took effect: partition, the epoch they began, and the
    /// earliest entry nacked.
    applied: Mutex<VecDeque<(u32, u64, StreamId)>>,
}

/// A partition held for one read or one Nack; derefs to its epoch.
pub type Held = OwnedMutexGuard<u64>;

impl Rewinds {
    /// For a stream of `partitions` partitions.
    pub fn new(partitions: u32) -> Arc<Rewinds> {
        Arc::new(Rewinds {
            epochs: (0..partitions).map(|_| Arc::default()).collect(),
            applied: Mutex::default(),
        })
    }

    /// Holds `partition` for a read or a Nack.
    pub async fn hold(&self, partition: u32) -> Held {
        self.epochs[partition as usize].clone().lock_owned().await
    }

    /// Holds every one of `partitions`, in increasing order (so two
    /// holders of several never wait for each other in a circle).
    pub async fn hold_all(&self, partitions: &[u32]) -> Vec<Held> {
        let mut sorted = partitions.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut held = Vec::with_capacity(sorted.len());
        for p in sorted {
            held.push(self.hold(p).await);
        }
        held
    }

    /// A Nack of entries of `partition` from `from` on took effect, while
    /// `held` holds it: entries read before are stale from `from` on.
    pub fn nacked(&self, partition: u32, held: &mut Held, from: StreamId) {
        **held += 1;
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        if applied.len() == REMEMBERED {
            applied.pop_front();
        }
        applied.push_back((partition, **held, from));
    }

    /// Whether entry `id` of `partition`, read in `epoch`, was overtaken by
    /// a Nack: it must not go out (the rewind delivers it again).
    pub fn stale(&self, partition: u32, epoch: u64, id: StreamId) -> bool {
        let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        applied
            .iter()
            .any(|&(p, began, from)| p == partition && began > epoch && id >= from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    #[tokio::test]
    async fn entries_read_before_a_nack_are_stale_from_the_nacked_entry_on() {
        let rewinds = Rewinds::new(2);
        let before = *rewinds.hold(1).await;
        let mut held = rewinds.hold_all(&[1]).await;
        rewinds.nacked(1, &mut held[0], id(5));
        let after = *held[0];
        drop(held);
        assert!(rewinds.stale(1, before, id(5)));
        assert!(rewinds.stale(1, before, id(9)));
        assert!(!rewinds.stale(1, before, id(4)), "before the nacked entry");
        assert!(!rewinds.stale(1, after, id(9)), "read after the Nack");
        assert!(!rewinds.stale(0, before, id(9)), "another partition");
    }

    #[tokio::test]
    async fn a_read_waits_while_a_nack_holds_its_partition() {
        let rewinds = Rewinds::new(1);
        let held = rewinds.hold_all(&[0, 0]).await;
        assert_eq!(held.len(), 1);
        let waiting = {
            let rewinds = rewinds.clone();
            tokio::spawn(async move { *rewinds.hold(0).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        assert_eq!(waiting.await.unwrap(), 0);
    }
}
