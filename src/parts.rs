//! One live stream over the partitions of a partitioned stream.
//!
//! Each partition is read by the reader a plain stream would have (a
//! subscription with its own group state, or a tail); [`combine`] makes
//! them one [`LiveRead`] for the [`crate::driver`]: a read fills the room
//! from the partitions in turn, starting after the last partition the
//! previous read took entries from so that no partition starves (however
//! many have nothing, e.g. partitions ordered consumption gave to other
//! consumers), and marks every entry with its partition (its ID
//! then goes out as `<partition>/<ms>-<seq>`). The wake-ups of all
//! partitions are merged into one of each kind, so the driver waits
//! exactly as for one stream.

use std::time::Duration;

use futures_util::future::select_all;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::driver::{Found, Live, LiveRead, Then, Wakers};
use crate::error::Result;
use crate::shutdown::Shutdown;

/// The readers of every partition, as one.
pub struct Parts<R> {
    /// The stream the client named, for errors.
    stream: String,
    parts: Vec<R>,
    /// The partition the next read starts with: the one after the last
    /// partition a read took entries from.
    next: usize,
}

/// One live stream over `lives`, the live streams of partitions 0, 1, ...
/// in order; `replans` also wake it (ordered consumption's ownership
/// changes). Merging the wake-ups takes a small task per kind; they end
/// with the live stream (or at `shutdown`).
pub fn combine<R: LiveRead>(
    stream: &str,
    lives: Vec<Live<R>>,
    replans: Vec<watch::Receiver<i64>>,
    shutdown: &Shutdown,
) -> Live<Parts<R>> {
    let room = lives.first().map_or(1, |live| live.room);
    let heartbeat = lives.first().and_then(|live| live.heartbeat);
    let recheck = lives
        .iter()
        .map(|live| live.wakers.recheck)
        .min()
        .unwrap_or(Duration::MAX);
    let mut entries = Vec::new();
    let mut rooms = Vec::new();
    let mut replans = replans;
    let mut parts = Vec::new();
    for live in lives {
        entries.push(live.wakers.entries);
        rooms.extend(live.wakers.room);
        replans.extend(live.wakers.replan);
        parts.push(live.reader);
    }
    Live {
        room,
        heartbeat,
        wakers: Wakers {
            entries: merge(entries, shutdown),
            recheck,
            room: (!rooms.is_empty()).then(|| merge(rooms, shutdown)),
            replan: (!replans.is_empty()).then(|| merge(replans, shutdown)),
        },
        reader: Parts {
            stream: stream.to_owned(),
            parts,
            next: 0,
        },
    }
}

/// One receiver that changes whenever any of `receivers` does. The
/// forwarding task ends once nobody holds the merged receiver.
fn merge<T, U>(mut receivers: Vec<watch::Receiver<T>>, shutdown: &Shutdown) -> watch::Receiver<U>
where
    T: Send + Sync + 'static,
    U: Default + Copy + std::ops::AddAssign + From<u8> + Send + Sync + 'static,
{
    let (merged, rx) = watch::channel(U::default());
    let stop = shutdown.clone();
    shutdown.spawn(async move {
        loop {
            // A receiver whose sender is gone never changes again.
            receivers.retain(|rx| rx.has_changed().is_ok());
            if receivers.is_empty() {
                tokio::select! {
                    () = merged.closed() => return,
                    () = stop.triggered() => return,
                }
            }
            let changed = select_all(receivers.iter_mut().map(|rx| Box::pin(rx.changed())));
            tokio::select! {
                () = merged.closed() => return,
                () = stop.triggered() => return,
                _ = changed => merged.send_modify(|v| *v += U::from(1)),
            }
        }
    });
    rx
}

impl<R: LiveRead> LiveRead for Parts<R> {
    fn describe(&self) -> String {
        let first = self.parts.first().map(R::describe).unwrap_or_default();
        format!(
            "{first} (and the other {} partitions)",
            self.parts.len().saturating_sub(1)
        )
    }

    /// Fills `room` from the partitions in turn. What to wait for when
    /// nothing came: read again if any partition says so, wait for room
    /// only if every partition does, else for entries. An error after some
    /// partitions delivered is left for the next read, so that their
    /// entries (already taken from Redis) go out.
    async fn read(&mut self, room: u32) -> Result<Found> {
        let count = self.parts.len();
        let mut entries = Vec::new();
        let mut read_again = false;
        let mut all_await_room = true;
        let mut last = None;
        for k in 0..count {
            let left = room.saturating_sub(entries.len() as u32);
            if left == 0 {
                break;
            }
            let partition = (self.next + k) % count;
            let found = match self.parts[partition].read(left).await {
                Ok(found) => found,
                Err(_) if !entries.is_empty() => {
                    read_again = true;
                    break;
                }
                Err(err) => return Err(err.about(&self.stream)),
            };
            read_again |= found.then == Then::ReadAgain;
            all_await_room &= found.then == Then::AwaitRoom;
            if !found.entries.is_empty() {
                last = Some(partition);
            }
            entries.extend(found.entries.into_iter().map(|mut entry| {
                entry.partition = Some(partition as u32);
                entry
            }));
        }
        self.next = last.map_or(self.next + 1, |p| p + 1) % count.max(1);
        let then = if read_again {
            Then::ReadAgain
        } else if all_await_room {
            Then::AwaitRoom
        } else {
            Then::AwaitEntries
        };
        Ok(Found::new(entries, then))
    }

    fn due(&self) -> Option<Instant> {
        self.parts.iter().filter_map(R::due).min()
    }
}

#[cfg(test)]
mod tests {
    //! The turn over the partitions, with readers that hand out what they
    //! were given.

    use super::*;
    use crate::ids::StreamId;
    use crate::model::Entry;

    /// A partition's reader: its entries, handed out as room allows.
    struct Queue(Vec<u64>);

    impl LiveRead for Queue {
        fn describe(&self) -> String {
            "queue".to_owned()
        }

        async fn read(&mut self, room: u32) -> Result<Found> {
            let n = (room as usize).min(self.0.len());
            let entries = (self.0.drain(..n))
                .map(|ms| Entry {
                    id: StreamId { ms, seq: 0 },
                    ..Entry::default()
                })
                .collect();
            Ok(Found::new(entries, Then::AwaitEntries))
        }
    }

    fn parts(queues: Vec<Vec<u64>>) -> Parts<Queue> {
        Parts {
            stream: "s".to_owned(),
            parts: queues.into_iter().map(Queue).collect(),
            next: 0,
        }
    }

    async fn read_one(parts: &mut Parts<Queue>) -> (u32, u64) {
        let found = parts.read(1).await.unwrap();
        let entry = &found.entries[0];
        (entry.partition.unwrap(), entry.id.ms)
    }

    /// Partitions with nothing (given to other consumers, or drained)
    /// do not make the turn fall on the same partition again and again.
    #[tokio::test]
    async fn the_turn_goes_round_the_partitions_that_have_entries() {
        let mut parts = parts(vec![vec![], vec![10, 11], vec![20, 21], vec![], vec![]]);
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(read_one(&mut parts).await);
        }
        assert_eq!(order, [(1, 10), (2, 20), (1, 11), (2, 21)]);
    }

    #[tokio::test]
    async fn a_read_fills_its_room_from_the_partitions_in_turn() {
        let mut parts = parts(vec![vec![1], vec![2, 3], vec![4]]);
        let found = parts.read(3).await.unwrap();
        let got: Vec<(Option<u32>, u64)> = (found.entries.iter())
            .map(|e| (e.partition, e.id.ms))
            .collect();
        assert_eq!(got, [(Some(0), 1), (Some(1), 2), (Some(1), 3)]);
        assert_eq!(parts.next, 2, "the next read starts after partition 1");
    }
}
