//! The doorbell's shards come and go with their readers: streams watched
//! once and abandoned leave nothing behind, and a reader that arrives
//! while its shard retires still hears its bell.

use std::sync::Arc;
use std::time::Duration;

use streamgate::broker::Broker;
use streamgate::doorbell::{Bell, Doorbell, STREAMS_PER_SHARD};
use streamgate::shutdown::Shutdown;

use crate::common::{DEADLINE, RedisServer, config, eventually};

/// A doorbell on `redis` whose shards retire as soon as they have no
/// reader (no linger), so that retiring races with watching as often as
/// it can.
async fn doorbell(redis: &RedisServer, shutdown: &Shutdown) -> Arc<Doorbell> {
    let settings = config(redis);
    let broker = Broker::connect(settings.broker_options())
        .await
        .expect("broker");
    Doorbell::start_with_linger(
        broker,
        Duration::from_millis(settings.block_ms),
        Duration::ZERO,
        shutdown.clone(),
    )
}

fn xadd(redis: &RedisServer, stream: &str) {
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut redis.conn())
        .unwrap();
}

/// Waits until the bell rings (its version moves on).
async fn rung(bell: &mut Bell, what: &str) {
    tokio::time::timeout(DEADLINE, bell.changed())
        .await
        .unwrap_or_else(|_| panic!("{what}: the bell did not ring"))
        .expect("the bell's shard stopped while the bell was held");
}

#[tokio::test]
async fn shards_nobody_waits_on_retire() {
    let redis = RedisServer::start();
    let shutdown = Shutdown::new();
    let doorbell = doorbell(&redis, &shutdown).await;
    let streams = 2 * STREAMS_PER_SHARD + 50;
    let mut bells = Vec::new();
    for i in 0..streams {
        bells.push(doorbell.watch(&format!("abandoned-{i}")).await.unwrap());
    }
    assert_eq!(doorbell.shard_count(), streams.div_ceil(STREAMS_PER_SHARD));
    drop(bells);
    eventually("every shard retired", || async {
        (doorbell.shard_count() == 0).then_some(())
    })
    .await;

    // A stream watched again afterwards gets a shard of its own and rings.
    let mut bell = doorbell.watch("abandoned-7").await.unwrap();
    assert_eq!(doorbell.shard_count(), 1);
    xadd(&redis, "abandoned-7");
    rung(&mut bell, "abandoned-7").await;
    shutdown.trigger();
}

#[tokio::test]
async fn a_reader_arriving_while_its_shard_retires_is_woken() {
    let redis = RedisServer::start();
    let shutdown = Shutdown::new();
    let doorbell = doorbell(&redis, &shutdown).await;
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
