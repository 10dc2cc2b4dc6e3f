//! The auth config in the real binary: reload on SIGHUP without dropping
//! open streams, a bad file on reload keeps the old config, and the
//! warning when authentication is off.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use streamgate::pb::{self, event_stream_client::EventStreamClient};
use tonic::Code;
use tonic::transport::Channel;

use super::{bearer, with_auth};
use crate::common::{DEADLINE, RedisServer, eventually, next_batch, orders, sub, token_sha256};

/// The binary, its address and its stderr lines.
struct Process {
    child: Child,
    addr: String,
    stderr: mpsc::Receiver<String>,
}

impl Process {
    fn start(args: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--block-ms", "200"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway binary");
        let (tx, stderr) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Process {
            child,
            addr,
            stderr,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for_log(&self, needle: &str) -> String {
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(100))
                && line.contains(needle)
            {
                return line;
            }
        }
        panic!("no log line containing {needle:?}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token_config(name: &str, token: &str) -> String {
    format!(
        "[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\n\
         allow = [ {{ streams = \"*\", permissions = [\"produce\", \"consume\"] }} ]\n",
        token_sha256(token)
    )
}

async fn produce_code(events: &mut EventStreamClient<Channel>, token: &str) -> Code {
    let request = pb::ProduceRequest {
        stream: "orders".into(),
        events: orders(1),
        ..Default::default()
    };
    match events
        .produce(with_auth(request, Some(&bearer(token))))
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn sighup_reloads_tokens_keeps_open_streams_and_survives_a_bad_file() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.toml");
    std::fs::write(&path, token_config("old", "tok-old")).unwrap();
    let process = Process::start(&[
        "--redis-url",
        &redis.url(),
        "--auth-config",
        path.to_str().unwrap(),
    ]);
    let mut events = EventStreamClient::new(process.channel().await);
    assert_eq!(produce_code(&mut events, "tok-old").await, Code::Ok);
    let mut open = events
        .subscribe(with_auth(sub("orders", "g", "c"), Some(&bearer("tok-old"))))
        .await
        .expect("subscribe with the old token")
        .into_inner();
    assert_eq!(next_batch(&mut open).await.unwrap().len(), 1);

    std::fs::write(&path, token_config("new", "tok-new")).unwrap();
    process.signal("HUP");
    process.wait_for_log("auth config reloaded");
    assert_eq!(
        produce_code(&mut events, "tok-old").await,
        Code::Unauthenticated
    );
    assert_eq!(produce_code(&mut events, "tok-new").await, Code::Ok);
    // The stream opened with the old token still delivers.
    let entries = next_batch(&mut open)
        .await
        .expect("open stream survives the reload");
    assert_eq!(entries.len(), 1);

    std::fs::write(&path, "[[tokens]]\nname = \"broken\"\n").unwrap();
    process.signal("HUP");
    let line = process.wait_for_log("not reloaded");
    assert!(line.contains("ERROR"), "{line}");
    assert_eq!(produce_code(&mut events, "tok-new").await, Code::Ok);
    assert_eq!(next_batch(&mut open).await.unwrap().len(), 1);
    // The process is still the same one, serving.
    eventually("still serving", || {
        let mut events = events.clone();
        async move { (produce_code(&mut events, "tok-new").await == Code::Ok).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn the_binary_warns_when_authentication_is_off() {
    let redis = RedisServer::start();
    let process = Process::start(&["--redis-url", &redis.url()]);
    let line = process.wait_for_log("authentication is off");
    assert!(line.contains("WARN"), "{line}");
    // SIGHUP without an auth config neither kills nor changes anything.
    process.signal("HUP");
    process.wait_for_log("nothing to reload");
    let mut events = EventStreamClient::new(process.channel().await);
    assert_eq!(produce_code(&mut events, "anything").await, Code::Ok);
}
