//! The error mapping of the API contract, one cause at a time, against a
//! real Redis.

use redis::Commands;
use streamgate::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::common::{
    DEADLINE, RedisServer, TestGateway, config, event, eventually, free_port, health, orders,
    produce, produce_err, produce_when_up, setup, sub,
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

// Multi-threaded, with the kill and the restart (which waits for Redis to
// answer PING) in `block_in_place`, as in loss.rs: on the default
// current-thread runtime they would freeze the in-process gateway, and it
// would see Redis neither go nor come back, only the result afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_is_unavailable_not_a_hang_and_recovers() {
    let (mut redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(1)).await;
    eventually("health SERVING", || {
        let gw = &gw;
        async move { (health(gw).await == ServingStatus::Serving).then_some(()) }
    })
    .await;

    tokio::task::block_in_place(|| redis.kill());
    let status = produce_err(&mut gw, "orders", orders(1)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    eventually("health NOT_SERVING", || {
        let gw = &gw;
        async move { (health(gw).await == ServingStatus::NotServing).then_some(()) }
    })
    .await;

    tokio::task::block_in_place(|| redis.restart());
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

/// Makes `redis` refuse writes for want of memory the way a full
/// production Redis does: ballast (4 MiB) written while memory is
/// unlimited, then `maxmemory` set to 2 MiB, far below what it holds, so
/// that no freed buffer brings it back under the limit. The server must
/// run with `maxmemory-policy noeviction`.
fn exhaust_memory(redis: &RedisServer) {
    let mut conn = redis.conn();
    let ballast = vec![b'x'; 100 * 1024];
    for i in 0..40 {
        let _: () = conn.set(format!("ballast:{i}"), &ballast).unwrap();
    }
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "2mb"][..])
        .query(&mut conn)
        .unwrap();
    let used: u64 = redis
        .info_field("memory", "used_memory")
        .unwrap()
        .parse()
        .unwrap();
    assert!(used > 2 << 20, "the ballast holds {used} bytes only");
}

/// Produces to `stream`, each event with an idempotency key (so through
/// the gateway's script), expecting a refusal.
async fn produce_keyed_err(gw: &mut TestGateway, stream: &str, key: &str) -> tonic::Status {
    let events = vec![pb::Event {
        idempotency_key: key.to_owned(),
        ..event("order.placed", &[("order_id", key)])
    }];
    produce_err(gw, stream, events).await
}

/// An open ProduceStream: requests in, one answer per request out.
struct ProduceStream {
    requests: tokio::sync::mpsc::Sender<pb::ProduceRequest>,
    answers: tonic::Streaming<pb::ProduceStreamResponse>,
}

impl ProduceStream {
    async fn open(gw: &mut TestGateway) -> ProduceStream {
        let (requests, rx) = tokio::sync::mpsc::channel(16);
        let answers = gw
            .events
            .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("ProduceStream opens")
            .into_inner();
        ProduceStream { requests, answers }
    }

    /// Sends `requests` and returns their answers, in order.
    async fn round(&mut self, requests: Vec<pb::ProduceRequest>) -> Vec<pb::ProduceStreamResponse> {
        let n = requests.len();
        for request in requests {
            self.requests.send(request).await.unwrap();
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let answer = tokio::time::timeout(DEADLINE, self.answers.message())
                .await
                .expect("an answer within the deadline")
                .expect("the stream goes on")
                .expect("an answer, not the end");
            out.push(answer);
        }
        out
    }
}

/// Two plain requests (pipelined together) and one with an idempotency
/// key (the script), all to `stream`.
fn mixed_requests(stream: &str, tag: &str) -> Vec<pb::ProduceRequest> {
    let plain = |i| pb::ProduceRequest {
        stream: stream.to_owned(),
        events: orders(i),
        ..Default::default()
    };
    let keyed = pb::ProduceRequest {
        stream: stream.to_owned(),
        events: vec![pb::Event {
            idempotency_key: tag.to_owned(),
            ..event("order.placed", &[("order_id", tag)])
        }],
        ..Default::default()
    };
    vec![plain(1), plain(2), keyed]
}

#[tokio::test]
async fn redis_out_of_memory_is_resource_exhausted_naming_maxmemory_and_recovers() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let mut gw = TestGateway::start(config(&redis)).await;
    // A keyed produce while memory lasts loads the script, so that the
    // refusal below comes from inside it.
    produce(&mut gw, "orders", orders(1)).await;
    let mut keyed = orders(1);
    keyed[0].idempotency_key = "k-0".into();
    produce(&mut gw, "orders", keyed).await;
    let mut stream = ProduceStream::open(&mut gw).await;
    for answer in stream.round(mixed_requests("orders", "k-1")).await {
        assert_eq!(answer.code, 0, "{answer:?}");
    }

    exhaust_memory(&redis);
    let status = produce_err(&mut gw, "orders", orders(2)).await;
    assert_status(
        &status,
        Code::ResourceExhausted,
        &[
            "Redis is out of memory (maxmemory)",
            "OOM command not allowed",
        ],
    );
    // Raised by redis.call inside the script: the same answer, Redis'
    // text names the script.
    let status = produce_keyed_err(&mut gw, "orders", "k-2").await;
    assert_status(
        &status,
        Code::ResourceExhausted,
        &["Redis is out of memory (maxmemory)", "OOM", "@user_script"],
    );
    for answer in stream.round(mixed_requests("orders", "k-3")).await {
        assert_eq!(answer.code, Code::ResourceExhausted as u32, "{answer:?}");
        assert!(answer.ids.is_empty(), "{answer:?}");
        assert!(answer.message.contains("maxmemory"), "{answer:?}");
    }

    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "0"][..])
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(produce(&mut gw, "orders", orders(2)).await.len(), 2);
    let mut keyed = orders(1);
    keyed[0].idempotency_key = "k-2".into();
    assert_eq!(produce(&mut gw, "orders", keyed).await.len(), 1);
    for answer in stream.round(mixed_requests("orders", "k-3")).await {
        assert_eq!(answer.code, 0, "{answer:?}");
        assert!(!answer.ids.is_empty(), "{answer:?}");
    }
    // 1 + 1 + 4 before, 2 + 1 + 4 after: nothing written while refused.
    assert_eq!(redis.conn().xlen::<_, u64>("orders").unwrap(), 13);
}

/// The conditions by which Redis refuses writes for a while answer
/// UNAVAILABLE with what Redis said, from a plain command and from inside
/// the script alike.
#[tokio::test]
async fn redis_refusing_writes_for_now_is_unavailable_with_the_reason() {
    // A replica (of a master that is not there: it still serves reads).
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &free_port().to_string()]);
    // A master that needs a replica to accept a write, and has none.
    let lonely = RedisServer::start_with(&["--min-replicas-to-write", "1"]);
    for (redis, code) in [(&replica, "READONLY"), (&lonely, "NOREPLICAS")] {
        let mut gw = TestGateway::start(config(redis)).await;
        let status = produce_err(&mut gw, "orders", orders(1)).await;
        assert_status(&status, Code::Unavailable, &["Redis is unavailable", code]);
        let status = produce_keyed_err(&mut gw, "orders", "k").await;
        assert_status(&status, Code::Unavailable, &[code, "@user_script"]);
        let mut stream = ProduceStream::open(&mut gw).await;
        for answer in stream.round(mixed_requests("orders", "k")).await {
            assert_eq!(answer.code, Code::Unavailable as u32, "{answer:?}");
            assert!(answer.message.contains(code), "{answer:?}");
        }
    }
}
