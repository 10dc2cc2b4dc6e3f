//! Waking idle live streams on one Redis: one tracking connection for all
//! of them, no wake-up lost when that connection is killed, and blocking
//! XREADs where the server refuses tracking.
//!
//! Every gateway here re-reads an idle stream only after an hour
//! (`idle_recheck_ms`) and a held-back one after a minute (`block_ms`), and
//! sends no heartbeats (each would be followed by a read), so an entry
//! reaches its subscriber within the deadline only through a wake-up.

use streamgate::config::Settings;
use streamgate::pb;
use tonic::Streaming;

use crate::common::{
    RedisServer, TestGateway, config, eventually, ids, next_batch, orders, produce, sub, subscribe,
    take_tail_entries,
};
use crate::metrics::{sample, scrape};

/// `CLIENT SETNAME` of the tracking wake-up's connections.
const TRACKING: &str = "streamgate-watch";
/// `CLIENT SETNAME` of the XREAD wake-up's connections.
const XREAD: &str = "streamgate-xread";

/// Settings under which only a wake-up delivers in time.
fn wake_ups_only(redis: &RedisServer) -> Settings {
    Settings {
        block_ms: 60_000,
        idle_recheck_ms: 3_600_000,
        heartbeat_ms: 0,
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..config(redis)
    }
}

/// The gateway's `streamgate_wakeup_connections` of `mechanism`, waited
/// for until it is `expected` (the gauge follows connections as they open
/// and close).
async fn wakeup_connections(gw: &TestGateway, mechanism: &str, expected: f64) {
    let addr = gw
        .gateway
        .as_ref()
        .unwrap()
        .metrics_addr()
        .expect("metrics on");
    let series = format!("streamgate_wakeup_connections{{mechanism=\"{mechanism}\"}}");
    eventually(&format!("{series} = {expected}"), || async {
        let text = scrape(addr).await;
        (sample(&text, &series) == Some(expected)).then_some(())
    })
    .await;
}

/// The IDs of the clients named `name` on `redis`.
pub(crate) fn clients_named(redis: &RedisServer, name: &str) -> Vec<u64> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut redis.conn())
        .unwrap();
    list.lines()
        .filter(|line| line.split(' ').any(|field| field == format!("name={name}")))
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(|id| id.parse().unwrap())
        .collect()
}

fn xadd(redis: &RedisServer, stream: &str) -> String {
    redis::cmd("XADD")
        .arg(&[stream, "*", "f", "v"][..])
        .query(&mut redis.conn())
        .unwrap()
}

/// Opens a Subscribe on each of `streams`.
async fn subscribers(
    gw: &mut TestGateway,
    streams: &[String],
) -> Vec<Streaming<pb::SubscribeResponse>> {
    let mut subs = Vec::new();
    for stream in streams {
        subs.push(subscribe(gw, sub(stream, "g", "c")).await);
    }
    subs
}

/// Appends one entry to each stream directly and checks that each
/// subscriber gets its own.
async fn each_is_woken(
    redis: &RedisServer,
    streams: &[String],
    subs: &mut [Streaming<pb::SubscribeResponse>],
    what: &str,
) {
    let appended: Vec<String> = streams.iter().map(|s| xadd(redis, s)).collect();
    for ((stream, sub), id) in streams.iter().zip(subs.iter_mut()).zip(appended) {
        let got = next_batch(sub).await.expect("a batch");
        assert_eq!(ids(&got), [id], "{what}: {stream}");
    }
}

#[tokio::test]
async fn idle_subscribers_and_tails_on_many_streams_share_one_connection() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(wake_ups_only(&redis)).await;
    let streams: Vec<String> = (0..200).map(|i| format!("idle-{i}")).collect();
    let mut subs = subscribers(&mut gw, &streams[..150]).await;
    let mut tails = Vec::new();
    for stream in &streams[150..] {
        let tail = gw
            .events
            .tail(pb::TailRequest {
                stream: stream.clone(),
                ..Default::default()
            })
            .await
            .expect("tail")
            .into_inner();
        tails.push(tail);
    }
    assert_eq!(clients_named(&redis, TRACKING).len(), 1, "one connection");
    assert!(clients_named(&redis, XREAD).is_empty());
    wakeup_connections(&gw, "tracking", 1.0).await;
    wakeup_connections(&gw, "xread", 0.0).await;

    each_is_woken(&redis, &streams[..150], &mut subs, "subscriber").await;
    let produced: Vec<Vec<String>> = {
        let mut all = Vec::new();
        for stream in &streams[150..] {
            all.push(produce(&mut gw, stream, orders(1)).await);
        }
        all
    };
    for (tail, produced) in tails.iter_mut().zip(produced) {
        assert_eq!(ids(&take_tail_entries(tail, 1).await), produced);
    }
    // And again: every stream is armed again after its invalidation.
    each_is_woken(&redis, &streams[..150], &mut subs, "second entry").await;
    assert_eq!(clients_named(&redis, TRACKING).len(), 1);
}

/// The tracking connection is killed while subscribers idle; entries
/// appended at once (before the gateway can have reconnected) and
/// afterwards all arrive.
#[tokio::test]
async fn a_killed_tracking_connection_loses_no_wake_up() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(wake_ups_only(&redis)).await;
    let streams: Vec<String> = (0..20).map(|i| format!("killed-{i}")).collect();
    let mut subs = subscribers(&mut gw, &streams).await;
    let [victim] = clients_named(&redis, TRACKING)[..] else {
        panic!("one tracking connection");
    };
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(victim)
        .query(&mut redis.conn())
        .unwrap();
    each_is_woken(&redis, &streams, &mut subs, "right after the kill").await;
    eventually("a new tracking connection", || {
        let named = clients_named(&redis, TRACKING);
        async move { (named.len() == 1 && named[0] != victim).then_some(()) }
    })
    .await;
    each_is_woken(&redis, &streams, &mut subs, "after the reconnect").await;
}

/// An ACL user that may not use CLIENT TRACKING: the gateway falls back to
/// blocking XREADs, and idle subscribers are still woken.
#[tokio::test]
async fn without_client_tracking_the_gateway_falls_back_to_xread() {
    let redis = RedisServer::start();
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "gw",
                "on",
                ">pw",
                "~*",
                "&*",
                "+@all",
                "-client|tracking",
            ][..],
        )
        .query(&mut redis.conn())
        .unwrap();
    let mut gw = TestGateway::start(Settings {
        redis_url: redis.url().replace("redis://", "redis://gw:pw@"),
        ..wake_ups_only(&redis)
    })
    .await;
    let streams: Vec<String> = (0..3).map(|i| format!("refused-{i}")).collect();
    let mut subs = subscribers(&mut gw, &streams).await;
    assert!(clients_named(&redis, TRACKING).is_empty());
    assert_eq!(clients_named(&redis, XREAD).len(), 1, "one XREAD shard");
    wakeup_connections(&gw, "xread", 1.0).await;
    wakeup_connections(&gw, "tracking", 0.0).await;
    each_is_woken(&redis, &streams, &mut subs, "xread").await;
}

/// SetGroupCursor writes nothing to the stream, so Redis reports nothing:
/// the gateway rings the stream itself, and an idle subscriber of the
/// rewound group gets the history again at once.
#[tokio::test]
async fn a_rewound_group_wakes_its_idle_subscriber() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(wake_ups_only(&redis)).await;
    let stream = "rewound".to_owned();
    let mut subs = subscribers(&mut gw, std::slice::from_ref(&stream)).await;
    let produced = produce(&mut gw, &stream, orders(3)).await;
    let got = next_batch(&mut subs[0]).await.expect("a batch");
    assert_eq!(ids(&got), produced);
    gw.admin
        .set_group_cursor(pb::SetGroupCursorRequest {
            stream: stream.clone(),
            group: "g".into(),
            id: "0".into(),
        })
        .await
        .expect("rewind");
    let again = next_batch(&mut subs[0]).await.expect("a batch");
    assert_eq!(ids(&again), produced, "the history, delivered again");
}
