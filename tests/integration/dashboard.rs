//! The dashboard's HTTP API (`--http-listen`): it answers through the
//! gateway's own services, so tokens, permissions and error messages are
//! the gRPC API's.

use std::net::SocketAddr;

use serde_json::Value;
use streamgate::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

use crate::common::{DEADLINE, RedisServer, TestGateway, config, orders, token_sha256};

const VIEWER: &str = "tok-dash-viewer-0123456789";
const WRITER: &str = "tok-dash-writer-0123456789";

/// A gateway with the dashboard and two tokens: `VIEWER` may inspect and
/// read `orders.*`, `WRITER` may also produce.
async fn dashboard() -> (RedisServer, TestGateway, SocketAddr, tempfile::TempDir) {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.toml");
    std::fs::write(
        &path,
        format!(
            "[[tokens]]\nname = \"viewer\"\nsha256 = \"{}\"\n\
             allow = [ {{ streams = \"orders.*\", permissions = [\"admin\", \"consume\"] }} ]\n\
             [[tokens]]\nname = \"writer\"\nsha256 = \"{}\"\n\
             allow = [ {{ streams = \"orders.*\", permissions = [\"admin\", \"consume\", \"produce\"] }} ]\n",
            token_sha256(VIEWER),
            token_sha256(WRITER)
        ),
    )
    .unwrap();
    let mut cfg = config(&redis);
    cfg.auth_config = Some(path);
    let gw = TestGateway::start(cfg).await;
    let http = dashboard_of(&gw, streamgate::dashboard::LiveLimits::default()).await;
    (redis, gw, http, dir)
}

/// Serves the dashboard with `limits` on `gw`'s in-process services, as
/// the binary does with `--http-listen`.
async fn dashboard_of(gw: &TestGateway, limits: streamgate::dashboard::LiveLimits) -> SocketAddr {
    let gateway = gw.gateway.as_ref().unwrap();
    streamgate::dashboard::serve_with_limits(
        "127.0.0.1:0".parse().unwrap(),
        streamgate::dashboard::Options {
            local: gateway.local(),
            auth_enabled: gateway.auth_enabled(),
            demo: None,
        },
        limits,
        gateway.shutdown_signal(),
        gateway.tasks(),
    )
    .await
    .expect("the dashboard starts")
}

/// One HTTP/1.1 exchange; returns the head and the body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (String, String) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request += &format!("Authorization: Bearer {token}\r\n");
    }
    if let Some(body) = body {
        request += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    } else {
        request += "\r\n";
    }
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, conn.read_to_end(&mut raw))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

async fn json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Value {
    let (head, body) = http(addr, method, path, token, body).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The gRPC error a dashboard answer carries.
fn error(answer: &Value) -> (i64, &str, &str) {
    let e = &answer["error"];
    (
        e["code"].as_i64().expect("an error code"),
        e["status"].as_str().unwrap(),
        e["message"].as_str().unwrap(),
    )
}

#[tokio::test]
async fn serves_the_embedded_page_and_says_a_token_is_needed() {
    let (_redis, _gw, http_addr, _dir) = dashboard().await;
    let (head, body) = http(http_addr, "GET", "/", None, None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert!(body.contains("<script src=\"/app.js\""));
    // Nothing but the gateway's own assets: no other host anywhere.
    for asset in ["/", "/app.js", "/style.css"] {
        let (_, body) = http(http_addr, "GET", asset, None, None).await;
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{asset} names a host"
        );
    }
    let info = json(http_addr, "GET", "/api/info", None, None).await;
    assert_eq!(info["auth"], true);
    assert_eq!(info["demo"], Value::Null);
}

#[tokio::test]
async fn without_a_token_no_stream_data_with_the_gateways_own_message() {
    let (_redis, mut gw, http_addr, _dir) = dashboard().await;
    let grpc = gw
        .admin
        .describe_stream(pb::DescribeStreamRequest {
            stream: "orders.eu".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(grpc.code(), Code::Unauthenticated);
    for path in ["/api/stream?stream=orders.eu", "/api/streams"] {
        let (head, body) = http(http_addr, "GET", path, None, None).await;
        assert!(head.contains("grpc-status: 16"), "{head}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error(&answer), (16, "UNAUTHENTICATED", grpc.message()));
    }
    let answer = json(
        http_addr,
        "GET",
        "/api/stream?stream=orders.eu",
        Some("wrong"),
        None,
    )
    .await;
    assert_eq!(error(&answer).1, "UNAUTHENTICATED");
    assert_eq!(error(&answer).2, "unknown token");
}

#[tokio::test]
async fn each_action_needs_the_permission_of_its_rpc() {
    let (redis, _gw, http_addr, _dir) = dashboard().await;
    let body = r#"{"stream":"orders.eu","count":2,"type":"order.placed"}"#;
    let refused = json(http_addr, "POST", "/api/produce", Some(VIEWER), Some(body)).await;
    let (code, status, message) = error(&refused);
    assert_eq!((code, status), (7, "PERMISSION_DENIED"));
    assert!(
        message.contains("viewer") && message.contains("produce") && message.contains("orders.eu"),
        "{message}"
    );
    let len: u64 = redis::cmd("XLEN")
        .arg("orders.eu")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(len, 0, "a refused action changed Redis");

    let done = json(http_addr, "POST", "/api/produce", Some(WRITER), Some(body)).await;
    assert_eq!(done["ids"].as_array().unwrap().len(), 2);
    let len: u64 = redis::cmd("XLEN")
        .arg("orders.eu")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(len, 2);

    // Streams outside the grants are refused like over gRPC.
    let outside = json(
        http_addr,
        "GET",
        "/api/stream?stream=payments",
        Some(WRITER),
        None,
    )
    .await;
    assert_eq!(error(&outside).1, "PERMISSION_DENIED");

    // The view shows what the admin RPCs report.
    let _: String = redis::cmd("XADD")
        .arg("orders.eu")
        .arg("*")
        .arg("a")
        .arg("1")
        .query(&mut redis.conn())
        .unwrap();
    let view = json(
        http_addr,
        "GET",
        "/api/stream?stream=orders.eu",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(view["length"], 3);
    assert_eq!(view["exists"], true);
    let streams = json(http_addr, "GET", "/api/streams", Some(VIEWER), None).await;
    assert_eq!(streams["streams"][0]["name"], "orders.eu");
}

#[tokio::test]
async fn invalid_requests_get_the_same_status_and_message_as_over_grpc() {
    let (_redis, mut gw, http_addr, _dir) = dashboard().await;
    let mut request = tonic::Request::new(pb::ReplayRequest {
        stream: "orders.eu".into(),
        start: "bogus".into(),
        limit: 20,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {VIEWER}").parse().unwrap());
    let grpc = gw.events.replay(request).await.unwrap_err();
    assert_eq!(grpc.code(), Code::InvalidArgument);
    let answer = json(
        http_addr,
        "POST",
        "/api/replay",
        Some(VIEWER),
        Some(r#"{"stream":"orders.eu","start":"bogus"}"#),
    )
    .await;
    assert_eq!(error(&answer), (3, "INVALID_ARGUMENT", grpc.message()));

    let answer = json(
        http_addr,
        "POST",
        "/api/remove-consumer",
        Some(WRITER),
        Some(r#"{"stream":"orders.eu","group":"nope","consumer":"c"}"#),
    )
    .await;
    assert_eq!(error(&answer).1, "NOT_FOUND");
    let answer = json(
        http_addr,
        "POST",
        "/api/trim",
        Some(WRITER),
        Some(r#"{"stream":"orders.eu","max_len":1,"mode":"sideways"}"#),
    )
    .await;
    assert_eq!(error(&answer).1, "INVALID_ARGUMENT");
    let answer = json(
        http_addr,
        "POST",
        "/api/demo/reset",
        Some(WRITER),
        Some("{}"),
    )
    .await;
    assert_eq!(error(&answer).1, "FAILED_PRECONDITION");
}

#[tokio::test]
async fn the_live_view_pushes_new_entries_without_polling_by_the_page() {
    let (redis, mut gw, http_addr, _dir) = dashboard().await;
    let _: String = redis::cmd("XADD")
        .arg("orders.eu")
        .arg("*")
        .arg("a")
        .arg("1")
        .query(&mut redis.conn())
        .unwrap();
    let mut conn = TcpStream::connect(http_addr).await.unwrap();
    conn.write_all(
        format!(
            "GET /api/live?stream=orders.eu HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {VIEWER}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    // The first snapshot and the newest entries arrive first.
    while !(seen.contains("event: snapshot") && seen.contains("event: entries")) {
        let n = tokio::time::timeout(DEADLINE, conn.read(&mut buf))
            .await
            .expect("live data")
            .unwrap();
        assert!(n > 0, "the live view ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let mut writer = tonic::Request::new(pb::ProduceRequest {
        stream: "orders.eu".into(),
        events: orders(1),
        ..Default::default()
    });
    writer
        .metadata_mut()
        .insert("authorization", format!("Bearer {WRITER}").parse().unwrap());
    let id = gw
        .events
        .produce(writer)
        .await
        .unwrap()
        .into_inner()
        .ids
        .remove(0);
    while !seen.contains(&id) {
        let n = tokio::time::timeout(DEADLINE, conn.read(&mut buf))
            .await
            .expect("the new entry")
            .unwrap();
        assert!(n > 0, "the live view ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// `streamgate demo`'s controls through the dashboard: a crashed consumer's
/// entries stay pending until `Reclaim` hands them to a consumer that
/// processes them, with delivery count 2.
#[tokio::test]
async fn the_demo_crash_and_reclaim_story() {
    let redis = RedisServer::start();
    let gw = TestGateway::start(config(&redis)).await;
    // The gateway is already running: only the demo's own settings count.
    let demo = streamgate::demo::DemoSettings {
        http_listen: "127.0.0.1:0".parse().unwrap(),
        claim_min_idle_ms: 100,
        ..Default::default()
    };
    let http_addr = streamgate::demo::start(gw.gateway.as_ref().unwrap(), &demo)
        .await
        .expect("the demo starts");
    let info = json(http_addr, "GET", "/api/info", None, None).await;
    assert_eq!(info["demo"]["stream"], "demo:events:orders");

    let crash = json(
        http_addr,
        "POST",
        "/api/demo/crash",
        None,
        Some(r#"{"consumer":"worker-c"}"#),
    )
    .await;
    assert_eq!(crash["message"], "worker-c will drop its next 3 deliveries");
    let produced = json(
        http_addr,
        "POST",
        "/api/produce",
        None,
        Some(r#"{"stream":"demo:events:orders","count":3}"#),
    )
    .await;
    let ids: Vec<String> = produced["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let pending = crate::common::eventually("3 pending for worker-c", || async {
        let view = json(
            http_addr,
            "GET",
            "/api/stream?stream=demo:events:orders",
            None,
            None,
        )
        .await;
        let group = view["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "analytics")
            .cloned()?;
        (group["pending"] == 3).then_some(group)
    })
    .await;
    for entry in pending["pending_entries"].as_array().unwrap() {
        assert_eq!(entry["consumer"], "worker-c");
        assert_eq!(entry["delivery_count"], 1);
    }
    // The notifications group processed all three meanwhile.
    crate::common::eventually("notifications done", || async {
        let view = json(
            http_addr,
            "GET",
            "/api/stream?stream=demo:events:orders",
            None,
            None,
        )
        .await;
        let group = view["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "notifications")
            .cloned()?;
        (group["pending"] == 0 && group["last_delivered_id"] == ids[2].as_str()).then_some(())
    })
    .await;

    let reclaim = r#"{"stream":"demo:events:orders","group":"analytics","consumer":"worker-c","min_idle_ms":100}"#;
    crate::common::eventually("the reclaim of 3", || async {
        let answer = json(http_addr, "POST", "/api/reclaim", None, Some(reclaim)).await;
        (answer["claimed"].as_array().unwrap().len() == 3).then_some(())
    })
    .await;
    crate::common::eventually("processed with delivery count 2", || async {
        let view = json(
            http_addr,
            "GET",
            "/api/stream?stream=demo:events:orders",
            None,
            None,
        )
        .await;
        let worker = view["demo"]["consumers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["consumer"] == "worker-c")
            .cloned()?;
        let redelivered: Vec<&str> = worker["recent"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["delivery_count"] == 2 && r["outcome"] == "processed")
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        let analytics = view["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "analytics")
            .cloned()?;
        (redelivered.len() == 3
            && ids.iter().all(|id| redelivered.contains(&id.as_str()))
            && analytics["pending"] == 0)
            .then_some(())
    })
    .await;
}

/// A gateway without tokens and its dashboard with `limits`.
async fn limited_dashboard(
    limits: streamgate::dashboard::LiveLimits,
) -> (RedisServer, TestGateway, SocketAddr) {
    let redis = RedisServer::start();
    let gw = TestGateway::start(config(&redis)).await;
    let http_addr = dashboard_of(&gw, limits).await;
    (redis, gw, http_addr)
}

/// Opens a live view on a connection whose receive buffer is small, so
/// that a page that stops reading stops taking bytes soon.
async fn open_live(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    conn
}

/// Reads until `seen` contains `needle`; returns everything read so far.
async fn read_until(conn: &mut TcpStream, seen: &mut String, needle: &str) {
    let mut buf = vec![0u8; 64 * 1024];
    while !seen.contains(needle) {
        let n = tokio::time::timeout(DEADLINE, conn.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in time: {seen}"))
            .unwrap();
        assert!(n > 0, "the live view ended before {needle:?}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Opens a live view and returns its head and first event, or the whole
/// answer when it is a refusal (which ends at once).
async fn first_live_event(addr: SocketAddr, path: &str) -> (TcpStream, String) {
    let mut conn = open_live(addr, path).await;
    let mut seen = String::new();
    read_until(&mut conn, &mut seen, "\r\n\r\n").await;
    // An event ends with an empty line.
    let mut buf = vec![0u8; 64 * 1024];
    while !seen.split_once("\r\n\r\n").unwrap().1.contains("\n\n") {
        let n = tokio::time::timeout(DEADLINE, conn.read(&mut buf))
            .await
            .expect("a first event in time")
            .unwrap();
        assert!(n > 0, "the live view ended without an event: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    (conn, seen)
}

/// Whether a live view answer is the refusal for too many views.
fn refused_for_too_many(answer: &str) -> bool {
    answer.contains("grpc-status: 8")
        && answer.contains("event: error")
        && answer.contains("RESOURCE_EXHAUSTED")
        && answer.contains("at most")
}

#[tokio::test]
async fn live_views_beyond_the_limit_are_refused_until_a_page_leaves() {
    let limits = streamgate::dashboard::LiveLimits {
        max_views: 2,
        ..Default::default()
    };
    let (_redis, _gw, http_addr) = limited_dashboard(limits).await;
    let (first, answer) = first_live_event(http_addr, "/api/live").await;
    assert!(answer.contains("event: streams"), "{answer}");
    let (_second, answer) = first_live_event(http_addr, "/api/live?stream=s").await;
    assert!(answer.contains("event: snapshot"), "{answer}");
    let (_, answer) = first_live_event(http_addr, "/api/live").await;
    assert!(refused_for_too_many(&answer), "a third view: {answer}");
    assert!(answer.contains("at most 2 live views"), "{answer}");

    // The first page leaves: its place is free again.
    drop(first);
    crate::common::eventually("a place for a new page", || async {
        let (_, answer) = first_live_event(http_addr, "/api/live").await;
        answer.contains("event: streams").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_page_that_reads_nothing_is_disconnected_and_gives_its_place_back() {
    let limits = streamgate::dashboard::LiveLimits {
        max_views: 1,
        stall: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let (redis, _gw, http_addr) = limited_dashboard(limits).await;
    let _: String = redis::cmd("XADD")
        .arg("flood")
        .arg("*")
        .arg("f")
        .arg("first")
        .query(&mut redis.conn())
        .unwrap();
    let mut silent = open_live(http_addr, "/api/live?stream=flood").await;
    let mut seen = String::new();
    read_until(&mut silent, &mut seen, "first").await;
    let (_, answer) = first_live_event(http_addr, "/api/live?stream=flood").await;
    assert!(refused_for_too_many(&answer), "{answer}");

    // From now on the page reads nothing, while the stream gets far more
    // than the socket buffers, the HTTP server and the page's outbox
    // together can hold.
    let value = "v".repeat(8 * 1024);
    let mut flood = redis::pipe();
    for _ in 0..2048 {
        flood
            .cmd("XADD")
            .arg("flood")
            .arg("*")
            .arg("f")
            .arg(&value)
            .ignore();
    }
    let () = flood.query(&mut redis.conn()).unwrap();

    crate::common::eventually("the silent page's place", || async {
        let (_, answer) = first_live_event(http_addr, "/api/live?stream=flood").await;
        answer.contains("event: snapshot").then_some(())
    })
    .await;
    drop(silent);
}

#[tokio::test]
async fn an_entry_too_large_to_show_is_sent_without_its_fields() {
    let (redis, _gw, http_addr) =
        limited_dashboard(streamgate::dashboard::LiveLimits::default()).await;
    let huge = "h".repeat(1024 * 1024);
    let xadd = |value: &str| -> String {
        redis::cmd("XADD")
            .arg("big")
            .arg("*")
            .arg("f")
            .arg(value)
            .query(&mut redis.conn())
            .unwrap()
    };
    let old = xadd(&huge);
    let mut conn = open_live(http_addr, "/api/live?stream=big").await;
    let mut seen = String::new();
    read_until(&mut conn, &mut seen, &old).await;
    let new = xadd(&huge);
    let small = xadd("small");
    read_until(&mut conn, &mut seen, &small).await;
    assert!(!seen.contains(&huge[..20 * 1024]), "a huge value was sent");
    assert!(seen.len() < 64 * 1024, "{} bytes sent", seen.len());
    // Both large ones (the newest at opening, then the tailed one) are
    // there, with their size; the small one whole.
    let entries: Vec<Value> = seen
        .split("\n\n")
        .filter_map(|event| event.split_once("event: entries\ndata: "))
        .flat_map(|(_, data)| {
            let data: Value = serde_json::from_str(data).unwrap();
            data["entries"].as_array().unwrap().clone()
        })
        .collect();
    let by_id = |id: &str| entries.iter().find(|e| e["id"] == id).cloned().unwrap();
    for id in [&old, &new] {
        let entry = by_id(id);
        assert!(
            entry["omitted_bytes"].as_u64().unwrap() >= 1024 * 1024,
            "{entry}"
        );
        assert_eq!(entry["fields"], serde_json::json!({}));
    }
    assert_eq!(by_id(&small)["fields"]["f"], "small");
}

/// A partitioned stream's view lists its partitions with their keys and
/// lengths, summing to the stream's length.
#[tokio::test]
async fn the_view_of_a_partitioned_stream_lists_its_partitions() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    let http_addr = dashboard_of(&gw, streamgate::dashboard::LiveLimits::default()).await;
    gw.admin
        .create_stream(pb::CreateStreamRequest {
            stream: "payments".into(),
            partitions: 3,
        })
        .await
        .unwrap();
    let events = (0..12)
        .map(|n| {
            let mut e = crate::common::event("payment.captured", &[]);
            e.key = format!("customer-{n}");
            e
        })
        .collect();
    crate::common::produce(&mut gw, "payments", events).await;
    let view = json(http_addr, "GET", "/api/stream?stream=payments", None, None).await;
    assert_eq!(view["length"], 12);
    let partitions = view["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 3);
    let total: u64 = partitions
        .iter()
        .map(|p| p["length"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 12);
    assert_eq!(partitions[2]["key"], "payments{2");
}

/// Ordered consumption in the view: each group lists the owner of every
/// partition, and the owners move as consumers come and go.
#[tokio::test]
async fn the_view_shows_which_consumer_owns_each_partition() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    let http_addr = dashboard_of(&gw, streamgate::dashboard::LiveLimits::default()).await;
    gw.admin
        .create_stream(pb::CreateStreamRequest {
            stream: "payments".into(),
            partitions: 4,
        })
        .await
        .unwrap();
    let ordered = |consumer: &str| pb::SubscribeRequest {
        ordered: true,
        ..crate::common::sub("payments", "billing", consumer)
    };
    // Waits until the view's owners are `want`, partition by partition
    // sorted (which consumer gets which partitions is the gateway's
    // choice; how many is not).
    let shows = |want: &'static [&'static str]| async move {
        crate::common::eventually(&format!("owners {want:?}"), || async {
            let view = json(http_addr, "GET", "/api/stream?stream=payments", None, None).await;
            let mut owners: Vec<String> = (view["groups"][0]["owners"].as_array()?.iter())
                .map(|o| o.as_str().unwrap_or_default().to_owned())
                .collect();
            owners.sort();
            (owners == want).then_some(())
        })
        .await
    };
    let a = crate::common::subscribe(&mut gw, ordered("a")).await;
    shows(&["a", "a", "a", "a"]).await;
    let b = crate::common::subscribe(&mut gw, ordered("b")).await;
    shows(&["a", "a", "b", "b"]).await;
    drop(a);
    shows(&["b", "b", "b", "b"]).await;
    drop(b);
    shows(&["", "", "", ""]).await;
}
