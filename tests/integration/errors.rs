//! The error mapping of the API contract, one cause at a time, against a
//! real Redis.

use redis::Commands;
use streamgate::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::common::{
    RedisServer, TestGateway, config, event, eventually, health, orders, produce, produce_err,
    produce_when_up, setup, sub,
};

fn assert_status(status: &tonic::Status, code: Code, mentions: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    for word in mentions {
        assert!(
            status.message().contains(word),
            "{:?} does not mention {word:?}",
            status.message()
        );
    }
}

#[tokio::test]
async fn empty_names_are_invalid_argument_naming_the_field() {
    let (_redis, mut gw) = setup().await;
    let status = gw
        .events
        .produce(pb::ProduceRequest {
            events: orders(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["stream"]);
    let status = gw
        .events
        .produce(pb::ProduceRequest {
            stream: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["events"]);
    for (field, mut req) in [
        ("group", sub("s", "", "c")),
        ("consumer", sub("s", "g", "")),
        ("stream", sub("", "g", "c")),
    ] {
        req.create_group = true;
        let status = gw.events.subscribe(req).await.unwrap_err();
        assert_status(&status, Code::InvalidArgument, &[field]);
    }
    let status = gw
        .events
        .ack(pb::AckRequest {
            stream: "s".into(),
            group: "g".into(),
            ids: vec![],
        })
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["ids"]);
    let status = gw
        .events
        .reap(pb::ReapRequest {
            stream: "s".into(),
            group: "g".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["consumer"]);
}

#[tokio::test]
async fn reserved_and_duplicate_fields_are_rejected_and_nothing_is_written() {
    let (redis, mut gw) = setup().await;
    for (name, field) in [("type", "fields"), ("ts_ms", "fields"), ("", "fields")] {
        let events = vec![event("ok", &[]), event("bad", &[(name, "x")])];
        let status = gw
            .events
            .produce(pb::ProduceRequest {
                stream: "s".into(),
                events,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_status(
            &status,
            Code::InvalidArgument,
            &[&format!("events[1].{field}")],
        );
    }
    let mut both = event("x", &[("a", "1")]);
    both.binary_fields = [("a".to_owned(), b"2".to_vec())].into();
    let status = produce_err(&mut gw, "s", vec![both]).await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &["events[0].binary_fields", "\"a\""],
    );
    assert!(
        !redis.conn().exists::<_, bool>("s").unwrap(),
        "a rejected batch writes nothing"
    );
}

#[tokio::test]
async fn malformed_ids_are_invalid_argument_in_every_position() {
    let (_redis, mut gw) = setup().await;
    let mut req = sub("s", "g", "c");
    req.group_start_id = ">".into();
    assert_status(
        &gw.events.subscribe(req).await.unwrap_err(),
        Code::InvalidArgument,
        &["group_start_id"],
    );
    let status = gw
        .events
        .reap(pb::ReapRequest {
            stream: "s".into(),
            group: "g".into(),
            consumer: "c".into(),
            start_id: "1-2-3".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["start_id"]);
    let status = gw
        .admin
        .set_group_cursor(pb::SetGroupCursorRequest {
            stream: "s".into(),
            group: "g".into(),
            id: "-".into(),
        })
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["id"]);
}

#[tokio::test]
async fn configured_limits_are_resource_exhausted_naming_the_limit() {
    let redis = RedisServer::start();
    let mut cfg = config(&redis);
    cfg.max_batch_size = 50;
    cfg.max_produce_events = 3;
    let mut gw = TestGateway::start(cfg).await;
    let mut req = sub("s", "g", "c");
    req.batch_size = 51;
    assert_status(
        &gw.events.subscribe(req).await.unwrap_err(),
        Code::ResourceExhausted,
        &["batch_size", "50"],
    );
    let status = produce_err(&mut gw, "s", orders(4)).await;
    assert_status(
        &status,
        Code::ResourceExhausted,
        &["3", "--max-produce-events"],
    );
}

#[tokio::test]
async fn a_key_of_another_type_is_failed_precondition() {
    let (redis, mut gw) = setup().await;
    let _: () = redis.conn().set("plain", "string").unwrap();
    let status = produce_err(&mut gw, "plain", orders(1)).await;
    assert_status(&status, Code::FailedPrecondition, &["\"plain\""]);
    // Subscribe and Tail set up (group, doorbell position) before
    // answering, so the error is the call's own status.
    let status = gw
        .events
        .subscribe(sub("plain", "g", "c"))
        .await
        .unwrap_err();
    assert_status(&status, Code::FailedPrecondition, &["\"plain\""]);
    let mut no_create = sub("plain", "g", "c");
    no_create.create_group = false;
    let status = gw.events.subscribe(no_create).await.unwrap_err();
    assert_status(&status, Code::FailedPrecondition, &["\"plain\""]);
    let status = gw
        .events
        .tail(pb::TailRequest {
            stream: "plain".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_status(&status, Code::FailedPrecondition, &["\"plain\""]);
    let status = gw
        .events
        .trim(pb::TrimRequest {
            stream: "plain".into(),
            strategy: Some(pb::trim_request::Strategy::MaxLen(1)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_status(&status, Code::FailedPrecondition, &["\"plain\""]);
    assert_eq!(
        redis.conn().get::<_, String>("plain").unwrap(),
        "string",
        "the key is untouched"
    );
}

#[tokio::test]
async fn redis_acl_refusal_is_permission_denied() {
    let redis = RedisServer::start();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "limited", "on", ">secret", "~allowed*", "+@all"][..])
        .query(&mut redis.conn())
        .unwrap();
    let mut cfg = config(&redis);
    cfg.redis_url = redis.url().replace("redis://", "redis://limited:secret@");
    let mut gw = TestGateway::start(cfg).await;
    produce(&mut gw, "allowed-orders", orders(1)).await;
    let status = produce_err(&mut gw, "secret-orders", orders(1)).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test]
async fn redis_going_away_is_unavailable_not_a_hang_and_recovers() {
    let (mut redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(1)).await;
    eventually("health SERVING", || {
        let gw = &gw;
        async move { (health(gw).await == ServingStatus::Serving).then_some(()) }
    })
    .await;

    redis.kill();
    let status = produce_err(&mut gw, "orders", orders(1)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    eventually("health NOT_SERVING", || {
        let gw = &gw;
        async move { (health(gw).await == ServingStatus::NotServing).then_some(()) }
    })
    .await;

    redis.restart();
    assert_eq!(produce_when_up(&gw, "orders", 1).await.len(), 1);
    eventually("health SERVING again", || {
        let gw = &gw;
        async move { (health(gw).await == ServingStatus::Serving).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_redis_that_stops_answering_times_out() {
    let redis = RedisServer::start();
    let mut cfg = config(&redis);
    cfg.redis_timeout_ms = 300;
    let mut gw = TestGateway::start(cfg).await;
    produce(&mut gw, "orders", orders(1)).await;
    redis.signal("STOP");
    let status = produce_err(&mut gw, "orders", orders(1)).await;
    redis.signal("CONT");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{status:?}"
    );
}
