//! The group rpcs on a partitioned stream: Ack, Nack, Extend and Reap with
//! partition-qualified IDs, Trim per partition, the group admin rpcs over
//! every partition, and ListStreams listing the stream once. Pending
//! entries are made by reading the partitions (`<stream>{<i>`) directly.

use std::collections::{BTreeSet, HashMap};

use redis::Commands;
use streamgate::pb;
use tonic::Code;

use crate::common::{RedisServer, TestGateway, config, event, pending_count, produce};

const PARTITIONS: u32 = 4;

/// The Redis key of partition `p` of `stream` (no key prefix).
fn partition_key(stream: &str, p: u32) -> String {
    format!("{stream}{{{p}")
}

/// A 4-partition stream with `n` keyed events spread over the partitions
/// and group `g` from the start; returns the produced (qualified) IDs.
async fn partitioned(gw: &mut TestGateway, stream: &str, n: usize) -> Vec<String> {
    gw.admin
        .create_stream(pb::CreateStreamRequest {
            stream: stream.into(),
            partitions: PARTITIONS,
        })
        .await
        .expect("CreateStream");
    let events = (0..n)
        .map(|i| {
            let mut e = event("job", &[("n", &i.to_string())]);
            e.key = format!("key-{i}");
            e
        })
        .collect();
    let ids = produce(gw, stream, events).await;
    let created = create_group(gw, stream, "g", "0").await;
    assert!(created, "the group is new");
    ids
}

async fn create_group(gw: &mut TestGateway, stream: &str, group: &str, start: &str) -> bool {
    gw.admin
        .create_group(pb::CreateGroupRequest {
            stream: stream.into(),
            group: group.into(),
            start_id: start.into(),
            mkstream: None,
        })
        .await
        .expect("CreateGroup")
        .into_inner()
        .created
}

/// `consumer` of `group` reads up to `count` new entries of partition `p`
/// directly (XREADGROUP); returns their qualified IDs.
fn read_partition(
    redis: &RedisServer,
    stream: &str,
    p: u32,
    consumer: &str,
    count: usize,
) -> Vec<String> {
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(partition_key(stream, p))
        .arg(">")
        .query(&mut redis.conn())
        .unwrap();
    reply
        .keys
        .into_iter()
        .flat_map(|k| k.ids)
        .map(|e| format!("{p}/{}", e.id))
        .collect()
}

/// The group's pending entries over every partition, read directly.
fn pending_total(redis: &RedisServer, stream: &str) -> u64 {
    (0..PARTITIONS)
        .map(|p| pending_count(redis, &partition_key(stream, p), "g"))
        .sum()
}

fn unqualified(id: &str) -> &str {
    id.split_once('/').expect("a qualified ID").1
}

fn assert_names_the_form(status: &tonic::Status) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("<partition>/<ms>-<seq>"),
        "{status:?}"
    );
}

#[tokio::test]
async fn ack_nack_and_extend_act_in_each_ids_partition() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    partitioned(&mut gw, "jobs", 40).await;
    let read: Vec<String> = (0..PARTITIONS)
        .flat_map(|p| read_partition(&redis, "jobs", p, "c1", 100))
        .collect();
    assert_eq!(read.len(), 40);
    assert_eq!(pending_total(&redis, "jobs"), 40);

    // An ID without its partition is refused, naming the form.
    let status = gw
        .events
        .ack(pb::AckRequest {
            stream: "jobs".into(),
            group: "g".into(),
            ids: vec![read[0].clone(), unqualified(&read[1]).to_owned()],
        })
        .await
        .expect_err("unqualified ID refused");
    assert_names_the_form(&status);
    assert!(status.message().contains("ids[1]"), "{status:?}");
    assert_eq!(pending_total(&redis, "jobs"), 40, "nothing was acked");

    // Extend and Nack: only the consumer's entries count.
    let extended = gw
        .events
        .extend(pb::ExtendRequest {
            stream: "jobs".into(),
            group: "g".into(),
            consumer: "c1".into(),
            ids: read.clone(),
        })
        .await
        .expect("Extend")
        .into_inner()
        .extended;
    assert_eq!(extended, 40);
    let by_other = gw
        .events
        .extend(pb::ExtendRequest {
            stream: "jobs".into(),
            group: "g".into(),
            consumer: "other".into(),
            ids: read.clone(),
        })
        .await
        .expect("Extend")
        .into_inner()
        .extended;
    assert_eq!(by_other, 0);
    let scheduled = gw
        .events
        .nack(pb::NackRequest {
            stream: "jobs".into(),
            group: "g".into(),
            consumer: "c1".into(),
            ids: read[..10].to_vec(),
            delay_ms: 60_000,
        })
        .await
        .expect("Nack")
        .into_inner()
        .scheduled;
    assert_eq!(scheduled, 10);

    // Ack: every other entry, from every partition; again, nothing.
    let half: Vec<String> = read.iter().step_by(2).cloned().collect();
    assert_eq!(half.len(), 20);
    let partitions: BTreeSet<&str> = half.iter().map(|id| &id[..1]).collect();
    assert_eq!(partitions.len(), PARTITIONS as usize, "{half:?}");
    for expected in [20, 0] {
        let acked = gw
            .events
            .ack(pb::AckRequest {
                stream: "jobs".into(),
                group: "g".into(),
                ids: half.clone(),
            })
            .await
            .expect("Ack")
            .into_inner()
            .acked;
        assert_eq!(acked, expected);
    }
    assert_eq!(pending_total(&redis, "jobs"), 20);
    for id in &half {
        let (p, raw) = id.split_once('/').unwrap();
        let rows: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(partition_key("jobs", p.parse().unwrap()))
            .arg("g")
            .arg(raw)
            .arg(raw)
            .arg(1)
            .query(&mut redis.conn())
            .unwrap();
        assert!(rows.is_empty(), "{id} is still pending");
    }

    // A partition that does not exist and a group that does not: precise,
    // about the stream the client named.
    let status = gw
        .events
        .ack(pb::AckRequest {
            stream: "jobs".into(),
            group: "g".into(),
            ids: vec!["4/1-0".into()],
        })
        .await
        .expect_err("partition 4 refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("0 to 3"), "{status:?}");
    let status = gw
        .events
        .ack(pb::AckRequest {
            stream: "jobs".into(),
            group: "nope".into(),
            ids: vec![read[1].clone()],
        })
        .await
        .expect_err("no such group");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("\"jobs\""), "{status:?}");
}

#[tokio::test]
async fn reap_walks_the_partitions_in_order_with_a_qualified_cursor() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    partitioned(&mut gw, "work", 30).await;
    let read: BTreeSet<String> = (0..PARTITIONS)
        .flat_map(|p| read_partition(&redis, "work", p, "crashed", 100))
        .collect();
    assert_eq!(read.len(), 30);
    // One pending entry of partition 2 is deleted from the stream.
    let gone = read.iter().find(|id| id.starts_with("2/")).unwrap().clone();
    let _: u64 = redis
        .conn()
        .xdel(partition_key("work", 2), &[unqualified(&gone)])
        .unwrap();

    let reap = |start: String| pb::ReapRequest {
        stream: "work".into(),
        group: "g".into(),
        consumer: "rescuer".into(),
        min_idle_ms: 0,
        page_count: 3,
        max_pages: 2,
        start_id: start,
    };
    let status = gw
        .events
        .reap(reap("0-0".into()))
        .await
        .expect_err("unqualified cursor refused");
    assert_names_the_form(&status);

    let mut claimed = Vec::new();
    let mut deleted = Vec::new();
    let mut cursors = Vec::new();
    let mut start = String::new();
    loop {
        let page = gw
            .events
            .reap(reap(start))
            .await
            .expect("Reap")
            .into_inner();
        claimed.extend(page.claimed);
        deleted.extend(page.deleted_ids);
        if page.next_start_id == "0-0" {
            break;
        }
        assert!(cursors.len() < 100, "the scan does not end");
        cursors.push(page.next_start_id.clone());
        start = page.next_start_id;
    }
    // The cursor names its partition and only moves forward.
    let partitions: Vec<u32> = cursors
        .iter()
        .map(|c| c.split_once('/').expect(c).0.parse().unwrap())
        .collect();
    assert!(partitions.windows(2).all(|w| w[0] <= w[1]), "{cursors:?}");
    assert_eq!(deleted, vec![gone.clone()]);
    let got: BTreeSet<String> = claimed.iter().map(|e| e.id.clone()).collect();
    let mut expected = read.clone();
    expected.remove(&gone);
    assert_eq!(got, expected);
    assert_eq!(claimed.len(), 29, "each entry claimed once");
    for entry in &claimed {
        assert_eq!(
            entry.id,
            format!("{}/{}", entry.partition, unqualified(&entry.id))
        );
        assert_eq!(entry.delivery_count, 2, "{entry:?}");
        assert!(entry.redelivered);
        assert_eq!(entry.r#type, "job");
    }
    for p in 0..PARTITIONS {
        let rows: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(partition_key("work", p))
            .arg("g")
            .query(&mut redis.conn())
            .unwrap();
        let rescuer = rows
            .iter()
            .find(|r| redis::from_redis_value_ref::<String>(&r["name"]).unwrap() == "rescuer")
            .expect("the rescuer owns entries in every partition");
        let pending: u64 = redis::from_redis_value_ref(&rescuer["pending"]).unwrap();
        let here = expected
            .iter()
            .filter(|id| id.starts_with(&format!("{p}/")))
            .count();
        assert_eq!(pending, here as u64, "partition {p}");
    }
}

async fn trim(gw: &mut TestGateway, request: pb::TrimRequest) -> Result<u64, tonic::Status> {
    gw.events
        .trim(request)
        .await
        .map(|r| r.into_inner().trimmed)
}

fn lengths(redis: &RedisServer, stream: &str) -> Vec<u64> {
    let mut conn = redis.conn();
    (0..PARTITIONS)
        .map(|p| conn.xlen(partition_key(stream, p)).unwrap())
        .collect()
}

#[tokio::test]
async fn trim_applies_to_every_partition() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    let ids = partitioned(&mut gw, "logs", 40).await;
    let before = lengths(&redis, "logs");
    assert_eq!(before.iter().sum::<u64>(), 40);

    // Safe trim: group g has read nothing, so nothing may go.
    let safe = |max_len| pb::TrimRequest {
        stream: "logs".into(),
        strategy: Some(pb::trim_request::Strategy::MaxLen(max_len)),
        exact: true,
        acked_by_all_groups: true,
        ..Default::default()
    };
    assert_eq!(trim(&mut gw, safe(0)).await.unwrap(), 0);
    // Partition 1 read and acked: exactly its entries may go.
    let read = read_partition(&redis, "logs", 1, "c", 100);
    let acked = gw
        .events
        .ack(pb::AckRequest {
            stream: "logs".into(),
            group: "g".into(),
            ids: read.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .acked;
    assert_eq!(acked, read.len() as u64);
    assert_eq!(trim(&mut gw, safe(0)).await.unwrap(), before[1]);
    let after = lengths(&redis, "logs");
    assert_eq!(after[1], 0);
    assert_eq!(
        (after[0], after[2], after[3]),
        (before[0], before[2], before[3])
    );

    // MAXLEN is per partition.
    let trimmed = trim(
        &mut gw,
        pb::TrimRequest {
            stream: "logs".into(),
            strategy: Some(pb::trim_request::Strategy::MaxLen(2)),
            exact: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let kept = lengths(&redis, "logs");
    assert!(kept.iter().all(|&n| n <= 2), "{kept:?}");
    assert_eq!(
        trimmed,
        after.iter().sum::<u64>() - kept.iter().sum::<u64>()
    );

    // MINID `ms-seq` applies in every partition; a qualified one is refused.
    let newest = ids.iter().map(|id| unqualified(id)).max_by_key(|id| {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    });
    let min_id = |id: &str| pb::TrimRequest {
        stream: "logs".into(),
        strategy: Some(pb::trim_request::Strategy::MinId(id.into())),
        exact: true,
        ..Default::default()
    };
    let status = trim(&mut gw, min_id(&ids[0])).await.expect_err("qualified");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let (ms, _) = newest.unwrap().split_once('-').unwrap();
    let past_all = format!("{}-0", ms.parse::<u64>().unwrap() + 1);
    let trimmed = trim(&mut gw, min_id(&past_all)).await.unwrap();
    assert_eq!(trimmed, kept.iter().sum::<u64>());
    assert_eq!(lengths(&redis, "logs"), vec![0; PARTITIONS as usize]);
}

/// Group rows of every partition, read directly.
fn partition_groups(
    redis: &RedisServer,
    stream: &str,
    p: u32,
) -> Vec<HashMap<String, redis::Value>> {
    redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(partition_key(stream, p))
        .query(&mut redis.conn())
        .unwrap()
}

#[tokio::test]
async fn group_admin_spans_every_partition() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    partitioned(&mut gw, "orders", 40).await;
    assert!(!create_group(&mut gw, "orders", "g", "$").await, "exists");
    for p in 0..PARTITIONS {
        assert_eq!(
            partition_groups(&redis, "orders", p).len(),
            1,
            "partition {p}"
        );
    }
    // c1 reads partitions 0 and 1, c2 partition 2; 3 stays unread.
    let c1: Vec<String> = [0, 1]
        .into_iter()
        .flat_map(|p| read_partition(&redis, "orders", p, "c1", 100))
        .collect();
    let c2 = read_partition(&redis, "orders", 2, "c2", 100);
    let unread = lengths(&redis, "orders")[3];

    let groups = gw
        .admin
        .list_groups(pb::ListGroupsRequest {
            stream: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(groups.len(), 1, "{groups:?}");
    let g = &groups[0];
    assert_eq!(g.name, "g");
    assert_eq!(g.consumers, 2);
    assert_eq!(g.pending, (c1.len() + c2.len()) as u64);
    assert_eq!(g.lag, Some(unread));
    assert!(g.last_delivered_id.contains('/'), "{g:?}");

    let consumers = gw
        .admin
        .list_consumers(pb::ListConsumersRequest {
            stream: "orders".into(),
            group: "g".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .consumers;
    let pending: HashMap<String, u64> = consumers
        .iter()
        .map(|c| (c.name.clone(), c.pending))
        .collect();
    assert_eq!(
        pending,
        HashMap::from([
            ("c1".into(), c1.len() as u64),
            ("c2".into(), c2.len() as u64)
        ])
    );

    // ListPending: every partition, (partition, ID) order, qualified; a
    // qualified `start` continues the listing.
    let list = |start: &str, count: u32| pb::ListPendingRequest {
        stream: "orders".into(),
        group: "g".into(),
        start: start.into(),
        count,
        ..Default::default()
    };
    let all = gw
        .admin
        .list_pending(list("", 100))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let listed: Vec<String> = all.iter().map(|e| e.id.clone()).collect();
    let expected: Vec<String> = c1.iter().chain(&c2).cloned().collect();
    assert_eq!(listed, expected);
    let first = gw
        .admin
        .list_pending(list("", 5))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(first.len(), 5);
    let next = gw
        .admin
        .list_pending(list(&expected[c1.len() - 1], 2))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let ids: Vec<&str> = next.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [&expected[c1.len() - 1], &expected[c1.len()]]);
    let status = gw
        .admin
        .list_pending(list("9/1-0", 2))
        .await
        .expect_err("no partition 9");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // RemoveConsumer: refused while c1 has pending entries and no one to
    // take them; then handed over in every partition.
    let remove = |consumer: &str, handover_to: &str| pb::RemoveConsumerRequest {
        stream: "orders".into(),
        group: "g".into(),
        consumer: consumer.into(),
        handover_to: handover_to.into(),
    };
    let status = gw
        .admin
        .remove_consumer(remove("c1", ""))
        .await
        .expect_err("pending entries");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("\"orders\""), "{status:?}");
    let removed = gw
        .admin
        .remove_consumer(remove("c1", "c2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.handed_over, c1.len() as u64);
    let status = gw
        .admin
        .remove_consumer(remove("c1", "c2"))
        .await
        .expect_err("gone");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(
        pending_total(&redis, "orders"),
        (c1.len() + c2.len()) as u64
    );

    // SetGroupCursor: `0` in every partition; a qualified ID is refused.
    let set = |id: &str| pb::SetGroupCursorRequest {
        stream: "orders".into(),
        group: "g".into(),
        id: id.into(),
    };
    let status = gw
        .admin
        .set_group_cursor(set("1/1-0"))
        .await
        .expect_err("qualified");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    gw.admin.set_group_cursor(set("0")).await.unwrap();
    for p in 0..PARTITIONS {
        let row = &partition_groups(&redis, "orders", p)[0];
        let cursor: String = redis::from_redis_value_ref(&row["last-delivered-id"]).unwrap();
        assert_eq!(cursor, "0-0", "partition {p}");
    }

    // DeleteGroup: everywhere, once.
    for expected in [true, false] {
        let deleted = gw
            .admin
            .delete_group(pb::DeleteGroupRequest {
                stream: "orders".into(),
                group: "g".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .deleted;
        assert_eq!(deleted, expected);
    }
    for p in 0..PARTITIONS {
        assert!(
            partition_groups(&redis, "orders", p).is_empty(),
            "partition {p}"
        );
    }
}

#[tokio::test]
async fn list_streams_lists_a_partitioned_stream_once() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    let ids = partitioned(&mut gw, "parted", 12).await;
    produce(&mut gw, "plain", vec![event("t", &[])]).await;
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = gw
            .admin
            .list_streams(pb::ListStreamsRequest { cursor, limit: 2 })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.streams);
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["parted", "plain"], "{names:?}");
    let parted = all.iter().find(|s| s.name == "parted").unwrap();
    assert_eq!(parted.length, 12);
    assert_eq!(parted.group_count, u64::from(PARTITIONS));
    assert!(ids.contains(&parted.last_entry_id), "{parted:?}");
    let plain = all.iter().find(|s| s.name == "plain").unwrap();
    assert!(!plain.last_entry_id.contains('/'), "{plain:?}");
}

/// Plain streams are as before: unqualified IDs, cursors and listings; a
/// plain stream also takes `0/<ms>-<seq>`, its one partition.
#[tokio::test]
async fn plain_streams_are_unchanged() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    produce(&mut gw, "flat", (0..3).map(|_| event("t", &[])).collect()).await;
    create_group(&mut gw, "flat", "g", "0").await;
    let read = crate::common::read_directly(&redis, "flat", "g", "c", 10);
    let page = gw
        .events
        .reap(pb::ReapRequest {
            stream: "flat".into(),
            group: "g".into(),
            consumer: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.next_start_id, "0-0");
    let claimed: Vec<String> = page.claimed.iter().map(|e| e.id.clone()).collect();
    assert_eq!(claimed, read);
    let pending = gw
        .admin
        .list_pending(pb::ListPendingRequest {
            stream: "flat".into(),
            group: "g".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(
        pending.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        read
    );
    let acked = gw
        .events
        .ack(pb::AckRequest {
            stream: "flat".into(),
            group: "g".into(),
            ids: vec![read[0].clone(), format!("0/{}", read[1])],
        })
        .await
        .unwrap()
        .into_inner()
        .acked;
    assert_eq!(acked, 2);
    let status = gw
        .events
        .ack(pb::AckRequest {
            stream: "flat".into(),
            group: "g".into(),
            ids: vec![format!("1/{}", read[2])],
        })
        .await
        .expect_err("a plain stream has one partition");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let groups = gw
        .admin
        .list_groups(pb::ListGroupsRequest {
            stream: "flat".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(groups[0].last_delivered_id, read[2]);
}
