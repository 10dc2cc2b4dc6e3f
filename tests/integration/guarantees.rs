//! Delivery guarantees: auto-reclaim, dead letters, Nack, Extend, flow
//! control, heartbeats, idempotent produce and safe trim.

use std::collections::HashMap;

use redis::Commands;
use streamgate::pb::{self, subscribe_response::Kind};
use tonic::Streaming;

use crate::common::{
    DEADLINE, RedisServer, TestGateway, event, ids, orders, pending_count, produce, read_directly,
    setup, sub, subscribe, take_entries,
};

/// A subscription of `consumer` in group `g` on `orders` that reclaims
/// entries idle for `min_idle_ms`, checking every 50 ms.
fn reclaiming(consumer: &str, min_idle_ms: u64) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        reclaim: Some(pb::Reclaim {
            min_idle_ms,
            interval_ms: 50,
        }),
        ..sub("orders", "g", consumer)
    }
}

/// Owner of each pending entry of group `g`.
fn owners(redis: &RedisServer) -> HashMap<String, (String, u64)> {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&["orders", "g", "-", "+", "1000"][..])
        .query(&mut redis.conn())
        .unwrap();
    rows.into_iter().map(|(id, c, _, n)| (id, (c, n))).collect()
}

async fn nack(gw: &mut TestGateway, consumer: &str, ids: Vec<String>, delay_ms: u64) -> u64 {
    gw.events
        .nack(pb::NackRequest {
            stream: "orders".into(),
            group: "g".into(),
            consumer: consumer.into(),
            ids,
            delay_ms,
        })
        .await
        .unwrap()
        .into_inner()
        .scheduled
}

/// Receives until an entry with `id` arrives; returns everything received.
async fn until_entry(s: &mut Streaming<pb::SubscribeResponse>, id: &str) -> Vec<pb::Entry> {
    let mut got = Vec::new();
    while !got.iter().any(|e: &pb::Entry| e.id == id) {
        got.extend(take_entries(s, 1).await);
    }
    got
}

#[tokio::test]
async fn a_crashed_consumers_entries_reach_a_live_subscriber_without_reap() {
    let (_redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(3)).await;
    let crashed = read_directly(&_redis, "orders", "g", "worker-a", 3);
    assert_eq!(crashed, produced);
    let mut b = subscribe(&mut gw, reclaiming("worker-b", 200)).await;
    let got = take_entries(&mut b, 3).await;
    assert_eq!(ids(&got), produced);
    assert!(
        got.iter().all(|e| e.redelivered && e.delivery_count == 2),
        "{got:?}"
    );
    assert_eq!(got[1].fields["order_id"], "o-1");
}

#[tokio::test]
async fn a_poison_entry_is_dead_lettered_exactly_once_with_its_metadata() {
    let (redis, mut gw) = setup().await;
    let poison = produce(
        &mut gw,
        "orders",
        vec![event("order.paid", &[("order_id", "o-9")])],
    )
    .await;
    read_directly(&redis, "orders", "g", "worker-a", 1);
    let mut req = reclaiming("worker-b", 100);
    req.max_deliveries = 2;
    let mut b = subscribe(&mut gw, req).await;
    // Second delivery: allowed. worker-b does not ack either.
    let second = take_entries(&mut b, 1).await;
    assert_eq!(
        (second[0].id.as_str(), second[0].delivery_count),
        (poison[0].as_str(), 2)
    );

    let mut conn = redis.conn();
    crate::common::eventually("the poison entry is dead-lettered", || {
        let len: u64 = conn.xlen("orders:dlq").unwrap();
        async move { (len > 0).then_some(()) }
    })
    .await;
    // A marker that worker-b does not ack either comes back through a later
    // reclaim round; once it has, the poison entry had its chance to be
    // moved (or delivered) again.
    let marker = produce(&mut gw, "orders", orders(1)).await;
    let mut later = until_entry(&mut b, &marker[0]).await;
    while !later.iter().any(|e| e.id == marker[0] && e.redelivered) {
        later.extend(take_entries(&mut b, 1).await);
    }
    assert!(
        later.iter().all(|e| e.id != poison[0]),
        "never delivered a third time"
    );

    let dead: Vec<(String, HashMap<String, String>)> = conn.xrange("orders:dlq", "-", "+").unwrap();
    let dead: Vec<_> = dead
        .into_iter()
        .filter(|(_, r)| r["dlq.id"] == poison[0])
        .collect();
    assert_eq!(dead.len(), 1, "moved exactly once");
    let record = &dead[0].1;
    assert_eq!(record["dlq.stream"], "orders");
    assert_eq!(record["dlq.id"], poison[0]);
    assert_eq!(record["dlq.group"], "g");
    assert_eq!(record["dlq.consumer"], "worker-b");
    assert_eq!(record["dlq.deliveries"], "2");
    assert_eq!(record["dlq.reason"], "max_deliveries");
    assert_eq!(
        (record["type"].as_str(), record["order_id"].as_str()),
        ("order.paid", "o-9")
    );
    assert!(
        !owners(&redis).contains_key(&poison[0]),
        "acked in the source group"
    );
}

#[tokio::test]
async fn entries_trimmed_while_pending_are_recorded_as_trimmed_dead_letters() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(2)).await;
    read_directly(&redis, "orders", "g", "worker-a", 2);
    let _: u64 = redis
        .conn()
        .xtrim("orders", redis::streams::StreamMaxlen::Equals(1))
        .unwrap();
    let mut req = reclaiming("worker-b", 50);
    req.dead_letter_stream = "orders-dead".into();
    let mut b = subscribe(&mut gw, req).await;
    assert_eq!(ids(&take_entries(&mut b, 1).await), produced[1..].to_vec());
    let dead: Vec<(String, HashMap<String, String>)> =
        redis.conn().xrange("orders-dead", "-", "+").unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1["dlq.id"], produced[0]);
    assert_eq!(dead[0].1["dlq.reason"], "trimmed");
    assert_eq!(
        pending_count(&redis, "orders", "g"),
        1,
        "only the live entry is pending"
    );
}

/// How a subscription ended: its status, skipping heartbeats. Nothing is
/// left to deliver, so a batch fails the test.
async fn end_status(s: &mut Streaming<pb::SubscribeResponse>) -> tonic::Status {
    loop {
        match s.message().await {
            Ok(Some(pb::SubscribeResponse {
                kind: Some(Kind::Heartbeat(_)),
            })) => {}
            Ok(other) => panic!("expected the subscription to fail, got {other:?}"),
            Err(status) => return status,
        }
    }
}

/// An entry written by another program with more fields than the
/// dead-letter script can `unpack` (4,000; Produce caps an event at
/// `--max-event-fields`, at most 3,984) can never get its dead-letter
/// record written. Each reclaim round that tries fails (today the failure
/// ends the subscription, which is the event each attempt waits for), and
/// the entry must stay pending: never acknowledged without its record.
/// Redis does not roll back a script that fails midway, so a marker set
/// before the failed XADD made the next round skip the write as done and
/// acknowledge the entry.
#[tokio::test]
async fn an_entry_whose_dead_letter_cannot_be_written_stays_pending() {
    let (redis, mut gw) = setup().await;
    let mut conn = redis.conn();
    let mut xadd = redis::cmd("XADD");
    xadd.arg("orders").arg("*");
    for i in 0..4000 {
        xadd.arg(format!("f{i}")).arg(format!("v{i}"));
    }
    let id: String = xadd.query(&mut conn).unwrap();
    assert_eq!(
        read_directly(&redis, "orders", "g", "worker-a", 1),
        std::slice::from_ref(&id)
    );
    // Delivered once: the first round that finds it idle makes it a
    // dead-letter candidate.
    let mut req = reclaiming("worker-b", 1);
    req.max_deliveries = 1;
    for attempt in 1..=3 {
        let mut b = subscribe(&mut gw, req.clone()).await;
        // Either the round fails and ends the subscription, or the entry
        // leaves the PEL (acked: only right with its record written).
        let subscription = tokio::select! {
            status = end_status(&mut b) => format!("ended with {:?}", status.code()),
            () = crate::common::eventually("a failed round or the entry acked", || {
                let pending = owners(&redis).contains_key(&id);
                async move { (!pending).then_some(()) }
            }) => "still open".to_owned(),
        };
        let records: Vec<(String, HashMap<String, String>)> =
            conn.xrange("orders:dlq", "-", "+").unwrap();
        let recorded = records.iter().any(|(_, r)| r["dlq.id"] == id);
        let pending = owners(&redis).get(&id).cloned();
        assert!(
            pending.is_some() || recorded,
            "attempt {attempt}: the entry was acknowledged without a dead-letter record \
             (the subscription {subscription})"
        );
        assert!(
            !recorded,
            "attempt {attempt}: a record was written after all"
        );
        assert_eq!(
            pending,
            Some(("worker-a".to_owned(), 1)),
            "attempt {attempt}: left pending and untouched"
        );
    }
}

#[tokio::test]
async fn nack_redelivers_at_once_or_after_its_delay_and_only_for_the_owner() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(3)).await;
    read_directly(&redis, "orders", "g", "worker-a", 3);
    // Only worker-a's entries can be nacked by worker-a.
    assert_eq!(nack(&mut gw, "worker-x", produced.clone(), 0).await, 0);
    // A huge min_idle: only nacked entries can move.
    let mut b = subscribe(&mut gw, reclaiming("worker-b", 3_600_000)).await;
    assert_eq!(
        nack(&mut gw, "worker-a", vec![produced[0].clone()], 3_600_000).await,
        1
    );
    assert_eq!(
        nack(&mut gw, "worker-a", vec![produced[1].clone()], 0).await,
        1
    );
    let first = until_entry(&mut b, &produced[1]).await;
    assert_eq!(
        ids(&first),
        vec![produced[1].clone()],
        "the delayed entry waits"
    );
    assert!(first[0].redelivered);

    assert_eq!(
        nack(&mut gw, "worker-a", vec![produced[2].clone()], 150).await,
        1
    );
    let second = until_entry(&mut b, &produced[2]).await;
    assert_eq!(ids(&second), vec![produced[2].clone()]);
    assert_eq!(owners(&redis)[&produced[0]].0, "worker-a");
}

/// An idle threshold no stall of a test machine comes near: entries only
/// pass it when the test says so (see [`age`]).
const HOUR_MS: u64 = 3_600_000;
/// Comfortably under [`HOUR_MS`], by more than any stall.
const ALMOST_AN_HOUR_MS: u64 = HOUR_MS - 60_000;

/// Makes pending entries of `consumer` in group `g` look idle for
/// `idle_ms`, as if that much time had passed since they were last
/// delivered or extended: XCLAIM to the same consumer with IDLE, and
/// JUSTID so that no delivery is counted. Idle time is all that reclaim
/// looks at, so the test moves it instead of racing a timer.
fn age(redis: &RedisServer, consumer: &str, ids: &[String], idle_ms: u64) {
    let aged: Vec<String> = redis::cmd("XCLAIM")
        .arg(&["orders", "g", consumer, "0"][..])
        .arg(ids)
        .arg("IDLE")
        .arg(idle_ms)
        .arg("JUSTID")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(aged, ids, "every entry to age is pending for {consumer}");
}

/// How long a pending entry of group `g` has been idle, in ms (XPENDING).
fn idle_ms(redis: &RedisServer, id: &str) -> u64 {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&["orders", "g", id, id, "1"][..])
        .query(&mut redis.conn())
        .unwrap();
    rows.first().unwrap_or_else(|| panic!("{id} is pending")).2
}

async fn extend(gw: &mut TestGateway, consumer: &str, ids: &[String]) -> u64 {
    gw.events
        .extend(pb::ExtendRequest {
            stream: "orders".into(),
            group: "g".into(),
            consumer: consumer.into(),
            ids: ids.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .extended
}

/// What Extend promises is that it resets an entry's idle time (without
/// counting a delivery), and reclaim takes only entries idle for its
/// threshold. The test once extended every 100 ms inside a 400 ms
/// threshold: a machine that stalled for 400 ms between two extends let
/// the entry be reclaimed rightly, and the test failed. Here the threshold
/// is an hour and the test itself says how much time has passed ([`age`]),
/// so each step is checked on Redis' state whatever the scheduling.
#[tokio::test]
async fn extend_keeps_a_slow_consumers_entry_from_being_reclaimed() {
    let (redis, mut gw) = setup().await;
    // Both held by worker-a: it works on `slow` and extends it; `stale` it
    // has forgotten. `slow` has the lower ID, so a reclaim scan, which goes
    // in ID order, looks at it before `stale`.
    let produced = produce(&mut gw, "orders", orders(2)).await;
    let (slow, stale) = (&produced[..1], &produced[1..]);
    read_directly(&redis, "orders", "g", "worker-a", 2);
    // Both have been idle for well over worker-b's threshold ...
    age(&redis, "worker-a", &produced, 2 * HOUR_MS);
    // ... but worker-a extends `slow` before worker-b's rounds start.
    assert_eq!(extend(&mut gw, "worker-a", slow).await, 1);
    let idle = idle_ms(&redis, &slow[0]);
    assert!(
        idle < ALMOST_AN_HOUR_MS,
        "Extend resets the idle time: {idle} ms after it"
    );
    let mut b = subscribe(&mut gw, reclaiming("worker-b", HOUR_MS)).await;
    // worker-b's round takes the forgotten entry; the same round (one
    // script, so one instant in Redis) scanned `slow` first and left it.
    let got = until_entry(&mut b, &stale[0]).await;
    assert_eq!(ids(&got), stale, "only the entry not extended is reclaimed");
    assert_eq!(got[0].delivery_count, 2);
    assert_eq!(
        owners(&redis)[&slow[0]],
        ("worker-a".to_owned(), 1),
        "extend counts no delivery"
    );

    // worker-a works on for hours, extending as it goes, while worker-b's
    // rounds run (every 50 ms): each time almost an hour has passed, and
    // each Extend starts the idle time over.
    for round in 0..3 {
        age(&redis, "worker-a", slow, ALMOST_AN_HOUR_MS);
        assert_eq!(extend(&mut gw, "worker-a", slow).await, 1);
        let idle = idle_ms(&redis, &slow[0]);
        assert!(
            idle < ALMOST_AN_HOUR_MS,
            "extend {round} resets the idle time: {idle} ms after it"
        );
    }
    assert_eq!(
        owners(&redis)[&slow[0]],
        ("worker-a".to_owned(), 1),
        "the extended entry stays with worker-a, its delivery uncounted"
    );

    // Once worker-a stops extending and the threshold passes, worker-b
    // takes the entry over.
    age(&redis, "worker-a", slow, 2 * HOUR_MS);
    let taken = until_entry(&mut b, &slow[0]).await;
    let taken = taken.iter().find(|e| e.id == slow[0]).unwrap();
    assert!(taken.redelivered && taken.delivery_count == 2, "{taken:?}");
    assert_eq!(owners(&redis)[&slow[0]], ("worker-b".to_owned(), 2));
}

/// The next message of a subscription, batch or heartbeat.
async fn next_message(s: &mut Streaming<pb::SubscribeResponse>) -> Kind {
    tokio::time::timeout(DEADLINE, s.message())
        .await
        .expect("a message within the deadline")
        .expect("stream open")
        .expect("not ended")
        .kind
        .expect("kind set")
}

#[tokio::test]
async fn max_in_flight_holds_the_consumers_pending_count_down() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(8)).await;
    let mut req = sub("orders", "g", "w");
    req.max_in_flight = 3;
    req.heartbeat_ms = Some(50);
    let mut s = subscribe(&mut gw, req).await;
    let Kind::Batch(first) = next_message(&mut s).await else {
        panic!("entries first");
    };
    assert_eq!(first.entries.len(), 3);
    // While at the limit the subscription only sends heartbeats.
    assert!(matches!(next_message(&mut s).await, Kind::Heartbeat(_)));
    assert_eq!(pending_count(&redis, "orders", "g"), 3);

    gw.events
        .ack(pb::AckRequest {
            stream: "orders".into(),
            group: "g".into(),
            ids: ids(&first.entries[..2]),
        })
        .await
        .unwrap();
    let mut second = Vec::new();
    while second.is_empty() {
        if let Kind::Batch(b) = next_message(&mut s).await {
            second = b.entries;
        }
    }
    assert_eq!(
        ids(&second),
        produced[3..5].to_vec(),
        "exactly the freed room"
    );
    assert_eq!(pending_count(&redis, "orders", "g"), 3);

    // An ack that bypasses this gateway (another instance, a script) is
    // noticed too.
    let _: u64 = redis.conn().xack("orders", "g", &ids(&second)).unwrap();
    let mut third = Vec::new();
    while third.is_empty() {
        if let Kind::Batch(b) = next_message(&mut s).await {
            third = b.entries;
        }
    }
    assert_eq!(ids(&third), produced[5..7].to_vec());
    assert!(pending_count(&redis, "orders", "g") <= 3);
}

#[tokio::test]
async fn idle_subscriptions_and_tails_send_heartbeats() {
    let (_redis, mut gw) = setup().await;
    let mut req = sub("quiet", "g", "w");
    req.heartbeat_ms = Some(100);
    let mut s = subscribe(&mut gw, req).await;
    for _ in 0..2 {
        let Kind::Heartbeat(beat) = next_message(&mut s).await else {
            panic!("nothing was produced");
        };
        assert!(beat.server_time_ms > 0);
    }
    let mut tail = gw
        .events
        .tail(pb::TailRequest {
            stream: "quiet".into(),
            heartbeat_ms: Some(100),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let message = tokio::time::timeout(DEADLINE, tail.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(
        message.kind,
        Some(pb::tail_response::Kind::Heartbeat(_))
    ));
}

fn keyed(key: &str, order: &str) -> pb::Event {
    pb::Event {
        idempotency_key: key.into(),
        ..event("order.placed", &[("order_id", order)])
    }
}

#[tokio::test]
async fn a_retried_produce_returns_the_first_id_and_writes_nothing() {
    let (redis, mut gw) = setup().await;
    let first = produce(&mut gw, "orders", vec![keyed("k1", "o-1"), event("x", &[])]).await;
    let retry = produce(
        &mut gw,
        "orders",
        vec![keyed("k1", "o-1"), keyed("k2", "o-2"), keyed("k2", "o-2")],
    )
    .await;
    assert_eq!(retry[0], first[0], "duplicate returns the original id");
    assert_eq!(
        retry[1], retry[2],
        "a key repeated within one batch is written once"
    );
    let mut conn = redis.conn();
    assert_eq!(conn.xlen::<_, u64>("orders").unwrap(), 3);
    // Keys are scoped to the stream: the same key writes another stream
    // an entry of its own. (Not told by its ID: two streams written in the
    // same millisecond give their entries the same ID.)
    let other = produce(&mut gw, "refunds", vec![keyed("k1", "o-1")]).await;
    let written: Vec<(String, HashMap<String, String>)> = conn.xrange("refunds", "-", "+").unwrap();
    assert_eq!(written.len(), 1, "{written:?}");
    let (id, fields) = &written[0];
    assert_eq!(id, &other[0]);
    assert_eq!(fields.get("type").map(String::as_str), Some("order.placed"));
    assert_eq!(fields.get("order_id").map(String::as_str), Some("o-1"));
    assert_eq!(conn.xlen::<_, u64>("orders").unwrap(), 3);
    // Bookkeeping lives in the stream's slot and expires by itself.
    let ttl: i64 = conn.pttl("{orders}:idem:k1").unwrap();
    assert!(ttl > 0 && ttl <= 86_400_000, "{ttl}");
}

#[tokio::test]
async fn the_dedup_window_is_configurable() {
    let redis = RedisServer::start();
    let mut cfg = crate::common::config(&redis);
    cfg.dedup_window_ms = 5_000;
    let mut gw = TestGateway::start(cfg).await;
    produce(&mut gw, "orders", vec![keyed("k", "o-1")]).await;
    let ttl: i64 = redis.conn().pttl("{orders}:idem:k").unwrap();
    assert!(ttl > 0 && ttl <= 5_000, "{ttl}");
}

/// An exact `MAXLEN max_len` trim of `orders` bounded by what every group
/// has acked; returns how many entries it removed.
async fn safe_trim(gw: &mut TestGateway, max_len: u64) -> u64 {
    let request = pb::TrimRequest {
        stream: "orders".into(),
        strategy: Some(pb::trim_request::Strategy::MaxLen(max_len)),
        exact: true,
        acked_by_all_groups: true,
        ..Default::default()
    };
    gw.events.trim(request).await.unwrap().into_inner().trimmed
}

#[tokio::test]
async fn safe_trim_keeps_every_entry_a_group_still_needs() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(10)).await;
    // fast: read 6, acked all but the 5th; slow: read 3, acked them.
    let fast = read_directly(&redis, "orders", "fast", "w", 6);
    let mut conn = redis.conn();
    let _: u64 = conn
        .xack("orders", "fast", &[&fast[..4], &fast[5..]].concat())
        .unwrap();
    let slow = read_directly(&redis, "orders", "slow", "w", 3);
    let _: u64 = conn.xack("orders", "slow", &slow).unwrap();

    let trimmed = safe_trim(&mut gw, 0).await;
    // slow still needs entry 3 onwards; fast still needs entry 4.
    assert_eq!(trimmed, 3);
    let left: Vec<(String, HashMap<String, String>)> = conn.xrange("orders", "-", "+").unwrap();
    assert_eq!(
        left.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        produced[3..].to_vec()
    );

    // MAXLEN is bounded the same way, and a MAXLEN above the floor applies.
    let _: u64 = conn.xack("orders", "fast", &[&fast[4]]).unwrap();
    let rest = read_directly(&redis, "orders", "slow", "w", 7);
    let _: u64 = conn.xack("orders", "slow", &rest).unwrap();
    let trimmed = safe_trim(&mut gw, 5).await;
    // Every group is past entry 5 now: MAXLEN 5 itself is the bound.
    assert_eq!(trimmed, 2);
    assert_eq!(conn.xlen::<_, u64>("orders").unwrap(), 5);
    // fast has delivered only 6 of 10: entries 6..9 stay even under MAXLEN 1.
    let trimmed = safe_trim(&mut gw, 1).await;
    assert_eq!(trimmed, 1);
    let left: Vec<(String, HashMap<String, String>)> = conn.xrange("orders", "-", "+").unwrap();
    assert_eq!(
        left.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        produced[6..].to_vec()
    );
}
