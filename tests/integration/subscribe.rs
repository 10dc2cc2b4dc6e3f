//! Subscribe: consumer-group membership over a server stream.

use std::collections::HashSet;

use streamgate::pb;
use tonic::Code;

use crate::common::{
    RedisServer, TestGateway, config, eventually, ids, next_batch, orders, pending_count, produce,
    setup, sub, subscribe, take_entries, wait_until_stopped,
};

/// XINFO CONSUMERS of a group as (name, pending, idle) rows.
fn consumers(redis: &RedisServer, stream: &str, group: &str) -> Vec<(String, u64, u64)> {
    let rows: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query(&mut redis.conn())
        .unwrap();
    rows.into_iter()
        .map(|r| {
            let int = |k: &str| redis::from_redis_value_ref::<u64>(&r[k]).unwrap();
            (
                redis::from_redis_value_ref::<String>(&r["name"]).unwrap(),
                int("pending"),
                int("idle"),
            )
        })
        .collect()
}

#[tokio::test]
async fn two_groups_each_receive_every_entry() {
    let (_redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(25)).await;
    let mut notifications = subscribe(&mut gw, sub("orders", "notifications", "worker-a")).await;
    let mut analytics = subscribe(&mut gw, sub("orders", "analytics", "worker-c")).await;
    let a = take_entries(&mut notifications, 25).await;
    let c = take_entries(&mut analytics, 25).await;
    assert_eq!(ids(&a), produced);
    assert_eq!(ids(&c), produced);
    assert!(
        a.iter()
            .all(|e| e.delivery_count == 1 && e.r#type == "order.placed")
    );
    assert_eq!(a[3].fields["order_id"], "o-3");
    assert!(a[0].ts_ms > 0);
}

#[tokio::test]
async fn two_consumers_in_one_group_split_the_work_without_overlap() {
    let (_redis, mut gw) = setup().await;
    let mut req_a = sub("orders", "notifications", "worker-a");
    req_a.batch_size = 3;
    let mut req_b = sub("orders", "notifications", "worker-b");
    req_b.batch_size = 3;
    let mut a = subscribe(&mut gw, req_a).await;
    let mut b = subscribe(&mut gw, req_b).await;
    // Both subscriptions are set up (and idle) before anything is produced.
    let produced = produce(&mut gw, "orders", orders(60)).await;

    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    while seen_a.len() + seen_b.len() < produced.len() {
        tokio::select! {
            batch = next_batch(&mut a) => seen_a.extend(ids(&batch.unwrap())),
            batch = next_batch(&mut b) => seen_b.extend(ids(&batch.unwrap())),
        }
    }
    let set_a: HashSet<_> = seen_a.iter().collect();
    let set_b: HashSet<_> = seen_b.iter().collect();
    assert!(
        set_a.is_disjoint(&set_b),
        "no entry is delivered to both consumers"
    );
    let all: HashSet<_> = set_a.union(&set_b).copied().collect();
    assert_eq!(all, produced.iter().collect::<HashSet<_>>());
    assert_eq!(seen_a.len() + seen_b.len(), produced.len(), "no duplicates");
}

#[tokio::test]
async fn group_start_dollar_skips_history_and_existing_group_is_fine() {
    let (redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(5)).await;
    let mut req = sub("orders", "fresh", "w");
    req.group_start_id = "$".into();
    let mut s = subscribe(&mut gw, req.clone()).await;
    let new = produce(&mut gw, "orders", orders(2)).await;
    assert_eq!(ids(&take_entries(&mut s, 2).await), new);
    drop(s);
    wait_until_stopped(&redis, "orders", "fresh", "w").await;
    // create_group on an existing group is not an error and keeps its cursor.
    let mut again = subscribe(&mut gw, req).await;
    let newer = produce(&mut gw, "orders", orders(1)).await;
    assert_eq!(ids(&take_entries(&mut again, 1).await), newer);
}

#[tokio::test]
async fn missing_group_without_create_is_not_found_naming_group_and_stream() {
    let (_redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(1)).await;
    let mut req = sub("orders", "ghosts", "w");
    req.create_group = false;
    let mut s = subscribe(&mut gw, req).await;
    let status = next_batch(&mut s).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("\"ghosts\"") && status.message().contains("\"orders\""),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn pending_first_redelivers_own_unacked_entries_then_new_ones() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(4)).await;
    let mut first = subscribe(&mut gw, sub("orders", "g", "worker-a")).await;
    let got = take_entries(&mut first, 4).await;
    gw.events
        .ack(pb::AckRequest {
            stream: "orders".into(),
            group: "g".into(),
            ids: vec![got[1].id.clone()],
        })
        .await
        .unwrap();
    drop(first);
    // Otherwise the closed subscription's last blocked read could take the
    // entry produced below.
    wait_until_stopped(&redis, "orders", "g", "worker-a").await;

    let mut req = sub("orders", "g", "worker-a");
    req.pending_first = true;
    let mut again = subscribe(&mut gw, req).await;
    let redelivered = take_entries(&mut again, 3).await;
    let expected: Vec<_> = [0, 2, 3].iter().map(|&i| produced[i].clone()).collect();
    assert_eq!(
        ids(&redelivered),
        expected,
        "own PEL, oldest first, acked entry excluded"
    );
    assert!(
        redelivered.iter().all(|e| e.delivery_count == 2),
        "{redelivered:?}"
    );
    assert_eq!(
        redelivered[0].fields["order_id"], "o-0",
        "full payload re-delivered"
    );
    let new = produce(&mut gw, "orders", orders(1)).await;
    let next = take_entries(&mut again, 1).await;
    assert_eq!(ids(&next), new);
    assert_eq!(next[0].delivery_count, 1);
}

#[tokio::test]
async fn an_idle_subscription_outlives_the_redis_client_default_timeout() {
    // redis-rs fails commands after 500 ms by default; a 2 s block must
    // not trip it.
    let redis = RedisServer::start();
    let mut cfg = config(&redis);
    cfg.block_ms = 2000;
    let mut gw = TestGateway::start(cfg).await;
    produce(&mut gw, "idle", orders(1)).await;
    let mut s = subscribe(&mut gw, sub("idle", "g", "w")).await;
    // A first read makes the consumer known to Redis (7.0 registers a
    // consumer only when a read returns something).
    take_entries(&mut s, 1).await;
    // Idle time counts from the last successful read (Redis 7.0) or the
    // last attempt (7.2+); either way the blocking read that followed the
    // first one has now been waiting for well over 500 ms.
    eventually("a read blocked for over 900 ms", || {
        let rows = consumers(&redis, "idle", "g");
        async move {
            rows.iter()
                .any(|(n, _, idle)| n == "w" && *idle >= 900)
                .then_some(())
        }
    })
    .await;
    let produced = produce(&mut gw, "idle", orders(1)).await;
    assert_eq!(ids(&take_entries(&mut s, 1).await), produced);
}

#[tokio::test]
async fn a_client_that_goes_away_stops_reading_and_leaves_nothing_claimed() {
    let (redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(1)).await;
    let mut s = subscribe(&mut gw, sub("orders", "g", "leaver")).await;
    let first = take_entries(&mut s, 1).await;
    gw.events
        .ack(pb::AckRequest {
            stream: "orders".into(),
            group: "g".into(),
            ids: ids(&first),
        })
        .await
        .unwrap();
    drop(s);
    wait_until_stopped(&redis, "orders", "g", "leaver").await;
    produce(&mut gw, "orders", orders(5)).await;
    let mut req = sub("orders", "g", "stayer");
    req.group_start_id = "$".into();
    let mut other = subscribe(&mut gw, req).await;
    assert_eq!(take_entries(&mut other, 5).await.len(), 5);
    let leaver_pending: u64 = consumers(&redis, "orders", "g")
        .into_iter()
        .find(|(n, _, _)| n == "leaver")
        .map(|(_, p, _)| p)
        .unwrap();
    assert_eq!(
        leaver_pending, 0,
        "the gone client's loop read nothing more"
    );
}

#[tokio::test]
async fn entries_read_but_never_delivered_stay_pending() {
    // At-least-once: nothing is acked on the client's behalf.
    let (redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(3)).await;
    let mut s = subscribe(&mut gw, sub("orders", "g", "w")).await;
    take_entries(&mut s, 3).await;
    drop(s);
    assert_eq!(pending_count(&redis, "orders", "g"), 3);
}
