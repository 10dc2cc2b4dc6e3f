//! Replay's bounds and its choice between the plain paging loop and the
//! merge of a partitioned stream's partitions ([`crate::replay::merge`]).
//!
//! A bound is `-`/`+`, `ms` or `ms-seq` as on a plain stream, or a
//! partition-qualified position `<partition>/<ms>-<seq>`. On a partitioned
//! stream the merged order is by ID, then partition number: an unqualified
//! start is the position of that ID in partition 0 (so it applies to every
//! partition), an unqualified end the position in the last partition, and
//! a qualified bound is that exact position, included like any bound. A
//! plain stream takes `0/ms-seq` too, as its one partition.

use super::Context;
use crate::delivery::Delivery;
use crate::error::Result;
use crate::ids::{IdRange, StreamId};
use crate::model::Entry;
use crate::partition::parse_id;
use crate::replay::merge::{self, MergedSpec, Position};
use crate::replay::{self, ReplaySpec};

/// Replay's `start` and `end`: the unqualified ones parsed (before the
/// caller is authorized, as always), the qualified ones kept until the
/// stream's partition count is known.
pub(super) struct Bounds {
    /// The unqualified bounds; `-` / `+` in place of a qualified one.
    pub range: IdRange,
    /// A qualified `start`.
    start: Option<String>,
    /// A qualified `end`.
    end: Option<String>,
}

impl Bounds {
    /// Parses the request's `start` and `end` as far as possible without
    /// knowing the stream's layout.
    pub(super) fn parse(start: &str, end: &str) -> Result<Bounds> {
        let qualified = |text: &str| text.contains('/').then(|| text.to_owned());
        fn unqualified(text: &str) -> &str {
            if text.contains('/') { "" } else { text }
        }
        Ok(Bounds {
            range: IdRange::parse("start", unqualified(start), "end", unqualified(end))?,
            start: qualified(start),
            end: qualified(end),
        })
    }

    /// A qualified bound as a position on a stream of `partitions`.
    fn position(field: &str, text: Option<&str>, partitions: u32) -> Result<Option<Position>> {
        text.map(|text| {
            let (partition, id) = parse_id(field, text, partitions)?;
            Ok(Position { id, partition })
        })
        .transpose()
    }
}

impl Context {
    /// Starts a Replay. `spec.range` is ignored where `bounds` has a
    /// qualified bound.
    pub(super) async fn start_replay(
        &self,
        mut spec: ReplaySpec,
        bounds: Bounds,
    ) -> Result<Delivery<Vec<Entry>>> {
        let partitions = self.partitions(&spec.stream).await?;
        let start = Bounds::position("start", bounds.start.as_deref(), partitions)?;
        let end = Bounds::position("end", bounds.end.as_deref(), partitions)?;
        let stall = self.settings.loops.stall_timeout;
        if partitions == 0 {
            let id = |p: Option<Position>, default: StreamId| p.map_or(default, |p| p.id);
            spec.range = IdRange {
                low: id(start, bounds.range.low),
                high: id(end, bounds.range.high),
            };
            return Ok(replay::start(
                self.broker.clone(),
                spec,
                stall,
                self.shutdown.clone(),
            ));
        }
        let merged = MergedSpec {
            low: start.unwrap_or(Position {
                id: bounds.range.low,
                partition: 0,
            }),
            high: end.unwrap_or(Position {
                id: bounds.range.high,
                partition: partitions - 1,
            }),
            stream: spec.stream,
            partitions,
            reverse: spec.reverse,
            limit: spec.limit,
            page_size: spec.page_size,
        };
        Ok(merge::start(
            self.broker.clone(),
            merged,
            stall,
            self.shutdown.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_bounds_wait_for_the_layout_and_plain_ones_parse_at_once() {
        let bounds = Bounds::parse("7", "9").unwrap();
        assert_eq!(bounds.range.low, StreamId { ms: 7, seq: 0 });
        let bounds = Bounds::parse("2/5-1", "9").unwrap();
        assert_eq!(bounds.range.low, StreamId::MIN);
        assert_eq!(
            bounds.range.high,
            StreamId {
                ms: 9,
                seq: u64::MAX
            }
        );
        assert_eq!(
            Bounds::position("start", bounds.start.as_deref(), 4).unwrap(),
            Some(Position {
                id: StreamId { ms: 5, seq: 1 },
                partition: 2
            })
        );
        assert_eq!(bounds.end, None);
        let err = Bounds::parse("-", "soon").err().unwrap().to_string();
        assert!(err.contains("end"), "{err}");
        let err = Bounds::position("start", Some("4/5-1"), 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("start") && err.contains("0 to 3"), "{err}");
    }
}
