//! Replay of a partitioned stream: the partitions merged by entry ID, then
//! partition number, forwards and backwards, paged, with plain and
//! partition-qualified bounds; plain streams as before.

use redis::Commands;
use streamgate::pb;
use tonic::Code;

use crate::common::{RedisServer, TestGateway, config, event, orders, produce};
use crate::redis_cluster::RedisCluster;

/// A page's entries as `(qualified ID, partition)`.
type Page = Vec<(String, u32)>;

async fn create(gw: &mut TestGateway, stream: &str, partitions: u32) {
    let made = gw
        .admin
        .create_stream(pb::CreateStreamRequest {
            stream: stream.into(),
            partitions,
        })
        .await
        .expect("CreateStream")
        .into_inner();
    assert_eq!((made.created, made.partitions), (true, partitions));
}

/// Runs a Replay and returns its pages.
async fn replay(gw: &mut TestGateway, req: pb::ReplayRequest) -> Vec<Page> {
    let mut stream = gw.events.replay(req).await.expect("replay").into_inner();
    let mut pages = Vec::new();
    while let Some(page) = stream.message().await.expect("replay page") {
        pages.push(
            page.entries
                .into_iter()
                .map(|e| (e.id, e.partition))
                .collect(),
        );
    }
    pages
}

/// The qualified IDs of a Replay, checking that each entry's `partition`
/// is the one its ID names.
async fn replay_ids(gw: &mut TestGateway, req: pb::ReplayRequest) -> Vec<String> {
    replay(gw, req)
        .await
        .concat()
        .into_iter()
        .map(|(id, partition)| {
            assert_eq!(position(&id).1, partition, "{id}");
            id
        })
        .collect()
}

fn request(stream: &str, start: &str, end: &str) -> pb::ReplayRequest {
    pb::ReplayRequest {
        stream: stream.into(),
        start: start.into(),
        end: end.into(),
        ..Default::default()
    }
}

/// A qualified ID's place in the merged order: `((ms, seq), partition)`.
fn position(id: &str) -> ((u64, u64), u32) {
    let (p, rest) = id.split_once('/').expect("a partition-qualified ID");
    let (ms, seq) = rest.split_once('-').expect("<ms>-<seq>");
    (
        (ms.parse().unwrap(), seq.parse().unwrap()),
        p.parse().unwrap(),
    )
}

fn keyed(key: &str, n: usize) -> pb::Event {
    let mut e = event("order.placed", &[("n", &n.to_string())]);
    e.key = key.into();
    e
}

/// Keyed events produced in several requests come back exactly once each,
/// in (ID, partition) order, in pages of the requested size, and reversed.
#[tokio::test]
async fn replay_merges_the_partitions_in_id_then_partition_order() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    create(&mut gw, "orders", 4).await;
    let keys = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"];
    let mut produced = Vec::new();
    for request in 0..6 {
        let events = (0..10)
            .map(|n| keyed(keys[(request * 10 + n) % keys.len()], n))
            .collect();
        produced.extend(produce(&mut gw, "orders", events).await);
    }
    assert_eq!(produced.len(), 60);
    let used: std::collections::HashSet<u32> = produced.iter().map(|id| position(id).1).collect();
    assert!(used.len() > 1, "the keys spread over partitions: {used:?}");
    let mut expected = produced.clone();
    expected.sort_by_key(|id| position(id));

    let mut all = request("orders", "", "");
    all.page_size = 7;
    let pages = replay(&mut gw, all.clone()).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [7, 7, 7, 7, 7, 7, 7, 7, 4]
    );
    assert_eq!(replay_ids(&mut gw, all.clone()).await, expected);

    let mut back = all.clone();
    back.reverse = true;
    back.page_size = 11;
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(replay_ids(&mut gw, back.clone()).await, reversed);

    // A limit counts merged entries, not entries per partition.
    all.limit = 10;
    assert_eq!(replay_ids(&mut gw, all).await, expected[..10]);
    back.limit = 13;
    assert_eq!(replay_ids(&mut gw, back).await, reversed[..13]);
}

/// Entries written at chosen IDs straight into the partitions (as a
/// program following the documented layout may): ties between partitions,
/// an empty partition, and bounds plain and qualified.
#[tokio::test]
async fn replay_bounds_are_positions_in_the_merged_order() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    create(&mut gw, "ticks", 5).await;
    let mut conn = redis.conn();
    // Partitions 0 to 3 hold 1-0, 2-0, 3-0; partition 2 also 2-1;
    // partition 4 stays empty.
    for p in 0..4 {
        let mut at = vec!["1-0", "2-0", "3-0"];
        if p == 2 {
            at.insert(2, "2-1");
        }
        for id in at {
            let _: String = conn.xadd(format!("ticks{{{p}"), id, &[("n", "1")]).unwrap();
        }
    }
    let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let everything = ids(&[
        "0/1-0", "1/1-0", "2/1-0", "3/1-0", "0/2-0", "1/2-0", "2/2-0", "3/2-0", "2/2-1", "0/3-0",
        "1/3-0", "2/3-0", "3/3-0",
    ]);
    assert_eq!(
        replay_ids(&mut gw, request("ticks", "-", "+")).await,
        everything
    );

    // Plain bounds apply to every partition; `ms` is the whole millisecond.
    assert_eq!(
        replay_ids(&mut gw, request("ticks", "2-0", "2-1")).await,
        everything[4..9]
    );
    assert_eq!(
        replay_ids(&mut gw, request("ticks", "2", "2")).await,
        everything[4..9]
    );
    // A qualified bound is that position, included.
    assert_eq!(
        replay_ids(&mut gw, request("ticks", "2/2-0", "1/3-0")).await,
        everything[6..11]
    );
    assert_eq!(
        replay_ids(&mut gw, request("ticks", "4/1-0", "0/2-0")).await,
        everything[4..5]
    );
    let mut back = request("ticks", "2/2-0", "1/3-0");
    back.reverse = true;
    back.limit = 3;
    assert_eq!(
        replay_ids(&mut gw, back).await,
        ids(&["1/3-0", "0/3-0", "2/2-1"])
    );
    // An empty range between two positions of one ID.
    assert!(
        replay_ids(&mut gw, request("ticks", "3/2-0", "2/2-0"))
            .await
            .is_empty()
    );

    // Resuming as the proto documents: after `p/ms-seq` comes `p+1/ms-seq`,
    // after the last partition the next ID; backwards the mirror image.
    let partitions = 5;
    for reverse in [false, true] {
        let mut seen = Vec::new();
        let (mut start, mut end) = ("-".to_owned(), "+".to_owned());
        loop {
            let mut req = request("ticks", &start, &end);
            req.reverse = reverse;
            req.limit = 4;
            let got = replay_ids(&mut gw, req).await;
            let Some(last) = got.last() else { break };
            let ((ms, seq), p) = position(last);
            if reverse {
                end = match (p, seq) {
                    (0, 0) => format!("{}-{}", ms - 1, u64::MAX),
                    (0, seq) => format!("{ms}-{}", seq - 1),
                    (p, seq) => format!("{}/{ms}-{seq}", p - 1),
                };
            } else {
                start = match p {
                    p if p == partitions - 1 => format!("{ms}-{}", seq + 1),
                    p => format!("{}/{ms}-{seq}", p + 1),
                };
            }
            seen.extend(got);
        }
        let mut expected = everything.clone();
        if reverse {
            expected.reverse();
        }
        assert_eq!(seen, expected, "reverse: {reverse}");
    }

    // Bounds name a partition the stream has, in the field they are in.
    for (start, end, field, says) in [
        ("5/1-0", "", "start", "0 to 4"),
        ("", "x/1-0", "end", "not a partition number"),
        ("", "1/soon", "end", "not a stream ID"),
        ("soon", "", "start", "not a stream ID"),
    ] {
        let status = gw
            .events
            .replay(request("ticks", start, end))
            .await
            .expect_err("a bad bound is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(field) && status.message().contains(says),
            "{status:?}"
        );
    }
}

/// A plain stream replays as before: unqualified IDs, partition 0, pages
/// of the requested size; `0/ms-seq` names its one partition.
#[tokio::test]
async fn replay_of_a_plain_stream_is_unchanged() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    let produced = produce(&mut gw, "plain", orders(12)).await;
    assert!(produced.iter().all(|id| !id.contains('/')), "{produced:?}");
    let mut req = request("plain", "", "");
    req.page_size = 5;
    let pages = replay(&mut gw, req).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 2]);
    let entries = pages.concat();
    assert!(entries.iter().all(|(_, p)| *p == 0));
    let got: Vec<String> = entries.into_iter().map(|(id, _)| id).collect();
    assert_eq!(got, produced);

    let qualified = request("plain", &format!("0/{}", produced[3]), &produced[5]);
    let got: Vec<String> = replay(&mut gw, qualified)
        .await
        .concat()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, produced[3..=5]);
    let status = gw
        .events
        .replay(request("plain", &format!("1/{}", produced[3]), ""))
        .await
        .expect_err("a plain stream has one partition");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("not partitioned"), "{status:?}");
}

/// On a Redis Cluster the partitions live on every master; the merge reads
/// each from its own node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_merges_partitions_spread_over_a_cluster() {
    let cluster = RedisCluster::start();
    let mut gw = TestGateway::start(cluster.config(&[0])).await;
    create(&mut gw, "wide", 12).await;
    let masters: std::collections::HashSet<u16> = (0..12)
        .map(|p| cluster.master_of(&format!("wide{{{p}")).port())
        .collect();
    assert_eq!(masters.len(), 3, "partitions on every master");
    let events = (0..90).map(|n| keyed(&format!("customer-{}", n % 30), n));
    let mut produced = produce(&mut gw, "wide", events.collect()).await;
    produced.sort_by_key(|id| position(id));
    let mut req = request("wide", "", "");
    req.page_size = 8;
    assert_eq!(replay_ids(&mut gw, req.clone()).await, produced);
    req.reverse = true;
    produced.reverse();
    assert_eq!(replay_ids(&mut gw, req).await, produced);
}
