//! Produce: pipelined XADD, reserved fields, retention caps.

use std::collections::HashMap;

use redis::Commands;
use streamgate::pb;

use crate::common::{GatewayProcess, RedisServer, event, orders, produce, setup};

#[tokio::test]
async fn ids_come_back_in_request_order_with_reserved_fields_written() {
    let (redis, mut gw) = setup().await;
    let events = vec![
        event("order.placed", &[("order_id", "o-1"), ("amount", "49.50")]),
        event("order.paid", &[("order_id", "o-1")]),
        event("order.shipped", &[("order_id", "o-1")]),
    ];
    let ids = produce(&mut gw, "orders", events).await;
    assert_eq!(ids.len(), 3);

    let mut conn = redis.conn();
    let stored: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("orders")
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    let stored_ids: Vec<_> = stored.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(stored_ids, ids, "ids are returned in request order");
    let types: Vec<_> = stored.iter().map(|(_, f)| f["type"].as_str()).collect();
    assert_eq!(types, ["order.placed", "order.paid", "order.shipped"]);
    let first = &stored[0].1;
    assert_eq!(first["order_id"], "o-1");
    assert_eq!(first["amount"], "49.50");
    let ts: i64 = first["ts_ms"].parse().expect("ts_ms is a number");
    assert!(ts > 1_600_000_000_000, "ts_ms is a Unix time in ms: {ts}");
}

#[tokio::test]
async fn binary_fields_are_stored_byte_for_byte() {
    let (redis, mut gw) = setup().await;
    let mut e = event("blob", &[]);
    e.binary_fields
        .insert("payload".into(), vec![0xff, 0x00, 0xfe]);
    let ids = produce(&mut gw, "bin", vec![e]).await;
    let mut conn = redis.conn();
    let stored: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
        .arg("bin")
        .arg(&ids[0])
        .arg(&ids[0])
        .query(&mut conn)
        .unwrap();
    assert_eq!(stored[0].1["payload"], vec![0xff, 0x00, 0xfe]);
}

#[tokio::test]
async fn approximate_cap_bounds_the_stream_and_exact_cap_is_exact() {
    let (redis, mut gw) = setup().await;
    for _ in 0..10 {
        gw.events
            .produce(pb::ProduceRequest {
                stream: "capped".into(),
                events: orders(100),
                max_len: Some(50),
                exact: false,
            })
            .await
            .unwrap();
    }
    let mut conn = redis.conn();
    let len: u64 = conn.xlen("capped").unwrap();
    // `~` trims whole macro nodes (at most 100 entries each), never below
    // the cap.
    assert!(
        (50..=150).contains(&len),
        "approximate cap left {len} entries"
    );

    gw.events
        .produce(pb::ProduceRequest {
            stream: "exact".into(),
            events: orders(30),
            max_len: Some(7),
            exact: true,
        })
        .await
        .unwrap();
    assert_eq!(conn.xlen::<_, u64>("exact").unwrap(), 7);
}

#[tokio::test]
async fn server_default_cap_applies_and_zero_disables_it() {
    let redis = crate::common::RedisServer::start();
    let mut config = crate::common::config(&redis);
    config.max_len = 5;
    let mut gw = crate::common::TestGateway::start(config).await;
    for _ in 0..3 {
        produce(&mut gw, "default-cap", orders(300)).await;
    }
    let mut conn = redis.conn();
    let len: u64 = conn.xlen("default-cap").unwrap();
    assert!(
        (5..=105).contains(&len),
        "the server's --max-len trims: {len} entries left"
    );

    gw.events
        .produce(pb::ProduceRequest {
            stream: "uncapped".into(),
            events: orders(300),
            max_len: Some(0),
            exact: false,
        })
        .await
        .unwrap();
    assert_eq!(conn.xlen::<_, u64>("uncapped").unwrap(), 300);
}

#[tokio::test]
async fn key_prefix_namespaces_every_key() {
    let redis = crate::common::RedisServer::start();
    let mut config = crate::common::config(&redis);
    config.key_prefix = "tenant-a:".into();
    let mut gw = crate::common::TestGateway::start(config).await;
    produce(&mut gw, "orders", orders(2)).await;
    let mut conn = redis.conn();
    let keys: Vec<String> = conn.keys("*").unwrap();
    assert_eq!(keys, ["tenant-a:orders"]);
}

/// A client may start thousands of calls at once on one connection: the
/// gateway accepts a bounded number of streams and the client queues the
/// rest, instead of h2 closing the whole connection (GOAWAY
/// ENHANCE_YOUR_CALM) when the small request frames pile up unread. The
/// gateway runs as its own process, so that the burst reaches it as it
/// would from a real client.
#[tokio::test]
async fn ten_thousand_calls_started_at_once_on_one_connection_all_succeed() {
    let redis = RedisServer::start();
    let gateway = GatewayProcess::start(&redis.url(), "127.0.0.1:0", &[]);
    let client = gateway.events().await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..10_000 {
        let mut events = client.clone();
        calls.spawn(async move {
            let request = pb::ProduceRequest {
                stream: "orders".into(),
                events: vec![event("order.placed", &[("n", &i.to_string())])],
                ..Default::default()
            };
            events.produce(request).await.map(|r| r.into_inner().ids)
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(call) = calls.join_next().await {
        let produced = call.unwrap().expect("every call succeeds");
        ids.extend(produced);
    }
    assert_eq!(ids.len(), 10_000);
    let len: u64 = redis::cmd("XLEN")
        .arg("orders")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(len, 10_000);
}

/// The bound behind the test above, as the gateway advertises it in its
/// HTTP/2 SETTINGS: every subscription a connection may hold
/// (`--max-subscriptions-per-connection`) plus 1024 calls in flight.
#[tokio::test]
async fn the_gateway_advertises_a_bound_on_concurrent_streams() {
    let redis = RedisServer::start();
    let gateway = GatewayProcess::start(
        &redis.url(),
        "127.0.0.1:0",
        &["--max-subscriptions-per-connection", "300"],
    );
    let tcp = tokio::net::TcpStream::connect(&gateway.addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    // The server's SETTINGS arrive with its first frames; a request makes
    // sure they have been read.
    let mut send = send.ready().await.unwrap();
    let request = tonic::codegen::http::Request::post(format!(
        "http://{}/grpc.health.v1.Health/Check",
        gateway.addr
    ))
    .header("content-type", "application/grpc")
    .body(())
    .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    response.await.unwrap();
    assert_eq!(send.current_max_send_streams(), 300 + 1024);
}
