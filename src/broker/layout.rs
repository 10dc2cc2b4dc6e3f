//! Where a partitioned stream's layout lives: in the stream's own key.
//!
//! A partitioned stream `s` is recorded as a hash at the key a plain stream
//! `s` would have (`<prefix>s`), holding its partition count; partition `i`
//! is the stream [`partition_stream`]`(s, i)`. Keeping the record at the
//! stream's own key makes the choice between plain and partitioned atomic:
//! a Produce through a gateway that has not heard of the layout yet meets
//! WRONGTYPE on that key (and looks the layout up) instead of creating a
//! plain stream beside the partitions, and a plain stream that exists
//! already cannot be turned into a partitioned one.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::Broker;
use super::reply::Cursor;
use crate::error::{Error, Result};

/// What a stream name's key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Nothing yet.
    Missing,
    /// A plain stream.
    Plain,
    /// A partitioned stream with this many partitions.
    Partitioned(u32),
}

/// Records a partitioned stream's layout unless the key exists, and says
/// what the key holds: `{created, kind, partitions}` with kind 0 missing
/// (only when `ARGV[1]` is 0: a look-up), 1 plain, 2 partitioned, 3 another
/// type or a hash that is no layout.
static LAYOUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local kind = redis.call('TYPE', KEYS[1]).ok
local n = tonumber(ARGV[1])
if kind == 'none' then
  if n < 2 then return {0, 0, 0} end
  redis.call('HSET', KEYS[1], 'streamgate', 'partitioned stream', 'partitions', n)
  return {1, 2, n}
elseif kind == 'stream' then
  return {0, 1, 1}
elseif kind == 'hash' and redis.call('HGET', KEYS[1], 'streamgate') == 'partitioned stream' then
  return {0, 2, tonumber(redis.call('HGET', KEYS[1], 'partitions'))}
end
return {0, 3, 0}
",
    )
});

/// The internal stream name of partition `i` of `stream`: `<stream>{<i>`.
///
/// The `{` keeps it apart from every client stream and bookkeeping key
/// (client names cannot contain braces), and, having no `}`, it is no hash
/// tag: Redis hashes the whole key, so the partitions spread over the
/// cluster's slots, while each partition's bookkeeping keys
/// (`<prefix>{<prefix><stream>{<i>}:...`) share its slot. Every broker
/// operation on a partition is the plain one on this name.
pub fn partition_stream(stream: &str, partition: u32) -> String {
    format!("{stream}{{{partition}")
}

impl Broker {
    /// What `stream`'s key holds; with `partitions` >= 2 and nothing there
    /// yet, records a partitioned layout first. Returns whether it did.
    pub async fn layout(&self, stream: &str, partitions: u32) -> Result<(bool, Layout)> {
        let value = self
            .invoke(LAYOUT.key(self.key(stream)).arg(partitions), stream, None)
            .await?;
        let mut reply = Cursor::new(value, "layout")?;
        let created = reply.next_uint()? == 1;
        let kind = reply.next_uint()?;
        let count = reply.next_uint()?;
        reply.finish()?;
        let layout = match kind {
            0 => Layout::Missing,
            1 => Layout::Plain,
            2 => Layout::Partitioned(u32::try_from(count).unwrap_or(u32::MAX)),
            _ => {
                return Err(Error::WrongType {
                    stream: stream.to_owned(),
                });
            }
        };
        Ok((created, layout))
    }

    /// Creates `stream` empty if it does not exist (a group created with
    /// MKSTREAM and destroyed again leaves nothing but the stream).
    pub async fn create_empty_stream(&self, stream: &str) -> Result<()> {
        const PROBE: &str = "streamgate:create";
        let key = self.key(stream);
        let mut pipe = redis::pipe();
        pipe.cmd("XGROUP")
            .arg("CREATE")
            .arg(&key)
            .arg(PROBE)
            .arg("$")
            .arg("MKSTREAM")
            .ignore()
            .cmd("XGROUP")
            .arg("DESTROY")
            .arg(&key)
            .arg(PROBE)
            .ignore();
        let _: Value = pipe
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| Error::from_redis(&e, stream, None))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_are_no_client_names_and_no_hash_tags() {
        let name = partition_stream("orders", 3);
        assert_eq!(name, "orders{3");
        assert!(crate::namespace::stream_name("stream", &name).is_err());
        // No `}`: the whole key is hashed, so partitions spread over slots.
        let slots: std::collections::HashSet<u16> = (0..12)
            .map(|i| {
                super::super::slot_of(format!("app:{}", partition_stream("orders", i)).as_bytes())
            })
            .collect();
        assert!(slots.len() > 6, "{slots:?}");
    }
}
