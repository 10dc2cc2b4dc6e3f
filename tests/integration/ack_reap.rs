//! Ack and Reap: acknowledging work and recovering a crashed consumer's.

use std::collections::HashSet;

use redis::Commands;
use streamgate::pb;
use tonic::Code;

use crate::common::{
    DEADLINE, TestGateway, ids, orders, pending_count, produce, setup, sub, subscribe, take_entries,
};

fn ack_req(stream: &str, group: &str, ids: Vec<String>) -> pb::AckRequest {
    pb::AckRequest {
        stream: stream.into(),
        group: group.into(),
        ids,
    }
}

fn reap_req(consumer: &str, min_idle_ms: u64) -> pb::ReapRequest {
    pb::ReapRequest {
        stream: "orders".into(),
        group: "notifications".into(),
        consumer: consumer.into(),
        min_idle_ms,
        ..Default::default()
    }
}

async fn reap(gw: &mut TestGateway, req: pb::ReapRequest) -> pb::ReapResponse {
    gw.events.reap(req).await.expect("reap").into_inner()
}

#[tokio::test]
async fn ack_returns_redis_count_and_is_idempotent() {
    let (_redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(3)).await;
    let mut s = subscribe(&mut gw, sub("orders", "g", "w")).await;
    let got = ids(&take_entries(&mut s, 3).await);
    let first = gw
        .events
        .ack(ack_req("orders", "g", got.clone()))
        .await
        .unwrap();
    assert_eq!(first.into_inner().acked, 3);
    let again = gw
        .events
        .ack(ack_req("orders", "g", got.clone()))
        .await
        .unwrap();
    assert_eq!(
        again.into_inner().acked,
        0,
        "already acked entries are not counted"
    );
    let status = gw
        .events
        .ack(ack_req("orders", "typo", got))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("\"typo\""),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn ack_rejects_a_malformed_id_by_index_before_touching_redis() {
    let (redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(1)).await;
    let mut s = subscribe(&mut gw, sub("orders", "g", "w")).await;
    let good = take_entries(&mut s, 1).await.remove(0).id;
    let status = gw
        .events
        .ack(ack_req("orders", "g", vec![good, "12-x".into()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("ids[1]"), "{}", status.message());
    assert_eq!(pending_count(&redis, "orders", "g"), 1, "nothing was acked");
}

#[tokio::test]
async fn a_crashed_consumers_entries_are_reaped_by_a_peer_after_the_idle_threshold() {
    let (_redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(4)).await;
    // worker-a reads and "crashes" before acking.
    let mut crashed = subscribe(&mut gw, sub("orders", "notifications", "worker-a")).await;
    assert_eq!(ids(&take_entries(&mut crashed, 4).await), produced);
    drop(crashed);

    // Entries are younger than an hour: nothing to claim.
    let early = reap(&mut gw, reap_req("worker-b", 3_600_000)).await;
    assert!(early.claimed.is_empty());
    assert_eq!(early.next_start_id, "0-0");

    // Redis stamps each entry's delivery with its own clock reading, so
    // under load the four may cross the threshold a millisecond apart: Reap
    // until every one of them has been claimed.
    let start = std::time::Instant::now();
    let mut claimed: Vec<pb::Entry> = Vec::new();
    while claimed.len() < produced.len() {
        assert!(start.elapsed() < DEADLINE, "claimed only {claimed:?}");
        let r = reap(&mut gw, reap_req("worker-b", 150)).await;
        assert!(r.deleted_ids.is_empty());
        claimed.extend(r.claimed);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    let reaped = pb::ReapResponse {
        claimed,
        ..Default::default()
    };
    assert_eq!(ids(&reaped.claimed), produced);
    assert!(
        reaped.claimed.iter().all(|e| e.delivery_count == 2),
        "{:?}",
        reaped.claimed
    );
    assert_eq!(
        reaped.claimed[2].fields["order_id"], "o-2",
        "claimed entries come in full"
    );
    assert!(reaped.deleted_ids.is_empty());

    let pending = gw
        .admin
        .list_pending(pb::ListPendingRequest {
            stream: "orders".into(),
            group: "notifications".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(pending.iter().all(|p| p.consumer == "worker-b"));
    let acked = gw
        .events
        .ack(ack_req("orders", "notifications", ids(&reaped.claimed)))
        .await
        .unwrap()
        .into_inner()
        .acked;
    assert_eq!(acked, 4);
}

#[tokio::test]
async fn entries_trimmed_while_pending_are_reported_as_deleted_not_acked() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(3)).await;
    let mut s = subscribe(&mut gw, sub("orders", "notifications", "worker-a")).await;
    take_entries(&mut s, 3).await;
    drop(s);
    let trimmed = gw
        .events
        .trim(pb::TrimRequest {
            stream: "orders".into(),
            strategy: Some(pb::trim_request::Strategy::MaxLen(1)),
            exact: true,
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .trimmed;
    assert_eq!(trimmed, 2);

    let r = reap(&mut gw, reap_req("worker-b", 0)).await;
    assert_eq!(r.deleted_ids, produced[..2].to_vec());
    assert_eq!(ids(&r.claimed), produced[2..].to_vec());
    let mut conn = redis.conn();
    assert_eq!(
        pending_count(&redis, "orders", "notifications"),
        1,
        "deleted ids left the PEL; the live one is pending"
    );
    let len: u64 = conn.xlen("orders").unwrap();
    assert_eq!(len, 1);
}

#[tokio::test]
async fn reap_pages_with_a_continuation_cursor() {
    let (_redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(7)).await;
    let mut s = subscribe(&mut gw, sub("orders", "notifications", "worker-a")).await;
    take_entries(&mut s, 7).await;
    drop(s);

    let mut req = reap_req("worker-b", 0);
    req.page_count = 2;
    req.max_pages = 2;
    let first = reap(&mut gw, req.clone()).await;
    assert_eq!(ids(&first.claimed), produced[..4].to_vec());
    assert_ne!(first.next_start_id, "0-0");

    let mut seen: HashSet<String> = ids(&first.claimed).into_iter().collect();
    let mut cursor = first.next_start_id;
    while cursor != "0-0" {
        req.start_id = cursor;
        let page = reap(&mut gw, req.clone()).await;
        for id in ids(&page.claimed) {
            assert!(seen.insert(id), "no entry is claimed twice in one scan");
        }
        cursor = page.next_start_id;
    }
    assert_eq!(seen, produced.into_iter().collect());
}

#[tokio::test]
async fn reap_on_a_missing_group_is_not_found() {
    let (_redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(1)).await;
    let status = gw.events.reap(reap_req("worker-b", 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("notifications"),
        "{}",
        status.message()
    );
}
