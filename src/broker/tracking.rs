//! The tracking wake-up's connection: Redis says which watched streams
//! changed.
//!
//! On a RESP3 connection with `CLIENT TRACKING on`, Redis remembers every
//! key the connection reads; the next write to such a key (an XADD, a
//! trim, a delete, the key migrating away) sends the connection one
//! `invalidate` push naming it, and forgets the key until it is read
//! again. So one connection per node watches any number of streams, and a
//! burst of XADDs to one stream costs one message. Reading a stream's
//! length (XLEN, O(1)) is the cheapest read that registers it. Group
//! commands (XREADGROUP, XACK, XGROUP) do not count as writes here: they
//! send nothing.
//!
//! The connection reads nothing but the watched keys, so Redis tracks
//! nothing else for it. Its name is [`TRACKING_CONNECTION_NAME`] in
//! `CLIENT LIST`.

use redis::aio::{MultiplexedConnection, SendError};
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, Value};

use super::Broker;
use super::link::{self, Node};
use crate::error::{Error, Result};

/// `CLIENT SETNAME` of every tracking connection.
pub const TRACKING_CONNECTION_NAME: &str = "streamgate-watch";

/// What a tracking connection reports, in the order it happened.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// These keys were written (or deleted, trimmed, migrated): each is no
    /// longer tracked until it is armed again.
    Keys(Vec<String>),
    /// Every key at once (FLUSHALL, FLUSHDB, a full tracking table).
    All,
    /// The connection is gone: nothing it tracked will be reported.
    Disconnected,
}

/// Why a server cannot track keys for the gateway (no RESP3, the command
/// unknown or refused by an ACL): its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

/// A connection on which Redis tracks the keys the gateway arms.
pub struct Tracking {
    conn: MultiplexedConnection,
}

/// Where Redis keeps a key that a tracking connection tried to arm.
#[derive(Debug)]
pub enum Armed {
    /// Tracked here: its next write is reported.
    Here,
    /// The key's slot is served by another master (MOVED).
    Moved(Node),
    /// The key's slot is migrating and the key is on `Node` already (ASK):
    /// arm it there with ASKING.
    Ask(Node),
    /// Redis refused to read the key (WRONGTYPE: it is not a stream).
    Rejected(redis::RedisError),
}

impl Broker {
    /// Opens a tracking connection: to the server, or on a cluster to
    /// `node`. Every report goes to `report`, which must not block (it runs
    /// on the connection's reading task). `Ok(Err(_))` when the server
    /// answered that it cannot track (the caller falls back to blocking
    /// reads); `Err` when it could not be reached.
    pub async fn tracking(
        &self,
        node: Option<&Node>,
        report: impl Fn(Invalidation) + Send + Sync + 'static,
    ) -> Result<std::result::Result<Tracking, Refused>> {
        let url = match node {
            None => self.options.url.clone(),
            Some(node) => link::url_for_node(&link::seed_urls(&self.options.url)?.remove(0), node),
        };
        let client = self.options.tls.client(&url)?;
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = self
            .options
            .tls
            .client_for(info.set_redis_settings(resp3))?;
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(self.options.response_timeout))
            .set_connection_timeout(Some(self.options.connect_timeout))
            .set_push_sender(move |push: PushInfo| {
                if let Some(invalidation) = invalidation(push) {
                    report(invalidation);
                }
                Ok::<(), SendError>(())
            });
        let mut conn = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => conn,
            Err(e) if unreachable(&e) => return Err(Error::from_redis(&e, "", None)),
            Err(e) => return Ok(Err(Refused(format!("RESP3 connection refused: {e}")))),
        };
        let mut setup = redis::pipe();
        setup
            .cmd("CLIENT")
            .arg("SETNAME")
            .arg(TRACKING_CONNECTION_NAME)
            .ignore()
            .cmd("CLIENT")
            .arg("TRACKING")
            .arg("on")
            .ignore();
        match setup.exec_async(&mut conn).await {
            Ok(()) => Ok(Ok(Tracking { conn })),
            Err(e) if unreachable(&e) => Err(Error::from_redis(&e, "", None)),
            Err(e) => Ok(Err(Refused(format!("CLIENT TRACKING refused: {e}")))),
        }
    }

    /// The cluster's masters and the slot ranges each serves (first, last,
    /// node), as the cluster reports them now.
    pub async fn slot_masters(&self) -> Result<Vec<(u16, u16, Node)>> {
        self.conn().await?.slot_masters().await
    }
}

/// Whether `e` means the server could not be reached (as opposed to an
/// answer).
fn unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped()
}

/// A push as a report; `None` for pushes of other kinds.
fn invalidation(push: PushInfo) -> Option<Invalidation> {
    match push.kind {
        PushKind::Disconnection => Some(Invalidation::Disconnected),
        PushKind::Invalidate => match push.data.into_iter().next() {
            Some(Value::Array(keys)) => Some(Invalidation::Keys(
                keys.into_iter()
                    .filter_map(|key| match key {
                        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
                        Value::SimpleString(text) => Some(text),
                        _ => None,
                    })
                    .collect(),
            )),
            // A null: every key.
            _ => Some(Invalidation::All),
        },
        _ => None,
    }
}

impl Tracking {
    /// Arms `keys` (each with whether it needs ASKING first): one XLEN
    /// each, pipelined. Returns where each key is tracked, in order.
    pub async fn arm(&mut self, keys: &[(String, bool)]) -> Result<Vec<Armed>> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (key, asking) in keys {
            if *asking {
                pipe.cmd("ASKING").ignore();
            }
            pipe.cmd("XLEN").arg(key);
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.conn)
            .await
            .map_err(|e| Error::from_redis(&e, "(tracking)", None))?;
        if replies.len() != keys.len() {
            return Err(Error::Internal(format!(
                "tracking: {} replies to {} XLENs",
                replies.len(),
                keys.len()
            )));
        }
        Ok(replies.into_iter().map(armed).collect())
    }
}

/// Where one XLEN reply says its key is tracked.
fn armed(reply: Value) -> Armed {
    let Value::ServerError(e) = reply else {
        return Armed::Here;
    };
    // MOVED / ASK details: "<slot> <host>:<port>".
    let node = e
        .details()
        .and_then(|d| d.split_whitespace().nth(1))
        .and_then(|addr| addr.rsplit_once(':'))
        .and_then(|(host, port)| {
            Some(Node {
                host: host.trim_matches(['[', ']']).to_owned(),
                port: port.parse().ok()?,
            })
        });
    match (e.code(), node) {
        ("MOVED", Some(node)) => Armed::Moved(node),
        ("ASK", Some(node)) => Armed::Ask(node),
        _ => Armed::Rejected(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(kind: PushKind, data: Vec<Value>) -> PushInfo {
        PushInfo { kind, data }
    }

    #[test]
    fn pushes_become_reports() {
        let keys = Value::Array(vec![
            Value::BulkString(b"a".to_vec()),
            Value::BulkString(b"b".to_vec()),
        ]);
        assert_eq!(
            invalidation(push(PushKind::Invalidate, vec![keys])),
            Some(Invalidation::Keys(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            invalidation(push(PushKind::Invalidate, vec![Value::Nil])),
            Some(Invalidation::All)
        );
        assert_eq!(
            invalidation(push(PushKind::Disconnection, vec![])),
            Some(Invalidation::Disconnected)
        );
        assert_eq!(invalidation(push(PushKind::Message, vec![])), None);
    }
}
