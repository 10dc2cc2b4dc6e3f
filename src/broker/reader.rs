//! Blocking reads on a connection of their own.
//!
//! A `Reader` owns one Redis connection and is used by exactly one
//! subscription, so its `BLOCK` never delays anybody else's commands. The
//! connection's response timeout is the block time plus the normal command
//! timeout: redis-rs' default (500 ms) would fail every idle block.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};

use super::reply::{self, RawEntry};
use crate::error::{Error, Result};
use crate::ids::StreamId;

/// Which entries an XREADGROUP asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// `>`: entries never delivered to the group; blocks up to the block
    /// time when there are none.
    New,
    /// This consumer's own pending entries with IDs above the given one;
    /// never blocks.
    Pending(StreamId),
}

/// A dedicated connection reading one stream.
pub struct Reader {
    conn: MultiplexedConnection,
    key: String,
    stream: String,
    block_ms: u64,
}

impl Reader {
    pub(super) async fn open(
        client: &Client,
        key: String,
        stream: String,
        block: Duration,
        response_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Reader> {
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(block + response_timeout))
            .set_connection_timeout(Some(connect_timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| Error::from_redis(&e, &stream, None))?;
        Ok(Reader {
            conn,
            key,
            stream,
            block_ms: block.as_millis().max(1) as u64,
        })
    }

    /// One XREADGROUP for `consumer` of `group`, at most `count` entries.
    /// Entries whose payload was deleted while pending come back with
    /// `None` fields (only possible with [`ReadFrom::Pending`]).
    pub async fn read_group(
        &mut self,
        group: &str,
        consumer: &str,
        count: u32,
        from: ReadFrom,
    ) -> Result<Vec<RawEntry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count);
        let id = match from {
            ReadFrom::New => {
                cmd.arg("BLOCK").arg(self.block_ms);
                ">".to_owned()
            }
            ReadFrom::Pending(after) => after.to_string(),
        };
        cmd.arg("STREAMS").arg(&self.key).arg(id);
        let value: Value = cmd
            .query_async(&mut self.conn)
            .await
            .map_err(|e| Error::from_redis(&e, &self.stream, Some(group)))?;
        reply::read_reply(value)
    }

    /// One plain XREAD of entries after `after` (no group), blocking up to
    /// the block time.
    pub async fn read_after(&mut self, after: StreamId, count: u32) -> Result<Vec<RawEntry>> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(self.block_ms)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(after.to_string());
        let value: Value = cmd
            .query_async(&mut self.conn)
            .await
            .map_err(|e| Error::from_redis(&e, &self.stream, None))?;
        reply::read_reply(value)
    }
}
