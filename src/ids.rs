//! Stream IDs and the special IDs Redis accepts in each position.
//!
//! Every ID a client sends is parsed here before any Redis call, so that a
//! malformed ID is INVALID_ARGUMENT naming the field instead of a Redis error
//! surfacing later. Each position accepts only what Redis accepts there: a
//! range bound may be `-`/`+`, a group start may be `$`, an ID to acknowledge
//! must be concrete.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A concrete stream ID `ms-seq`; the default is `0-0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl StreamId {
    /// The smallest ID, `0-0`.
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    /// The largest ID.
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// The ID right after this one, or `None` at the top. Paging with it
    /// makes the next page start exclusively after the last entry seen,
    /// without relying on the `(` syntax of newer Redis versions.
    pub fn successor(self) -> Option<StreamId> {
        match (self.ms, self.seq) {
            (_, seq) if seq < u64::MAX => Some(StreamId {
                ms: self.ms,
                seq: seq + 1,
            }),
            (ms, _) if ms < u64::MAX => Some(StreamId { ms: ms + 1, seq: 0 }),
            _ => None,
        }
    }

    /// The ID right before this one, or `None` at `0-0`.
    pub fn predecessor(self) -> Option<StreamId> {
        match (self.ms, self.seq) {
            (_, seq) if seq > 0 => Some(StreamId {
                ms: self.ms,
                seq: seq - 1,
            }),
            (ms, _) if ms > 0 => Some(StreamId {
                ms: ms - 1,
                seq: u64::MAX,
            }),
            _ => None,
        }
    }

    /// Parses `ms-seq` or `ms` (sequence 0), as Redis does for concrete IDs.
    /// `field` names the request field in the error.
    pub fn parse(field: &str, text: &str) -> Result<StreamId, Error> {
        Self::parse_with_default_seq(field, text, 0)
    }

    /// Parses `ms-seq`, or `ms` completed with `default_seq`: a range end
    /// `ms` means the last ID of that millisecond, a range start the first.
    fn parse_with_default_seq(
        field: &str,
        text: &str,
        default_seq: u64,
    ) -> Result<StreamId, Error> {
        let bad = |why: &str| Error::invalid(field, format!("{text:?} is not a stream ID: {why}"));
        let (ms, seq) = match text.split_once('-') {
            Some((ms, seq)) => (ms, Some(seq)),
            None => (text, None),
        };
        let ms = parse_part(ms).ok_or_else(|| bad("expected <ms>-<seq> with decimal numbers"))?;
        let seq = match seq {
            Some(seq) => {
                parse_part(seq).ok_or_else(|| bad("expected <ms>-<seq> with decimal numbers"))?
            }
            None => default_seq,
        };
        Ok(StreamId { ms, seq })
    }
}

/// A decimal `u64` without sign, spaces or an empty string.
fn parse_part(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for StreamId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamId::parse("id", s)
    }
}

/// Where a new consumer group starts, or where a cursor is moved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupStart {
    /// `$`: after the stream's current last entry.
    End,
    /// After this ID (`0` = from the beginning).
    After(StreamId),
}

impl GroupStart {
    /// Parses `$`, `0` or a concrete ID; empty means `$`.
    pub fn parse(field: &str, text: &str) -> Result<GroupStart, Error> {
        match text {
            "" | "$" => Ok(GroupStart::End),
            _ => StreamId::parse(field, text)
                .map(GroupStart::After)
                .map_err(|_| {
                    Error::invalid(
                        field,
                        format!("{text:?} is not a start position: expected $, 0 or <ms>-<seq>"),
                    )
                }),
        }
    }

    /// The argument as Redis takes it.
    pub fn to_arg(self) -> String {
        match self {
            GroupStart::End => "$".to_owned(),
            GroupStart::After(id) => id.to_string(),
        }
    }
}

/// An inclusive range of stream IDs, with `-` and `+` resolved to the
/// extremes so that paging arithmetic needs no special cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    /// Lowest ID included.
    pub low: StreamId,
    /// Highest ID included.
    pub high: StreamId,
}

impl IdRange {
    /// Parses a low bound (`-`, empty, `ms` or `ms-seq`) and a high bound
    /// (`+`, empty, `ms` or `ms-seq`). A bare `ms` covers that whole
    /// millisecond, as in XRANGE.
    pub fn parse(
        low_field: &str,
        low: &str,
        high_field: &str,
        high: &str,
    ) -> Result<IdRange, Error> {
        let low = match low {
            "" | "-" => StreamId::MIN,
            _ => StreamId::parse_with_default_seq(low_field, low, 0)?,
        };
        let high = match high {
            "" | "+" => StreamId::MAX,
            _ => StreamId::parse_with_default_seq(high_field, high, u64::MAX)?,
        };
        Ok(IdRange { low, high })
    }

    /// True if no ID lies in the range.
    pub fn is_empty(&self) -> bool {
        self.low > self.high
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_short_ids() {
        assert_eq!(
            StreamId::parse("id", "1700000000000-3").unwrap(),
            StreamId {
                ms: 1_700_000_000_000,
                seq: 3
            }
        );
        assert_eq!(StreamId::parse("id", "0").unwrap(), StreamId::MIN);
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "-",
            "+",
            "$",
            ">",
            "1-",
            "-1",
            "a-1",
            "1-b",
            " 1-1",
            "1-1-1",
            "+1-0",
            "18446744073709551616-0",
        ] {
            let err = StreamId::parse("ids[0]", bad).unwrap_err();
            assert!(err.to_string().contains("ids[0]"), "{bad}: {err}");
        }
    }

    #[test]
    fn successor_and_predecessor_cross_millisecond_boundaries() {
        let id = StreamId {
            ms: 5,
            seq: u64::MAX,
        };
        assert_eq!(id.successor(), Some(StreamId { ms: 6, seq: 0 }));
        assert_eq!(StreamId { ms: 6, seq: 0 }.predecessor(), Some(id));
        assert_eq!(StreamId::MAX.successor(), None);
        assert_eq!(StreamId::MIN.predecessor(), None);
    }

    #[test]
    fn range_bounds_resolve_specials_and_bare_milliseconds() {
        let r = IdRange::parse("start", "-", "end", "+").unwrap();
        assert_eq!((r.low, r.high), (StreamId::MIN, StreamId::MAX));
        let r = IdRange::parse("start", "10", "end", "10").unwrap();
        assert_eq!(r.low, StreamId { ms: 10, seq: 0 });
        assert_eq!(
            r.high,
            StreamId {
                ms: 10,
                seq: u64::MAX
            }
        );
        assert!(IdRange::parse("start", "+", "end", "-").is_err());
    }

    #[test]
    fn group_start_accepts_dollar_zero_and_ids() {
        assert_eq!(GroupStart::parse("f", "").unwrap(), GroupStart::End);
        assert_eq!(GroupStart::parse("f", "$").unwrap().to_arg(), "$");
        assert_eq!(GroupStart::parse("f", "0").unwrap().to_arg(), "0-0");
        assert!(GroupStart::parse("f", ">").is_err());
    }
}
