//! Surviving faults: Redis outages and restarts, lost groups, stalled
//! clients, a killed gateway.

use streamgate::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::common::{
    GatewayProcess, RedisServer, TestGateway, config, eventually, free_port, health, ids,
    next_batch, orders, pending_count, produce, produce_err, produce_when_up, sub, subscribe,
    take_entries,
};

// Multi-threaded, with the blocking start of Redis (a wait for its first
// PING) in `block_in_place`: on the default current-thread runtime it would
// freeze the in-process gateway, which would then never try to connect
// while Redis comes up (what this test is about), only after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_starts_before_redis_and_serves_once_it_appears() {
    let port = free_port();
    let mut cfg = config(&RedisServer::start());
    cfg.redis_url = format!("redis://127.0.0.1:{port}");
    let mut gw = TestGateway::start(cfg).await;
    assert_eq!(health(&gw).await, ServingStatus::NotServing);
    let status = produce_err(&mut gw, "orders", orders(1)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let _redis = tokio::task::block_in_place(|| RedisServer::start_on(port, &[]));
    let gw_ref = &gw;
    eventually("health SERVING once Redis is up", || async move {
        (health(gw_ref).await == ServingStatus::Serving).then_some(())
    })
    .await;
    produce_when_up(&gw, "orders", 1).await;
    let mut s = subscribe(&mut gw, sub("orders", "g", "w")).await;
    assert_eq!(take_entries(&mut s, 1).await.len(), 1);
}

// Multi-threaded, with the restart (kill, relaunch, wait for PING) in
// `block_in_place`, as in loss.rs: on the default current-thread runtime the
// restart would freeze the in-process gateway for as long as it takes, so
// the gateway would never see the outage it is meant to ride out, only a
// dead connection once Redis is already back, with every timer that came
// due meanwhile firing at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_rides_out_a_redis_restart_and_recreates_its_group() {
    let mut redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    produce(&mut gw, "orders", orders(1)).await;
    let mut open = subscribe(&mut gw, sub("orders", "g", "w")).await;
    take_entries(&mut open, 1).await;

    // Without persistence the restart loses the stream and the group.
    tokio::task::block_in_place(|| redis.restart());
    let after = produce_when_up(&gw, "orders", 2).await;
    // The same stream resumes: the group is back (from `group_start_id` 0)
    // and delivers what was produced after the restart.
    let got = take_entries(&mut open, 2).await;
    assert_eq!(ids(&got), after);
}

#[tokio::test]
async fn a_subscription_ends_with_unavailable_once_the_outage_grace_is_used_up() {
    let mut redis = RedisServer::start();
    let mut cfg = config(&redis);
    cfg.redis_outage_grace_ms = 300;
    let mut gw = TestGateway::start(cfg).await;
    let mut open = subscribe(&mut gw, sub("orders", "g", "w")).await;
    redis.kill();
    let status = next_batch(&mut open).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn a_deleted_group_ends_a_plain_subscription_and_is_recreated_for_create_group() {
    let redis = RedisServer::start();
    // No safety-net read and no heartbeat within the test: DeleteGroup
    // writes nothing to the stream, so only the gateway's own ring can
    // tell the idle subscriptions.
    let mut gw = TestGateway::start(streamgate::config::Settings {
        idle_recheck_ms: 3_600_000,
        heartbeat_ms: 0,
        ..config(&redis)
    })
    .await;
    produce(&mut gw, "orders", orders(1)).await;
    let mut plain_req = sub("orders", "plain", "w");
    gw.admin
        .create_group(pb::CreateGroupRequest {
            stream: "orders".into(),
            group: "plain".into(),
            start_id: "0".into(),
            mkstream: None,
        })
        .await
        .unwrap();
    plain_req.create_group = false;
    let mut plain = subscribe(&mut gw, plain_req).await;
    take_entries(&mut plain, 1).await;
    let mut creating = subscribe(&mut gw, sub("orders", "creating", "w")).await;
    take_entries(&mut creating, 1).await;

    for group in ["plain", "creating"] {
        gw.admin
            .delete_group(pb::DeleteGroupRequest {
                stream: "orders".into(),
                group: group.into(),
            })
            .await
            .unwrap();
    }
    let status = next_batch(&mut plain).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("\"plain\""),
        "{}",
        status.message()
    );
    // Re-created at its group_start_id (0): the whole stream comes again.
    let again = take_entries(&mut creating, 1).await;
    assert_eq!(again[0].fields["order_id"], "o-0");
    let groups = gw
        .admin
        .list_groups(pb::ListGroupsRequest {
            stream: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(
        groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        ["creating"]
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_its_entries_stay_pending() {
    let redis = RedisServer::start();
    let mut cfg = config(&redis);
    cfg.client_stall_timeout_ms = 300;
    let mut gw = TestGateway::start(cfg).await;
    // 800 KB of entries: far more than the client's flow-control windows.
    let big = "x".repeat(2000);
    let events: Vec<pb::Event> = (0..400)
        .map(|i| crate::common::event("blob", &[("n", &i.to_string()), ("pad", &big)]))
        .collect();
    for chunk in events.chunks(100) {
        produce(&mut gw, "orders", chunk.to_vec()).await;
    }
    let mut req = sub("orders", "g", "w");
    req.batch_size = 20;
    // A client with small HTTP/2 windows (64 KiB), so that what it does not
    // read backs up into the gateway quickly.
    let addr = gw.gateway.as_ref().unwrap().addr();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024)
        .connect()
        .await
        .unwrap();
    let mut client = pb::event_stream_client::EventStreamClient::new(channel);
    let mut s = client.subscribe(req).await.unwrap().into_inner();
    // Do not read until the stall timeout must have ended the loop: its
    // consumer has then been idle (no read) for much longer than that.
    crate::common::wait_until_stopped(&redis, "orders", "g", "w").await;
    let mut received = 0;
    let status = loop {
        match next_batch(&mut s).await {
            Ok(batch) => received += batch.len(),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--client-stall-timeout-ms"),
        "{}",
        status.message()
    );
    assert!(
        received < 400,
        "reading stopped with the client: {received}"
    );
    assert_eq!(
        pending_count(&redis, "orders", "g"),
        received as u64,
        "everything read was delivered or stays pending"
    );
}

#[tokio::test]
async fn a_killed_gateway_loses_nothing() {
    let redis = RedisServer::start();
    let mut gw = GatewayProcess::start(&redis.url(), "127.0.0.1:0", &[]);
    let mut events = gw.events().await;
    let produced = events
        .produce(pb::ProduceRequest {
            stream: "orders".into(),
            events: orders(5),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ids;
    let mut s = events
        .subscribe(sub("orders", "g", "w"))
        .await
        .unwrap()
        .into_inner();
    let got = take_entries(&mut s, 5).await;
    events
        .ack(pb::AckRequest {
            stream: "orders".into(),
            group: "g".into(),
            ids: ids(&got[..2]),
        })
        .await
        .unwrap();

    gw.restart(); // SIGKILL, then a fresh process on the same port
    let mut events = gw.events().await;
    let mut req = sub("orders", "g", "w");
    req.pending_first = true;
    let mut s = events.subscribe(req).await.unwrap().into_inner();
    let again = take_entries(&mut s, 3).await;
    assert_eq!(
        ids(&again),
        produced[2..].to_vec(),
        "every unacked entry comes back"
    );
    assert!(again.iter().all(|e| e.redelivered));
}
