//! The doorbell's connection: one blocking XREAD over many streams.
//!
//! This is the only blocking read the gateway issues, on a connection of
//! its own (a blocking command on the shared connection would stall every
//! request queued behind it). Its response timeout is the block time plus
//! the normal command timeout: redis-rs' default (500 ms) would fail every
//! idle block.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use super::Broker;
use super::reply::{self, Cursor};
use crate::error::{Error, Result};
use crate::ids::StreamId;

/// A dedicated connection that waits for new entries on many streams.
pub struct Waiter {
    conn: MultiplexedConnection,
    /// This connection's CLIENT ID, so that another connection can cut a
    /// wait short with CLIENT UNBLOCK.
    pub client_id: i64,
    block_ms: u64,
}

impl Broker {
    /// Opens the doorbell's connection.
    pub async fn waiter(&self, block: Duration) -> Result<Waiter> {
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(block + self.options.response_timeout))
            .set_connection_timeout(Some(self.options.connect_timeout));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| Error::from_redis(&e, "", None))?;
        let id: Value = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::from_redis(&e, "", None))?;
        Ok(Waiter {
            conn,
            client_id: reply::int(id, "CLIENT ID")?,
            block_ms: block.as_millis().max(1) as u64,
        })
    }

    /// Ends a waiter's current blocking read early (it returns nothing).
    pub async fn unblock(&self, client_id: i64) -> Result<()> {
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("UNBLOCK").arg(client_id);
        self.query(&cmd, "", None).await.map(drop)
    }
}

impl Waiter {
    /// Blocks until one of the streams (`keys`: their Redis keys) has an
    /// entry after its position in `after`, or the block time passes.
    /// Returns the indexes of the streams that have, each with the ID of the
    /// first such entry.
    pub async fn wait(
        &mut self,
        keys: &[String],
        after: &[StreamId],
    ) -> Result<Vec<(usize, StreamId)>> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(self.block_ms)
            .arg("STREAMS");
        for key in keys {
            cmd.arg(key);
        }
        for id in after {
            cmd.arg(id.to_string());
        }
        let value: Value = cmd
            .query_async(&mut self.conn)
            .await
            .map_err(|e| Error::from_redis(&e, "(doorbell)", None))?;
        let mut rung = Vec::new();
        for stream in Cursor::new(value, "XREAD reply")?.rows("XREAD stream") {
            let mut stream = stream?;
            let key = stream.next_bytes()?;
            let first = reply::raw_entries(stream.next_value()?)?
                .first()
                .map(|(id, _)| *id);
            if let (Some(i), Some(first)) = (
                keys.iter().position(|k| k.as_bytes() == key.as_slice()),
                first,
            ) {
                rung.push((i, first));
            }
        }
        Ok(rung)
    }
}
