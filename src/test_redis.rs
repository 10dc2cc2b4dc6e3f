//! A private `redis-server` for the unit tests that need real replies, e.g.
//! the shapes in which redis-rs hands over an error reply, which only a
//! real server produces faithfully.
//!
//! The integration tests have a fuller harness (`tests/integration/common.rs`:
//! restarts, signals, INFO); this is the least that starts a server on a
//! free loopback port, without persistence, and stops it.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Names the server binary (default `redis-server`), the same variable the
/// integration tests read, so that one setting runs both against Redis or
/// Valkey.
const SERVER_ENV: &str = "STREAMGATE_TEST_REDIS_SERVER";

/// How long a server may take to answer PING before the test fails.
const STARTUP: Duration = Duration::from_secs(5);

/// A running `redis-server`, killed on drop.
pub(crate) struct TestRedis {
    child: Child,
    port: u16,
    /// Working directory and log; removed on drop, after the process.
    _dir: tempfile::TempDir,
}

impl TestRedis {
    /// Starts a server with extra command-line arguments and returns once
    /// it answers PING; panics with the end of its log if it does not.
    pub(crate) fn start_with(extra: &[&str]) -> TestRedis {
        let binary = std::env::var(SERVER_ENV)
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "redis-server".to_owned());
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("server.log");
        // The free port may be taken by someone else before the server
        // binds it; the server then exits and another port is tried.
        for _ in 0..20 {
            let port = free_port();
            let mut child = Command::new(&binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {binary} (set {SERVER_ENV} to a server binary): {e}")
                });
            if answers_ping(&mut child, port) {
                return TestRedis {
                    child,
                    port,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            let said = log_tail(&log);
            if !said.contains("already in use") {
                panic!("{binary} did not come up; the end of its log:\n{said}");
            }
        }
        panic!("{binary} found no free port in 20 tries")
    }

    /// A server with the default settings.
    pub(crate) fn start() -> TestRedis {
        TestRedis::start_with(&[])
    }

    /// Its `redis://` URL.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A direct connection.
    pub(crate) fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("a redis:// URL")
            .get_connection()
            .expect("a connection to the test server")
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Whether the server on `port` answers PING within [`STARTUP`]; `false`
/// as soon as it exits. The server says nothing else when it is ready, so
/// this asks every 10 ms.
fn answers_ping(child: &mut Child, port: u16) -> bool {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("a URL");
    let start = Instant::now();
    while start.elapsed() < STARTUP {
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

/// The last lines of the server's log, for failure messages.
fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
