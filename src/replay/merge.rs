//! Replay of a partitioned stream: the partitions' histories merged into
//! one order, by entry ID (`ms-seq`) with ties broken by partition number,
//! ascending forwards and descending backwards.
//!
//! Each partition is paged as a plain Replay pages a stream (every page
//! continues strictly after the partition's last entry read), and the pages
//! are merged k-way: the gateway holds at most one page per partition plus
//! the page being filled. A partition whose page runs out is read again
//! before the merge takes another entry, since its next entry may be the
//! next in the merged order. Like the plain loop, a page is read only
//! after buffer space for the merged page is reserved (see
//! [`crate::delivery::pump`]), so the client's flow control applies.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use futures_util::future::try_join_all;

use crate::broker::{Broker, partition_stream};
use crate::delivery::{self, Delivery, ReadLoop, Turn};
use crate::error::Result;
use crate::ids::{IdRange, StreamId};
use crate::model::Entry;
use crate::shutdown::Shutdown;

/// A position in the merged order: an entry ID in a partition. Positions
/// compare by ID, then by partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The entry ID.
    pub id: StreamId,
    /// The partition.
    pub partition: u32,
}

/// A validated Replay request on a partitioned stream.
#[derive(Clone, Debug)]
pub struct MergedSpec {
    /// Client stream name.
    pub stream: String,
    /// Its partition count (at least 1).
    pub partitions: u32,
    /// Lowest position included.
    pub low: Position,
    /// Highest position included.
    pub high: Position,
    /// Newest first.
    pub reverse: bool,
    /// Entries in total; `None` = all.
    pub limit: Option<u64>,
    /// Entries per page read from a partition and per merged page.
    pub page_size: u32,
}

impl MergedSpec {
    /// The IDs of partition `partition` that lie between the low and the
    /// high position; `None` when there are none. At the low position's ID
    /// a partition numbered below it is excluded, at the high position's
    /// ID one numbered above it.
    pub fn partition_range(&self, partition: u32) -> Option<IdRange> {
        let low = if partition >= self.low.partition {
            Some(self.low.id)
        } else {
            self.low.id.successor()
        }?;
        let high = if partition <= self.high.partition {
            Some(self.high.id)
        } else {
            self.high.id.predecessor()
        }?;
        Some(IdRange { low, high }).filter(|r| !r.is_empty())
    }
}

/// Starts the merging loop; merged pages arrive on the returned stream,
/// every entry with its partition set.
pub fn start(
    broker: Broker,
    spec: MergedSpec,
    stall: Duration,
    shutdown: Shutdown,
) -> Delivery<Vec<Entry>> {
    delivery::start(Merge::new(broker, &spec), stall, shutdown)
}

/// One partition's part of the merge.
struct Source {
    /// Internal stream name of the partition.
    name: String,
    /// Read and not yet merged, in delivery order: at most one page.
    buffered: VecDeque<Entry>,
    /// What is left to read; `None` when the partition is done.
    rest: Option<IdRange>,
}

/// The next entry of a source, ordered so that the heap's greatest is the
/// next entry to deliver.
#[derive(PartialEq, Eq)]
struct Head {
    at: Position,
    reverse: bool,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        let order = self.at.cmp(&other.at);
        if self.reverse { order } else { order.reverse() }
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The merging state of one replay.
struct Merge {
    broker: Broker,
    reverse: bool,
    page_size: u32,
    sources: Vec<Source>,
    /// The first buffered entry of every source that has one.
    heads: BinaryHeap<Head>,
    /// Sources with nothing buffered and something left to read: each is
    /// read before the merge takes another entry.
    starved: Vec<u32>,
    /// Entries still allowed by `limit`.
    remaining: u64,
}

impl Merge {
    fn new(broker: Broker, spec: &MergedSpec) -> Merge {
        let sources: Vec<Source> = (0..spec.partitions)
            .map(|p| Source {
                name: partition_stream(&spec.stream, p),
                buffered: VecDeque::new(),
                rest: spec.partition_range(p),
            })
            .collect();
        let starved = (0..spec.partitions)
            .filter(|&p| sources[p as usize].rest.is_some())
            .collect();
        Merge {
            broker,
            reverse: spec.reverse,
            page_size: spec.page_size,
            sources,
            heads: BinaryHeap::new(),
            starved,
            remaining: spec.limit.unwrap_or(u64::MAX),
        }
    }

    /// Reads the next page of every starved source, at most `count`
    /// entries each, all at once.
    async fn refill(&mut self, count: u64) -> Result<()> {
        let reverse = self.reverse;
        let reads: Vec<(u32, IdRange)> = std::mem::take(&mut self.starved)
            .into_iter()
            .filter_map(|p| Some((p, self.sources[p as usize].rest?)))
            .collect();
        let pages = try_join_all(reads.iter().map(|&(p, range)| {
            self.broker
                .range(&self.sources[p as usize].name, range, reverse, count)
        }))
        .await?;
        for (&(p, current), page) in reads.iter().zip(pages) {
            let source = &mut self.sources[p as usize];
            source.rest = None;
            let full = page.len() as u64 == count;
            if let (Some(last), true) = (page.last(), full) {
                // A short page means the partition is exhausted.
                source.rest = if reverse {
                    last.id
                        .predecessor()
                        .map(|high| IdRange { high, ..current })
                } else {
                    last.id.successor().map(|low| IdRange { low, ..current })
                }
                .filter(|r| !r.is_empty());
            }
            source.buffered = page
                .into_iter()
                .map(|entry| Entry {
                    partition: Some(p),
                    ..entry
                })
                .collect();
            if let Some(first) = source.buffered.front() {
                self.heads.push(Head {
                    at: Position {
                        id: first.id,
                        partition: p,
                    },
                    reverse,
                });
            }
        }
        Ok(())
    }
}

impl ReadLoop for Merge {
    type Item = Vec<Entry>;

    async fn turn(&mut self) -> Result<Turn<Vec<Entry>>> {
        let want = self.remaining.min(u64::from(self.page_size));
        let mut page = Vec::new();
        while (page.len() as u64) < want {
            if !self.starved.is_empty() {
                self.refill(self.remaining.min(u64::from(self.page_size)))
                    .await?;
            }
            let Some(head) = self.heads.pop() else {
                break;
            };
            let p = head.at.partition;
            let source = &mut self.sources[p as usize];
            let Some(entry) = source.buffered.pop_front() else {
                unreachable!("a head stands for a buffered entry");
            };
            page.push(entry);
            self.remaining -= 1;
            match source.buffered.front() {
                Some(next) => self.heads.push(Head {
                    at: Position {
                        id: next.id,
                        partition: p,
                    },
                    reverse: self.reverse,
                }),
                None if source.rest.is_some() => self.starved.push(p),
                None => {}
            }
        }
        Ok(if page.is_empty() {
            Turn::End
        } else {
            Turn::Item(page)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    fn spec(low: (u64, u64, u32), high: (u64, u64, u32)) -> MergedSpec {
        MergedSpec {
            stream: "s".into(),
            partitions: 4,
            low: Position {
                id: id(low.0, low.1),
                partition: low.2,
            },
            high: Position {
                id: id(high.0, high.1),
                partition: high.2,
            },
            reverse: false,
            limit: None,
            page_size: 10,
        }
    }

    #[test]
    fn positions_cut_the_partitions_at_their_partition_number() {
        let s = spec((5, 1, 2), (9, 0, 1));
        let range = |low, high| Some(IdRange { low, high });
        assert_eq!(s.partition_range(0), range(id(5, 2), id(9, 0)));
        assert_eq!(s.partition_range(1), range(id(5, 2), id(9, 0)));
        assert_eq!(s.partition_range(2), range(id(5, 1), id(8, u64::MAX)));
        assert_eq!(s.partition_range(3), range(id(5, 1), id(8, u64::MAX)));
        // One ID: only the partitions between the two positions.
        let s = spec((7, 0, 1), (7, 0, 2));
        assert_eq!(s.partition_range(0), None);
        assert_eq!(s.partition_range(1), range(id(7, 0), id(7, 0)));
        assert_eq!(s.partition_range(2), range(id(7, 0), id(7, 0)));
        assert_eq!(s.partition_range(3), None);
        // The extremes have no successor or predecessor.
        let s = spec((u64::MAX, u64::MAX, 1), (u64::MAX, u64::MAX, 3));
        assert_eq!(s.partition_range(0), None);
        let s = spec((0, 0, 0), (0, 0, 0));
        assert_eq!(s.partition_range(1), None);
    }

    #[test]
    fn heads_pop_in_merged_order_both_ways() {
        let at = |ms, partition| Position {
            id: id(ms, 0),
            partition,
        };
        for reverse in [false, true] {
            let mut heap: BinaryHeap<Head> = [at(2, 0), at(1, 3), at(2, 1), at(1, 0)]
                .into_iter()
                .map(|at| Head { at, reverse })
                .collect();
            let mut order = Vec::new();
            while let Some(head) = heap.pop() {
                order.push((head.at.id.ms, head.at.partition));
            }
            let mut expected = vec![(1, 0), (1, 3), (2, 0), (2, 1)];
            if reverse {
                expected.reverse();
            }
            assert_eq!(order, expected);
        }
    }
}
