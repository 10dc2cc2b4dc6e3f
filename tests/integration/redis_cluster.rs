//! A private Redis Cluster for tests: 3 masters and 3 replicas, each a
//! [`RedisServer`] with `--cluster-enabled yes`, joined by `redis-cli
//! --cluster create` and ready once every node reports `cluster_state:ok`.
//! Processes are killed on drop, like a single server's.

use std::process::Command;
use std::time::{Duration, Instant};

use streamgate::config::Settings;

use crate::common::{RedisServer, server_binary};

/// Highest client port a node may have: its cluster bus listens on
/// port + 10000, which must be a valid port too.
const MAX_NODE_PORT: u16 = 55535;

/// A running 3 + 3 cluster.
pub struct RedisCluster {
    /// All nodes; the first three were created as masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster and waits until it serves.
    pub fn start() -> RedisCluster {
        Self::start_with(2000)
    }

    /// Like [`RedisCluster::start`], with the nodes' `cluster-node-timeout`:
    /// how long a master may be unreachable before its replica takes over,
    /// short in a failover test so that the failover is quick.
    pub fn start_with(node_timeout_ms: u32) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..6).map(|_| start_node(node_timeout_ms)).collect();
        let mut create = Command::new(redis_cli());
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        let output = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}): run `apt-get install -y redis-tools`")
            });
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok();
        cluster
    }

    /// Polls every node until it reports `cluster_state:ok` and knows all
    /// six nodes.
    fn wait_until_ok(&self) {
        let start = Instant::now();
        for node in &self.nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.conn())
                    .expect("CLUSTER INFO");
                if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:6") {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the cluster did not reach cluster_state:ok:\n{info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Comma-separated seed URLs of the nodes with these indexes.
    pub fn seeds(&self, indexes: &[usize]) -> String {
        indexes
            .iter()
            .map(|&i| self.nodes[i].url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Gateway settings for a gateway seeded with the nodes `indexes`.
    pub fn config(&self, indexes: &[usize]) -> Settings {
        Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            redis_url: self.seeds(indexes),
            redis_cluster: true,
            block_ms: 200,
            redis_timeout_ms: 2000,
            health_interval_ms: 100,
            ..Settings::default()
        }
    }

    /// A cluster-aware connection, for arranging state and checking
    /// results.
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(vec![self.nodes[0].url()])
            .unwrap()
            .get_connection()
            .expect("cluster connection")
    }

    /// The node currently serving `key`'s slot as master, asked of Redis
    /// itself (CLUSTER KEYSLOT, CLUSTER SLOTS).
    pub fn master_of(&self, key: &str) -> &RedisServer {
        let mut conn = self.nodes[0].conn();
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .unwrap();
        let ranges: Vec<(u16, u16, (String, u16))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut conn)
            .map(|raw: Vec<redis::Value>| {
                raw.into_iter()
                    .map(|range| {
                        let redis::Value::Array(parts) = range else {
                            panic!("CLUSTER SLOTS range")
                        };
                        let first = redis::from_redis_value_ref(&parts[0]).unwrap();
                        let last = redis::from_redis_value_ref(&parts[1]).unwrap();
                        let redis::Value::Array(master) = &parts[2] else {
                            panic!("CLUSTER SLOTS master")
                        };
                        let host = redis::from_redis_value_ref(&master[0]).unwrap();
                        let port = redis::from_redis_value_ref(&master[1]).unwrap();
                        (first, last, (host, port))
                    })
                    .collect()
            })
            .unwrap();
        let (_, _, (_, port)) = ranges
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .expect("every slot is served");
        self.nodes
            .iter()
            .find(|n| n.port() == *port)
            .expect("a node of this cluster")
    }

    /// The index in [`RedisCluster::nodes`] of the node on `port`.
    pub fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .expect("a node of this cluster")
    }

    /// The index of the replica of the master at `master`, as the master
    /// lists it (INFO replication, `slave0:ip=...,port=...`).
    pub fn replica_of(&self, master: usize) -> usize {
        let line = self.nodes[master]
            .info_field("replication", "slave0")
            .expect("the master has a replica");
        let port = line
            .split(',')
            .find_map(|kv| kv.strip_prefix("port="))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("a port in {line:?}"));
        self.index_of(port)
    }

    /// The masters, in node order.
    pub fn masters(&self) -> Vec<&RedisServer> {
        self.nodes
            .iter()
            .filter(|node| {
                let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut node.conn()).unwrap();
                redis::from_redis_value_ref::<String>(&role[0]).unwrap() == "master"
            })
            .collect()
    }

    /// Moves `key`'s slot, with its keys, to the master `to`, as
    /// `redis-cli --cluster reshard` does for one slot: IMPORTING on `to`,
    /// MIGRATING on the current master, MIGRATE of every key, then the new
    /// owner announced to every master.
    pub fn move_slot_of(&self, key: &str, to: &RedisServer) {
        let from = self.master_of(key);
        let id = |node: &RedisServer| -> String {
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut node.conn())
                .unwrap()
        };
        let (from_id, to_id) = (id(from), id(to));
        let (mut src, mut dst) = (from.conn(), to.conn());
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut src)
            .unwrap();
        let setslot = |conn: &mut redis::Connection, state: &str, node: &str| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(node)
                .query(conn)
                .unwrap();
        };
        setslot(&mut dst, "IMPORTING", &from_id);
        setslot(&mut src, "MIGRATING", &to_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut src)
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to.port())
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut src)
                .unwrap();
        }
        setslot(&mut dst, "NODE", &to_id);
        setslot(&mut src, "NODE", &to_id);
        for master in self.masters() {
            setslot(&mut master.conn(), "NODE", &to_id);
        }
    }

    /// One stream name per master, `<prefix>-<n>`, found by asking Redis
    /// where each candidate lives; the i-th name lives on the i-th master.
    pub fn names_on_every_master(&self, prefix: &str) -> Vec<String> {
        let masters: Vec<u16> = self.masters().iter().map(|m| m.port()).collect();
        let mut names: Vec<Option<String>> = vec![None; masters.len()];
        for n in 0.. {
            let name = format!("{prefix}-{n}");
            let port = self.master_of(&name).port();
            let i = masters.iter().position(|&p| p == port).unwrap();
            names[i].get_or_insert(name);
            if names.iter().all(Option::is_some) {
                break;
            }
        }
        names.into_iter().map(Option::unwrap).collect()
    }
}

/// `redis-cli` next to the server binary under test when there is one
/// (a Valkey build ships `valkey-cli`), else from the `PATH`.
fn redis_cli() -> String {
    let server = server_binary();
    for cli in [
        server.replace("redis-server", "redis-cli"),
        server.replace("valkey-server", "valkey-cli"),
    ] {
        if cli != server && std::path::Path::new(&cli).exists() {
            return cli;
        }
    }
    "redis-cli".to_owned()
}

/// One cluster-enabled node on a port whose bus port is valid too.
fn start_node(node_timeout_ms: u32) -> RedisServer {
    let node_timeout = node_timeout_ms.to_string();
    let extra = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        &node_timeout,
        // A replica's full sync starts at once, not after the default 5 s
        // wait for more replicas: a restarted node rejoins quickly.
        "--repl-diskless-sync-delay",
        "0",
    ];
    let mut last = String::new();
    for _ in 0..20 {
        let port = fastrand::u16(20_000..MAX_NODE_PORT);
        let bus_free = std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
        if !bus_free {
            continue;
        }
        match RedisServer::try_start_on(port, &extra) {
            Ok(node) => return node,
            Err(e) => last = e.log,
        }
    }
    panic!("no cluster node came up; the end of the last log:\n{last}");
}
