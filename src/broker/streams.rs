//! Which streams exist under the key prefix (SCAN ... TYPE stream), for
//! ListStreams and the dashboard's stream list.
//!
//! SCAN, not KEYS: KEYS blocks Redis for the whole keyspace, SCAN does a
//! bounded step per call and hands back a cursor, so a listing of a large
//! keyspace never stalls other clients. `TYPE stream` (Redis >= 6.0) lets
//! Redis skip the bookkeeping keys (`{...}:idem:*` sets, `:nack:*` sorted
//! sets) and any other key type itself.
//!
//! On a Redis Cluster each master holds its own keys, so the listing walks
//! the masters one after the other (ordered by address), SCANning each to
//! the end. The cursor handed to the client carries both: the master's
//! index in its top [`NODE_BITS`] bits, that master's SCAN cursor below.
//! A resharding during a listing can show a stream twice or miss one that
//! moved, as SCAN itself does when a table is rehashed.

use redis::Value;

use super::Broker;
use super::link::Node;
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

/// Bits of a cluster listing cursor that name the master (4096 at most);
/// the rest is the master's own SCAN cursor, which for any real table fits
/// in the remaining 52 bits.
const NODE_BITS: u32 = 12;
const NODE_SHIFT: u32 = 64 - NODE_BITS;
const NODE_CURSOR_MASK: u64 = (1 << NODE_SHIFT) - 1;

impl Broker {
    /// One `SCAN cursor MATCH <prefix>* COUNT count TYPE stream` step; on a
    /// cluster, on the master the cursor names (see the module doc).
    pub async fn scan_streams(&self, cursor: u64, count: u32) -> Result<ScanStep> {
        if !self.is_cluster() {
            return self.scan_node(None, cursor, count).await;
        }
        let masters = self.masters().await?;
        let index = (cursor >> NODE_SHIFT) as usize;
        let Some(node) = masters.get(index) else {
            // The cluster shrank since the cursor was handed out.
            return Ok(ScanStep::default());
        };
        let step = self
            .scan_node(Some(node), cursor & NODE_CURSOR_MASK, count)
            .await?;
        let cursor = match step.cursor {
            0 if index + 1 < masters.len() => ((index + 1) as u64) << NODE_SHIFT,
            0 => 0,
            c if c > NODE_CURSOR_MASK => {
                return Err(Error::Internal(format!(
                    "SCAN cursor {c} of {node} does not fit a listing cursor"
                )));
            }
            c => ((index as u64) << NODE_SHIFT) | c,
        };
        Ok(ScanStep {
            names: step.names,
            cursor,
        })
    }

    /// The cluster's masters, ordered by address.
    pub async fn masters(&self) -> Result<Vec<Node>> {
        let mut masters: Vec<Node> = self
            .conn()
            .await?
            .slot_masters()
            .await?
            .into_iter()
            .map(|(_, _, node)| node)
            .collect();
        masters.sort();
        masters.dedup();
        Ok(masters)
    }

    /// One SCAN step on one node (`None`: the standalone server). Keys
    /// that are not UTF-8 cannot be client stream names and are left out.
    async fn scan_node(&self, node: Option<&Node>, cursor: u64, count: u32) -> Result<ScanStep> {
        let prefix = &self.options.key_prefix;
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", glob_escape(prefix)))
            .arg("COUNT")
            .arg(count)
            .arg("TYPE")
            .arg("stream");
        let mut conn = self.conn().await?;
        let reply = match node {
            Some(node) => conn.on_node(&cmd, node).await,
            None => cmd.query_async(&mut conn).await,
        };
        let reply = reply.map_err(|e| Error::from_redis(&e, "", None))?;
        let mut parts = Cursor::new(reply, "SCAN")?;
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
        parts.finish()?;
        Ok(ScanStep { names, cursor })
    }

    /// Length, newest ID and group count of each named stream, in one
    /// pipelined round trip of XINFO STREAM (on a cluster, where a pipeline
    /// goes to one node, one concurrent XINFO per stream). A stream deleted
    /// since it was found is left out rather than failing the whole page.
    pub async fn stream_summaries(&self, names: Vec<String>) -> Result<Vec<StreamSummary>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn().await?;
        let replies: Vec<Value> = if self.is_cluster() {
            let calls = names.iter().map(|name| {
                let mut conn = conn.clone();
                let mut cmd = redis::cmd("XINFO");
                cmd.arg("STREAM").arg(self.key(name));
                async move {
                    match cmd.query_async::<Value>(&mut conn).await {
                        Err(e) if e.code().is_some() => Ok(Value::Nil),
                        other => other,
                    }
                }
            });
            futures_util::future::try_join_all(calls)
                .await
                .map_err(|e| Error::from_redis(&e, "", None))?
        } else {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for name in &names {
                pipe.cmd("XINFO").arg("STREAM").arg(self.key(name));
            }
            pipe.query_async(&mut conn.clone())
                .await
                .map_err(|e| Error::from_redis(&e, "", None))?
        };
        let mut summaries = Vec::with_capacity(names.len());
        for (name, value) in names.into_iter().zip(replies) {
            if let Value::ServerError(_) | Value::Nil = value {
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
