//! Both wake-ups against a real Redis: bells ring for entries appended
//! after `watch` returned, connections come and go with their readers.

use std::sync::Arc;
use std::time::Duration;

use super::xread::{STREAMS_PER_SHARD, Xread};
use prometheus_client::metrics::gauge::Gauge;

use super::{Doorbell, DoorbellOptions, Rings, WakeupGauges};
use crate::broker::Broker;
use crate::config::{Settings, Wakeup};
use crate::shutdown::Shutdown;
use crate::test_redis::TestRedis;

/// How long a test waits for something that should happen at once.
const DEADLINE: Duration = Duration::from_secs(10);

async fn broker(redis: &TestRedis) -> Broker {
    let settings = Settings {
        redis_url: redis.url(),
        redis_timeout_ms: 2000,
        ..Settings::default()
    };
    Broker::connect(settings.broker_options())
        .await
        .expect("broker")
}

fn xadd(redis: &TestRedis, stream: &str) {
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut redis.conn())
        .unwrap();
}

/// Waits until the bell rings (its version moves on).
async fn rung(rings: &mut Rings, what: &str) {
    tokio::time::timeout(DEADLINE, rings.changed())
        .await
        .unwrap_or_else(|_| panic!("{what}: the bell did not ring"))
        .expect("the bell's sender stopped while the bell was held");
}

/// Polls `check` every 20 ms until it holds, failing at [`DEADLINE`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An XREAD wake-up on `redis` whose shards retire as soon as they have
/// no reader (no linger), so that retiring races with watching as often
/// as it can.
async fn xread(redis: &TestRedis, shutdown: &Shutdown) -> Arc<Xread> {
    Arc::new(Xread::new(
        broker(redis).await,
        Duration::from_millis(200),
        Duration::ZERO,
        Gauge::default(),
        shutdown.clone(),
    ))
}

#[tokio::test]
async fn xread_shards_nobody_waits_on_retire() {
    let redis = TestRedis::start();
    let shutdown = Shutdown::new();
    let doorbell = xread(&redis, &shutdown).await;
    let streams = 2 * STREAMS_PER_SHARD + 50;
    let mut bells = Vec::new();
    for i in 0..streams {
        bells.push(doorbell.watch(&format!("abandoned-{i}")).await.unwrap());
    }
    assert_eq!(doorbell.shard_count(), streams.div_ceil(STREAMS_PER_SHARD));
    drop(bells);
    eventually("every shard retired", || doorbell.shard_count() == 0).await;

    // A stream watched again afterwards gets a shard of its own and rings.
    let mut bell = doorbell.watch("abandoned-7").await.unwrap();
    assert_eq!(doorbell.shard_count(), 1);
    xadd(&redis, "abandoned-7");
    rung(&mut bell, "abandoned-7").await;
    shutdown.trigger();
}

#[tokio::test]
async fn xread_a_reader_arriving_while_its_shard_retires_is_woken() {
    let redis = TestRedis::start();
    let shutdown = Shutdown::new();
    let doorbell = xread(&redis, &shutdown).await;
    // Readers that come and go all the time: shards empty, retire (no
    // linger) and start again while the readers below are watched in.
    let churn = tokio::spawn({
        let doorbell = doorbell.clone();
        async move {
            for i in 0u64.. {
                drop(doorbell.watch(&format!("churn-{}", i % 3)).await);
                tokio::task::yield_now().await;
            }
        }
    });
    for round in 0..200 {
        let arriving = format!("arriving-{round}");
        let mut bell = doorbell.watch(&arriving).await.unwrap();
        xadd(&redis, &arriving);
        rung(&mut bell, &arriving).await;
    }
    churn.abort();
    shutdown.trigger();
}

fn tracking(broker: Broker, shutdown: &Shutdown) -> Arc<Doorbell> {
    Doorbell::start(
        broker,
        DoorbellOptions {
            wakeup: Wakeup::Tracking,
            block: Duration::from_millis(200),
            idle_recheck: Duration::from_secs(3600),
        },
        WakeupGauges::default(),
        shutdown.clone(),
    )
}

/// Every burst of entries rings, however many come at once, and the bell
/// keeps ringing burst after burst (the key is armed again each time).
#[tokio::test]
async fn tracking_rings_for_every_burst() {
    let redis = TestRedis::start();
    let shutdown = Shutdown::new();
    let doorbell = tracking(broker(&redis).await, &shutdown);
    let mut bell = doorbell.watch("bursts").await.unwrap();
    assert!((Duration::from_secs(2700)..=Duration::from_secs(3600)).contains(&bell.recheck));
    for burst in 0..50 {
        for _ in 0..=burst % 4 {
            xadd(&redis, "bursts");
        }
        // Without the arm after each invalidation the second burst would
        // send nothing, and the wait here would time out.
        rung(&mut bell.rings, &format!("burst {burst}")).await;
    }
    shutdown.trigger();
}

/// Streams whose readers all left are forgotten at their next write; a
/// reader that comes back is woken again.
#[tokio::test]
async fn tracking_forgets_streams_nobody_watches() {
    let redis = TestRedis::start();
    let shutdown = Shutdown::new();
    let doorbell = tracking(broker(&redis).await, &shutdown);
    let tracker = doorbell.tracking.as_ref().expect("tracking");
    for i in 0..20 {
        drop(doorbell.watch(&format!("left-{i}")).await.unwrap());
    }
    assert_eq!(tracker.watched_count(), 20);
    for i in 0..20 {
        xadd(&redis, &format!("left-{i}"));
    }
    eventually("every abandoned stream forgotten", || {
        tracker.watched_count() == 0
    })
    .await;
    let mut bell = doorbell.watch("left-3").await.unwrap();
    xadd(&redis, "left-3");
    rung(&mut bell.rings, "left-3 watched again").await;
    shutdown.trigger();
}

/// A server that refuses CLIENT TRACKING (here: an ACL user without it)
/// gets the XREAD wake-up, and its bells ring.
#[tokio::test]
async fn a_refused_tracking_falls_back_to_xread() {
    let redis = TestRedis::start();
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
    let settings = Settings {
        redis_url: redis.url().replace("redis://", "redis://gw:pw@"),
        ..Settings::default()
    };
    let broker = Broker::connect(settings.broker_options()).await.unwrap();
    let shutdown = Shutdown::new();
    let doorbell = tracking(broker, &shutdown);
    let mut bell = doorbell.watch("refused").await.unwrap();
    assert_eq!(
        bell.recheck,
        Duration::from_millis(200),
        "the XREAD recheck"
    );
    assert_eq!(doorbell.xread.shard_count(), 1);
    xadd(&redis, "refused");
    rung(&mut bell.rings, "refused").await;
    shutdown.trigger();
}
