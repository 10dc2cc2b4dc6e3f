//! Partitioned streams at the API: which streams are partitioned, which
//! partition an event goes to, and partition-qualified IDs.
//!
//! A partitioned stream is one logical stream spread over N Redis streams
//! (see `broker::layout` for where the layout lives and how partitions are
//! named). An event with a key goes to partition `fnv1a32(key) mod N`:
//! FNV-1a over the key's UTF-8 bytes, 32 bits, a hash any language writes
//! in five lines, so a program writing to the partitions directly can
//! follow it. Keyless events of one request go to one partition, requests
//! in turn (round robin per gateway). Entry IDs on a partitioned stream are
//! `<partition>/<ms>-<seq>`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::broker::{Broker, Layout};
use crate::error::{Error, Result};
use crate::ids::StreamId;

/// Most partitions a stream may have.
pub(crate) const MAX_PARTITIONS: u32 = 1024;

/// Most layouts a gateway remembers; past it the memory starts over (each
/// stream then costs one look-up again).
const REMEMBERED: usize = 100_000;

/// FNV-1a, 32 bits.
pub(crate) fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The partition of an event with partition key `key`.
pub(crate) fn partition_of(key: &str, partitions: u32) -> u32 {
    fnv1a32(key.as_bytes()) % partitions
}

/// `<partition>/<id>`.
pub(crate) fn qualified(partition: u32, id: &str) -> String {
    format!("{partition}/{id}")
}

/// An entry ID from request field `field`, on a stream with `partitions`
/// partitions (0: a plain stream): the partition and the Redis ID. A
/// partitioned stream needs `<partition>/<ms>-<seq>`; a plain stream takes
/// `ms-seq` (or `0/ms-seq`, its one partition).
pub(crate) fn parse_id(field: &str, text: &str, partitions: u32) -> Result<(u32, StreamId)> {
    let Some((partition, id)) = text.split_once('/') else {
        if partitions > 0 {
            return Err(Error::invalid(
                field,
                format!(
                    "{text:?} names no partition: entry IDs of a partitioned stream take the \
                     form <partition>/<ms>-<seq>"
                ),
            ));
        }
        return Ok((0, StreamId::parse(field, text)?));
    };
    let number: u32 = partition.parse().map_err(|_| {
        Error::invalid(
            field,
            format!("{text:?}: {partition:?} is not a partition number"),
        )
    })?;
    if number >= partitions.max(1) {
        return Err(Error::invalid(
            field,
            format!(
                "{text:?} names partition {number}; the stream has {}",
                match partitions {
                    0 => "one (it is not partitioned)".to_owned(),
                    n => format!("{n} (0 to {})", n - 1),
                }
            ),
        ));
    }
    Ok((number, StreamId::parse(field, id)?))
}

/// The layouts this gateway has looked up.
///
/// A partitioned layout never changes, and a plain stream never becomes a
/// partitioned one (the layout is recorded at the stream's key, see
/// `broker::layout`), so both are remembered for good. A stream that does
/// not exist yet is not remembered: it may still be created either way.
#[derive(Default)]
pub(crate) struct Layouts {
    known: Mutex<HashMap<String, u32>>,
    /// The partition of the next keyless request.
    next: AtomicU32,
}

impl Layouts {
    /// How many partitions `stream` has: 0 for a plain stream or none.
    /// Costs one Redis round trip the first time a stream is seen.
    pub(crate) async fn partitions(&self, broker: &Broker, stream: &str) -> Result<u32> {
        if let Some(&n) = self.lock().get(stream) {
            return Ok(n);
        }
        let (_, layout) = broker.layout(stream, 0).await?;
        Ok(match layout {
            Layout::Missing => 0,
            Layout::Plain => self.remember(stream, 0),
            Layout::Partitioned(n) => self.remember(stream, n),
        })
    }

    /// Records what `stream` is, and returns its count.
    pub(crate) fn remember(&self, stream: &str, partitions: u32) -> u32 {
        let mut known = self.lock();
        if known.len() >= REMEMBERED {
            known.clear();
        }
        known.insert(stream.to_owned(), partitions);
        partitions
    }

    /// The partition for the keyless events of the next request.
    pub(crate) fn next_keyless(&self, partitions: u32) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed) % partitions
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published test vectors of FNV-1a 32.
    #[test]
    fn fnv1a32_matches_the_reference() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn ids_name_their_partition_where_the_stream_has_partitions() {
        let id = |ms, seq| StreamId { ms, seq };
        assert_eq!(parse_id("ids", "3/5-1", 4).unwrap(), (3, id(5, 1)));
        assert_eq!(parse_id("ids", "5-1", 0).unwrap(), (0, id(5, 1)));
        assert_eq!(parse_id("ids", "0/5-1", 0).unwrap(), (0, id(5, 1)));
        for (text, partitions, says) in [
            ("5-1", 4, "<partition>/<ms>-<seq>"),
            ("4/5-1", 4, "0 to 3"),
            ("1/5-1", 0, "not partitioned"),
            ("x/5-1", 4, "not a partition number"),
        ] {
            let err = parse_id("ids", text, partitions).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn one_key_one_partition() {
        let p = partition_of("customer-42", 12);
        assert!(p < 12);
        assert_eq!(partition_of("customer-42", 12), p);
        assert_eq!(qualified(p, "1-0"), format!("{p}/1-0"));
    }
}
