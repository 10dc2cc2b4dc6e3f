//! The connection the broker speaks through: one Redis, or a Redis Cluster.
//!
//! The layers above never know which. [`Link`] implements redis-rs'
//! `ConnectionLike`, so every command, pipeline and script of the broker
//! runs on either unchanged:
//!
//! - standalone: one reconnecting multiplexed connection
//!   (`ConnectionManager`), exactly as before cluster support;
//! - cluster: redis-rs' `cluster_async::ClusterConnection`, which routes
//!   each command, pipeline and EVALSHA by the slot of its first key,
//!   follows MOVED and ASK, retries TRYAGAIN / CLUSTERDOWN a few times and
//!   refreshes its slot map on redirections and failovers. It multiplexes
//!   one connection per node.
//!
//! The few commands that have no key are routed here explicitly: INFO to
//! one master, PING to every master, SCAN to one named master (the
//! listing walks them all), CLUSTER SLOTS to any master.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo,
};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

use super::BrokerOptions;
use crate::error::{Error, Result};

/// How many times redis-rs retries a cluster command that met TRYAGAIN,
/// CLUSTERDOWN, MASTERDOWN or a lost node before the error surfaces (as
/// UNAVAILABLE): enough to ride out a resharding step, short enough that a
/// failover in progress is reported rather than hidden.
const CLUSTER_RETRIES: u32 = 3;

/// Where the broker's commands go.
#[derive(Clone)]
pub(super) enum Backend {
    /// One Redis server.
    Single(ConnectionManager),
    /// A Redis Cluster, connected on first use (the gateway starts while
    /// the cluster is still down, like it does for one Redis).
    Cluster {
        client: Arc<ClusterClient>,
        conn: Arc<OnceCell<ClusterConnection>>,
    },
}

impl Backend {
    /// The backend `options` describe: one server or a cluster. Connects
    /// lazily.
    pub(super) fn open(options: &BrokerOptions) -> Result<Backend> {
        if options.cluster {
            return Backend::cluster(options);
        }
        let client = options.tls.client(&options.url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connect_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| Error::invalid("redis-url", e.to_string()))?;
        Ok(Backend::Single(conn))
    }

    /// The cluster backend for the comma-separated seed URLs of `options`.
    fn cluster(options: &BrokerOptions) -> Result<Backend> {
        let seeds = seed_urls(&options.url)?;
        let mut builder = ClusterClientBuilder::new(seeds)
            .retries(CLUSTER_RETRIES)
            .response_timeout(options.response_timeout)
            .connection_timeout(options.connect_timeout);
        if let Some(certificates) = options.tls.certificates()? {
            builder = builder.certs(certificates);
        }
        let client = builder
            .build()
            .map_err(|e| Error::invalid("redis-url", e.to_string()))?;
        Ok(Backend::Cluster {
            client: Arc::new(client),
            conn: Arc::default(),
        })
    }

    /// A handle to send commands on; for a cluster, connects on first use.
    pub(super) async fn link(&self) -> Result<Link> {
        match self {
            Backend::Single(conn) => Ok(Link::Single(conn.clone())),
            Backend::Cluster { client, conn } => conn
                .get_or_try_init(|| client.get_async_connection())
                .await
                .map(|c| Link::Cluster(c.clone()))
                .map_err(|e| Error::from_redis(&e, "", None)),
        }
    }
}

/// One connection handle, standalone or cluster; cheap to clone.
#[derive(Clone)]
pub(super) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    /// Runs `cmd` on one master of a cluster (any command on a standalone
    /// server): for commands without a key whose answer every master gives.
    pub(super) async fn on_any_master(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Link::Single(conn) => cmd.query_async(conn).await,
            Link::Cluster(conn) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
                conn.route_command(cmd.clone(), route).await
            }
        }
    }

    /// Runs `cmd` on every master, failing if one fails (standalone: once).
    pub(super) async fn on_all_masters(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Link::Single(conn) => cmd.query_async(conn).await,
            Link::Cluster(conn) => {
                let route = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                conn.route_command(cmd.clone(), route).await
            }
        }
    }

    /// The master of each slot range, `[(first, last, master)]`, from
    /// CLUSTER SLOTS on any master. redis-rs routes by slot without
    /// exposing its map, so the broker asks the cluster itself where it
    /// needs nodes by name: the masters a listing SCANs, the master a
    /// doorbell waits on.
    pub(super) async fn slot_masters(&mut self) -> Result<Vec<(u16, u16, Node)>> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let value = self
            .on_any_master(&cmd)
            .await
            .map_err(|e| Error::from_redis(&e, "", None))?;
        parse_slots(value)
    }

    /// Runs `cmd` on the node at `host:port` (standalone: on the server).
    pub(super) async fn on_node(&mut self, cmd: &Cmd, node: &Node) -> RedisResult<Value> {
        match self {
            Link::Single(conn) => cmd.query_async(conn).await,
            Link::Cluster(conn) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: node.host.clone(),
                    port: node.port,
                });
                conn.route_command(cmd.clone(), route).await
            }
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(conn) => conn.req_packed_command(cmd),
            Link::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(conn) => conn.get_db(),
            Link::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A cluster node's address as the cluster announces it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    /// Host or IP.
    pub host: String,
    /// Client port.
    pub port: u16,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The master of each slot range, from a CLUSTER SLOTS reply: `[(first,
/// last, master)]`.
fn parse_slots(value: Value) -> Result<Vec<(u16, u16, Node)>> {
    let bad = || Error::Internal("CLUSTER SLOTS reply is malformed".to_owned());
    let Value::Array(ranges) = value else {
        return Err(bad());
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err(bad());
        };
        let mut parts = parts.into_iter();
        let first = int_of(parts.next()).ok_or_else(bad)?;
        let last = int_of(parts.next()).ok_or_else(bad)?;
        let Some(Value::Array(master)) = parts.next() else {
            return Err(bad());
        };
        let mut master = master.into_iter();
        let host = match master.next() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
            Some(Value::SimpleString(s)) => s,
            _ => return Err(bad()),
        };
        let port = int_of(master.next()).ok_or_else(bad)?;
        out.push((first, last, Node { host, port }));
    }
    Ok(out)
}

fn int_of<T: TryFrom<i64>>(value: Option<Value>) -> Option<T> {
    match value? {
        Value::Int(n) => T::try_from(n).ok(),
        _ => None,
    }
}

/// The seed URLs of `--redis-url` in cluster mode: comma-separated, each a
/// full `redis://` or `rediss://` URL (credentials and TLS as for one
/// Redis).
pub(super) fn seed_urls(text: &str) -> Result<Vec<String>> {
    let seeds: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if seeds.is_empty() {
        return Err(Error::invalid("redis-url", "names no seed node"));
    }
    for seed in &seeds {
        redis::Client::open(seed.as_str())
            .map_err(|e| Error::invalid("redis-url", format!("{seed:?}: {e}")))?;
    }
    Ok(seeds)
}

/// `url` with its `host:port` replaced by `node`'s, keeping scheme,
/// credentials, database and query: how the doorbell reaches one node with
/// the seed's settings.
pub(super) fn url_for_node(url: &str, node: &Node) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let userinfo = authority.rfind('@').map_or("", |i| &authority[..=i]);
    let host = if node.host.contains(':') {
        format!("[{}]", node.host)
    } else {
        node.host.clone()
    };
    format!("{scheme}://{userinfo}{host}:{}{tail}", node.port)
}

/// The cluster slot of a key (CRC16/XMODEM of the key, or of its hash tag,
/// modulo 16384), as Redis computes it.
pub fn slot_of(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % 16384
}

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_ne!(slot_of(b"foo{}{bar}"), slot_of(b"bar"));
        assert_eq!(slot_of(b"p:{p:orders}:nack:g"), slot_of(b"p:orders"));
    }

    #[test]
    fn node_urls_keep_everything_but_the_address() {
        let node = Node {
            host: "10.0.0.7".into(),
            port: 7002,
        };
        assert_eq!(
            url_for_node("rediss://alice:pw@seed:7000/0?protocol=3", &node),
            "rediss://alice:pw@10.0.0.7:7002/0?protocol=3"
        );
        assert_eq!(
            url_for_node("redis://127.0.0.1:7000", &node),
            "redis://10.0.0.7:7002"
        );
    }

    #[test]
    fn seeds_are_comma_separated_urls() {
        assert_eq!(
            seed_urls("redis://a:1, redis://b:2").unwrap(),
            vec!["redis://a:1".to_owned(), "redis://b:2".to_owned()]
        );
        assert!(seed_urls(" , ").is_err());
        assert!(seed_urls("redis://a:1,nonsense://x").is_err());
    }
}
