//! The XREAD wake-up's connection: one blocking XREAD over many streams.
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
use super::link::{self, Node};
use super::reply::{self, Cursor};
use crate::error::{Error, Result};
use crate::ids::StreamId;

/// `CLIENT SETNAME` of every waiter connection.
pub const WAITER_CONNECTION_NAME: &str = "streamgate-xread";

/// A dedicated connection that waits for new entries on many streams.
pub struct Waiter {
    conn: MultiplexedConnection,
    /// Who to CLIENT UNBLOCK to cut a wait short.
    pub handle: WaiterHandle,
    block_ms: u64,
}

/// What another connection needs to cut a waiter's wait short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaiterHandle {
    /// The waiting connection's CLIENT ID.
    pub client_id: i64,
    /// The cluster node it waits on (client IDs are per node); `None` on a
    /// standalone server.
    pub node: Option<Node>,
}

impl Broker {
    /// Opens a doorbell connection: to the server, or on a cluster to the
    /// master of `slot`.
    pub async fn waiter(&self, block: Duration, slot: Option<u16>) -> Result<Waiter> {
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(block + self.options.response_timeout))
            .set_connection_timeout(Some(self.options.connect_timeout));
        let (client, node) = match (&self.client, slot) {
            (Some(client), _) => (client.clone(), None),
            (None, slot) => {
                let node = self.master_of(slot.unwrap_or(0)).await?;
                let seed = link::seed_urls(&self.options.url)?.remove(0);
                let client = self.options.tls.client(&link::url_for_node(&seed, &node))?;
                (client, Some(node))
            }
        };
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| Error::from_redis(&e, "", None))?;
        let (id,): (Value,) = redis::pipe()
            .cmd("CLIENT")
            .arg("SETNAME")
            .arg(WAITER_CONNECTION_NAME)
            .ignore()
            .cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::from_redis(&e, "", None))?;
        Ok(Waiter {
            conn,
            handle: WaiterHandle {
                client_id: reply::int(id, "CLIENT ID")?,
                node,
            },
            block_ms: block.as_millis().max(1) as u64,
        })
    }

    /// Ends a waiter's current blocking read early (it returns nothing).
    /// On a cluster the command goes to the waiter's own node: the same
    /// client ID names another connection elsewhere.
    pub async fn unblock(&self, waiter: &WaiterHandle) -> Result<()> {
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("UNBLOCK").arg(waiter.client_id);
        let mut conn = self.conn().await?;
        let reply = match &waiter.node {
            Some(node) => conn.on_node(&cmd, node).await,
            None => redis::aio::ConnectionLike::req_packed_command(&mut conn, &cmd).await,
        };
        reply.map(drop).map_err(|e| Error::from_redis(&e, "", None))
    }

    /// The master serving `slot`, from the cluster's current slot map.
    pub async fn master_of(&self, slot: u16) -> Result<Node> {
        self.slot_masters()
            .await?
            .into_iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, node)| node)
            .ok_or_else(|| Error::Unavailable(format!("no cluster node serves slot {slot}")))
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
            stream.finish()?;
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
