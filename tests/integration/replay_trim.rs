//! Replay (paged XRANGE / XREVRANGE) and Trim (XTRIM).

use redis::Commands;
use streamgate::pb;
use tonic::Code;

use crate::common::{TestGateway, orders, produce, setup};

/// Runs a Replay and returns its pages' IDs.
async fn replay(gw: &mut TestGateway, req: pb::ReplayRequest) -> Vec<Vec<String>> {
    let mut stream = gw.events.replay(req).await.expect("replay").into_inner();
    let mut pages = Vec::new();
    while let Some(page) = stream.message().await.expect("replay page") {
        pages.push(page.entries.into_iter().map(|e| e.id).collect());
    }
    pages
}

fn replay_req(page_size: u32) -> pb::ReplayRequest {
    pb::ReplayRequest {
        stream: "orders".into(),
        page_size,
        ..Default::default()
    }
}

#[tokio::test]
async fn replay_pages_forwards_and_backwards_without_gaps_or_repeats() {
    let (_redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(23)).await;

    let pages = replay(&mut gw, replay_req(5)).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [5, 5, 5, 5, 3]
    );
    assert_eq!(pages.concat(), produced);

    let mut back = replay_req(4);
    back.reverse = true;
    let pages = replay(&mut gw, back).await;
    let mut expected = produced.clone();
    expected.reverse();
    assert_eq!(pages.concat(), expected);
}

#[tokio::test]
async fn replay_honours_bounds_and_limit_in_both_directions() {
    let (_redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(20)).await;

    let mut req = replay_req(3);
    req.start = produced[4].clone();
    req.end = produced[15].clone();
    req.limit = 7;
    assert_eq!(
        replay(&mut gw, req.clone()).await.concat(),
        produced[4..11].to_vec()
    );

    req.reverse = true;
    let mut expected = produced[9..=15].to_vec();
    expected.reverse();
    assert_eq!(replay(&mut gw, req).await.concat(), expected);
}

#[tokio::test]
async fn replay_does_not_touch_groups_and_missing_streams_are_empty() {
    let (redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(3)).await;
    gw.admin
        .create_group(pb::CreateGroupRequest {
            stream: "orders".into(),
            group: "g".into(),
            start_id: "0".into(),
            mkstream: None,
        })
        .await
        .unwrap();
    assert_eq!(replay(&mut gw, replay_req(2)).await.concat().len(), 3);
    let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg("orders")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(
        groups[0]["last-delivered-id"],
        redis::Value::BulkString(b"0-0".to_vec())
    );

    let mut missing = replay_req(2);
    missing.stream = "nothing-here".into();
    assert!(replay(&mut gw, missing).await.is_empty());
}

#[tokio::test]
async fn replay_rejects_malformed_bounds() {
    let (_redis, mut gw) = setup().await;
    let mut req = replay_req(2);
    req.end = "tomorrow".into();
    let status = gw.events.replay(req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("end"), "{}", status.message());
}

fn trim_req(strategy: pb::trim_request::Strategy, exact: bool, limit: u64) -> pb::TrimRequest {
    pb::TrimRequest {
        stream: "orders".into(),
        strategy: Some(strategy),
        exact,
        limit,
        ..Default::default()
    }
}

#[tokio::test]
async fn trim_by_max_len_and_min_id() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(10)).await;
    let mut conn = redis.conn();

    let by_id = gw
        .events
        .trim(trim_req(
            pb::trim_request::Strategy::MinId(produced[3].clone()),
            true,
            0,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.trimmed, 3);
    let first: Vec<(String, Vec<(String, String)>)> =
        conn.xrange_count("orders", "-", "+", 1).unwrap();
    assert_eq!(first[0].0, produced[3]);

    let by_len = gw
        .events
        .trim(trim_req(pb::trim_request::Strategy::MaxLen(2), true, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_len.trimmed, 5);
    assert_eq!(conn.xlen::<_, u64>("orders").unwrap(), 2);
}

#[tokio::test]
async fn approximate_trim_removes_whole_nodes_only_and_respects_limit() {
    let (redis, mut gw) = setup().await;
    let mut conn = redis.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(10)
        .query(&mut conn)
        .unwrap();
    for _ in 0..5 {
        produce(&mut gw, "orders", orders(20)).await;
    }
    // LIMIT caps how many entries one approximate trim removes.
    let limited = gw
        .events
        .trim(trim_req(pb::trim_request::Strategy::MaxLen(15), false, 20))
        .await
        .unwrap()
        .into_inner()
        .trimmed;
    assert_eq!(limited, 20);
    // Approximate trimming to 15 removes whole 10-entry nodes, never below 15.
    let trimmed = gw
        .events
        .trim(trim_req(pb::trim_request::Strategy::MaxLen(15), false, 0))
        .await
        .unwrap()
        .into_inner()
        .trimmed;
    let len: u64 = conn.xlen("orders").unwrap();
    assert_eq!(trimmed % 10, 0, "whole nodes: {trimmed}");
    assert_eq!(len + trimmed + limited, 100);
    assert!((15..25).contains(&len), "{len}");
}

#[tokio::test]
async fn trim_validates_its_strategy() {
    let (_redis, mut gw) = setup().await;
    let mut no_strategy = trim_req(pb::trim_request::Strategy::MaxLen(1), false, 0);
    no_strategy.strategy = None;
    let status = gw.events.trim(no_strategy).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("strategy"));

    let status = gw
        .events
        .trim(trim_req(pb::trim_request::Strategy::MaxLen(1), true, 10))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("limit"));

    let status = gw
        .events
        .trim(trim_req(
            pb::trim_request::Strategy::MinId("x".into()),
            false,
            0,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("min_id"));
}
