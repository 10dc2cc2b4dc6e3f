//! Ordered consumption through the gateway: one owner per partition,
//! shares rebalanced as consumers come and go, a new owner's pending
//! entries first, a Nack bringing the later entries of its partition back
//! with it, acks fenced by ownership.

use std::collections::{BTreeMap, HashMap};

use streamgate::config::Settings;
use streamgate::pb;
use tonic::{Code, Streaming};

use crate::common::{
    DEADLINE, GatewayProcess, RedisServer, TestGateway, config, event, eventually, ids, next_batch,
    produce, sub, subscribe,
};
use crate::consume::{open, open_on};
use crate::metrics::{sample, scrape};

/// Quick rebalancing, so that the tests wait little.
fn ordered_config(redis: &RedisServer) -> Settings {
    Settings {
        rebalance_interval_ms: 50,
        partition_lease_ms: 1500,
        heartbeat_ms: 0,
        ..config(redis)
    }
}

async fn create(gw: &mut TestGateway, stream: &str, partitions: u32) {
    gw.admin
        .create_stream(pb::CreateStreamRequest {
            stream: stream.into(),
            partitions,
        })
        .await
        .expect("CreateStream");
}

/// An ordered subscription of `consumer`, creating the group at the start.
fn ordered(stream: &str, consumer: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        ordered: true,
        batch_size: 100,
        ..sub(stream, "g", consumer)
    }
}

/// `per_key` events for each of `keys` keys, each carrying its key's
/// sequence number `seq`, interleaved across keys.
fn keyed_events(keys: usize, per_key: usize, offset: usize) -> Vec<pb::Event> {
    let mut events = Vec::new();
    for seq in offset..offset + per_key {
        for k in 0..keys {
            let mut e = event("order.paid", &[("seq", &seq.to_string())]);
            e.key = format!("k{k}");
            events.push(e);
        }
    }
    events
}

/// The owner of each partition of `stream` in group `g`.
async fn owners(gw: &TestGateway, stream: &str) -> Vec<String> {
    let partitions = (gw.admin.clone())
        .list_partitions(pb::ListPartitionsRequest {
            stream: stream.into(),
            group: "g".into(),
        })
        .await
        .expect("ListPartitions")
        .into_inner()
        .partitions;
    partitions.into_iter().map(|p| p.owner).collect()
}

/// How many partitions each consumer owns (unowned under "").
fn shares(owners: &[String]) -> BTreeMap<String, usize> {
    let mut shares = BTreeMap::new();
    for owner in owners {
        *shares.entry(owner.clone()).or_default() += 1;
    }
    shares
}

/// Waits until the partitions' owners are shared as `want` says; answers
/// the owners then.
async fn await_shares(gw: &TestGateway, stream: &str, want: &[(&str, usize)]) -> Vec<String> {
    let want: BTreeMap<String, usize> = want.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect();
    eventually(&format!("shares {want:?}"), || async {
        let owners = owners(gw, stream).await;
        (shares(&owners) == want).then_some(owners)
    })
    .await
}

/// Reads until `n` entries arrived.
async fn take(stream: &mut Streaming<pb::SubscribeResponse>, n: usize) -> Vec<pb::Entry> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(next_batch(stream).await.expect("a batch"));
    }
    out
}

/// Per key, the sequence numbers in the order they arrived.
fn by_key(entries: &[pb::Entry]) -> HashMap<String, Vec<usize>> {
    let mut keys: HashMap<String, Vec<usize>> = HashMap::new();
    for e in entries {
        keys.entry(e.key.clone())
            .or_default()
            .push(e.fields["seq"].parse().unwrap());
    }
    keys
}

fn partition(entry: &pb::Entry) -> u32 {
    entry.partition
}

#[tokio::test]
async fn ordered_needs_a_partitioned_stream() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(ordered_config(&redis)).await;
    produce(&mut gw, "plain", vec![event("order.placed", &[])]).await;
    let status = gw
        .events
        .subscribe(ordered("plain", "a"))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("ordered"), "{status:?}");
}

/// Waits until the gateway's metrics show `series` at `value`.
async fn await_metric(gw: &TestGateway, series: &str, value: f64) {
    let addr = gw
        .gateway
        .as_ref()
        .unwrap()
        .metrics_addr()
        .expect("metrics on");
    eventually(&format!("{series} at {value}"), || async move {
        (sample(&scrape(addr).await, series) == Some(value)).then_some(())
    })
    .await;
}

const OWNED: &str = r#"streamgate_partitions_owned{stream="orders",group="g"}"#;

fn changes(change: &str) -> String {
    format!(
        r#"streamgate_partition_ownership_changes_total{{stream="orders",group="g",change="{change}"}}"#
    )
}

#[tokio::test]
async fn partitions_are_shared_evenly_and_each_is_read_by_its_owner_only() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(Settings {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ordered_config(&redis)
    })
    .await;
    create(&mut gw, "orders", 4).await;
    let mut a = subscribe(&mut gw, ordered("orders", "a")).await;
    let mut b = subscribe(&mut gw, ordered("orders", "b")).await;
    let owners = await_shares(&gw, "orders", &[("a", 2), ("b", 2)]).await;
    await_metric(&gw, OWNED, 4.0).await;
    produce(&mut gw, "orders", keyed_events(8, 5, 0)).await;
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() + got_b.len() < 40 {
        tokio::select! {
            batch = next_batch(&mut a) => got_a.extend(batch.expect("a batch")),
            batch = next_batch(&mut b) => got_b.extend(batch.expect("a batch")),
        }
    }
    for (consumer, got) in [("a", &got_a), ("b", &got_b)] {
        for e in got.iter() {
            assert_eq!(owners[partition(e) as usize], consumer, "{e:?}");
        }
        for (key, seqs) in by_key(got) {
            assert_eq!(seqs, (0..5).collect::<Vec<_>>(), "{consumer}: key {key}");
        }
    }
    // A third consumer gets its share; one that leaves has its share taken.
    let c = subscribe(&mut gw, ordered("orders", "c")).await;
    await_shares(&gw, "orders", &[("a", 2), ("b", 1), ("c", 1)]).await;
    drop(b);
    await_shares(&gw, "orders", &[("a", 2), ("c", 2)]).await;
    drop((a, c));
    await_shares(&gw, "orders", &[("", 4)]).await;
    await_metric(&gw, OWNED, 0.0).await;
    let addr = gw.gateway.as_ref().unwrap().metrics_addr().unwrap();
    let text = scrape(addr).await;
    let (acquired, released) = (
        sample(&text, &changes("acquired")).unwrap(),
        sample(&text, &changes("released")).unwrap(),
    );
    assert!(acquired >= 6.0, "a, b, then c and a after b left: {text}");
    assert_eq!(acquired, released, "everything taken was given up: {text}");
}

#[tokio::test]
async fn a_new_owner_gets_the_partitions_pending_entries_first_in_order() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(ordered_config(&redis)).await;
    create(&mut gw, "orders", 2).await;
    let mut a = subscribe(&mut gw, ordered("orders", "a")).await;
    await_shares(&gw, "orders", &[("a", 2)]).await;
    let first = produce(&mut gw, "orders", keyed_events(6, 3, 0)).await;
    let held = take(&mut a, first.len()).await;
    // `a` acks nothing; `b` joins and is given one partition.
    let mut b = subscribe(&mut gw, ordered("orders", "b")).await;
    let owners = await_shares(&gw, "orders", &[("a", 1), ("b", 1)]).await;
    let moved = owners.iter().position(|o| o == "b").unwrap() as u32;
    let later = produce(&mut gw, "orders", keyed_events(6, 2, 3)).await;
    let mut expected: Vec<String> = ids(&held)
        .into_iter()
        .filter(|id| id.starts_with(&format!("{moved}/")))
        .collect();
    let redelivered = expected.len();
    expected.extend(
        later
            .into_iter()
            .filter(|id| id.starts_with(&format!("{moved}/"))),
    );
    let got = take(&mut b, expected.len()).await;
    assert_eq!(
        ids(&got),
        expected,
        "a's pending entries, oldest first, then new ones"
    );
    assert!(got[..redelivered].iter().all(|e| e.redelivered));
    assert!(got[redelivered..].iter().all(|e| !e.redelivered));
    drop(a);
}

#[tokio::test]
async fn a_nack_brings_back_the_later_entries_of_its_partition_before_newer_ones() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(ordered_config(&redis)).await;
    create(&mut gw, "orders", 2).await;
    let mut a = subscribe(&mut gw, ordered("orders", "a")).await;
    await_shares(&gw, "orders", &[("a", 2)]).await;
    let produced = produce(&mut gw, "orders", keyed_events(1, 5, 0)).await;
    let got = take(&mut a, 5).await;
    assert_eq!(ids(&got), produced);
    let nacked = gw
        .events
        .nack(pb::NackRequest {
            stream: "orders".into(),
            group: "g".into(),
            consumer: "a".into(),
            ids: vec![produced[1].clone()],
            delay_ms: 0,
        })
        .await
        .expect("Nack")
        .into_inner();
    assert_eq!(nacked.scheduled, 1);
    let newer = produce(&mut gw, "orders", keyed_events(1, 1, 5)).await;
    let again = take(&mut a, 4).await;
    assert_eq!(
        ids(&again),
        produced[1..],
        "the nacked entry and the ones after it"
    );
    assert!(again.iter().all(|e| e.redelivered));
    assert_eq!(ids(&take(&mut a, 1).await), newer);
}

#[tokio::test]
async fn acks_in_band_of_a_partition_given_up_do_not_take_effect() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(ordered_config(&redis)).await;
    create(&mut gw, "orders", 2).await;
    let mut a = open(&mut gw, ordered("orders", "a")).await;
    await_shares(&gw, "orders", &[("a", 2)]).await;
    let produced = produce(&mut gw, "orders", keyed_events(6, 2, 0)).await;
    let held = a.entries(produced.len()).await;
    let b = subscribe(&mut gw, ordered("orders", "b")).await;
    let owners = await_shares(&gw, "orders", &[("a", 1), ("b", 1)]).await;
    let given_up = owners.iter().position(|o| o == "b").unwrap() as u32;
    let all: Vec<&String> = held.iter().map(|e| &e.id).collect();
    let (done, not_pending) = a.acked(&all).await;
    let (lost, kept): (Vec<String>, Vec<String>) = ids(&held)
        .into_iter()
        .partition(|id| id.starts_with(&format!("{given_up}/")));
    assert!(!lost.is_empty() && !kept.is_empty());
    assert_eq!(done, kept);
    assert_eq!(not_pending, lost);
    drop(b);
}

/// A gateway killed with SIGKILL releases nothing: its consumers'
/// partitions are taken over once their leases lapse, pending entries
/// first.
#[tokio::test]
async fn a_dead_gateways_partitions_are_taken_over_after_the_lease_time() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(ordered_config(&redis)).await;
    create(&mut gw, "orders", 2).await;
    let mut doomed = GatewayProcess::start(
        &redis.url(),
        "127.0.0.1:0",
        &[
            "--rebalance-interval-ms",
            "50",
            "--partition-lease-ms",
            "1500",
        ],
    );
    let mut far = doomed.events().await;
    let mut a = far
        .subscribe(ordered("orders", "a"))
        .await
        .expect("subscribe")
        .into_inner();
    await_shares(&gw, "orders", &[("a", 2)]).await;
    let produced = produce(&mut gw, "orders", keyed_events(4, 2, 0)).await;
    take(&mut a, produced.len()).await;
    let mut b = subscribe(&mut gw, ordered("orders", "b")).await;
    await_shares(&gw, "orders", &[("a", 1), ("b", 1)]).await;
    doomed.kill();
    await_shares(&gw, "orders", &[("b", 2)]).await;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while got.len() < produced.len() {
        let batch = tokio::time::timeout_at(deadline, next_batch(&mut b))
            .await
            .expect("b gets every entry")
            .expect("a batch");
        got.extend(batch);
    }
    let mut want = produced.clone();
    want.sort_by_key(|id| id.split_once('/').map(|(p, _)| p.to_owned()));
    let mut seen = ids(&got);
    seen.sort_by_key(|id| id.split_once('/').map(|(p, _)| p.to_owned()));
    assert_eq!(seen, want, "every entry, in order within its partition");
}

/// An unordered subscription would read every partition under the ordered
/// consumers' feet: refused while they are there, allowed once they left.
#[tokio::test]
async fn an_unordered_subscription_is_refused_while_the_group_is_consumed_in_order() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(ordered_config(&redis)).await;
    create(&mut gw, "orders", 2).await;
    let a = subscribe(&mut gw, ordered("orders", "a")).await;
    await_shares(&gw, "orders", &[("a", 2)]).await;
    let status = gw
        .events
        .subscribe(sub("orders", "g", "b"))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("ordered"), "{status:?}");
    // Another group is not concerned.
    let _other = subscribe(&mut gw, sub("orders", "other", "b")).await;
    drop(a);
    await_shares(&gw, "orders", &[("", 2)]).await;
    eventually("the unordered subscription is let in", || {
        let mut events = gw.events.clone();
        async move { events.subscribe(sub("orders", "g", "b")).await.ok() }
    })
    .await;
}

/// A poison entry (nacked every time) leaves for the dead-letter stream
/// after `max_deliveries`, and its partition moves on: the entries behind
/// it come again each time in order, and are never dead-lettered with it.
#[tokio::test]
async fn a_poison_entry_goes_to_the_dead_letters_and_its_partition_moves_on() {
    async fn nack(open: &mut crate::consume::Open, id: &str) {
        let ids = vec![id.to_owned()];
        let kind = pb::consume_request::Kind::Nack(pb::NackIds {
            ids: ids.clone(),
            delay_ms: 0,
        });
        open.send(kind).await;
        assert_eq!(open.confirm().await.done, ids);
    }
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(ordered_config(&redis)).await;
    create(&mut gw, "orders", 2).await;
    let mut a = open(
        &mut gw,
        pb::SubscribeRequest {
            max_deliveries: 3,
            ..ordered("orders", "a")
        },
    )
    .await;
    await_shares(&gw, "orders", &[("a", 2)]).await;
    let produced = produce(&mut gw, "orders", keyed_events(1, 4, 0)).await;
    let poison = produced[0].clone();
    // Delivered three times: first, then after each of two Nacks, each
    // time with the three entries behind it.
    for round in 1..=3u64 {
        let got = a.entries(4).await;
        assert_eq!(ids(&got), produced, "round {round}");
        assert_eq!(got[0].delivery_count, round, "the head counts a delivery");
        assert!(got[1..].iter().all(|e| e.delivery_count == 1), "{got:?}");
        if round < 3 {
            nack(&mut a, &poison).await;
        }
    }
    nack(&mut a, &poison).await;
    let after = a.entries(3).await;
    assert_eq!(ids(&after), produced[1..], "the partition moves on");
    let dead = gw
        .admin
        .describe_stream(pb::DescribeStreamRequest {
            stream: "orders:dlq".into(),
        })
        .await
        .expect("the dead-letter stream exists")
        .into_inner();
    assert_eq!(dead.length, 1);
    let rest: Vec<&String> = after.iter().map(|e| &e.id).collect();
    let (done, _) = a.acked(&rest).await;
    assert_eq!(done.len(), 3);
}

/// Entries of a partition read before an in-band Nack took effect may
/// already be on their way; they all arrive before the Nack's Confirm, and
/// after it the partition starts again at the nacked entry, with nothing
/// missing: so a client that drops, until the Confirm, the entries of the
/// partition later than the nacked one sees every entry in order. The
/// client's small HTTP/2 window keeps entries read before the Nack waiting
/// in the gateway when the Nack arrives.
#[tokio::test]
async fn after_a_nacks_confirm_the_partition_starts_again_at_the_nacked_entry() {
    use streamgate::pb::consume_response::Kind;
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(ordered_config(&redis)).await;
    create(&mut gw, "orders", 2).await;
    let addr = gw.gateway.as_ref().unwrap().addr();
    let narrow = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .unwrap();
    let mut client = pb::event_stream_client::EventStreamClient::new(narrow);
    let open = pb::SubscribeRequest {
        batch_size: 2,
        ..ordered("orders", "a")
    };
    let mut a = open_on(&mut client, Some(pb::consume_request::Kind::Open(open))).await;
    await_shares(&gw, "orders", &[("a", 2)]).await;
    let mut events = keyed_events(1, 40, 0);
    for e in &mut events {
        e.fields.insert("payload".into(), "x".repeat(64 * 1024));
    }
    let produced = produce(&mut gw, "orders", events).await;
    let first = a.entries(1).await;
    let nacked = first[0].id.clone();
    assert_eq!(nacked, produced[0]);
    a.send(pb::consume_request::Kind::Nack(pb::NackIds {
        ids: vec![nacked.clone()],
        delay_ms: 0,
    }))
    .await;
    // Until the Confirm: whatever was read before the Nack.
    let mut before = first.len();
    loop {
        match a.next().await.expect("the stream goes on") {
            Some(Kind::Confirm(confirm)) => {
                assert_eq!(confirm.done, std::slice::from_ref(&nacked));
                break;
            }
            Some(Kind::Batch(batch)) => before += batch.entries.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(before < produced.len(), "some were still to be read");
    // After it: the nacked entry again, then every later one, in order.
    let again = a.entries(produced.len()).await;
    let again = ids(&again[..produced.len()]);
    assert_eq!(again, produced, "{before} arrived before the Confirm");
}
