//! The gateway on a Redis Cluster of 3 masters and 3 replicas.
//!
//! Starting a cluster takes seconds, so one test starts one cluster and
//! runs every scenario on it in turn, each on streams of its own (named so
//! that they live on every master). A scenario that fails names itself in
//! its panic message. Every RPC must succeed: a MOVED, CROSSSLOT or
//! INTERNAL would fail its `expect`.

use std::collections::{HashMap, HashSet};

use redis::Commands;
use streamgate::config::{Settings, Wakeup};
use streamgate::pb;
use tonic::Streaming;

use crate::common::{
    DEADLINE, RedisServer, TestGateway, event, eventually, health, ids, next_batch, orders,
    produce, sub, subscribe, take_entries, take_tail_entries,
};
use crate::redis_cluster::RedisCluster;
use crate::wakeup::clients_named;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_a_redis_cluster_on_every_master() {
    let cluster = RedisCluster::start();
    every_rpc_works_on_every_master(&cluster).await;
    idle_subscribers_on_every_master_are_woken_by_the_doorbell(&cluster).await;
    dead_letters_cross_slots_exactly_once(&cluster).await;
    two_gateways_with_different_seeds_share_a_group(&cluster).await;
    health_and_the_metrics_poller_cover_every_master(&cluster).await;
    produce_stream_and_consume_work_on_every_master(&cluster).await;
    partitions_spread_over_the_masters(&cluster).await;
    every_rpc_works_on_a_partitioned_stream(&cluster).await;
    ordered_consumption_spans_the_masters(&cluster).await;
    // Last: it changes which master serves a slot.
    a_moved_slot_rehomes_the_doorbell(&cluster).await;
}

/// Produce (plain and idempotent), Subscribe, Ack, Nack, Extend, Reap,
/// Replay, Tail, Trim (safe and plain) and every StreamAdmin RPC, on one
/// stream per master.
async fn every_rpc_works_on_every_master(cluster: &RedisCluster) {
    let mut gw = TestGateway::start(cluster.config(&[0])).await;
    let streams = cluster.names_on_every_master("rpc");
    let ports: HashSet<u16> = streams
        .iter()
        .map(|s| cluster.master_of(s).port())
        .collect();
    assert_eq!(ports.len(), 3, "one stream per master: {streams:?}");
    for stream in &streams {
        let produced = produce(&mut gw, stream, orders(5)).await;
        assert_eq!(produced.len(), 5);

        // Idempotent produce: a retry writes nothing and answers the IDs.
        let keyed = || {
            let mut e = event("order.placed", &[("order_id", "o-keyed")]);
            e.idempotency_key = format!("{stream}-k1");
            vec![e]
        };
        let first = produce(&mut gw, stream, keyed()).await;
        let again = produce(&mut gw, stream, keyed()).await;
        assert_eq!(first, again, "{stream}: the retry returns the first ID");
        let mut conn = cluster.conn();
        let len: u64 = conn.xlen(stream).unwrap();
        assert_eq!(len, 6, "{stream}: the retry wrote nothing");

        // Subscribe, Ack, Nack, Extend.
        let mut a = subscribe(&mut gw, sub(stream, "g", "a")).await;
        let got = take_entries(&mut a, 6).await;
        assert_eq!(ids(&got)[..5], produced[..], "{stream}: delivered in order");
        let acked = gw
            .events
            .ack(pb::AckRequest {
                stream: stream.clone(),
                group: "g".into(),
                ids: produced[..2].to_vec(),
            })
            .await
            .expect("ack")
            .into_inner();
        assert_eq!(acked.acked, 2);
        let extended = gw
            .events
            .extend(pb::ExtendRequest {
                stream: stream.clone(),
                group: "g".into(),
                consumer: "a".into(),
                ids: vec![produced[2].clone()],
            })
            .await
            .expect("extend")
            .into_inner();
        assert_eq!(extended.extended, 1);
        let nacked = gw
            .events
            .nack(pb::NackRequest {
                stream: stream.clone(),
                group: "g".into(),
                consumer: "a".into(),
                ids: vec![produced[3].clone()],
                delay_ms: 0,
            })
            .await
            .expect("nack")
            .into_inner();
        assert_eq!(nacked.scheduled, 1);
        drop(a);

        // Admin: groups, consumers, pending, hand-over, cursor, delete.
        let admin = &mut gw.admin;
        let described = admin
            .describe_stream(pb::DescribeStreamRequest {
                stream: stream.clone(),
            })
            .await
            .expect("describe")
            .into_inner();
        assert_eq!((described.length, described.group_count), (6, 1));
        let groups = admin
            .list_groups(pb::ListGroupsRequest {
                stream: stream.clone(),
            })
            .await
            .expect("list groups")
            .into_inner()
            .groups;
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].pending, 4, "{stream}: 6 delivered, 2 acked");
        let consumers = admin
            .list_consumers(pb::ListConsumersRequest {
                stream: stream.clone(),
                group: "g".into(),
            })
            .await
            .expect("list consumers")
            .into_inner()
            .consumers;
        assert_eq!(consumers.len(), 1);
        let pending = admin
            .list_pending(pb::ListPendingRequest {
                stream: stream.clone(),
                group: "g".into(),
                count: 100,
                ..Default::default()
            })
            .await
            .expect("list pending")
            .into_inner()
            .entries;
        assert_eq!(pending.len(), 4);
        let created = admin
            .create_group(pb::CreateGroupRequest {
                stream: stream.clone(),
                group: "other".into(),
                start_id: "0".into(),
                mkstream: None,
            })
            .await
            .expect("create group")
            .into_inner();
        assert!(created.created);
        admin
            .set_group_cursor(pb::SetGroupCursorRequest {
                stream: stream.clone(),
                group: "other".into(),
                id: "$".into(),
            })
            .await
            .expect("set group cursor");
        let removed = admin
            .remove_consumer(pb::RemoveConsumerRequest {
                stream: stream.clone(),
                group: "g".into(),
                consumer: "a".into(),
                handover_to: "b".into(),
            })
            .await
            .expect("remove consumer")
            .into_inner();
        assert_eq!((removed.removed, removed.handed_over), (true, 4));
        let deleted = admin
            .delete_group(pb::DeleteGroupRequest {
                stream: stream.clone(),
                group: "other".into(),
            })
            .await
            .expect("delete group")
            .into_inner();
        assert!(deleted.deleted);

        // Reap: b's entries (handed over) go to c.
        let reaped = gw
            .events
            .reap(pb::ReapRequest {
                stream: stream.clone(),
                group: "g".into(),
                consumer: "c".into(),
                min_idle_ms: 0,
                ..Default::default()
            })
            .await
            .expect("reap")
            .into_inner();
        assert_eq!(reaped.claimed.len(), 4, "{stream}: reap claims b's entries");

        // Replay and Tail.
        let mut replay = gw
            .events
            .replay(pb::ReplayRequest {
                stream: stream.clone(),
                page_size: 4,
                ..Default::default()
            })
            .await
            .expect("replay")
            .into_inner();
        let mut replayed = Vec::new();
        while let Some(page) = replay.message().await.expect("replay page") {
            replayed.extend(page.entries.into_iter().map(|e| e.id));
        }
        assert_eq!(replayed.len(), 6);
        assert_eq!(replayed[..5], produced[..]);
        let mut tail = gw
            .events
            .tail(pb::TailRequest {
                stream: stream.clone(),
                start_id: "0".into(),
                batch_size: 10,
                ..Default::default()
            })
            .await
            .expect("tail")
            .into_inner();
        assert_eq!(take_tail_entries(&mut tail, 6).await.len(), 6);

        // Safe trim keeps what group g still needs (4 pending from
        // produced[2]); a plain trim then empties the stream.
        let safe = gw
            .events
            .trim(pb::TrimRequest {
                stream: stream.clone(),
                strategy: Some(pb::trim_request::Strategy::MaxLen(0)),
                exact: true,
                acked_by_all_groups: true,
                ..Default::default()
            })
            .await
            .expect("safe trim")
            .into_inner();
        assert_eq!(safe.trimmed, 2, "{stream}: only the acked entries");
        let plain = gw
            .events
            .trim(pb::TrimRequest {
                stream: stream.clone(),
                strategy: Some(pb::trim_request::Strategy::MaxLen(0)),
                exact: true,
                ..Default::default()
            })
            .await
            .expect("trim")
            .into_inner();
        assert_eq!(plain.trimmed, 4);
    }

    // ListStreams walks every master, in pages smaller than the listing.
    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = gw
            .admin
            .list_streams(pb::ListStreamsRequest {
                cursor: cursor.clone(),
                limit: 1,
            })
            .await
            .expect("list streams")
            .into_inner();
        listed.extend(page.streams.into_iter().map(|s| s.name));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    for stream in &streams {
        assert_eq!(
            listed.iter().filter(|n| *n == stream).count(),
            1,
            "{stream} listed once in {listed:?}"
        );
    }
}

/// Idle subscriptions on many streams of all three masters all wake when
/// their stream gets an entry, through one tracking connection per master
/// (however many streams and slots); only a wake-up can deliver within the
/// deadline (the gateway re-reads idle streams hourly and sends no
/// heartbeats). Then the same with
/// the XREAD wake-up: one blocked read per slot.
async fn idle_subscribers_on_every_master_are_woken_by_the_doorbell(cluster: &RedisCluster) {
    let settings = Settings {
        block_ms: 60_000,
        idle_recheck_ms: 3_600_000,
        heartbeat_ms: 0,
        ..cluster.config(&[1])
    };
    let mut gw = TestGateway::start(settings.clone()).await;
    let streams: Vec<String> = (0..10)
        .flat_map(|i| cluster.names_on_every_master(&format!("bell{i}")))
        .collect();
    let subs = idle_subscribers(&mut gw, &streams).await;
    for master in cluster.masters() {
        assert_eq!(
            clients_named(master, "streamgate-watch").len(),
            1,
            "one tracking connection on master {}",
            master.port()
        );
    }
    each_is_woken(&mut gw, subs).await;

    let mut gw = TestGateway::start(Settings {
        wakeup: Wakeup::Xread,
        ..settings
    })
    .await;
    let streams = cluster.names_on_every_master("xbell");
    let subs = idle_subscribers(&mut gw, &streams).await;
    for stream in &streams {
        let what = format!("one blocked XREAD on {stream}'s master");
        blocked_reader_on(cluster.master_of(stream), &what).await;
    }
    each_is_woken(&mut gw, subs).await;
}

/// Four subscriptions (four groups) on each stream.
async fn idle_subscribers(
    gw: &mut TestGateway,
    streams: &[String],
) -> Vec<(String, Streaming<pb::SubscribeResponse>)> {
    let mut subs = Vec::new();
    for stream in streams {
        for consumer in ["a", "b", "c", "d"] {
            let group = format!("g-{consumer}");
            subs.push((
                stream.clone(),
                subscribe(gw, sub(stream, &group, consumer)).await,
            ));
        }
    }
    subs
}

/// Produces one entry to each stream; every subscriber gets its stream's.
async fn each_is_woken(
    gw: &mut TestGateway,
    mut subs: Vec<(String, Streaming<pb::SubscribeResponse>)>,
) {
    let mut produced = HashMap::new();
    for (stream, _) in &subs {
        if !produced.contains_key(stream) {
            produced.insert(stream.clone(), produce(gw, stream, orders(1)).await);
        }
    }
    for (stream, sub) in &mut subs {
        let got = next_batch(sub).await.expect("a batch");
        assert_eq!(
            ids(&got),
            produced[stream.as_str()],
            "{stream} woke its readers"
        );
    }
}

/// The dead-letter stream lives on another master than the source stream:
/// a poison entry still ends up there exactly once and leaves the group's
/// pending list.
async fn dead_letters_cross_slots_exactly_once(cluster: &RedisCluster) {
    let mut gw = TestGateway::start(cluster.config(&[2])).await;
    let names = cluster.names_on_every_master("poison");
    let (stream, dlq) = (&names[0], &names[1]);
    assert_ne!(
        cluster.master_of(stream).port(),
        cluster.master_of(dlq).port()
    );
    let poison = produce(
        &mut gw,
        stream,
        vec![event("order.paid", &[("order_id", "o-9")])],
    )
    .await;
    let mut req = sub(stream, "g", "worker");
    req.reclaim = Some(pb::Reclaim {
        min_idle_ms: 50,
        interval_ms: 50,
    });
    req.max_deliveries = 2;
    req.dead_letter_stream = dlq.clone();
    let mut s = subscribe(&mut gw, req).await;
    // Two deliveries, never acked; then the entry is moved.
    let mut deliveries = 0;
    while deliveries < 2 {
        deliveries += take_entries(&mut s, 1).await.len();
    }
    let mut conn = cluster.conn();
    eventually("the poison entry is dead-lettered and acked", || {
        let len: u64 = conn.xlen(dlq).unwrap();
        let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg(stream)
            .arg("g")
            .query(&mut conn)
            .unwrap();
        async move { (len > 0 && pending.0 == 0).then_some(()) }
    })
    .await;
    // A later entry that is delivered and re-delivered shows further
    // reclaim rounds ran after the move.
    let marker = produce(&mut gw, stream, orders(1)).await;
    loop {
        let got = take_entries(&mut s, 1).await;
        assert!(got.iter().all(|e| e.id != poison[0]), "no third delivery");
        if got.iter().any(|e| e.id == marker[0] && e.redelivered) {
            break;
        }
    }
    let dead: Vec<(String, HashMap<String, String>)> = conn.xrange(dlq, "-", "+").unwrap();
    let dead: Vec<_> = dead
        .into_iter()
        .filter(|(_, r)| r["dlq.id"] == poison[0])
        .collect();
    assert_eq!(dead.len(), 1, "moved exactly once");
    let record = &dead[0].1;
    assert_eq!(record["dlq.stream"], *stream);
    assert_eq!(record["dlq.reason"], "max_deliveries");
    assert_eq!(record["dlq.deliveries"], "2");
    assert_eq!(record["order_id"], "o-9");
}

/// Two gateways seeded with different nodes, one group: every entry goes
/// to exactly one of their consumers.
async fn two_gateways_with_different_seeds_share_a_group(cluster: &RedisCluster) {
    let mut one = TestGateway::start(cluster.config(&[0, 3])).await;
    let mut two = TestGateway::start(cluster.config(&[4])).await;
    let stream = &cluster.names_on_every_master("shared")[2];
    let mut req = sub(stream, "g", "one");
    req.batch_size = 3;
    let mut a = subscribe(&mut one, req.clone()).await;
    req.consumer = "two".into();
    let mut b = subscribe(&mut two, req).await;
    let mut produced = Vec::new();
    for _ in 0..10 {
        produced.extend(produce(&mut one, stream, orders(3)).await);
    }
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while from_a.len() + from_b.len() < produced.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "all entries delivered"
        );
        tokio::select! {
            got = next_batch(&mut a) => from_a.extend(ids(&got.expect("batch"))),
            got = next_batch(&mut b) => from_b.extend(ids(&got.expect("batch"))),
        }
    }
    let a_set: HashSet<_> = from_a.iter().collect();
    let b_set: HashSet<_> = from_b.iter().collect();
    assert!(a_set.is_disjoint(&b_set), "no entry went to both");
    let mut all: Vec<String> = from_a.into_iter().chain(from_b).collect();
    all.sort();
    let mut expected = produced.clone();
    expected.sort();
    assert_eq!(all, expected, "every entry delivered once");
}

/// Health reports SERVING, and the metrics poller exports the length and
/// group lag of streams on all three masters.
async fn health_and_the_metrics_poller_cover_every_master(cluster: &RedisCluster) {
    let mut config = cluster.config(&[5]);
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.metrics_poll_ms = 100;
    let mut gw = TestGateway::start(config).await;
    let addr = gw.gateway.as_ref().unwrap().metrics_addr().unwrap();
    eventually("health is SERVING", || {
        let gw = &gw;
        async move {
            (health(gw).await == tonic_health::pb::health_check_response::ServingStatus::Serving)
                .then_some(())
        }
    })
    .await;
    let streams = cluster.names_on_every_master("metered");
    for stream in &streams {
        produce(&mut gw, stream, orders(3)).await;
        gw.admin
            .create_group(pb::CreateGroupRequest {
                stream: stream.clone(),
                group: "g".into(),
                start_id: "0".into(),
                mkstream: None,
            })
            .await
            .expect("create group");
    }
    for stream in &streams {
        let length = format!("streamgate_stream_length{{stream=\"{stream}\"}} 3");
        let lag = format!("streamgate_group_lag{{stream=\"{stream}\",group=\"g\"}} 3");
        eventually(&format!("{stream}'s gauges"), || {
            let (length, lag) = (length.clone(), lag.clone());
            async move {
                let text = scrape(addr).await;
                (text.lines().any(|l| l == length) && text.lines().any(|l| l == lag)).then_some(())
            }
        })
        .await;
    }
}

/// ProduceStream over streams of all three masters answers in request
/// order; Consume on each delivers them and confirms in-band Ack, Extend
/// and Nack.
async fn produce_stream_and_consume_work_on_every_master(cluster: &RedisCluster) {
    use pb::consume_request::Kind as Ask;
    use pb::consume_response::Kind as Got;
    let mut gw = TestGateway::start(cluster.config(&[0])).await;
    let streams = cluster.names_on_every_master("duplex");
    let (requests, rx) = tokio::sync::mpsc::channel(16);
    for stream in streams.iter().chain(&streams) {
        let request = pb::ProduceRequest {
            stream: stream.clone(),
            events: orders(2),
            ..Default::default()
        };
        requests.send(request).await.unwrap();
    }
    drop(requests);
    let mut answers = gw
        .events
        .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("ProduceStream opens")
        .into_inner();
    let mut produced: HashMap<&String, Vec<String>> = HashMap::new();
    for stream in streams.iter().chain(&streams) {
        let answer = answers
            .message()
            .await
            .expect("the stream goes on")
            .expect("an answer");
        assert_eq!(answer.code, 0, "{stream}: {}", answer.message);
        produced.entry(stream).or_default().extend(answer.ids);
    }
    for stream in &streams {
        let (requests, rx) = tokio::sync::mpsc::channel(16);
        let send = |kind| {
            let requests = requests.clone();
            async move {
                requests
                    .send(pb::ConsumeRequest { kind: Some(kind) })
                    .await
                    .unwrap()
            }
        };
        send(Ask::Open(sub(stream, "g", "a"))).await;
        let mut responses = gw
            .events
            .consume(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("Consume answers")
            .into_inner();
        let mut next = async || loop {
            let message = tokio::time::timeout(DEADLINE, responses.message())
                .await
                .expect("a message within the deadline")
                .expect("the stream goes on")
                .and_then(|m| m.kind);
            match message {
                Some(Got::Heartbeat(_)) => continue,
                other => return other.expect("a message"),
            }
        };
        let mut got = Vec::new();
        while got.len() < 4 {
            match next().await {
                Got::Batch(batch) => got.extend(ids(&batch.entries)),
                other => panic!("{stream}: expected a batch, got {other:?}"),
            }
        }
        let mine = &produced[stream];
        assert_eq!(&got, mine, "{stream}: delivered in order");
        send(Ask::Ack(pb::AckIds {
            ids: mine[..2].to_vec(),
        }))
        .await;
        send(Ask::Extend(pb::ExtendIds {
            ids: vec![mine[2].clone()],
        }))
        .await;
        send(Ask::Nack(pb::NackIds {
            ids: vec![mine[3].clone()],
            delay_ms: 60_000,
        }))
        .await;
        for (op, done) in [
            ("ack", &mine[..2]),
            ("extend", &mine[2..3]),
            ("nack", &mine[3..4]),
        ] {
            match next().await {
                Got::Confirm(confirm) => {
                    assert_eq!(confirm.done, done, "{stream}: {op} confirmed");
                    assert!(confirm.not_pending.is_empty());
                }
                other => panic!("{stream}: expected the {op} confirm, got {other:?}"),
            }
        }
    }
}

/// One plain HTTP/1.1 GET of /metrics.
async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: streamgate\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    response
}

/// A slot moves to another master while a subscriber waits on a stream in
/// it, with each wake-up. Tracking: the migration deletes the key on the
/// first master, whose invalidation wakes the gateway; arming the key
/// there meets ASK or MOVED, and the gateway tracks it on the new master.
/// XREAD: the blocked read there ends with MOVED (Redis redirects clients
/// blocked on keys of a slot it no longer serves) and re-homes to the new
/// master. Either way the next entry wakes the subscriber. The gateway's
/// safety-net reads are set beyond the test's deadline, so only a wake-up
/// can deliver in time.
async fn a_moved_slot_rehomes_the_doorbell(cluster: &RedisCluster) {
    for wakeup in [Wakeup::Tracking, Wakeup::Xread] {
        let mut gw = TestGateway::start(Settings {
            block_ms: 60_000,
            idle_recheck_ms: 3_600_000,
            heartbeat_ms: 0,
            wakeup,
            ..cluster.config(&[0])
        })
        .await;
        let names = cluster.names_on_every_master(&format!("moving-{wakeup:?}"));
        let stream = &names[0];
        let (from, to) = (cluster.master_of(stream), cluster.master_of(&names[1]));
        let mut reader = subscribe(&mut gw, sub(stream, "g", "a")).await;
        let first = produce(&mut gw, stream, orders(1)).await;
        assert_eq!(ids(&next_batch(&mut reader).await.expect("a batch")), first);
        if wakeup == Wakeup::Xread {
            blocked_reader_on(from, "the doorbell waits on the slot's first master").await;
        }

        let before = clients_named(to, "streamgate-watch");
        cluster.move_slot_of(stream, to);
        assert_eq!(cluster.master_of(stream).port(), to.port());
        match wakeup {
            Wakeup::Xread => {
                blocked_reader_on(to, "the doorbell re-homed to the slot's new master").await
            }
            Wakeup::Tracking => {
                eventually("a tracking connection on the slot's new master", || {
                    let named = clients_named(to, "streamgate-watch");
                    let new = named.iter().any(|id| !before.contains(id));
                    async move { new.then_some(()) }
                })
                .await
            }
        }

        let second = produce(&mut gw, stream, orders(1)).await;
        assert_eq!(
            ids(&next_batch(&mut reader).await.expect("a batch")),
            second,
            "{wakeup:?}: the subscriber on the moved slot was woken"
        );
        gw.stop().await;
    }
}

/// A 12-partition stream: its partitions live on all three masters, each
/// key's events on its own partition's master, and the admin views sum
/// them without a CROSSSLOT.
async fn partitions_spread_over_the_masters(cluster: &RedisCluster) {
    let mut gw = TestGateway::start(cluster.config(&[0])).await;
    let made = gw
        .admin
        .create_stream(pb::CreateStreamRequest {
            stream: "wide".into(),
            partitions: 12,
        })
        .await
        .expect("CreateStream")
        .into_inner();
    assert_eq!(made.partitions, 12);
    let mut spread: HashMap<u16, u32> = HashMap::new();
    for p in 0..12 {
        *spread
            .entry(cluster.master_of(&format!("wide{{{p}")).port())
            .or_default() += 1;
    }
    eprintln!("12 partitions over the masters (port: count): {spread:?}");
    assert_eq!(spread.len(), 3, "partitions on every master: {spread:?}");
    let events: Vec<pb::Event> = (0..60)
        .map(|n| {
            let mut e = event("order.placed", &[]);
            e.key = format!("customer-{}", n % 20);
            e
        })
        .collect();
    let ids = produce(&mut gw, "wide", events).await;
    assert_eq!(ids.len(), 60);
    let described = gw
        .admin
        .describe_stream(pb::DescribeStreamRequest {
            stream: "wide".into(),
        })
        .await
        .expect("DescribeStream")
        .into_inner();
    assert_eq!((described.partitions, described.length), (12, 60));
    let rows = gw
        .admin
        .list_partitions(pb::ListPartitionsRequest {
            stream: "wide".into(),
            group: String::new(),
        })
        .await
        .expect("ListPartitions")
        .into_inner()
        .partitions;
    assert_eq!(rows.iter().map(|r| r.length).sum::<u64>(), 60);
    // A group reads all twelve partitions, on all three masters.
    let mut reader = subscribe(&mut gw, sub("wide", "g", "a")).await;
    let mut got = take_entries(&mut reader, 60).await;
    got.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = ids;
    expected.sort();
    assert_eq!(
        got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        expected
    );
}

/// Every rpc on a 6-partition stream spread over the masters: nothing
/// meets MOVED or CROSSSLOT, IDs go out and come back qualified.
async fn every_rpc_works_on_a_partitioned_stream(cluster: &RedisCluster) {
    let mut gw = TestGateway::start(cluster.config(&[1])).await;
    let stream = "spread".to_owned();
    let s = || stream.clone();
    gw.admin
        .create_stream(pb::CreateStreamRequest {
            stream: s(),
            partitions: 6,
        })
        .await
        .expect("CreateStream");
    let events: Vec<pb::Event> = (0..30)
        .map(|n| {
            let mut e = event("order.placed", &[("n", &n.to_string())]);
            e.key = format!("customer-{n}");
            e
        })
        .collect();
    let produced = produce(&mut gw, &stream, events).await;
    assert!(produced.iter().all(|id| id.contains('/')), "{produced:?}");
    let created = gw
        .admin
        .create_group(pb::CreateGroupRequest {
            stream: s(),
            group: "g".into(),
            start_id: "0".into(),
            mkstream: None,
        })
        .await
        .expect("CreateGroup")
        .into_inner();
    assert!(created.created);

    let mut req = sub(&stream, "g", "a");
    req.create_group = false;
    let mut reader = subscribe(&mut gw, req).await;
    let taken = take_entries(&mut reader, 30).await;
    drop(reader);
    let taken: Vec<String> = taken.into_iter().map(|e| e.id).collect();
    let acked = gw
        .events
        .ack(pb::AckRequest {
            stream: s(),
            group: "g".into(),
            ids: taken[..5].to_vec(),
        })
        .await
        .expect("Ack")
        .into_inner();
    assert_eq!(acked.acked, 5);
    let nacked = gw
        .events
        .nack(pb::NackRequest {
            stream: s(),
            group: "g".into(),
            consumer: "a".into(),
            ids: taken[5..10].to_vec(),
            delay_ms: 0,
        })
        .await
        .expect("Nack")
        .into_inner();
    assert_eq!(nacked.scheduled, 5);
    let extended = gw
        .events
        .extend(pb::ExtendRequest {
            stream: s(),
            group: "g".into(),
            consumer: "a".into(),
            ids: taken[10..15].to_vec(),
        })
        .await
        .expect("Extend")
        .into_inner();
    assert_eq!(extended.extended, 5);
    let unqualified = taken[20].split_once('/').unwrap().1.to_owned();
    let status = gw
        .events
        .ack(pb::AckRequest {
            stream: s(),
            group: "g".into(),
            ids: vec![unqualified],
        })
        .await
        .expect_err("an unqualified ID is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let groups = gw
        .admin
        .list_groups(pb::ListGroupsRequest { stream: s() })
        .await
        .expect("ListGroups")
        .into_inner()
        .groups;
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].pending, 25);
    let consumers = gw
        .admin
        .list_consumers(pb::ListConsumersRequest {
            stream: s(),
            group: "g".into(),
        })
        .await
        .expect("ListConsumers")
        .into_inner()
        .consumers;
    assert_eq!(consumers.len(), 1);
    let pending = gw
        .admin
        .list_pending(pb::ListPendingRequest {
            stream: s(),
            group: "g".into(),
            count: 100,
            ..Default::default()
        })
        .await
        .expect("ListPending")
        .into_inner()
        .entries;
    assert_eq!(pending.len(), 25);
    let reaped = gw
        .events
        .reap(pb::ReapRequest {
            stream: s(),
            group: "g".into(),
            consumer: "b".into(),
            min_idle_ms: 0,
            max_pages: 100,
            ..Default::default()
        })
        .await
        .expect("Reap")
        .into_inner();
    assert_eq!(reaped.claimed.len(), 25, "{:?}", reaped.next_start_id);
    let removed = gw
        .admin
        .remove_consumer(pb::RemoveConsumerRequest {
            stream: s(),
            group: "g".into(),
            consumer: "b".into(),
            handover_to: "c".into(),
        })
        .await
        .expect("RemoveConsumer")
        .into_inner();
    assert_eq!(removed.handed_over, 25);

    let mut replay = gw
        .events
        .replay(pb::ReplayRequest {
            stream: s(),
            page_size: 7,
            ..Default::default()
        })
        .await
        .expect("Replay")
        .into_inner();
    let mut replayed = Vec::new();
    while let Some(page) = replay.message().await.expect("a page") {
        replayed.extend(page.entries.into_iter().map(|e| e.id));
    }
    replayed.sort();
    let mut all = produced.clone();
    all.sort();
    assert_eq!(replayed, all);
    let mut tail = gw
        .events
        .tail(pb::TailRequest {
            stream: s(),
            start_id: "0".into(),
            ..Default::default()
        })
        .await
        .expect("Tail")
        .into_inner();
    assert_eq!(take_tail_entries(&mut tail, 30).await.len(), 30);

    gw.admin
        .set_group_cursor(pb::SetGroupCursorRequest {
            stream: s(),
            group: "g".into(),
            id: "0".into(),
        })
        .await
        .expect("SetGroupCursor");
    let streams = gw
        .admin
        .list_streams(pb::ListStreamsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("ListStreams")
        .into_inner()
        .streams;
    assert_eq!(streams.iter().filter(|x| x.name == stream).count(), 1);
    let trimmed = gw
        .events
        .trim(pb::TrimRequest {
            stream: s(),
            exact: true,
            strategy: Some(pb::trim_request::Strategy::MaxLen(1)),
            ..Default::default()
        })
        .await
        .expect("Trim")
        .into_inner();
    let described = gw
        .admin
        .describe_stream(pb::DescribeStreamRequest { stream: s() })
        .await
        .expect("DescribeStream")
        .into_inner();
    assert_eq!(trimmed.trimmed + described.length, 30);
    assert!(described.length <= 6, "one entry per partition at most");
    let deleted = gw
        .admin
        .delete_group(pb::DeleteGroupRequest {
            stream: s(),
            group: "g".into(),
        })
        .await
        .expect("DeleteGroup")
        .into_inner();
    assert!(deleted.deleted);
}

/// Waits until `node` has exactly one blocked client (the doorbell's read:
/// no other gateway is running).
async fn blocked_reader_on(node: &RedisServer, what: &str) {
    eventually(what, || {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query(&mut node.conn())
            .unwrap();
        async move { info.contains("blocked_clients:1\r").then_some(()) }
    })
    .await;
}

/// Ordered consumption on 12 partitions over the three masters, through
/// two gateways with different seeds: the consumers share the partitions
/// 4/4/4, each reads and acks only its own (leases, reads and in-band acks
/// each in their partition's slot), and a leaver's share is taken over.
async fn ordered_consumption_spans_the_masters(cluster: &RedisCluster) {
    let fast = |seeds: &[usize]| Settings {
        rebalance_interval_ms: 50,
        partition_lease_ms: 1500,
        ..cluster.config(seeds)
    };
    let mut one = TestGateway::start(fast(&[0])).await;
    let mut two = TestGateway::start(fast(&[2])).await;
    one.admin
        .create_stream(pb::CreateStreamRequest {
            stream: "in-order".into(),
            partitions: 12,
        })
        .await
        .expect("CreateStream");
    let ordered = |consumer: &str| pb::SubscribeRequest {
        ordered: true,
        batch_size: 100,
        ..sub("in-order", "g", consumer)
    };
    let mut a = crate::consume::open(&mut one, ordered("a")).await;
    let mut b = crate::consume::open(&mut two, ordered("b")).await;
    let c = subscribe(&mut two, ordered("c")).await;
    let owners = |gw: &TestGateway| {
        let mut admin = gw.admin.clone();
        async move {
            (admin.list_partitions(pb::ListPartitionsRequest {
                stream: "in-order".into(),
                group: "g".into(),
            }))
            .await
            .expect("ListPartitions")
            .into_inner()
            .partitions
            .into_iter()
            .map(|p| p.owner)
            .collect::<Vec<String>>()
        }
    };
    let count = |owners: &[String], who: &str| owners.iter().filter(|o| *o == who).count();
    let shared = eventually("4/4/4", || async {
        let owners = owners(&one).await;
        (["a", "b", "c"].iter().all(|w| count(&owners, w) == 4)).then_some(owners)
    })
    .await;
    let events: Vec<pb::Event> = (0..60)
        .map(|n| {
            let mut e = event("order.paid", &[("n", &n.to_string())]);
            e.key = format!("customer-{}", n % 20);
            e
        })
        .collect();
    let produced = produce(&mut one, "in-order", events).await;
    let mine = |who: &str| -> Vec<String> {
        (produced.iter())
            .filter(|id| {
                let p: usize = id.split_once('/').unwrap().0.parse().unwrap();
                shared[p] == who
            })
            .cloned()
            .collect()
    };
    for (who, open) in [("a", &mut a), ("b", &mut b)] {
        let received = ids(&open.entries(mine(who).len()).await);
        let mut got = received.clone();
        got.sort();
        let mut want = mine(who);
        want.sort();
        assert_eq!(got, want, "{who} reads exactly its partitions");
        // Acked in the order received: ordered acks take effect in order.
        let all: Vec<&String> = received.iter().collect();
        let (done, not_pending) = open.acked(&all).await;
        assert_eq!((done.len(), not_pending.len()), (got.len(), 0), "{who}");
    }
    drop(c);
    eventually("6/6 after c left", || async {
        let owners = owners(&two).await;
        (count(&owners, "a") == 6 && count(&owners, "b") == 6).then_some(())
    })
    .await;
}
