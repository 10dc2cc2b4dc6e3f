//! The hand-off of reclaimed entries from the dashboard's `Reclaim` to the
//! demo consumer they were claimed for.
//!
//! Bounded, and the dashboard never waits on it. The sender is an HTTP
//! handler holding the demo's list of consumers (a plain mutex, which must
//! not be held across an await); the receiver is the consumer's task, which
//! only reads hand-offs while its subscription is open. A consumer that
//! cannot subscribe (Redis away, the stream's group deleted) would
//! otherwise pile up every batch a person reclaims for it. Dropping a batch
//! loses nothing: Reap already made those entries pending for that
//! consumer in Redis, so they stay there, visible on the page, until the
//! next `Reclaim` hands them over again.

use tokio::sync::mpsc::{self, Receiver, Sender, error::TrySendError};

use crate::pb;

/// Reclaimed batches waiting for one consumer at most. A batch is one
/// Reap's answer (by default up to 1,000 entries), so a few cover a person
/// clicking faster than the consumer processes.
pub const HANDOFF_BATCHES: usize = 4;

/// The dashboard's end of one consumer's hand-off.
pub struct Handoff {
    tx: Sender<Vec<pb::Entry>>,
}

/// A hand-off for one consumer and the consumer's end of it.
pub fn channel() -> (Handoff, Receiver<Vec<pb::Entry>>) {
    let (tx, rx) = mpsc::channel(HANDOFF_BATCHES);
    (Handoff { tx }, rx)
}

impl Handoff {
    /// Gives `entries` to the consumer without waiting; false when it
    /// already has [`HANDOFF_BATCHES`] waiting or has stopped, in which
    /// case the entries stay pending for it in Redis.
    pub fn offer(&self, consumer: &str, entries: Vec<pb::Entry>) -> bool {
        let count = entries.len();
        match self.tx.try_send(entries) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    consumer,
                    entries = count,
                    "demo consumer is not keeping up; reclaimed entries stay pending for it"
                );
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: &str) -> Vec<pb::Entry> {
        vec![pb::Entry {
            id: id.to_owned(),
            ..pb::Entry::default()
        }]
    }

    #[test]
    fn a_consumer_that_does_not_read_gets_at_most_the_bound() {
        let (handoff, mut rx) = channel();
        for i in 0..HANDOFF_BATCHES {
            assert!(handoff.offer("c", batch(&i.to_string())), "batch {i}");
        }
        assert!(
            !handoff.offer("c", batch("over")),
            "one batch over the bound"
        );
        // Taking one makes room for one, in order.
        assert_eq!(rx.try_recv().unwrap()[0].id, "0");
        assert!(handoff.offer("c", batch("next")));
        assert!(!handoff.offer("c", batch("over again")));
    }

    #[test]
    fn a_stopped_consumer_takes_nothing() {
        let (handoff, rx) = channel();
        drop(rx);
        assert!(!handoff.offer("c", batch("1")));
    }
}
