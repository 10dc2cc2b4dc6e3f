//! Which server the gateway finds: on first contact it reads INFO server,
//! logs the product and version, and serves from Redis 7.0 or later (every
//! Valkey). Run with `STREAMGATE_TEST_REDIS_SERVER` set, this checks each
//! server of the test matrix; refusing an older server is decided by unit
//! tests on INFO samples (`src/broker/server_info.rs`), as no such server
//! exists here. The harness itself is checked too: the server it starts is
//! the binary it names.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use streamgate::pb;

use crate::common::{DEADLINE, RedisServer, orders, server_binary};

/// The gateway binary on `redis_url`, with its stderr (the log) read line
/// by line on a thread.
struct LoggingGateway {
    child: Child,
    addr: String,
    log: mpsc::Receiver<String>,
}

impl LoggingGateway {
    fn start(redis_url: &str) -> LoggingGateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["serve", "--redis-url", redis_url, "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway binary");
        let addr = crate::common::listening_addr(&mut child);
        let (send, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        LoggingGateway { child, addr, log }
    }

    /// The first log line containing `needle`; fails the test at the
    /// deadline, showing what was logged.
    fn wait_for_line(&self, needle: &str) -> String {
        let start = std::time::Instant::now();
        let mut seen = Vec::new();
        while let Some(left) = DEADLINE.checked_sub(start.elapsed()) {
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no log line with {needle:?}; the log:\n{}", seen.join("\n"));
    }

    /// Produces one event; the gateway serves from this server.
    async fn produce_one(&self) {
        let mut events =
            pb::event_stream_client::EventStreamClient::connect(format!("http://{}", self.addr))
                .await
                .expect("connect to the gateway process");
        let ids = events
            .produce(pb::ProduceRequest {
                stream: "orders".into(),
                events: orders(1),
                ..Default::default()
            })
            .await
            .expect("produce")
            .into_inner()
            .ids;
        assert_eq!(ids.len(), 1);
    }
}

impl Drop for LoggingGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_gateway_logs_the_server_it_found_and_serves_from_it() {
    let redis = RedisServer::start();
    let server = redis.info();
    let gateway = LoggingGateway::start(&redis.url());
    // The health check is the first contact; it needs no request.
    let line = gateway.wait_for_line("redis server:");
    assert!(
        line.contains(&format!("redis server: {} {}", server.name, server.version)),
        "{} reports {server:?}; the gateway logged: {line}",
        server_binary()
    );
    assert!(line.contains("INFO"), "{line}");
    gateway.produce_one().await;
}

#[tokio::test]
async fn a_user_that_may_not_run_info_is_served_with_a_warning() {
    let redis =
        RedisServer::start_with(&["--user", "bob", "on", ">pw", "~*", "&*", "+@all", "-info"]);
    let url = redis.url().replacen("redis://", "redis://bob:pw@", 1);
    let gateway = LoggingGateway::start(&url);
    let line = gateway.wait_for_line("redis server:");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("version is not checked"), "{line}");
    assert!(line.contains("no permissions"), "{line}");
    gateway.produce_one().await;
}

#[tokio::test]
async fn the_harness_runs_the_server_binary_it_was_told_to() {
    // `<binary> --version` prints e.g. `Valkey server v=8.1.8 sha=...`.
    let output = Command::new(server_binary())
        .arg("--version")
        .output()
        .expect("run the server binary");
    let banner = String::from_utf8_lossy(&output.stdout);
    let version = banner
        .split_whitespace()
        .find_map(|word| word.strip_prefix("v="))
        .unwrap_or_else(|| panic!("no v= in {banner:?}"));
    let server = RedisServer::start().info();
    assert_eq!(server.version, version, "{banner}");
    assert!(
        banner.to_lowercase().starts_with(&server.name),
        "{banner} vs {server:?}"
    );
}
