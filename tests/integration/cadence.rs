//! Timers of live streams keep their own cadence whatever `--block-ms` is:
//! heartbeats, reclaim rounds and Nack delays; shutdown ends idle streams at
//! once.
//!
//! The gateway here runs with a 10 s block, so anything that still waited
//! for a block period would be late by seconds; the checks allow half a
//! block, which no scheduling hiccup comes near, and compare against the
//! block period rather than measure speed. Floors (nothing comes *before*
//! its interval or delay) are measured from an instant the test takes
//! before its request, so that a slow machine only adds to what they see.

use std::time::{Duration, Instant};

use streamgate::pb::{self, subscribe_response, tail_response};
use tonic::Code;

use crate::common::{
    DEADLINE, RedisServer, TestGateway, config, ids, orders, produce, read_directly, sub,
    subscribe, take_entries,
};

/// The gateway's `--block-ms` in these tests.
const BLOCK_MS: u64 = 10_000;
/// Far less than a block period.
const WELL_UNDER_BLOCK: Duration = Duration::from_millis(BLOCK_MS / 2);

async fn setup_long_block() -> (RedisServer, TestGateway) {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    config.block_ms = BLOCK_MS;
    let gateway = TestGateway::start(config).await;
    (redis, gateway)
}

/// The heartbeat interval the cadence test asks for.
const HEARTBEAT_MS: u32 = 200;
const HEARTBEAT: Duration = Duration::from_millis(HEARTBEAT_MS as u64);

/// When each of the next `n` heartbeats of a subscription arrived.
async fn heartbeat_arrivals(
    s: &mut tonic::Streaming<pb::SubscribeResponse>,
    n: usize,
) -> Vec<Instant> {
    let mut arrivals = Vec::new();
    while arrivals.len() < n {
        let message = tokio::time::timeout(DEADLINE, s.message())
            .await
            .expect("a message within the deadline")
            .expect("the stream goes on")
            .expect("not ended");
        if let Some(subscribe_response::Kind::Heartbeat(_)) = message.kind {
            arrivals.push(Instant::now());
        }
    }
    arrivals
}

/// Checks the heartbeats of an idle stream opened at `opened` (taken
/// before the request went out) against what the driver promises.
///
/// A floor: the driver sends a heartbeat one interval after its last push
/// (the stream's start for the first), so on a stream with nothing to
/// deliver the k-th heartbeat cannot reach the client before k intervals
/// have passed since `opened`. A late poll or a slow client only makes
/// that elapsed time longer, so the floor holds however the machine
/// schedules us, and fails only if the gateway beats too often. (The test
/// once put a floor on the gap between two heartbeats' `server_time_ms`,
/// which is not promised: that is the wall clock read when the response
/// stream is polled (`message` in src/api/event_stream.rs), not when the
/// driver sent the heartbeat, and a busy machine can poll the first of two
/// heartbeats late and the second at once.)
///
/// A ceiling: each heartbeat comes well within a block period of the one
/// before (of `opened` for the first), i.e. heartbeats do not wait for the
/// block.
fn assert_cadence(what: &str, opened: Instant, arrivals: &[Instant]) {
    let mut previous = opened;
    for (k, at) in (1u32..).zip(arrivals) {
        let since_open = at.duration_since(opened);
        assert!(
            since_open >= HEARTBEAT * k,
            "{what}: heartbeat {k} arrived {since_open:?} after the stream was opened, \
             sooner than {k} heartbeat intervals of {HEARTBEAT:?}"
        );
        let gap = at.duration_since(previous);
        assert!(
            gap < WELL_UNDER_BLOCK,
            "{what}: heartbeat {k} came {gap:?} after the one before (or the open), \
             for heartbeat_ms {HEARTBEAT:?} and a {BLOCK_MS} ms block"
        );
        previous = *at;
    }
}

#[tokio::test]
async fn heartbeats_follow_heartbeat_ms_not_the_block_time() {
    let (_redis, mut gw) = setup_long_block().await;
    let opened = Instant::now();
    let mut s = subscribe(
        &mut gw,
        pb::SubscribeRequest {
            heartbeat_ms: Some(HEARTBEAT_MS),
            ..sub("orders", "g", "a")
        },
    )
    .await;
    let arrivals = heartbeat_arrivals(&mut s, 4).await;
    assert_cadence("Subscribe", opened, &arrivals);

    let opened = Instant::now();
    let mut tail = gw
        .events
        .tail(pb::TailRequest {
            stream: "orders".into(),
            heartbeat_ms: Some(HEARTBEAT_MS),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut arrivals = Vec::new();
    while arrivals.len() < 3 {
        let message = tokio::time::timeout(DEADLINE, tail.message())
            .await
            .expect("a message within the deadline")
            .expect("the tail goes on")
            .expect("not ended");
        if let Some(tail_response::Kind::Heartbeat(_)) = message.kind {
            arrivals.push(Instant::now());
        }
    }
    assert_cadence("Tail", opened, &arrivals);
    assert!(
        opened.elapsed() < WELL_UNDER_BLOCK,
        "three Tail heartbeats of 200 ms took {:?}",
        opened.elapsed()
    );
}

#[tokio::test]
async fn reclaim_rounds_follow_interval_ms() {
    let (redis, mut gw) = setup_long_block().await;
    produce(&mut gw, "orders", orders(1)).await;
    // A consumer reads the entry and dies before acking it.
    let stuck = read_directly(&redis, "orders", "g", "dead", 1);
    let start = Instant::now();
    let mut live = subscribe(
        &mut gw,
        pb::SubscribeRequest {
            reclaim: Some(pb::Reclaim {
                min_idle_ms: 300,
                interval_ms: 100,
            }),
            ..sub("orders", "g", "live")
        },
    )
    .await;
    let got = take_entries(&mut live, 1).await;
    assert_eq!(ids(&got), stuck);
    assert!(got[0].redelivered && got[0].delivery_count == 2, "{got:?}");
    assert!(
        start.elapsed() < WELL_UNDER_BLOCK,
        "an entry idle for 300 ms reclaimed every 100 ms arrived after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_nack_delay_is_honoured_to_the_delay_not_the_block() {
    let (_redis, mut gw) = setup_long_block().await;
    // Idle scans far off, so only the Nack can bring the entry back.
    let mut s = subscribe(
        &mut gw,
        pb::SubscribeRequest {
            reclaim: Some(pb::Reclaim {
                min_idle_ms: 600_000,
                interval_ms: 600_000,
            }),
            ..sub("orders", "g", "a")
        },
    )
    .await;
    let produced = produce(&mut gw, "orders", orders(1)).await;
    let first = take_entries(&mut s, 1).await;
    assert_eq!(ids(&first), produced);

    let nacked = Instant::now();
    let scheduled = gw
        .events
        .nack(pb::NackRequest {
            stream: "orders".into(),
            group: "g".into(),
            consumer: "a".into(),
            ids: produced.clone(),
            delay_ms: 300,
        })
        .await
        .unwrap()
        .into_inner()
        .scheduled;
    assert_eq!(scheduled, 1);
    let again = take_entries(&mut s, 1).await;
    let waited = nacked.elapsed();
    assert_eq!(ids(&again), produced);
    assert!(again[0].redelivered && again[0].delivery_count == 2);
    assert!(
        waited >= Duration::from_millis(295),
        "redelivered after {waited:?}, before the 300 ms delay"
    );
    assert!(
        waited < WELL_UNDER_BLOCK,
        "a 300 ms Nack came back after {waited:?}"
    );
}

#[tokio::test]
async fn shutdown_ends_idle_streams_at_once() {
    let (_redis, mut gw) = setup_long_block().await;
    let mut s = subscribe(
        &mut gw,
        pb::SubscribeRequest {
            heartbeat_ms: Some(0),
            ..sub("orders", "g", "a")
        },
    )
    .await;
    let mut tail = gw
        .events
        .tail(pb::TailRequest {
            stream: "orders".into(),
            heartbeat_ms: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let start = Instant::now();
    gw.stop().await;
    let status = s.message().await.expect_err("the subscription ends");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = tail.message().await.expect_err("the tail ends");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        start.elapsed() < WELL_UNDER_BLOCK,
        "idle streams ended {:?} after shutdown",
        start.elapsed()
    );
}
