//! Decoding Redis replies into domain values: a cursor over one reply.
//!
//! Replies are decoded by hand from `redis::Value` rather than through
//! redis-rs' typed stream helpers because those decode values as strings:
//! streamgate must deliver entries written by other programs byte for byte,
//! and must tell a trimmed entry (nil payload) from an empty one.
//!
//! A reply whose shape is not the one the command documents (a missing
//! element, a malformed ID) is a bug or an incompatible server, never the
//! client's fault, so every decoding error here is [`Error::Internal`]
//! naming what was being decoded. Nothing outside the broker sees a
//! `redis::Value`.

use redis::Value;

use crate::error::{Error, Result};
use crate::ids::StreamId;
use crate::model::Entry;

/// Field/value pairs of an entry, as bytes.
pub(super) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A reply that does not have the shape the command documents.
fn unexpected(what: &str, value: &Value) -> Error {
    Error::Internal(format!("unexpected reply shape for {what}: {value:?}"))
}

/// The items of one array reply, taken in order, each decoded as the
/// command documents it. Modelled on mini-redis' `Parse`: every `next_*`
/// either yields the next item as the asked type or fails naming the
/// reply, and a parse that reads a whole reply ends with
/// [`Cursor::finish`].
pub(super) struct Cursor {
    items: std::vec::IntoIter<Value>,
    what: &'static str,
}

impl Cursor {
    /// A cursor over an array (or set) reply; nil is an empty array, as
    /// XREAD answers when nothing arrived.
    pub fn new(value: Value, what: &'static str) -> Result<Cursor> {
        match value {
            Value::Array(items) | Value::Set(items) => Ok(Cursor {
                items: items.into_iter(),
                what,
            }),
            Value::Nil => Ok(Cursor {
                items: Vec::new().into_iter(),
                what,
            }),
            other => Err(unexpected(what, &other)),
        }
    }

    /// Items not taken yet.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The next item, which must exist.
    pub fn next_value(&mut self) -> Result<Value> {
        self.items
            .next()
            .ok_or_else(|| Error::Internal(format!("the reply to {} is too short", self.what)))
    }

    /// The next item, if any.
    pub fn try_next(&mut self) -> Option<Value> {
        self.items.next()
    }

    /// The next item as a nested array.
    pub fn next_array(&mut self, what: &'static str) -> Result<Cursor> {
        Cursor::new(self.next_value()?, what)
    }

    /// The next item as bytes.
    pub fn next_bytes(&mut self) -> Result<Vec<u8>> {
        bytes(self.next_value()?, self.what)
    }

    /// The next item as UTF-8 text.
    pub fn next_string(&mut self) -> Result<String> {
        string(self.next_value()?, self.what)
    }

    /// The next item as a non-negative integer.
    pub fn next_uint(&mut self) -> Result<u64> {
        uint(self.next_value()?, self.what)
    }

    /// The next item as a stream ID.
    pub fn next_id(&mut self) -> Result<StreamId> {
        id(self.next_value()?)
    }

    /// The remaining items, each a nested array (rows of XINFO, XPENDING).
    pub fn rows(self, what: &'static str) -> impl Iterator<Item = Result<Cursor>> {
        self.items.map(move |v| Cursor::new(v, what))
    }

    /// The remaining items, each decoded by `f`.
    pub fn map<T>(self, f: impl FnMut(Value) -> Result<T>) -> Result<Vec<T>> {
        self.items.map(f).collect()
    }

    /// Ends the parse of a whole reply: every item must have been taken.
    /// An item nobody read means the reply is not the shape this parse was
    /// written for (a server that answers differently, a script changed on
    /// one side only), and decoding the known part as if it were all of it
    /// would quietly drop what the rest says. Like any other unexpected
    /// shape, that is the server's or the gateway's fault, never the
    /// client's: [`Error::Internal`], naming the reply.
    pub fn finish(mut self) -> Result<()> {
        match self.items.next() {
            None => Ok(()),
            Some(first) => Err(Error::Internal(format!(
                "the reply to {} has {} item(s) nobody read, the first: {first:?}",
                self.what,
                self.items.len() + 1
            ))),
        }
    }
}

/// A bulk or simple string as bytes.
pub(super) fn bytes(value: Value, what: &str) -> Result<Vec<u8>> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        other => Err(unexpected(what, &other)),
    }
}

/// A string reply that must be UTF-8 (IDs, names written by this gateway or
/// validated on the way in).
pub(super) fn string(value: Value, what: &str) -> Result<String> {
    String::from_utf8(bytes(value, what)?)
        .map_err(|e| Error::Internal(format!("{what} is not UTF-8: {:?}", e.as_bytes())))
}

/// An integer reply (or an integer sent as a string, as some XINFO fields
/// are on older servers).
pub(super) fn int(value: Value, what: &str) -> Result<i64> {
    match value {
        Value::Int(i) => Ok(i),
        Value::BulkString(ref b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| unexpected(what, &value)),
        other => Err(unexpected(what, &other)),
    }
}

/// A non-negative integer reply.
pub(super) fn uint(value: Value, what: &str) -> Result<u64> {
    let i = int(value, what)?;
    u64::try_from(i).map_err(|_| Error::Internal(format!("{what} is negative: {i}")))
}

/// An integer reply where nil means "unknown".
pub(super) fn opt_uint(value: Value, what: &str) -> Result<Option<u64>> {
    match value {
        Value::Nil => Ok(None),
        other => uint(other, what).map(Some),
    }
}

/// A stream ID as Redis sends it. A malformed one is Redis' fault (or
/// ours), not the client's: INTERNAL, never INVALID_ARGUMENT.
pub(super) fn id(value: Value) -> Result<StreamId> {
    parse_id(&string(value, "stream ID")?)
}

/// A stream ID in text Redis (or one of our scripts) produced.
pub(super) fn parse_id(text: &str) -> Result<StreamId> {
    StreamId::parse("id", text)
        .map_err(|_| Error::Internal(format!("Redis sent a malformed stream ID: {text:?}")))
}

/// A list of IDs.
pub(super) fn ids(value: Value, what: &'static str) -> Result<Vec<StreamId>> {
    Cursor::new(value, what)?.map(id)
}

/// One `[id, [field, value, ...]]` element; the payload is `None` when the
/// entry is still pending but was deleted or trimmed.
pub(super) fn raw_entry(value: Value) -> Result<(StreamId, Option<Pairs>)> {
    let mut parts = Cursor::new(value, "stream entry")?;
    let id = parts.next_id()?;
    let payload = match parts.next_value()? {
        Value::Nil => None,
        other => Some(pairs(other)?),
    };
    parts.finish()?;
    Ok((id, payload))
}

/// A flat `[field, value, ...]` list as byte pairs.
pub(super) fn pairs(value: Value) -> Result<Pairs> {
    let mut flat = Cursor::new(value, "entry fields")?;
    if !flat.len().is_multiple_of(2) {
        return Err(Error::Internal(
            "entry has an odd number of field/value items".to_owned(),
        ));
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    while flat.len() > 0 {
        out.push((flat.next_bytes()?, flat.next_bytes()?));
    }
    Ok(out)
}

/// A list of entries (XRANGE, XREVRANGE, the per-stream part of XREAD),
/// deleted ones included as `None` payloads.
pub(super) fn raw_entries(value: Value) -> Result<Vec<(StreamId, Option<Pairs>)>> {
    Cursor::new(value, "entry list")?.map(raw_entry)
}

/// Entries whose payload still exists, as domain entries (range replies
/// never contain deleted entries, so nothing is dropped there).
pub(super) fn entries(value: Value) -> Result<Vec<Entry>> {
    Ok(present(raw_entries(value)?))
}

/// The entries of a raw list whose payload still exists.
pub(super) fn present(raw: Vec<(StreamId, Option<Pairs>)>) -> Vec<Entry> {
    raw.into_iter()
        .filter_map(|(id, payload)| payload.map(|p| Entry::from_pairs(id, p)))
        .collect()
}

/// The entries of the single stream an XREAD / XREADGROUP asked for
/// (`[[key, [entries]]]`, or nil when nothing arrived).
pub(super) fn read_reply(value: Value) -> Result<Vec<(StreamId, Option<Pairs>)>> {
    let mut streams = Cursor::new(value, "read reply")?;
    let Some(stream) = streams.try_next() else {
        return Ok(Vec::new());
    };
    // One stream asked for, one answered: another would be dropped unread.
    streams.finish()?;
    let mut pair = Cursor::new(stream, "read reply stream")?;
    pair.next_value()?;
    let entries = raw_entries(pair.next_value()?)?;
    pair.finish()?;
    Ok(entries)
}

/// A `[name, value, name, value, ...]` reply (XINFO, INFO-like maps; a
/// RESP3 map too) as owned pairs.
pub(super) fn fields(value: Value, what: &'static str) -> Result<Vec<(String, Value)>> {
    if let Value::Map(map) = value {
        return map
            .into_iter()
            .map(|(k, v)| Ok((string(k, what)?, v)))
            .collect();
    }
    let mut flat = Cursor::new(value, what)?;
    let mut out = Vec::with_capacity(flat.len() / 2);
    while flat.len() >= 2 {
        out.push((flat.next_string()?, flat.next_value()?));
    }
    // A name without its value.
    flat.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn nil_payload_marks_a_deleted_entry() {
        let v = Value::Array(vec![
            Value::Array(vec![bulk(b"1-0"), Value::Nil]),
            Value::Array(vec![
                bulk(b"2-0"),
                Value::Array(vec![bulk(b"k"), bulk(b"\xff")]),
            ]),
        ]);
        let raw = raw_entries(v).unwrap();
        assert_eq!(raw[0], (StreamId { ms: 1, seq: 0 }, None));
        assert_eq!(
            raw[1],
            (
                StreamId { ms: 2, seq: 0 },
                Some(vec![(b"k".to_vec(), b"\xff".to_vec())])
            )
        );
    }

    #[test]
    fn read_reply_timeout_is_empty() {
        assert!(read_reply(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn odd_field_lists_are_reported() {
        let v = Value::Array(vec![bulk(b"1-0"), Value::Array(vec![bulk(b"k")])]);
        assert!(raw_entry(v).is_err());
    }

    #[test]
    fn a_malformed_id_from_redis_is_internal_not_a_client_error() {
        let err = id(bulk(b"not-an-id")).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal, "{err}");
    }

    #[test]
    fn finish_refuses_an_item_nobody_read() {
        let mut c = Cursor::new(Value::Array(vec![bulk(b"0"), bulk(b"extra")]), "SCAN").unwrap();
        c.next_value().unwrap();
        let err = c.finish().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal, "{err}");
        assert!(err.to_string().contains("SCAN"), "{err}");
    }

    #[test]
    fn finish_accepts_a_reply_read_to_the_end() {
        let mut c = Cursor::new(Value::Array(vec![bulk(b"0"), bulk(b"k")]), "SCAN").unwrap();
        c.next_value().unwrap();
        c.next_value().unwrap();
        c.finish().unwrap();
        Cursor::new(Value::Nil, "XREAD").unwrap().finish().unwrap();
    }

    #[test]
    fn whole_reply_parses_refuse_extra_items() {
        let entry = Value::Array(vec![bulk(b"1-0"), Value::Array(vec![]), bulk(b"extra")]);
        assert_eq!(raw_entry(entry).unwrap_err().code(), tonic::Code::Internal);
        let pair = Value::Array(vec![bulk(b"k"), Value::Array(vec![]), bulk(b"extra")]);
        assert!(read_reply(Value::Array(vec![pair])).is_err());
        let two = Value::Array(vec![bulk(b"k"), Value::Array(vec![])]);
        assert!(read_reply(Value::Array(vec![two.clone(), two])).is_err());
        let odd = Value::Array(vec![bulk(b"length"), Value::Int(1), bulk(b"groups")]);
        assert!(fields(odd, "XINFO STREAM").is_err());
    }

    #[test]
    fn a_short_reply_names_the_command() {
        let mut c = Cursor::new(Value::Array(vec![]), "XAUTOCLAIM").unwrap();
        let err = c.next_value().unwrap_err();
        assert!(err.to_string().contains("XAUTOCLAIM"), "{err}");
    }
}
