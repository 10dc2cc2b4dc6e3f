//! Domain types: the event a producer sends and the entry a reader gets.
//!
//! They encode the data model of the API contract in one place: the reserved
//! fields `type`, `ts_ms` and `partition_key`, and the rule that entries
//! written by other programs reach readers byte for byte.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::ids::StreamId;

/// Redis field holding the event type.
pub const TYPE_FIELD: &str = "type";
/// Redis field holding the producer wall clock in Unix milliseconds.
pub const TS_FIELD: &str = "ts_ms";
/// Redis field holding the event's partition key.
pub const KEY_FIELD: &str = "partition_key";
/// Longest partition key, in bytes (UTF-8). A key is an identifier (a
/// customer, an order), stored in every entry and hashed on every produce.
pub const MAX_KEY_BYTES: usize = 1024;

/// An event to append: its type and its user fields, already validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// Event type; not written when empty.
    pub event_type: String,
    /// User fields in a stable order, values as bytes.
    pub fields: Vec<(String, Vec<u8>)>,
    /// Deduplication key within the stream; empty = none.
    pub idempotency_key: String,
    /// Partition key, stored as the field `partition_key`; empty = none.
    /// Set through [`Event::with_key`], which checks it.
    pub key: String,
}

impl Event {
    /// Builds an event from the two field maps of a request, rejecting the
    /// reserved names, empty names and a name given twice. `index` is the
    /// event's place in the request, named in error messages (`events[2]`);
    /// no name is formatted unless there is an error, since this runs for
    /// every produced event.
    pub fn new(
        index: usize,
        event_type: String,
        text_fields: BTreeMap<String, String>,
        binary_fields: BTreeMap<String, Vec<u8>>,
    ) -> Result<Event> {
        let merge = !binary_fields.is_empty();
        let mut fields = Vec::with_capacity(text_fields.len() + binary_fields.len());
        for (name, value) in text_fields {
            check_field_name(index, "fields", &name)?;
            fields.push((name, value.into_bytes()));
        }
        for (name, value) in binary_fields {
            check_field_name(index, "binary_fields", &name)?;
            if fields.iter().any(|(n, _)| *n == name) {
                return Err(Error::invalid(
                    format!("events[{index}].binary_fields"),
                    format!("field {name:?} is also in fields"),
                ));
            }
            fields.push((name, value));
        }
        // Fields are stored in name order (reproducible, easy to compare);
        // each map arrives sorted, only a merge of both needs a sort.
        if merge {
            fields.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(Event {
            event_type,
            fields,
            idempotency_key: String::new(),
            key: String::new(),
        })
    }

    /// Sets the partition key of the `index`-th event of a request,
    /// refusing one longer than [`MAX_KEY_BYTES`].
    pub fn with_key(mut self, index: usize, key: String) -> Result<Event> {
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::invalid(
                format!("events[{index}].key"),
                format!(
                    "is {} bytes long; partition keys have at most {MAX_KEY_BYTES}",
                    key.len()
                ),
            ));
        }
        self.key = key;
        Ok(self)
    }
}

fn check_field_name(index: usize, map: &str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "field names must not be empty".to_owned()
    } else if name == TYPE_FIELD || name == TS_FIELD || name == KEY_FIELD {
        format!(
            "field name {name:?} is reserved (use the event's type and key; ts_ms is set by \
             the gateway)"
        )
    } else {
        return Ok(());
    };
    Err(Error::invalid(format!("events[{index}].{map}"), reason))
}

/// A stream entry as readers receive it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Stream ID.
    pub id: StreamId,
    /// The `type` field when present and UTF-8, else empty.
    pub event_type: String,
    /// The `ts_ms` field when present and a decimal integer, else 0.
    pub ts_ms: i64,
    /// The `partition_key` field when present and UTF-8, else empty.
    pub key: String,
    /// User fields with UTF-8 names and values.
    pub fields: HashMap<String, String>,
    /// User fields whose name or value is not UTF-8.
    pub binary_fields: HashMap<String, Vec<u8>>,
    /// Delivery count where a group is involved, else 0.
    pub delivery_count: u64,
    /// Delivered before (pending_first, reclaim, Nack, Reap).
    pub redelivered: bool,
    /// The partition it was read from, on a partitioned stream (its ID
    /// goes out qualified: `<partition>/<ms>-<seq>`).
    pub partition: Option<u32>,
    /// In an ordered Consume session: the partition's epoch when it was
    /// read, which tells whether an in-band Nack overtook it
    /// ([`crate::rewinds`]). Never sent.
    pub epoch: u64,
}

/// How an entry reached its reader. Sets `delivery_count` and
/// `redelivered` together, in one place, so the two never disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Read outside any group (Replay, Tail): no count.
    Ungrouped,
    /// A group's first delivery (XREADGROUP `>`): count 1.
    First,
    /// Delivered before; Redis' count after this delivery (0 = unknown).
    Again(u64),
}

impl Entry {
    /// Builds an entry from the raw field/value pairs Redis returned,
    /// sorting the reserved fields out and keeping everything else losslessly.
    pub fn from_pairs(id: StreamId, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Entry {
        let mut entry = Entry {
            id,
            ..Entry::default()
        };
        for (name, value) in pairs {
            if entry.take_reserved(&name, &value) {
                continue;
            }
            match (String::from_utf8(name), String::from_utf8(value)) {
                (Ok(name), Ok(value)) => {
                    entry.fields.entry(name).or_insert(value);
                }
                (Ok(name), Err(value)) => {
                    entry
                        .binary_fields
                        .entry(name)
                        .or_insert(value.into_bytes());
                }
                (Err(name), value) => {
                    let name = String::from_utf8_lossy(name.as_bytes()).into_owned();
                    let value = match value {
                        Ok(v) => v.into_bytes(),
                        Err(v) => v.into_bytes(),
                    };
                    entry.binary_fields.entry(name).or_insert(value);
                }
            }
        }
        entry
    }

    /// Records how the entry reached its reader.
    pub fn delivered(mut self, how: Delivered) -> Entry {
        (self.delivery_count, self.redelivered) = match how {
            Delivered::Ungrouped => (0, false),
            Delivered::First => (1, false),
            Delivered::Again(count) => (count, true),
        };
        self
    }

    /// Moves a well-formed, first-seen reserved field into its typed slot.
    /// A malformed one stays a plain field so nothing is lost.
    fn take_reserved(&mut self, name: &[u8], value: &[u8]) -> bool {
        if name == TYPE_FIELD.as_bytes() && self.event_type.is_empty() {
            take_text(&mut self.event_type, value)
        } else if name == KEY_FIELD.as_bytes() && self.key.is_empty() {
            take_text(&mut self.key, value)
        } else if name == TS_FIELD.as_bytes() && self.ts_ms == 0 {
            let parsed = std::str::from_utf8(value)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .filter(|ts| *ts != 0 && ts.to_string().as_bytes() == value);
            match parsed {
                Some(ts) => {
                    self.ts_ms = ts;
                    true
                }
                None => false,
            }
        } else {
            false
        }
    }
}

/// Moves a non-empty UTF-8 `value` into the empty `slot`; false (and the
/// slot left empty) for anything else.
fn take_text(slot: &mut String, value: &[u8]) -> bool {
    match std::str::from_utf8(value) {
        Ok(text) if !text.is_empty() => {
            *slot = text.to_owned();
            true
        }
        _ => false,
    }
}

/// What a live stream (Subscribe, Tail, Consume) pushes to its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Push {
    /// Entries, in the order they were read.
    Entries(Vec<Entry>),
    /// Nothing to deliver for a while; the stream is alive.
    Heartbeat,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry read back from the field/value pairs Redis returned; its
    /// ID does not matter here.
    fn entry(pairs: &[(&[u8], &[u8])]) -> Entry {
        let pairs = pairs.iter().map(|(n, v)| (n.to_vec(), v.to_vec()));
        Entry::from_pairs(StreamId { ms: 1, seq: 0 }, pairs.collect())
    }

    #[test]
    fn reserved_fields_are_typed() {
        let e = entry(&[
            (b"type", b"order.paid"),
            (b"ts_ms", b"1700000000000"),
            (b"amount", b"9.5"),
        ]);
        assert_eq!(e.event_type, "order.paid");
        assert_eq!(e.ts_ms, 1_700_000_000_000);
        assert_eq!(e.fields.len(), 1);
        assert_eq!(e.fields["amount"], "9.5");
    }

    #[test]
    fn foreign_entries_are_kept_losslessly() {
        let e = entry(&[
            (b"ts_ms", b"yesterday"),
            (b"blob", b"\xff\x00"),
            (b"type", b"\xfe"),
        ]);
        assert_eq!(e.event_type, "");
        assert_eq!(e.ts_ms, 0);
        assert_eq!(e.fields["ts_ms"], "yesterday");
        assert_eq!(e.binary_fields["blob"], b"\xff\x00");
        assert_eq!(e.binary_fields["type"], b"\xfe");
    }

    #[test]
    fn the_partition_key_is_typed() {
        let e = entry(&[
            (b"partition_key", b"customer-7"),
            (b"partition_key", b"second"),
            (b"k", b"v"),
        ]);
        assert_eq!(e.key, "customer-7");
        // Only the first occurrence is the key; a repeat stays a field,
        // like any repeated reserved field.
        assert_eq!(e.fields.len(), 2, "{:?}", e.fields);
        assert_eq!(e.fields["partition_key"], "second");
        assert_eq!(e.fields["k"], "v");
    }

    #[test]
    fn a_foreign_partition_key_is_kept_losslessly() {
        let e = entry(&[(b"partition_key", b"\xff\xfe")]);
        assert_eq!(e.key, "");
        assert!(e.fields.is_empty());
        assert_eq!(e.binary_fields["partition_key"], b"\xff\xfe");
        let empty = entry(&[(b"partition_key", b"")]);
        assert_eq!(empty.key, "");
        assert_eq!(empty.fields["partition_key"], "");
    }

    #[test]
    fn a_partition_key_has_a_bound() {
        let event = || Event::new(4, "t".into(), BTreeMap::new(), BTreeMap::new()).unwrap();
        let at_bound = event().with_key(4, "k".repeat(MAX_KEY_BYTES)).unwrap();
        assert_eq!(at_bound.key.len(), MAX_KEY_BYTES);
        let err = event()
            .with_key(4, "k".repeat(MAX_KEY_BYTES + 1))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let msg = err.to_string();
        assert!(msg.contains("events[4].key"), "{msg}");
        assert!(msg.contains(&format!("{}", MAX_KEY_BYTES + 1)), "{msg}");
    }

    #[test]
    fn reserved_and_empty_names_are_rejected() {
        for name in ["type", "ts_ms", "partition_key", ""] {
            let fields = BTreeMap::from([(name.to_owned(), "x".to_owned())]);
            let err = Event::new(1, "t".into(), fields, BTreeMap::new()).unwrap_err();
            assert!(err.to_string().contains("events[1].fields"), "{err}");
        }
    }

    #[test]
    fn a_name_in_both_maps_is_rejected() {
        let text = BTreeMap::from([("a".to_owned(), "x".to_owned())]);
        let binary = BTreeMap::from([("a".to_owned(), b"y".to_vec())]);
        assert!(Event::new(0, String::new(), text, binary).is_err());
    }
}
