//! StreamAdmin: group administration and inspection.

use streamgate::pb;
use tonic::Code;

use crate::common::{
    TestGateway, eventually, ids, orders, produce, read_directly, setup, sub, subscribe,
    take_entries,
};

fn create(
    stream: &str,
    group: &str,
    start: &str,
    mkstream: Option<bool>,
) -> pb::CreateGroupRequest {
    pb::CreateGroupRequest {
        stream: stream.into(),
        group: group.into(),
        start_id: start.into(),
        mkstream,
    }
}

async fn groups(gw: &mut TestGateway, stream: &str) -> Vec<pb::GroupInfo> {
    gw.admin
        .list_groups(pb::ListGroupsRequest {
            stream: stream.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .groups
}

async fn consumers(gw: &mut TestGateway, group: &str) -> Vec<pb::ConsumerInfo> {
    gw.admin
        .list_consumers(pb::ListConsumersRequest {
            stream: "orders".into(),
            group: group.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .consumers
}

fn pending_req(consumer: Option<&str>) -> pb::ListPendingRequest {
    pb::ListPendingRequest {
        stream: "orders".into(),
        group: "notifications".into(),
        consumer: consumer.map(str::to_owned),
        ..Default::default()
    }
}

async fn pending(gw: &mut TestGateway, req: pb::ListPendingRequest) -> Vec<pb::PendingEntry> {
    gw.admin
        .list_pending(req)
        .await
        .unwrap()
        .into_inner()
        .entries
}

#[tokio::test]
async fn create_group_is_idempotent_and_delete_reports_existence() {
    let (_redis, mut gw) = setup().await;
    assert!(
        gw.admin
            .create_group(create("orders", "g", "", None))
            .await
            .unwrap()
            .into_inner()
            .created
    );
    assert!(
        !gw.admin
            .create_group(create("orders", "g", "0", None))
            .await
            .unwrap()
            .into_inner()
            .created
    );
    let status = gw
        .admin
        .create_group(create("missing", "g", "$", Some(false)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("\"missing\""));

    let delete = pb::DeleteGroupRequest {
        stream: "orders".into(),
        group: "g".into(),
    };
    assert!(
        gw.admin
            .delete_group(delete.clone())
            .await
            .unwrap()
            .into_inner()
            .deleted
    );
    assert!(
        !gw.admin
            .delete_group(delete)
            .await
            .unwrap()
            .into_inner()
            .deleted
    );
}

#[tokio::test]
async fn describe_stream_reports_length_bounds_and_groups() {
    let (_redis, mut gw) = setup().await;
    gw.admin
        .create_group(create("orders", "g", "$", None))
        .await
        .unwrap();
    let empty = gw
        .admin
        .describe_stream(pb::DescribeStreamRequest {
            stream: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            empty.length,
            empty.first_entry_id.as_str(),
            empty.group_count
        ),
        (0, "", 1)
    );

    let produced = produce(&mut gw, "orders", orders(4)).await;
    let info = gw
        .admin
        .describe_stream(pb::DescribeStreamRequest {
            stream: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.length, 4);
    assert_eq!(info.first_entry_id, produced[0]);
    assert_eq!(info.last_entry_id, produced[3]);
    assert_eq!(info.last_generated_id, produced[3]);

    let status = gw
        .admin
        .describe_stream(pb::DescribeStreamRequest {
            stream: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn groups_and_consumers_show_lag_and_pending() {
    let (redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(10)).await;
    gw.admin
        .create_group(create("orders", "analytics", "0", None))
        .await
        .unwrap();
    read_directly(&redis, "orders", "notifications", "worker-a", 4);

    let all = groups(&mut gw, "orders").await;
    let by_name = |n: &str| all.iter().find(|g| g.name == n).unwrap().clone();
    let analytics = by_name("analytics");
    assert_eq!(
        (analytics.pending, analytics.lag, analytics.consumers),
        (0, Some(10), 0)
    );
    let notifications = by_name("notifications");
    assert_eq!(
        (
            notifications.pending,
            notifications.lag,
            notifications.entries_read
        ),
        (4, Some(6), Some(4))
    );
    assert_eq!(notifications.consumers, 1);

    let rows = consumers(&mut gw, "notifications").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, "worker-a");
    assert_eq!(rows[0].pending, 4);
    // Redis reports `inactive` from 7.2 on (Valkey always); before that it
    // stays absent. The server says which it is.
    let server = redis.info();
    assert_eq!(
        rows[0].inactive_ms.is_some(),
        server.reports_inactive(),
        "{server:?}"
    );
}

#[tokio::test]
async fn list_pending_filters_by_consumer_range_count_and_idle() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(6)).await;
    read_directly(&redis, "orders", "notifications", "worker-a", 3);
    read_directly(&redis, "orders", "notifications", "worker-b", 3);
    let all = pending(&mut gw, pending_req(None)).await;
    assert_eq!(
        all.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        produced
    );
    assert!(all.iter().all(|p| p.delivery_count == 1));

    let only_b = pending(&mut gw, pending_req(Some("worker-b"))).await;
    assert_eq!(
        only_b.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        produced[3..].to_vec()
    );

    let mut ranged = pending_req(None);
    ranged.start = produced[1].clone();
    ranged.end = produced[4].clone();
    ranged.count = 2;
    let rows = pending(&mut gw, ranged).await;
    assert_eq!(
        rows.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        produced[1..3].to_vec()
    );

    let mut idle = pending_req(None);
    idle.min_idle_ms = 3_600_000;
    assert!(pending(&mut gw, idle.clone()).await.is_empty());
    idle.min_idle_ms = 50;
    eventually("entries idle for 50 ms", || {
        let mut admin = gw.admin.clone();
        let idle = idle.clone();
        async move {
            let rows = admin.list_pending(idle).await.unwrap().into_inner().entries;
            (rows.len() == 6 && rows.iter().all(|r| r.idle_ms >= 50)).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn set_group_cursor_rewinds_a_group() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(3)).await;
    read_directly(&redis, "orders", "g", "w", 3);
    gw.admin
        .set_group_cursor(pb::SetGroupCursorRequest {
            stream: "orders".into(),
            group: "g".into(),
            id: produced[0].clone(),
        })
        .await
        .unwrap();
    let mut again = subscribe(&mut gw, sub("orders", "g", "w2")).await;
    assert_eq!(
        ids(&take_entries(&mut again, 2).await),
        produced[1..].to_vec()
    );

    let status = gw
        .admin
        .set_group_cursor(pb::SetGroupCursorRequest {
            stream: "orders".into(),
            group: "nope".into(),
            id: "$".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn remove_consumer_refuses_to_destroy_work_and_hands_it_over() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(5)).await;
    read_directly(&redis, "orders", "notifications", "worker-a", 5);

    let remove = |handover_to: &str| pb::RemoveConsumerRequest {
        stream: "orders".into(),
        group: "notifications".into(),
        consumer: "worker-a".into(),
        handover_to: handover_to.into(),
    };
    let status = gw.admin.remove_consumer(remove("")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("handover_to"),
        "{}",
        status.message()
    );
    assert_eq!(
        pending(&mut gw, pending_req(Some("worker-a"))).await.len(),
        5,
        "nothing was destroyed"
    );

    let status = gw
        .admin
        .remove_consumer(remove("worker-a"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let done = gw
        .admin
        .remove_consumer(remove("worker-b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((done.removed, done.handed_over), (true, 5));
    let moved = pending(&mut gw, pending_req(None)).await;
    assert_eq!(
        moved.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        produced
    );
    assert!(moved.iter().all(|p| p.consumer == "worker-b"));
    // XCLAIM counts the hand-over as a delivery attempt.
    assert!(moved.iter().all(|p| p.delivery_count == 2), "{moved:?}");
    assert!(
        consumers(&mut gw, "notifications")
            .await
            .iter()
            .all(|c| c.name != "worker-a")
    );

    let status = gw
        .admin
        .remove_consumer(remove("worker-b"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("worker-a"));
}

#[tokio::test]
async fn a_consumer_without_pending_entries_is_removed_without_handover() {
    let (redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(1)).await;
    let got = read_directly(&redis, "orders", "g", "idle-worker", 1);
    gw.events
        .ack(pb::AckRequest {
            stream: "orders".into(),
            group: "g".into(),
            ids: got,
        })
        .await
        .unwrap();
    let done = gw
        .admin
        .remove_consumer(pb::RemoveConsumerRequest {
            stream: "orders".into(),
            group: "g".into(),
            consumer: "idle-worker".into(),
            handover_to: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((done.removed, done.handed_over), (true, 0));
}
