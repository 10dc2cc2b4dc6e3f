//! Which streams exist under the key prefix (SCAN ... TYPE stream), for
//! ListStreams and the dashboard's stream list.
//!
//! SCAN, not KEYS: KEYS blocks Redis for the whole keyspace, SCAN does a
//! bounded step per call and hands back a cursor, so a listing of a large
//! keyspace never stalls other clients. `TYPE stream` (Redis >= 6.0) lets
//! Redis skip the bookkeeping keys (`{...}:idem:*` sets, `:nack:*` sorted
//! sets) and any other key type itself.

use redis::Value;

use super::Broker;
use super::reply::{self, Cursor};
use crate::error::{Error, Result};
use crate::ids::StreamId;

/// One stream as a listing shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// Client stream name (the key without the prefix).
    pub name: String,
    /// Number of entries.
    pub length: u64,
    /// Newest entry's ID; `None` when the stream is empty.
    pub last_entry_id: Option<StreamId>,
    /// Number of consumer groups.
    pub group_count: u64,
}

/// One SCAN step: the names found (prefix removed) and the cursor to
/// continue from, 0 when the scan is complete.
#[derive(Clone, Debug, Default)]
pub struct ScanStep {
    /// Client names of the stream keys of this step.
    pub names: Vec<String>,
    /// SCAN's cursor; 0 = done.
    pub cursor: u64,
}

impl Broker {
    /// One `SCAN cursor MATCH <prefix>* COUNT count TYPE stream` step.
    /// Keys that are not UTF-8 cannot be client stream names and are left
    /// out.
    pub async fn scan_streams(&self, cursor: u64, count: u32) -> Result<ScanStep> {
        let prefix = &self.options.key_prefix;
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", glob_escape(prefix)))
            .arg("COUNT")
            .arg(count)
            .arg("TYPE")
            .arg("stream");
        let mut parts = Cursor::new(self.query(&cmd, "", None).await?, "SCAN")?;
        let cursor = parts
            .next_string()?
            .parse()
            .map_err(|_| Error::Internal("SCAN cursor is not a number".to_owned()))?;
        let names = parts
            .next_array("SCAN keys")?
            .map(|key| Ok(reply::string(key, "SCAN key").ok()))?
            .into_iter()
            .flatten()
            .filter_map(|key| key.strip_prefix(prefix.as_str()).map(str::to_owned))
            .collect();
        Ok(ScanStep { names, cursor })
    }

    /// Length, newest ID and group count of each named stream, in one
    /// pipelined round trip of XINFO STREAM. A stream deleted since it was
    /// found is left out rather than failing the whole page.
    pub async fn stream_summaries(&self, names: Vec<String>) -> Result<Vec<StreamSummary>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for name in &names {
            pipe.cmd("XINFO").arg("STREAM").arg(self.key(name));
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| Error::from_redis(&e, "", None))?;
        let mut summaries = Vec::with_capacity(names.len());
        for (name, value) in names.into_iter().zip(replies) {
            if let Value::ServerError(_) = value {
                continue; // gone (or no longer a stream) since the SCAN
            }
            summaries.push(summary(name, value)?);
        }
        Ok(summaries)
    }
}

/// Reads the fields a listing needs from an XINFO STREAM reply.
fn summary(name: String, value: Value) -> Result<StreamSummary> {
    let mut s = StreamSummary {
        name,
        ..StreamSummary::default()
    };
    for (field, value) in reply::fields(value, "XINFO STREAM")? {
        match field.as_str() {
            "length" => s.length = reply::uint(value, "length")?,
            "groups" => s.group_count = reply::uint(value, "groups")?,
            "last-entry" if value != Value::Nil => {
                s.last_entry_id = Some(reply::raw_entry(value)?.0);
            }
            _ => {}
        }
    }
    Ok(s)
}

/// `text` with Redis glob metacharacters escaped, so that a prefix such as
/// `app[1]:` matches itself only.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::glob_escape;

    #[test]
    fn prefix_metacharacters_are_escaped() {
        assert_eq!(glob_escape("app:"), "app:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape(""), "");
    }
}
