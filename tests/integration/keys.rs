//! Partition keys on plain streams: `Event.key` is stored in the reserved
//! field `partition_key` and comes back as `Entry.key` through every read.

use std::collections::HashMap;

use redis::Commands;
use streamgate::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::common::{
    DEADLINE, TestGateway, event, eventually, produce, produce_err, read_directly, setup, sub,
    subscribe, take_entries, take_tail_entries,
};

/// An event with a type, one field and a partition key.
fn keyed(key: &str, order_id: &str) -> pb::Event {
    pb::Event {
        key: key.to_owned(),
        ..event("order.placed", &[("order_id", order_id)])
    }
}

/// Every entry of `stream`, read through Replay.
async fn replay_all(gw: &mut TestGateway, stream: &str) -> Vec<pb::Entry> {
    let mut pages = gw
        .events
        .replay(pb::ReplayRequest {
            stream: stream.to_owned(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("replay")
        .into_inner();
    let mut out = Vec::new();
    while let Some(page) = pages.message().await.expect("replay page") {
        out.extend(page.entries);
    }
    out
}

/// The raw field/value pairs of every entry of `stream`, read from Redis.
fn stored(redis: &crate::common::RedisServer, stream: &str) -> Vec<HashMap<String, Vec<u8>>> {
    let entries: Vec<(String, HashMap<String, Vec<u8>>)> =
        redis.conn().xrange(stream, "-", "+").unwrap();
    entries.into_iter().map(|(_, fields)| fields).collect()
}

/// (id, key, order_id) of each entry, to compare reads at a glance.
fn keys(entries: &[pb::Entry]) -> Vec<(String, String, String)> {
    entries
        .iter()
        .map(|e| (e.id.clone(), e.key.clone(), e.fields["order_id"].clone()))
        .collect()
}

#[tokio::test]
async fn a_key_is_stored_as_partition_key_and_read_back_by_every_read() {
    let (redis, mut gw) = setup().await;
    let mut tail = gw
        .events
        .tail(pb::TailRequest {
            stream: "orders".into(),
            start_id: "0".into(),
            batch_size: 2,
            ..Default::default()
        })
        .await
        .expect("tail")
        .into_inner();
    let events = vec![
        keyed("customer-7", "o-1"),
        event("order.placed", &[("order_id", "o-2")]),
        keyed("kunde-\u{e9}", "o-3"),
    ];
    let ids = produce(&mut gw, "orders", events).await;
    let expected = vec![
        (ids[0].clone(), "customer-7".to_owned(), "o-1".to_owned()),
        (ids[1].clone(), String::new(), "o-2".to_owned()),
        (ids[2].clone(), "kunde-\u{e9}".to_owned(), "o-3".to_owned()),
    ];

    let raw = stored(&redis, "orders");
    assert_eq!(raw[0]["partition_key"], b"customer-7");
    assert!(
        !raw[1].contains_key("partition_key"),
        "no key, no field: {:?}",
        raw[1]
    );
    assert_eq!(raw[2]["partition_key"], "kunde-\u{e9}".as_bytes());
    assert_eq!(raw[0]["type"], b"order.placed");
    assert!(raw[0].contains_key("ts_ms"));

    let replayed = replay_all(&mut gw, "orders").await;
    assert_eq!(keys(&replayed), expected);
    for entry in &replayed {
        assert_eq!(entry.partition, 0, "a plain stream has no partitions");
        assert!(
            !entry.fields.contains_key("partition_key") && entry.binary_fields.is_empty(),
            "the key is not a user field: {entry:?}"
        );
    }
    let mut s = subscribe(&mut gw, sub("orders", "g", "w")).await;
    assert_eq!(keys(&take_entries(&mut s, 3).await), expected);
    assert_eq!(keys(&take_tail_entries(&mut tail, 3).await), expected);
}

#[tokio::test]
async fn produce_stream_and_the_idempotent_path_keep_the_key() {
    let (redis, mut gw) = setup().await;
    let idempotent = || pb::Event {
        idempotency_key: "order-1".into(),
        ..keyed("customer-1", "o-1")
    };
    let first = produce(&mut gw, "orders", vec![idempotent(), keyed("", "o-2")]).await;
    let retry = produce(&mut gw, "orders", vec![idempotent()]).await;
    assert_eq!(retry[0], first[0], "the retry writes nothing twice");

    let (requests, rx) = mpsc::channel(4);
    requests
        .send(pb::ProduceRequest {
            stream: "orders".into(),
            events: vec![keyed("customer-3", "o-3")],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut answers = gw
        .events
        .produce_stream(ReceiverStream::new(rx))
        .await
        .expect("ProduceStream opens")
        .into_inner();
    let answer = tokio::time::timeout(DEADLINE, answers.message())
        .await
        .expect("an answer within the deadline")
        .expect("the stream goes on")
        .expect("an answer");
    assert_eq!((answer.code, answer.ids.len()), (0, 1), "{answer:?}");
    drop(requests);

    let raw = stored(&redis, "orders");
    assert_eq!(raw.len(), 3);
    assert_eq!(raw[0]["partition_key"], b"customer-1");
    assert!(!raw[1].contains_key("partition_key"));
    assert_eq!(raw[2]["partition_key"], b"customer-3");
    let replayed = replay_all(&mut gw, "orders").await;
    let expected = vec![
        (first[0].clone(), "customer-1".to_owned(), "o-1".to_owned()),
        (first[1].clone(), String::new(), "o-2".to_owned()),
        (
            answer.ids[0].clone(),
            "customer-3".to_owned(),
            "o-3".to_owned(),
        ),
    ];
    assert_eq!(keys(&replayed), expected);
}

#[tokio::test]
async fn a_partition_key_written_by_another_program_is_kept_losslessly() {
    let (redis, mut gw) = setup().await;
    let mut conn = redis.conn();
    let foreign: String = redis::cmd("XADD")
        .arg("orders")
        .arg("*")
        .arg("partition_key")
        .arg(&b"\xff\xfe"[..])
        .arg("order_id")
        .arg("o-1")
        .query(&mut conn)
        .unwrap();
    let utf8: String = redis::cmd("XADD")
        .arg("orders")
        .arg("*")
        .arg("partition_key")
        .arg("customer-2")
        .arg("order_id")
        .arg("o-2")
        .query(&mut conn)
        .unwrap();

    let entries = replay_all(&mut gw, "orders").await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].id, foreign);
    assert_eq!(entries[0].key, "");
    assert_eq!(
        entries[0].binary_fields.get("partition_key"),
        Some(&b"\xff\xfe".to_vec())
    );
    assert_eq!(entries[1].id, utf8);
    assert_eq!(entries[1].key, "customer-2");
    assert!(!entries[1].fields.contains_key("partition_key"));
}

#[tokio::test]
async fn a_user_field_partition_key_and_an_overlong_key_are_refused() {
    let (redis, mut gw) = setup().await;
    let text = event("ok", &[("partition_key", "x")]);
    let status = produce_err(&mut gw, "orders", vec![keyed("k", "o-1"), text]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("events[1].fields")
            && status.message().contains("\"partition_key\" is reserved"),
        "{status:?}"
    );
    let mut binary = event("ok", &[]);
    binary
        .binary_fields
        .insert("partition_key".into(), b"x".to_vec());
    let status = produce_err(&mut gw, "orders", vec![binary]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("events[0].binary_fields"),
        "{status:?}"
    );

    // Partition keys have at most 1024 bytes.
    let at_bound = "k".repeat(1024);
    let over = format!("{at_bound}k");
    let status = produce_err(
        &mut gw,
        "orders",
        vec![keyed(&at_bound, "o-1"), keyed(&over, "o-2")],
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("events[1].key") && status.message().contains("1025"),
        "{status:?}"
    );
    assert!(
        !redis.conn().exists::<_, bool>("orders").unwrap(),
        "a refused batch writes nothing"
    );
    let ids = produce(&mut gw, "orders", vec![keyed(&at_bound, "o-1")]).await;
    assert_eq!(ids.len(), 1, "a key at the bound is accepted");
}

#[tokio::test]
async fn reaped_and_dead_lettered_entries_keep_their_key() {
    let (redis, mut gw) = setup().await;
    let produced = produce(
        &mut gw,
        "orders",
        vec![keyed("customer-1", "o-1"), keyed("customer-2", "o-2")],
    )
    .await;
    read_directly(&redis, "orders", "g", "worker-a", 2);
    let reaped = gw
        .events
        .reap(pb::ReapRequest {
            stream: "orders".into(),
            group: "g".into(),
            consumer: "worker-b".into(),
            ..Default::default()
        })
        .await
        .expect("reap")
        .into_inner()
        .claimed;
    assert_eq!(
        keys(&reaped),
        vec![
            (
                produced[0].clone(),
                "customer-1".to_owned(),
                "o-1".to_owned()
            ),
            (
                produced[1].clone(),
                "customer-2".to_owned(),
                "o-2".to_owned()
            ),
        ]
    );

    // Both entries have been delivered twice; with at most two deliveries
    // the next reclaim round moves them to the dead-letter stream.
    let mut req = sub("orders", "g", "worker-c");
    req.reclaim = Some(pb::Reclaim {
        min_idle_ms: 1,
        interval_ms: 50,
    });
    req.max_deliveries = 2;
    let _reclaiming = subscribe(&mut gw, req).await;
    let mut conn = redis.conn();
    eventually("both entries are dead-lettered", || {
        let len: u64 = conn.xlen("orders:dlq").unwrap();
        async move { (len == 2).then_some(()) }
    })
    .await;
    let raw = stored(&redis, "orders:dlq");
    assert_eq!(raw[0]["partition_key"], b"customer-1");
    let dead = replay_all(&mut gw, "orders:dlq").await;
    let dead: Vec<_> = dead
        .iter()
        .map(|e| (e.key.as_str(), e.fields["dlq.id"].as_str()))
        .collect();
    assert_eq!(
        dead,
        [
            ("customer-1", produced[0].as_str()),
            ("customer-2", produced[1].as_str())
        ]
    );
}
