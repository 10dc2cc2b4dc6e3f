//! A private redis-server for one bench run: a free loopback port, no
//! persistence, killed when dropped. Mirrors the test harness, so a bench
//! never touches a Redis the user runs. [`crate::redis_cluster`] builds
//! its nodes from these too.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Fallible;

/// Highest client port a cluster node may have: its cluster bus listens
/// on port + 10000, which must be a valid port too.
const MAX_NODE_PORT: u16 = 55535;

/// A running redis-server child process.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts `binary` and waits until it answers PING. `--maxclients`
    /// is raised so that S5's thousand subscriptions fit.
    pub fn start(binary: &Path) -> Fallible<RedisServer> {
        Self::start_with(binary, &[], false)
    }

    /// Starts a `--cluster-enabled` node (no slots yet) on a port whose
    /// cluster bus port (port + 10000) is free too.
    pub fn start_cluster_node(binary: &Path) -> Fallible<RedisServer> {
        let extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
        ];
        Self::start_with(binary, &extra, true)
    }

    fn start_with(binary: &Path, extra: &[&str], cluster_bus: bool) -> Fallible<RedisServer> {
        // Each server gets a directory of its own: a cluster node writes
        // its nodes.conf there.
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "streamgate-bench-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        for _ in 0..20 {
            let port = if cluster_bus {
                match free_node_port()? {
                    Some(port) => port,
                    None => continue,
                }
            } else {
                free_port()?
            };
            let mut child = Command::new(binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--maxclients", "20000"])
                .args(extra)
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    let _ = std::fs::remove_dir_all(&dir);
                    format!(
                        "cannot start {}: {e} (install it with `apt-get install -y redis-server`)",
                        binary.display()
                    )
                })?;
            if answers_ping(&mut child, port) {
                return Ok(RedisServer { child, port, dir });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err("redis-server did not come up on a free port".into())
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free port no higher than [`MAX_NODE_PORT`] whose bus port is free
/// too; `None` when this try found none.
fn free_node_port() -> std::io::Result<Option<u16>> {
    for _ in 0..100 {
        let port = free_port()?;
        if port <= MAX_NODE_PORT && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(Some(port));
        }
    }
    Ok(None)
}

/// Polls PING for up to five seconds; false if the process exited (most
/// likely the port was taken meanwhile) or never answered.
fn answers_ping(child: &mut Child, port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
        return false;
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut conn) = client.get_connection()
            && redis::cmd("PING").query::<String>(&mut conn).is_ok()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
