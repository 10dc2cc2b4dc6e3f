//! A private redis-server for one bench run: a free loopback port, no
//! persistence, killed when dropped. Mirrors the test harness, so a bench
//! never touches a Redis the user runs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Fallible;

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
        let dir = std::env::temp_dir().join(format!("streamgate-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        for _ in 0..10 {
            let port = free_port()?;
            let mut child = Command::new(binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--maxclients", "20000", "--dir"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
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
        Err("redis-server did not come up on a free port".into())
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
