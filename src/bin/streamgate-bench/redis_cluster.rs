//! A private Redis Cluster for the cluster scenarios: `masters` masters,
//! each with one replica, every node a [`RedisServer`] with
//! `--cluster-enabled yes`, killed when dropped.
//!
//! Three or more masters are joined with `redis-cli --cluster create
//! ... --cluster-replicas 1` (the recipe of `scripts/cluster.sh` and the
//! test harness). `redis-cli` refuses fewer than three masters, so a
//! one-master cluster (C30's baseline) is joined by hand: the master takes
//! every slot, the replica meets it and replicates it. Either way the
//! cluster is ready once every node reports `cluster_state:ok`, knows
//! every node, and every replica's link to its master is up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Fallible;
use crate::redis_server::RedisServer;

/// How long the cluster may take to form.
const FORM_DEADLINE: Duration = Duration::from_secs(30);

/// A running cluster of `masters` masters and as many replicas.
pub struct RedisCluster {
    /// All nodes: the first `masters` were created as masters.
    nodes: Vec<RedisServer>,
    masters: usize,
}

impl RedisCluster {
    /// Starts `2 * masters` nodes, joins them and waits until the cluster
    /// serves.
    pub fn start(binary: &Path, masters: usize) -> Fallible<RedisCluster> {
        let nodes = (0..2 * masters)
            .map(|_| RedisServer::start_cluster_node(binary))
            .collect::<Fallible<Vec<_>>>()?;
        let cluster = RedisCluster { nodes, masters };
        if masters >= 3 {
            cluster.create_with_cli(binary)?;
        } else if masters == 1 {
            cluster.create_one_master()?;
        } else {
            return Err(format!("a cluster of {masters} masters is not supported").into());
        }
        cluster.wait_until_ready()?;
        Ok(cluster)
    }

    /// Comma-separated URLs of every node: the seeds the gateway and the
    /// bench's cluster clients get.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `3 masters + 3 replicas`.
    pub fn describe(&self) -> String {
        let s = if self.masters == 1 { "" } else { "s" };
        format!(
            "{} master{s} + {} replica{s}",
            self.masters,
            self.nodes.len() - self.masters
        )
    }

    fn create_with_cli(&self, binary: &Path) -> Fallible<()> {
        let cli = redis_cli(binary);
        let mut create = Command::new(&cli);
        create.arg("--cluster").arg("create");
        for node in &self.nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        let output = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .map_err(|e| {
                format!(
                    "cannot run {} ({e}): install it with `apt-get install -y redis-tools`",
                    cli.display()
                )
            })?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(())
    }

    /// One master with every slot and one replica of it.
    fn create_one_master(&self) -> Fallible<()> {
        let mut master = connect(&self.nodes[0])?;
        let mut slots = redis::cmd("CLUSTER");
        slots.arg("ADDSLOTS").arg((0..16384u16).collect::<Vec<_>>());
        slots.query::<()>(&mut master)?;
        let master_id: String = redis::cmd("CLUSTER").arg("MYID").query(&mut master)?;
        let mut replica = connect(&self.nodes[1])?;
        redis::cmd("CLUSTER")
            .arg("MEET")
            .arg("127.0.0.1")
            .arg(self.nodes[0].port())
            .query::<()>(&mut replica)?;
        // REPLICATE needs the replica to know the master already.
        poll("the replica to meet the master", || {
            let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut replica)?;
            Ok(nodes.contains(&master_id))
        })?;
        redis::cmd("CLUSTER")
            .arg("REPLICATE")
            .arg(&master_id)
            .query::<()>(&mut replica)?;
        Ok(())
    }

    /// Polls every node until it reports `cluster_state:ok` and knows every
    /// node, and every replica until its master link is up.
    fn wait_until_ready(&self) -> Fallible<()> {
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        for node in &self.nodes {
            let mut conn = connect(node)?;
            poll("cluster_state:ok on every node", || {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn)?;
                Ok(info.contains("cluster_state:ok") && info.contains(&known))
            })?;
            poll("every replica's link to its master", || {
                let info: String = redis::cmd("INFO").arg("replication").query(&mut conn)?;
                Ok(info.contains("role:master") || info.contains("master_link_status:up"))
            })?;
        }
        Ok(())
    }
}

fn connect(node: &RedisServer) -> Fallible<redis::Connection> {
    Ok(redis::Client::open(node.url())?.get_connection()?)
}

/// Polls `ready` every 50 ms until it holds, or fails after
/// [`FORM_DEADLINE`] naming what it waited for.
fn poll(what: &str, mut ready: impl FnMut() -> Fallible<bool>) -> Fallible<()> {
    let start = Instant::now();
    loop {
        if ready()? {
            return Ok(());
        }
        if start.elapsed() > FORM_DEADLINE {
            return Err(
                format!("the cluster did not form: no {what} within {FORM_DEADLINE:?}").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `redis-cli` next to the server binary when there is one (a Valkey build
/// ships `valkey-cli`), else from the `PATH`.
fn redis_cli(server: &Path) -> PathBuf {
    let text = server.to_string_lossy();
    for cli in [
        text.replace("redis-server", "redis-cli"),
        text.replace("valkey-server", "valkey-cli"),
    ] {
        if cli != text && Path::new(&cli).exists() {
            return PathBuf::from(cli);
        }
    }
    PathBuf::from("redis-cli")
}
