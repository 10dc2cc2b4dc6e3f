//! Tail: following a stream with plain XREAD, outside any group.

use streamgate::pb;
use tonic::Streaming;

use crate::common::{TestGateway, orders, produce, setup, take_tail_entries};

async fn tail(gw: &mut TestGateway, stream: &str, start_id: &str) -> Streaming<pb::TailResponse> {
    gw.events
        .tail(pb::TailRequest {
            stream: stream.into(),
            start_id: start_id.into(),
            batch_size: 4,
            ..Default::default()
        })
        .await
        .expect("tail")
        .into_inner()
}

#[tokio::test]
async fn tail_from_now_sees_only_new_entries_and_no_group_state() {
    let (redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(3)).await;
    let mut t = tail(&mut gw, "orders", "").await;
    // Entries produced in many small calls while the tail reads: none may
    // fall between two reads.
    let mut produced = Vec::new();
    for _ in 0..10 {
        produced.extend(produce(&mut gw, "orders", orders(3)).await);
    }
    let got = take_tail_entries(&mut t, 30).await;
    assert_eq!(
        got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        produced
    );
    assert!(
        got.iter()
            .all(|e| e.delivery_count == 0 && e.r#type == "order.placed")
    );
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg("orders")
        .query(&mut redis.conn())
        .unwrap();
    assert!(groups.is_empty(), "tail creates no group");
}

#[tokio::test]
async fn tail_from_zero_replays_history_then_follows() {
    let (_redis, mut gw) = setup().await;
    let mut produced = produce(&mut gw, "orders", orders(5)).await;
    let mut t = tail(&mut gw, "orders", "0").await;
    produced.extend(produce(&mut gw, "orders", orders(2)).await);
    let got = take_tail_entries(&mut t, 7).await;
    assert_eq!(
        got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        produced
    );
}

#[tokio::test]
async fn tail_waits_for_a_stream_that_does_not_exist_yet() {
    let (_redis, mut gw) = setup().await;
    let mut t = tail(&mut gw, "later", "$").await;
    let produced = produce(&mut gw, "later", orders(2)).await;
    let got = take_tail_entries(&mut t, 2).await;
    assert_eq!(
        got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        produced
    );
}

#[tokio::test]
async fn tail_rejects_a_malformed_start() {
    let (_redis, mut gw) = setup().await;
    let status = gw
        .events
        .tail(pb::TailRequest {
            stream: "orders".into(),
            start_id: ">".into(),
            batch_size: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("start_id"));
}
