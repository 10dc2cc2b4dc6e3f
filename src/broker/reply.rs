//! Decoding of Redis stream replies (RESP2 shapes) into domain types.
//!
//! Replies are decoded by hand from `redis::Value` rather than through
//! redis-rs' typed stream helpers because those decode values as strings:
//! streamgate must deliver entries written by other programs byte for byte,
//! and must tell a trimmed entry (nil payload) from an empty one.

use redis::Value;

use crate::error::{Error, Result};
use crate::model::Entry;

/// An entry as a range or read reply holds it: `None` fields mean the entry
/// is still pending but its payload was deleted or trimmed.
pub type RawEntry = (String, Option<Vec<(Vec<u8>, Vec<u8>)>>);

/// A reply that does not have the shape the command documents: a bug or an
/// incompatible server, never a client's fault.
pub fn unexpected(what: &str, value: &Value) -> Error {
    Error::Internal(format!("unexpected reply shape for {what}: {value:?}"))
}

/// Takes a reply apart as an array; nil is an empty array.
pub fn array(value: Value, what: &str) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected(what, &other)),
    }
}

/// A bulk or simple string as bytes.
pub fn bytes(value: Value, what: &str) -> Result<Vec<u8>> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        other => Err(unexpected(what, &other)),
    }
}

/// A string reply that must be UTF-8 (IDs, names written by this gateway or
/// validated on the way in).
pub fn string(value: Value, what: &str) -> Result<String> {
    let raw = bytes(value, what)?;
    String::from_utf8(raw)
        .map_err(|e| Error::Internal(format!("{what} is not UTF-8: {:?}", e.as_bytes())))
}

/// An integer reply (or an integer sent as a string, as some XINFO fields
/// are on older servers).
pub fn int(value: Value, what: &str) -> Result<i64> {
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
pub fn uint(value: Value, what: &str) -> Result<u64> {
    let i = int(value, what)?;
    u64::try_from(i).map_err(|_| Error::Internal(format!("{what} is negative: {i}")))
}

/// An integer reply where nil means "unknown".
pub fn opt_uint(value: Value, what: &str) -> Result<Option<u64>> {
    match value {
        Value::Nil => Ok(None),
        other => uint(other, what).map(Some),
    }
}

/// One `[id, [field, value, ...]]` element; the payload may be nil.
pub fn raw_entry(value: Value) -> Result<RawEntry> {
    let mut parts = array(value, "stream entry")?.into_iter();
    let (Some(id), Some(payload), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Error::Internal(
            "stream entry is not [id, fields]".to_owned(),
        ));
    };
    let id = string(id, "entry id")?;
    let payload = match payload {
        Value::Nil => None,
        other => Some(pairs(array(other, "entry fields")?)?),
    };
    Ok((id, payload))
}

/// A flat `[field, value, ...]` list as byte pairs.
fn pairs(flat: Vec<Value>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if !flat.len().is_multiple_of(2) {
        return Err(Error::Internal(
            "entry has an odd number of field/value items".to_owned(),
        ));
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(name), Some(value)) = (it.next(), it.next()) {
        out.push((bytes(name, "field name")?, bytes(value, "field value")?));
    }
    Ok(out)
}

/// A list of entries (XRANGE, XREVRANGE, the per-stream part of XREAD).
pub fn raw_entries(value: Value) -> Result<Vec<RawEntry>> {
    array(value, "entry list")?
        .into_iter()
        .map(raw_entry)
        .collect()
}

/// Entries whose payload still exists, as domain entries; range replies
/// never contain deleted entries, so nothing is dropped there.
pub fn entries(value: Value) -> Result<Vec<Entry>> {
    Ok(raw_entries(value)?
        .into_iter()
        .filter_map(|(id, payload)| payload.map(|p| Entry::from_pairs(id, p)))
        .collect())
}

/// The entries of the single stream an XREAD / XREADGROUP asked for
/// (`[[key, [entries]]]`, or nil on timeout).
pub fn read_reply(value: Value) -> Result<Vec<RawEntry>> {
    let mut streams = array(value, "read reply")?;
    match streams.len() {
        0 => Ok(Vec::new()),
        1 => {
            let mut pair = array(streams.remove(0), "read reply stream")?;
            if pair.len() != 2 {
                return Err(Error::Internal(
                    "read reply stream is not [key, entries]".to_owned(),
                ));
            }
            raw_entries(pair.remove(1))
        }
        n => Err(Error::Internal(format!(
            "read reply has {n} streams, expected 1"
        ))),
    }
}

/// A flat `[name, value, name, value, ...]` reply (XINFO) as owned pairs.
pub fn fields(value: Value, what: &str) -> Result<Vec<(String, Value)>> {
    let flat = match value {
        Value::Map(map) => {
            return map
                .into_iter()
                .map(|(k, v)| Ok((string(k, what)?, v)))
                .collect();
        }
        other => array(other, what)?,
    };
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(name), Some(value)) = (it.next(), it.next()) {
        out.push((string(name, what)?, value));
    }
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
        assert_eq!(raw[0], ("1-0".to_owned(), None));
        assert_eq!(
            raw[1],
            (
                "2-0".to_owned(),
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
}
