//! Every configured limit answers with the limit and its flag.

use std::collections::HashMap;
use std::time::Duration;

use redis::Commands;
use streamgate::config::MAX_EVENT_FIELDS_LIMIT;
use streamgate::pb::{self, event_stream_client::EventStreamClient};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{
    RedisServer, TestGateway, config, event, eventually, pending_count, read_directly, sub,
};

async fn connect(gw: &TestGateway) -> EventStreamClient<Channel> {
    let addr = gw.gateway.as_ref().unwrap().addr();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    EventStreamClient::new(channel)
}

fn produce_request(events: Vec<pb::Event>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        stream: "orders".into(),
        events,
        ..Default::default()
    }
}

#[tokio::test]
async fn event_field_count_and_size_limits_name_their_flags() {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    config.max_event_fields = 3;
    config.max_field_bytes = 100;
    let mut gw = TestGateway::start(config).await;

    let fields: Vec<(String, String)> = (0..4).map(|i| (format!("f{i}"), "v".into())).collect();
    let refs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let status = gw
        .events
        .produce(produce_request(vec![
            event("t", &refs[..3]),
            event("t", &refs),
        ]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("events[1]") && status.message().contains("--max-event-fields"),
        "{}",
        status.message()
    );

    let big = "x".repeat(97);
    for ev in [event("t", &[("name", &big)]), event(&"t".repeat(97), &[])] {
        let status = gw
            .events
            .produce(produce_request(vec![ev]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("--max-field-bytes"),
            "{}",
            status.message()
        );
    }
    // Exactly at the limits is fine: 4 + 96 bytes, 3 fields.
    gw.events
        .produce(produce_request(vec![
            event("t", &[("name", &big[..96])]),
            event("t", &refs[..3]),
        ]))
        .await
        .expect("at the limits");
    let len: u64 = redis::cmd("XLEN")
        .arg("orders")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(len, 2, "refused Produce calls wrote nothing");
}

#[tokio::test]
async fn oversize_messages_are_resource_exhausted_on_both_services() {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    config.max_message_bytes = 64 * 1024;
    let mut gw = TestGateway::start(config).await;
    let huge = "x".repeat(100 * 1024);

    let status = gw
        .events
        .produce(produce_request(vec![event("t", &[("blob", &huge)])]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("65536 bytes (--max-message-bytes)"),
        "{}",
        status.message()
    );

    // A server-streaming RPC and the admin service.
    let mut req = sub("orders", "g", "c");
    req.consumer = huge.clone();
    let status = gw.events.subscribe(req).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let status = gw
        .admin
        .describe_stream(pb::DescribeStreamRequest {
            stream: huge.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // The connection is still good, and a large message under the limit
    // goes through.
    let status = gw
        .events
        .produce(produce_request(vec![event(
            "t",
            &[("blob", &huge[..60 * 1024])],
        )]))
        .await;
    assert!(status.is_ok(), "{status:?}");
}

#[tokio::test]
async fn subscriptions_are_limited_per_connection_and_in_total() {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    config.max_subscriptions = 3;
    config.max_subscriptions_per_connection = 2;
    let gw = TestGateway::start(config).await;
    let mut a = connect(&gw).await;
    let mut b = connect(&gw).await;
    let mut c = connect(&gw).await;
    let tail = |stream: &str| pb::TailRequest {
        stream: stream.into(),
        ..Default::default()
    };

    let a1 = a
        .subscribe(sub("s1", "g", "a1"))
        .await
        .expect("a1")
        .into_inner();
    let a2 = a
        .tail(tail("s1"))
        .await
        .expect("a2 (Tail counts too)")
        .into_inner();
    let status = a.subscribe(sub("s1", "g", "a3")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains("--max-subscriptions-per-connection"),
        "{}",
        status.message()
    );

    let _b1 = b
        .subscribe(sub("s1", "g", "b1"))
        .await
        .expect("b1")
        .into_inner();
    let status = c.tail(tail("s1")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("(--max-subscriptions)"),
        "{}",
        status.message()
    );

    // Closing streams frees their places.
    drop(a1);
    drop(a2);
    crate::common::eventually("a place is free again", || {
        let mut c = c.clone();
        async move {
            let call = c.subscribe(sub("s1", "g", "c1"));
            match tokio::time::timeout(Duration::from_secs(5), call).await {
                Ok(Ok(stream)) => Some(stream),
                _ => None,
            }
        }
    })
    .await;
}

/// The same limits on the streaming rpcs every client library uses by
/// default: ProduceStream answers each refused request with the limit's
/// code and flag and goes on; a message over `--max-message-bytes` ends
/// either call with RESOURCE_EXHAUSTED; Consume's `open` keeps Subscribe's
/// limits and takes a subscription place.
#[tokio::test]
async fn the_streaming_rpcs_keep_every_limit() {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    config.max_event_fields = 3;
    config.max_field_bytes = 100;
    config.max_produce_events = 2;
    config.max_batch_size = 50;
    config.max_message_bytes = 64 * 1024;
    config.max_subscriptions_per_connection = 1;
    let mut gw = TestGateway::start(config).await;
    let huge = "x".repeat(100 * 1024);
    let four: Vec<(String, String)> = (0..4).map(|i| (format!("f{i}"), "v".into())).collect();
    let four: Vec<(&str, &str)> = four.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    let requests = vec![
        (
            produce_request(vec![event("t", &four)]),
            "--max-event-fields",
        ),
        (
            produce_request(vec![event("t", &[("n", &huge[..100])])]),
            "--max-field-bytes",
        ),
        (
            produce_request(vec![event("t", &[]); 3]),
            "--max-produce-events",
        ),
        (produce_request(vec![event("t", &four[..3])]), ""),
        (
            produce_request(vec![event("t", &[("blob", &huge)])]),
            "--max-message-bytes",
        ),
    ];
    let expected: Vec<&str> = requests.iter().map(|(_, flag)| *flag).collect();
    let mut answers = gw
        .events
        .produce_stream(tokio_stream::iter(requests.into_iter().map(|(r, _)| r)))
        .await
        .expect("stream opens")
        .into_inner();
    for flag in &expected[..4] {
        let answer = answers
            .message()
            .await
            .expect("an answer")
            .expect("not the end");
        if flag.is_empty() {
            assert_eq!((answer.code, answer.ids.len()), (0, 1), "{answer:?}");
        } else {
            assert_eq!(answer.code, Code::ResourceExhausted as u32, "{answer:?}");
            assert!(answer.message.contains(flag), "{flag}: {answer:?}");
        }
    }
    let status = answers
        .message()
        .await
        .expect_err("the over-size request ends the call");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-message-bytes"),
        "{status:?}"
    );

    // Consume: Subscribe's limits on `open`, then the message size.
    let open = |batch_size: u32| pb::ConsumeRequest {
        kind: Some(pb::consume_request::Kind::Open(pb::SubscribeRequest {
            batch_size,
            create_group: true,
            ..sub("orders", "g", "c")
        })),
    };
    let status = gw
        .events
        .consume(tokio_stream::iter([open(51)]))
        .await
        .expect_err("batch size over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("--max-batch-size"), "{status:?}");

    let (ops, rx) = tokio::sync::mpsc::channel(4);
    ops.send(open(10)).await.unwrap();
    let mut session = gw
        .events
        .consume(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("consume opens")
        .into_inner();
    // The connection's one subscription place is taken.
    let status = gw
        .events
        .subscribe(sub("orders", "g", "d"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("--max-subscriptions-per-connection"),
        "{status:?}"
    );
    let ack = pb::ConsumeRequest {
        kind: Some(pb::consume_request::Kind::Ack(pb::AckIds {
            ids: vec![format!("1-{huge}")],
        })),
    };
    ops.send(ack).await.unwrap();
    let status = loop {
        match session.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("Consume ended OK after an over-size ack"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("Consume: "), "{status:?}");
    assert!(
        status.message().contains("--max-message-bytes"),
        "{status:?}"
    );
}

/// `--max-event-fields` is capped so that every event it admits can go
/// through the gateway's Lua scripts, whose `unpack` returns at most 7997
/// values: the largest event, typed and keyed, is produced through the
/// idempotent-produce script and later moved whole by the dead-letter
/// script.
#[tokio::test]
async fn the_largest_event_allowed_is_produced_and_dead_lettered_whole() {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    config.max_event_fields = MAX_EVENT_FIELDS_LIMIT;
    let mut gw = TestGateway::start(config).await;
    let fields: Vec<(String, String)> = (0..MAX_EVENT_FIELDS_LIMIT)
        .map(|i| (format!("f{i}"), format!("v{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let largest = pb::Event {
        idempotency_key: "largest".into(),
        ..event("order.placed", &refs)
    };
    let id = gw
        .events
        .produce(produce_request(vec![largest]))
        .await
        .expect("the largest event allowed is produced")
        .into_inner()
        .ids;
    // Delivered once directly, a second time by a reclaiming subscriber
    // that does not ack either: the next round dead-letters it.
    assert_eq!(read_directly(&redis, "orders", "g", "worker-a", 1), id);
    let mut req = sub("orders", "g", "worker-b");
    req.reclaim = Some(pb::Reclaim {
        min_idle_ms: 100,
        interval_ms: 50,
    });
    req.max_deliveries = 2;
    let _worker_b = gw.events.subscribe(req).await.unwrap().into_inner();
    let mut conn = redis.conn();
    let record = eventually("the event is dead-lettered", || {
        let records: Vec<(String, HashMap<String, String>)> =
            conn.xrange("orders:dlq", "-", "+").unwrap();
        async move { records.into_iter().next() }
    })
    .await
    .1;
    assert_eq!(record["dlq.id"], id[0]);
    assert_eq!(record["type"], "order.placed");
    for (name, value) in &fields {
        assert_eq!(record.get(name), Some(value), "{name}");
    }
    // The fields, type, ts_ms and six dlq.* fields.
    assert_eq!(record.len() as u64, MAX_EVENT_FIELDS_LIMIT + 2 + 6);
    // Acknowledged in the group right after the move.
    eventually("the dead-lettered event is acked", || {
        let pending = pending_count(&redis, "orders", "g");
        async move { (pending == 0).then_some(()) }
    })
    .await;
}
