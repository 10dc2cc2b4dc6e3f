//! Test harness: private `redis-server` processes on free loopback ports and
//! the gateway in-process on `127.0.0.1:0`.
//!
//! Every test gets its own Redis, so tests run in parallel and never touch a
//! Redis the user runs on 6379. Processes are killed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamgate::config::Settings;
use streamgate::pb::stream_admin_client::StreamAdminClient;
use streamgate::pb::{self, event_stream_client::EventStreamClient, subscribe_response};
use streamgate::server::{self, Gateway};
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// How long a test waits for a condition before it fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Names the server binary the harness starts (default `redis-server`),
/// so that the same suite runs against Redis and Valkey builds.
pub const SERVER_ENV: &str = "STREAMGATE_TEST_REDIS_SERVER";

/// The server binary the harness starts: `$STREAMGATE_TEST_REDIS_SERVER`
/// or `redis-server` from the `PATH`.
pub fn server_binary() -> String {
    std::env::var(SERVER_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "redis-server".to_owned())
}

/// A private redis-server.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

/// Why a server did not come up: what its log says.
#[derive(Debug)]
pub struct LaunchError {
    /// The end of the server's log.
    pub log: String,
}

impl LaunchError {
    /// Whether the binary was built without TLS: it refuses `--tls-port`
    /// with "Failed finding TLS support" (Valkey, and Redis from 7.2).
    /// Any other refusal stays a failure that shows the log.
    pub fn lacks_tls(&self) -> bool {
        self.log.contains("Failed finding TLS support")
    }
}

impl RedisServer {
    /// Starts a redis-server without persistence on a free port.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a redis-server with extra command-line arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        Self::try_start_with(extra).unwrap_or_else(|e| {
            panic!(
                "{} did not come up; the end of its log:\n{}",
                server_binary(),
                e.log
            )
        })
    }

    /// Starts a redis-server with extra command-line arguments, or says
    /// why the server refused to start (e.g. an option the build lacks).
    pub fn try_start_with(extra: &[&str]) -> Result<RedisServer, LaunchError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.launch(None)?;
        Ok(server)
    }

    /// Starts a redis-server on a given port (e.g. one a gateway already
    /// points at).
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.relaunch();
        server
    }

    /// Starts a redis-server on `port`, or says why it did not come up
    /// (e.g. the port was taken meanwhile).
    pub fn try_start_on(port: u16, extra: &[&str]) -> Result<RedisServer, LaunchError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.launch(Some(port))?;
        Ok(server)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Launches the process, on `port` or a free one, and waits until it
    /// answers PING. A free port may be taken by someone else before the
    /// server binds it: then the server exits and another port is tried.
    fn launch(&mut self, port: Option<u16>) -> Result<(), LaunchError> {
        let log = self.dir.path().join("server.log");
        let mut last = LaunchError { log: String::new() };
        for _ in 0..20 {
            let port = port.unwrap_or_else(free_port);
            let _ = std::fs::remove_file(&log);
            let child = Command::new(server_binary())
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .args(["--appendonly", "no", "--dir"])
                .arg(self.dir.path())
                .arg("--logfile")
                .arg(&log)
                .args(&self.extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "{} is not installed: run `apt-get install -y redis-server`, or point \
                     {SERVER_ENV} at a server binary (scripts/test.sh does both)",
                    server_binary()
                ),
                Err(e) => panic!("cannot start {}: {e}", server_binary()),
            };
            if wait_for_ping(&mut child, port) {
                self.child = Some(child);
                self.port = port;
                return Ok(());
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            let _ = child.kill();
            let _ = child.wait();
            last = LaunchError {
                log: log_tail(&log),
            };
            if exited && !last.log.contains("already in use") {
                // It refused to start, not for a port race: trying again
                // would fail the same way.
                break;
            }
        }
        Err(last)
    }

    /// Launches on the port this server had (or was given), panicking with
    /// the server's log if it does not come up.
    fn relaunch(&mut self) {
        if let Err(e) = self.launch(Some(self.port)) {
            panic!(
                "{} did not come up on port {}; the end of its log:\n{}",
                server_binary(),
                self.port,
                e.log
            );
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A direct connection for arranging state and checking results.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .expect("direct Redis connection")
    }

    /// What the server says it is (INFO server), read with a parser of
    /// the test's own so that the gateway's parser is checked against it.
    pub fn info(&self) -> ServerIdentity {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut self.conn())
            .expect("INFO server");
        ServerIdentity::from_info(&info)
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a killed server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.relaunch();
    }

    /// Sends a signal (e.g. `STOP`, `CONT`) to the server process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// One field of an INFO section (e.g. `replication`, `role`), or
    /// `None` when the server does not report it.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn())
            .expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    }

    /// Whether the server is a replica: INFO replication says
    /// `role:slave` (Redis and Valkey both still spell it so).
    pub fn is_replica(&self) -> bool {
        matches!(
            self.info_field("replication", "role").as_deref(),
            Some("slave" | "replica")
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // A stopped process ignores SIGKILL until continued.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// The server product and versions from INFO server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerIdentity {
    /// `redis` or `valkey` (`server_name`, absent from Redis).
    pub name: String,
    /// The product's own version: `valkey_version` or `redis_version`.
    pub version: String,
    /// The Redis version the server is compatible with: `redis_version`
    /// (Valkey reports 7.2.4, the Redis release it forked from).
    pub redis_version: (u32, u32, u32),
}

impl ServerIdentity {
    fn from_info(info: &str) -> ServerIdentity {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        let redis_version = field("redis_version").expect("INFO server has redis_version");
        let mut parts = redis_version.split('.').map(|p| p.parse::<u32>().unwrap());
        let mut next = || parts.next().unwrap_or(0);
        let name = field("server_name").unwrap_or_else(|| "redis".to_owned());
        ServerIdentity {
            version: field(&format!("{name}_version")).unwrap_or_else(|| redis_version.clone()),
            name,
            redis_version: (next(), next(), next()),
        }
    }

    /// XINFO CONSUMERS reports `inactive` from Redis 7.2 on; Valkey forked
    /// from 7.2.4 and reports it in every release.
    pub fn reports_inactive(&self) -> bool {
        self.redis_version >= (7, 2, 0)
    }
}

/// Says something about the test run on the terminal even when the test
/// passes: libtest captures `println!`/`eprintln!` of passing tests, not
/// direct writes to stderr. For a check the server at hand cannot do.
pub fn announce(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\nNOTE [{}]: {message}", server_binary());
}

/// The last lines of a server log, for failure messages.
fn log_tail(path: &std::path::Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The SHA-256 of a token in lowercase hex, as an auth config file stores
/// it (`printf %s "$TOKEN" | sha256sum`). Computed here rather than by the
/// gateway's code, so that the tests write token files the way an operator
/// does and the gateway's own hashing is what they check.
pub fn token_sha256(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_ping(child: &mut Child, port: u16) -> bool {
    let url = format!("redis://127.0.0.1:{port}");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return false; // exited: port taken, most likely
        }
        if let Ok(mut conn) = redis::Client::open(url.as_str()).unwrap().get_connection()
            && redis::cmd("PING").query::<String>(&mut conn).is_ok()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Gateway settings for tests: a free port, the given Redis, short blocks
/// and health checks so that tests finish quickly. Built in code, so nothing
/// in the developer's environment (`STREAMGATE_*`) leaks in.
pub fn config(redis: &RedisServer) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        redis_url: redis.url(),
        block_ms: 200,
        redis_timeout_ms: 2000,
        health_interval_ms: 100,
        ..Settings::default()
    }
}

/// A gateway running in-process, with clients connected to it.
pub struct TestGateway {
    /// The running server; `None` after [`TestGateway::stop`].
    pub gateway: Option<Gateway>,
    /// Data-plane client.
    pub events: EventStreamClient<Channel>,
    /// Admin-plane client.
    pub admin: StreamAdminClient<Channel>,
    /// A channel to the gateway, for other services (health, reflection).
    pub channel: Channel,
}

impl TestGateway {
    /// Starts a gateway with `config` and connects clients.
    pub async fn start(config: Settings) -> TestGateway {
        let gateway = server::start(&config).await.expect("gateway starts");
        let channel = Channel::from_shared(format!("http://{}", gateway.addr()))
            .unwrap()
            .connect()
            .await
            .expect("connect to gateway");
        TestGateway {
            gateway: Some(gateway),
            events: EventStreamClient::new(channel.clone()),
            admin: StreamAdminClient::new(channel.clone()),
            channel,
        }
    }

    /// Triggers graceful shutdown and waits for the server to stop.
    pub async fn stop(&mut self) {
        let gateway = self.gateway.take().expect("running");
        gateway.shutdown();
        tokio::time::timeout(DEADLINE, gateway.wait())
            .await
            .expect("gateway stops within the deadline")
            .expect("gateway stops cleanly");
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(gateway) = &self.gateway {
            gateway.shutdown();
        }
    }
}

/// Redis plus a gateway on it: what most tests need.
pub async fn setup() -> (RedisServer, TestGateway) {
    let redis = RedisServer::start();
    let gateway = TestGateway::start(config(&redis)).await;
    (redis, gateway)
}

/// Polls `check` until it returns `Some`, failing the test at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An event with a type and string fields.
pub fn event(event_type: &str, fields: &[(&str, &str)]) -> pb::Event {
    pb::Event {
        r#type: event_type.to_owned(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// `n` order events `order.placed` with `order_id = o-<i>`.
pub fn orders(n: usize) -> Vec<pb::Event> {
    (0..n)
        .map(|i| event("order.placed", &[("order_id", &format!("o-{i}"))]))
        .collect()
}

/// Produces events to `stream` and returns their IDs.
pub async fn produce(gw: &mut TestGateway, stream: &str, events: Vec<pb::Event>) -> Vec<String> {
    gw.events
        .produce(pb::ProduceRequest {
            stream: stream.to_owned(),
            events,
            ..Default::default()
        })
        .await
        .expect("produce")
        .into_inner()
        .ids
}

/// A Subscribe request that creates the group from the start of the stream.
pub fn sub(stream: &str, group: &str, consumer: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        stream: stream.to_owned(),
        group: group.to_owned(),
        consumer: consumer.to_owned(),
        batch_size: 10,
        create_group: true,
        group_start_id: "0".to_owned(),
        ..Default::default()
    }
}

/// Opens a subscription.
pub async fn subscribe(
    gw: &mut TestGateway,
    req: pb::SubscribeRequest,
) -> Streaming<pb::SubscribeResponse> {
    gw.events
        .subscribe(req)
        .await
        .expect("subscribe")
        .into_inner()
}

/// The next batch of a subscription, skipping heartbeats.
pub async fn next_batch(
    stream: &mut Streaming<pb::SubscribeResponse>,
) -> Result<Vec<pb::Entry>, Status> {
    loop {
        let message = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("a subscription message within the deadline")?;
        match message.and_then(|m| m.kind) {
            Some(subscribe_response::Kind::Batch(batch)) => return Ok(batch.entries),
            Some(subscribe_response::Kind::Heartbeat(_)) => continue,
            None => return Err(Status::aborted("subscription ended without a status")),
        }
    }
}

/// Reads Tail batches until `n` entries have arrived.
pub async fn take_tail_entries(
    stream: &mut Streaming<pb::TailResponse>,
    n: usize,
) -> Vec<pb::Entry> {
    let mut out = Vec::new();
    while out.len() < n {
        let message = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("a tail message within the deadline")
            .expect("tail stays open")
            .expect("tail does not end");
        if let Some(pb::tail_response::Kind::Batch(batch)) = message.kind {
            out.extend(batch.entries);
        }
    }
    out
}

/// Reads batches until `n` entries have arrived.
pub async fn take_entries(
    stream: &mut Streaming<pb::SubscribeResponse>,
    n: usize,
) -> Vec<pb::Entry> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(next_batch(stream).await.expect("a batch"));
    }
    out
}

/// IDs of entries.
pub fn ids(entries: &[pb::Entry]) -> Vec<String> {
    entries.iter().map(|e| e.id.clone()).collect()
}

/// Arranges pending entries directly in Redis: `consumer` of `group`
/// (created from the stream's start if missing) reads up to `count` new
/// entries without acking them. Returns their IDs.
pub fn read_directly(
    redis: &RedisServer,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
) -> Vec<String> {
    let mut conn = redis.conn();
    let _: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg(&["CREATE", stream, group, "0", "MKSTREAM"][..])
        .query(&mut conn);
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg(
            &[
                "GROUP",
                group,
                consumer,
                "COUNT",
                &count.to_string(),
                "STREAMS",
                stream,
                ">",
            ][..],
        )
        .query(&mut conn)
        .unwrap();
    reply
        .keys
        .into_iter()
        .flat_map(|k| k.ids)
        .map(|e| e.id)
        .collect()
}

/// Waits until the gateway's read loop for a just-closed subscription of
/// `consumer` has stopped. The loop stops within one block period (200 ms
/// in tests) of the close. The consumer's idle time counts from its last
/// successful read (Redis 7.0; callers close right after one) or its last
/// attempt (7.2+), so an idle time of five block periods means no read can
/// still be under way.
pub async fn wait_until_stopped(redis: &RedisServer, stream: &str, group: &str, consumer: &str) {
    eventually("the consumer's read loop stopped", || {
        let rows: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg(&["CONSUMERS", stream, group][..])
            .query(&mut redis.conn())
            .unwrap();
        let stopped = rows.iter().any(|r| {
            redis::from_redis_value_ref::<String>(&r["name"]).unwrap() == consumer
                && redis::from_redis_value_ref::<u64>(&r["idle"]).unwrap() > 1000
        });
        async move { stopped.then_some(()) }
    })
    .await;
}

/// Size of a group's pending entries list, read directly from Redis.
pub fn pending_count(redis: &RedisServer, stream: &str, group: &str) -> u64 {
    let summary: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query(&mut redis.conn())
        .unwrap();
    summary.0
}

/// The real gateway binary as a child process, for tests that kill it.
pub struct GatewayProcess {
    child: std::process::Child,
    /// The gRPC address it serves on.
    pub addr: String,
    args: Vec<String>,
    /// The lines it printed after `listening on`.
    lines: std::sync::mpsc::Receiver<String>,
}

impl GatewayProcess {
    /// Starts `streamgate serve` against `redis_url` on `listen`
    /// (`127.0.0.1:0` picks a port) with extra flags, and waits for its
    /// `listening on` line.
    pub fn start(redis_url: &str, listen: &str, extra: &[&str]) -> GatewayProcess {
        let mut args: Vec<String> = ["serve", "--redis-url", redis_url, "--block-ms", "200"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(args, listen)
    }

    fn spawn(args: Vec<String>, listen: &str) -> GatewayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(&args)
            .args(["--listen", listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gateway binary");
        let lines = stdout_lines(&mut child);
        let addr = listening_line(&lines);
        GatewayProcess {
            child,
            addr,
            args,
            lines,
        }
    }

    /// The process ID, for reading its memory use.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What follows `prefix` on the next line that starts with it (e.g.
    /// `metrics on `), waiting for the gateway to print it.
    pub fn line_after(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("no line starting with {prefix:?}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    /// A data-plane client.
    pub async fn events(&self) -> EventStreamClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to the gateway process");
        EventStreamClient::new(channel)
    }

    /// SIGKILL: no graceful anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the binary again on the same address after [`Self::kill`].
    pub fn restart(&mut self) {
        self.kill();
        let addr = self.addr.clone();
        *self = Self::spawn(std::mem::take(&mut self.args), &addr);
    }
}

/// Reads the gateway binary's first line, `listening on ADDR`, from its
/// piped stdout and returns ADDR.
pub fn listening_addr(child: &mut Child) -> String {
    listening_line(&stdout_lines(child))
}

fn listening_line(lines: &std::sync::mpsc::Receiver<String>) -> String {
    let line = lines
        .recv_timeout(DEADLINE)
        .expect("read the listening line");
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned()
}

/// The lines of a child's piped stdout, read by a thread that drains the
/// pipe to its end, so that the child never writes into a closed pipe
/// (which would fail its `println!`), whether or not anyone reads them.
fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The gateway's overall health status (service `""`).
pub async fn health(gw: &TestGateway) -> tonic_health::pb::health_check_response::ServingStatus {
    let response = tonic_health::pb::health_client::HealthClient::new(gw.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers");
    response.into_inner().status()
}

/// Produces `n` orders as soon as the gateway can (e.g. once Redis is back
/// after an outage) and returns their IDs.
pub async fn produce_when_up(gw: &TestGateway, stream: &str, n: usize) -> Vec<String> {
    eventually("produce works", || {
        let mut events = gw.events.clone();
        async move {
            let request = pb::ProduceRequest {
                stream: stream.to_owned(),
                events: orders(n),
                ..Default::default()
            };
            Some(events.produce(request).await.ok()?.into_inner().ids)
        }
    })
    .await
}

/// Produces to `stream` expecting a refusal; returns the status.
pub async fn produce_err(gw: &mut TestGateway, stream: &str, events: Vec<pb::Event>) -> Status {
    gw.events
        .produce(pb::ProduceRequest {
            stream: stream.to_owned(),
            events,
            ..Default::default()
        })
        .await
        .expect_err("the produce is refused")
}
