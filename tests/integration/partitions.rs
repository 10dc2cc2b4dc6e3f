//! Partitioned streams on one Redis: the layout recorded in Redis and seen
//! by every gateway, events routed by the documented hash of their key,
//! and the admin views summed over the partitions.

use std::collections::HashMap;

use redis::Commands;
use streamgate::pb;
use tonic::Code;

use crate::common::{
    RedisServer, TestGateway, config, event, ids, next_batch, produce, produce_err, sub, subscribe,
    take_tail_entries,
};

/// FNV-1a, 32 bits: the documented partition hash, written here from its
/// definition.
fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 2_166_136_261;
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(16_777_619);
    }
    hash
}

/// The Redis key of partition `p` of `stream` (no key prefix).
fn partition_key(stream: &str, p: u32) -> String {
    format!("{stream}{{{p}")
}

async fn create(gw: &mut TestGateway, stream: &str, partitions: u32) -> pb::CreateStreamResponse {
    gw.admin
        .create_stream(pb::CreateStreamRequest {
            stream: stream.into(),
            partitions,
        })
        .await
        .expect("CreateStream")
        .into_inner()
}

async fn create_err(gw: &mut TestGateway, stream: &str, partitions: u32) -> tonic::Status {
    gw.admin
        .create_stream(pb::CreateStreamRequest {
            stream: stream.into(),
            partitions,
        })
        .await
        .expect_err("CreateStream refused")
}

fn keyed(key: &str, n: usize) -> pb::Event {
    let mut e = event("order.placed", &[("n", &n.to_string())]);
    e.key = key.into();
    e
}

/// A gateway on a fresh Redis, a stream of `partitions` partitions and
/// `n` events with distinct keys produced to it (their IDs).
async fn with_keyed_events(
    stream: &str,
    partitions: u32,
    n: usize,
) -> (RedisServer, TestGateway, Vec<String>) {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    create(&mut gw, stream, partitions).await;
    let events = (0..n).map(|i| keyed(&format!("{stream}-{i}"), i)).collect();
    let produced = produce(&mut gw, stream, events).await;
    (redis, gw, produced)
}

/// `<partition>/<ms>-<seq>` split.
fn split(id: &str) -> (u32, &str) {
    let (p, rest) = id.split_once('/').expect("a partition-qualified ID");
    (p.parse().expect("a partition number"), rest)
}

#[tokio::test]
async fn create_stream_records_the_layout_once_and_refuses_another_count() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    let made = create(&mut gw, "orders", 4).await;
    assert_eq!((made.created, made.partitions), (true, 4));
    let again = create(&mut gw, "orders", 4).await;
    assert_eq!((again.created, again.partitions), (false, 4));
    let status = create_err(&mut gw, "orders", 8).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("4 partitions"), "{status:?}");
    // Every partition exists, empty.
    let mut conn = redis.conn();
    for p in 0..4 {
        let len: u64 = conn.xlen(partition_key("orders", p)).unwrap();
        assert_eq!(len, 0);
    }

    // A plain stream cannot become a partitioned one.
    produce(&mut gw, "plain", vec![event("t", &[])]).await;
    let status = create_err(&mut gw, "plain", 3).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("plain stream"), "{status:?}");
    let plain = create(&mut gw, "plain", 1).await;
    assert_eq!((plain.created, plain.partitions), (false, 0));
    // 0 creates an empty plain stream.
    let empty = create(&mut gw, "empty", 0).await;
    assert_eq!((empty.created, empty.partitions), (true, 0));
    let len: u64 = conn.xlen("empty").unwrap();
    assert_eq!(len, 0);

    let status = create_err(&mut gw, "huge", 5000).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("partitions"), "{status:?}");
}

/// Consume on a partitioned stream: entries with qualified IDs, acks
/// routed to their partitions and confirmed with the IDs as given; an
/// unqualified ID ends the call with INVALID_ARGUMENT naming the form.
#[tokio::test]
async fn consume_acks_by_partition() {
    let (redis, mut gw, produced) = with_keyed_events("jobs", 3, 9).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(open("jobs", "workers", "w")).await.unwrap();
    let mut responses = gw
        .events
        .consume(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("consume")
        .into_inner();
    let mut got = Vec::new();
    while got.len() < produced.len() {
        match responses
            .message()
            .await
            .expect("a message")
            .expect("open")
            .kind
        {
            Some(pb::consume_response::Kind::Batch(batch)) => got.extend(batch.entries),
            _ => continue,
        }
    }
    let mut got_ids: Vec<String> = got.iter().map(|e| e.id.clone()).collect();
    got_ids.sort();
    let mut expected = produced.clone();
    expected.sort();
    assert_eq!(got_ids, expected);

    let acked = vec![
        produced[0].clone(),
        produced[5].clone(),
        produced[7].clone(),
    ];
    tx.send(pb::ConsumeRequest {
        kind: Some(pb::consume_request::Kind::Ack(pb::AckIds {
            ids: acked.clone(),
        })),
    })
    .await
    .unwrap();
    let confirm = loop {
        match responses
            .message()
            .await
            .expect("a message")
            .expect("open")
            .kind
        {
            Some(pb::consume_response::Kind::Confirm(confirm)) => break confirm,
            _ => continue,
        }
    };
    let mut done = confirm.done.clone();
    done.sort();
    let mut want = acked.clone();
    want.sort();
    assert_eq!(done, want, "{confirm:?}");
    assert!(confirm.not_pending.is_empty(), "{confirm:?}");
    // Acked in Redis, in each entry's own partition.
    let mut conn = redis.conn();
    let pending: u64 = (0..3)
        .map(|p| {
            let summary: redis::streams::StreamPendingReply =
                conn.xpending(partition_key("jobs", p), "workers").unwrap();
            summary.count() as u64
        })
        .sum();
    assert_eq!(pending, 6);

    let (_, raw) = split(&produced[1]);
    tx.send(pb::ConsumeRequest {
        kind: Some(pb::consume_request::Kind::Ack(pb::AckIds {
            ids: vec![raw.to_owned()],
        })),
    })
    .await
    .unwrap();
    let status = loop {
        match responses.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended OK"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("<partition>/<ms>-<seq>"),
        "{status:?}"
    );
}

fn open(stream: &str, group: &str, consumer: &str) -> pb::ConsumeRequest {
    pb::ConsumeRequest {
        kind: Some(pb::consume_request::Kind::Open(sub(
            stream, group, consumer,
        ))),
    }
}

/// Two consumers of a group share a 4-partition stream: every entry is
/// delivered once, with its partition and qualified ID; a Tail follows
/// every partition; an idle subscriber is woken by an entry on any
/// partition.
#[tokio::test]
async fn subscribers_and_tails_read_every_partition() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    create(&mut gw, "rides", 4).await;
    let mut tail = gw
        .events
        .tail(pb::TailRequest {
            stream: "rides".into(),
            start_id: "$".into(),
            ..Default::default()
        })
        .await
        .expect("tail")
        .into_inner();
    let mut a = subscribe(&mut gw, sub("rides", "dispatch", "a")).await;
    let mut b = subscribe(&mut gw, sub("rides", "dispatch", "b")).await;
    let keys: Vec<String> = (0..8).map(|k| format!("rider-{k}")).collect();
    let events: Vec<pb::Event> = (0..40).map(|n| keyed(&keys[n % 8], n)).collect();
    let produced = produce(&mut gw, "rides", events).await;

    let mut got: Vec<pb::Entry> = Vec::new();
    while got.len() < produced.len() {
        tokio::select! {
            batch = next_batch(&mut a) => got.extend(batch.expect("a batch")),
            batch = next_batch(&mut b) => got.extend(batch.expect("a batch")),
        }
    }
    let mut seen: Vec<String> = got.iter().map(|e| e.id.clone()).collect();
    seen.sort();
    let mut expected = produced.clone();
    expected.sort();
    assert_eq!(seen, expected, "every entry once, across the two consumers");
    for entry in &got {
        let (p, _) = split(&entry.id);
        assert_eq!(entry.partition, p);
        let n: usize = entry.fields["n"].parse().unwrap();
        assert_eq!(entry.id, produced[n], "entry {n} carries its produced ID");
    }

    let tailed = take_tail_entries(&mut tail, produced.len()).await;
    let mut tailed: Vec<String> = tailed.into_iter().map(|e| e.id).collect();
    tailed.sort();
    assert_eq!(tailed, expected, "the tail saw every partition");

    // Idle now: one entry on whichever partition still wakes a reader.
    let late = produce(&mut gw, "rides", vec![keyed("rider-late", 99)]).await;
    let woke = tokio::select! {
        batch = next_batch(&mut a) => batch.expect("a batch"),
        batch = next_batch(&mut b) => batch.expect("a batch"),
    };
    assert_eq!(ids(&woke), late);
}

/// A second gateway, started before the stream was created, routes by the
/// layout it finds in Redis; one key stays in one partition, in order.
#[tokio::test]
async fn every_gateway_routes_each_key_to_its_partition_in_order() {
    let redis = RedisServer::start();
    let mut first = TestGateway::start(config(&redis)).await;
    let mut second = TestGateway::start(config(&redis)).await;
    create(&mut first, "payments", 6).await;
    let keys = ["alice", "bob", "carol", "dave", "erin"];
    let events: Vec<pb::Event> = (0..25).map(|n| keyed(keys[n % keys.len()], n)).collect();
    let ids = produce(&mut second, "payments", events).await;
    assert_eq!(ids.len(), 25);
    let mut per_partition: HashMap<u32, Vec<String>> = HashMap::new();
    for (n, id) in ids.iter().enumerate() {
        let (p, raw) = split(id);
        let key = keys[n % keys.len()];
        assert_eq!(
            p,
            fnv1a32(key.as_bytes()) % 6,
            "{key} went to partition {p}"
        );
        per_partition.entry(p).or_default().push(raw.to_owned());
    }
    // Each partition holds its events in production order, keys stored.
    let mut conn = redis.conn();
    for (p, expected) in per_partition {
        let stored: redis::streams::StreamRangeReply =
            conn.xrange_all(partition_key("payments", p)).unwrap();
        let got: Vec<String> = stored.ids.iter().map(|e| e.id.clone()).collect();
        assert_eq!(got, expected, "partition {p}");
    }
    // Nothing was written at the logical name but the layout.
    let kind: String = redis::cmd("TYPE").arg("payments").query(&mut conn).unwrap();
    assert_eq!(kind, "hash");
}

/// A request's keyless events go to one partition together; requests take
/// turns.
#[tokio::test]
async fn keyless_events_of_a_request_stay_together() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    create(&mut gw, "logs", 3).await;
    let mut used = Vec::new();
    for _ in 0..3 {
        let ids = produce(
            &mut gw,
            "logs",
            (0..4).map(|_| event("line", &[])).collect(),
        )
        .await;
        let partitions: Vec<u32> = ids.iter().map(|id| split(id).0).collect();
        assert!(partitions.iter().all(|&p| p == partitions[0]), "{ids:?}");
        used.push(partitions[0]);
    }
    used.sort_unstable();
    assert_eq!(used, [0, 1, 2], "three requests, three partitions in turn");
}

/// DescribeStream sums over the partitions; ListPartitions has one row
/// each; a bad event in a request is refused before anything is written.
#[tokio::test]
async fn describe_and_list_partitions_see_every_partition() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    create(&mut gw, "clicks", 4).await;
    let events: Vec<pb::Event> = (0..40).map(|n| keyed(&format!("user-{n}"), n)).collect();
    let ids = produce(&mut gw, "clicks", events).await;

    let described = gw
        .admin
        .describe_stream(pb::DescribeStreamRequest {
            stream: "clicks".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.partitions, 4);
    assert_eq!(described.length, 40);
    let order = |id: &String| {
        let (ms, seq) = split(id).1.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    };
    let newest = ids.iter().max_by_key(|id| order(id)).unwrap();
    assert_eq!(split(&described.last_entry_id).1, split(newest).1);

    let rows = gw
        .admin
        .list_partitions(pb::ListPartitionsRequest {
            stream: "clicks".into(),
            group: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .partitions;
    assert_eq!(rows.len(), 4);
    let mut conn = redis.conn();
    for (p, row) in rows.iter().enumerate() {
        assert_eq!(row.partition, p as u32);
        assert_eq!(row.key, partition_key("clicks", p as u32));
        let len: u64 = conn.xlen(&row.key).unwrap();
        assert_eq!(row.length, len);
        let produced_here = ids.iter().filter(|id| split(id).0 == p as u32).count();
        assert_eq!(row.length, produced_here as u64);
    }

    let mut bad = keyed("x", 0);
    bad.fields.insert("type".into(), "reserved".into());
    let status = produce_err(&mut gw, "clicks", vec![keyed("y", 1), bad]).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    let total: u64 = (0..4)
        .map(|p| conn.xlen::<_, u64>(partition_key("clicks", p)).unwrap())
        .sum();
    assert_eq!(total, 40, "nothing of the refused request was written");
}

/// A consumer that dies holding entries of every partition: a peer with
/// reclaim takes them all over, marked as redelivered, and nothing is
/// lost.
#[tokio::test]
async fn a_crashed_consumers_entries_are_reclaimed_in_every_partition() {
    let (_redis, mut gw, produced) = with_keyed_events("orders", 4, 20).await;
    let mut doomed = subscribe(&mut gw, sub("orders", "shipping", "doomed")).await;
    let mut taken = Vec::new();
    while taken.len() < produced.len() {
        taken.extend(next_batch(&mut doomed).await.expect("a batch"));
    }
    drop(doomed);

    let mut req = sub("orders", "shipping", "survivor");
    req.reclaim = Some(pb::Reclaim {
        min_idle_ms: 200,
        interval_ms: 50,
    });
    let mut survivor = subscribe(&mut gw, req).await;
    let mut recovered = Vec::new();
    while recovered.len() < produced.len() {
        recovered.extend(next_batch(&mut survivor).await.expect("a batch"));
    }
    assert!(recovered.iter().all(|e| e.redelivered), "all redelivered");
    let mut got: Vec<String> = recovered.into_iter().map(|e| e.id).collect();
    got.sort();
    let mut expected = produced;
    expected.sort();
    assert_eq!(got, expected, "every entry of every partition recovered");
}

/// Errors of a partition name the stream the client named, never a
/// partition's internal name.
#[tokio::test]
async fn errors_name_the_logical_stream() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    create(&mut gw, "audit", 3).await;
    let mut req = sub("audit", "missing", "c");
    req.create_group = false;
    let status = match gw.events.subscribe(req).await {
        Err(status) => status,
        Ok(response) => next_batch(&mut response.into_inner())
            .await
            .expect_err("no such group"),
    };
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("\"audit\""), "{status:?}");
    assert!(!status.message().contains('{'), "{status:?}");
}
