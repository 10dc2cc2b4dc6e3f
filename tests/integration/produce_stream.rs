//! ProduceStream: Produce over one long-lived stream, answers in order,
//! failures in band.

use std::collections::HashMap;
use std::time::Duration;

use streamgate::pb::{self, ProduceStreamResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use crate::common::{DEADLINE, TestGateway, event, orders, setup};

/// An open ProduceStream: a sender of requests and the answers.
struct Open {
    requests: mpsc::Sender<pb::ProduceRequest>,
    answers: Streaming<ProduceStreamResponse>,
}

/// Opens a ProduceStream with the requests `first` already queued.
async fn open(gw: &mut TestGateway, first: Vec<pb::ProduceRequest>) -> Open {
    let (requests, rx) = mpsc::channel(1024);
    for request in first {
        requests.send(request).await.unwrap();
    }
    let answers = gw
        .events
        .produce_stream(ReceiverStream::new(rx))
        .await
        .expect("ProduceStream opens")
        .into_inner();
    Open { requests, answers }
}

fn request(stream: &str, events: Vec<pb::Event>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        stream: stream.to_owned(),
        events,
        ..Default::default()
    }
}

async fn answer(open: &mut Open) -> ProduceStreamResponse {
    tokio::time::timeout(DEADLINE, open.answers.message())
        .await
        .expect("an answer within the deadline")
        .expect("the stream goes on")
        .expect("an answer, not the end")
}

/// Every entry of `stream` with its `order_id` field, in stream order.
async fn stream_order_ids(gw: &mut TestGateway, stream: &str) -> Vec<(String, String)> {
    let mut replay = gw
        .events
        .replay(pb::ReplayRequest {
            stream: stream.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(page) = replay.message().await.unwrap() {
        for e in page.entries {
            out.push((e.id, e.fields["order_id"].clone()));
        }
    }
    out
}

#[tokio::test]
async fn many_requests_in_flight_are_answered_in_request_order() {
    let (_redis, mut gw) = setup().await;
    const N: usize = 300;
    // All N requests are sent before the first answer is read.
    let requests = (0..N)
        .map(|i| {
            request(
                "orders",
                vec![event("order.placed", &[("order_id", &format!("o-{i}"))])],
            )
        })
        .collect();
    let mut open = open(&mut gw, requests).await;
    let mut ids = Vec::new();
    for _ in 0..N {
        let a = answer(&mut open).await;
        assert_eq!((a.code, a.message.as_str()), (0, ""), "{a:?}");
        assert_eq!(a.ids.len(), 1);
        ids.push(a.ids[0].clone());
    }
    drop(open.requests);
    assert!(open.answers.message().await.unwrap().is_none(), "ends OK");
    // Answer i carries the ID of request i: the stream holds o-i at it.
    let stored = stream_order_ids(&mut gw, "orders").await;
    let expected: Vec<(String, String)> = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, format!("o-{i}")))
        .collect();
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn a_failed_request_gets_its_code_and_the_stream_goes_on() {
    let (_redis, mut gw) = setup().await;
    let reserved = event("order.placed", &[("ts_ms", "1")]);
    let mut open = open(&mut gw, vec![request("orders", vec![reserved])]).await;
    open.requests
        .send(request("bad name", orders(1)))
        .await
        .unwrap();
    open.requests
        .send(request("orders", Vec::new()))
        .await
        .unwrap();
    open.requests
        .send(request("orders", orders(2)))
        .await
        .unwrap();

    let a = answer(&mut open).await;
    assert_eq!(a.code, Code::InvalidArgument as u32, "{a:?}");
    assert!(a.message.contains("events[0].fields"), "{a:?}");
    assert!(a.ids.is_empty());
    let a = answer(&mut open).await;
    assert_eq!(a.code, Code::InvalidArgument as u32, "{a:?}");
    assert!(a.message.contains("stream"), "{a:?}");
    let a = answer(&mut open).await;
    assert_eq!(a.code, Code::InvalidArgument as u32, "{a:?}");
    assert!(a.message.contains("events"), "{a:?}");
    let a = answer(&mut open).await;
    assert_eq!((a.code, a.ids.len()), (0, 2), "{a:?}");
}

#[tokio::test]
async fn idempotency_keys_and_caps_work_as_in_produce() {
    let (redis, mut gw) = setup().await;
    let keyed = || pb::Event {
        idempotency_key: "order-1001".into(),
        ..event("order.placed", &[("order_id", "1001")])
    };
    let mut open = open(&mut gw, vec![request("orders", vec![keyed()])]).await;
    open.requests
        .send(request("orders", vec![keyed()]))
        .await
        .unwrap();
    let first = answer(&mut open).await;
    let again = answer(&mut open).await;
    assert_eq!(first.code, 0);
    assert_eq!(again.ids, first.ids, "a retry writes nothing twice");
    let len: u64 = redis::cmd("XLEN")
        .arg("orders")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(len, 1);

    open.requests
        .send(pb::ProduceRequest {
            max_len: Some(3),
            exact: true,
            ..request("orders", orders(10))
        })
        .await
        .unwrap();
    assert_eq!(answer(&mut open).await.ids.len(), 10);
    let len: u64 = redis::cmd("XLEN")
        .arg("orders")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(len, 3);
}

#[tokio::test]
async fn over_the_event_limit_is_resource_exhausted_in_band() {
    let redis = crate::common::RedisServer::start();
    let mut config = crate::common::config(&redis);
    config.max_produce_events = 2;
    let mut gw = TestGateway::start(config).await;
    let mut open = open(&mut gw, vec![request("orders", orders(3))]).await;
    open.requests
        .send(request("orders", orders(2)))
        .await
        .unwrap();
    let a = answer(&mut open).await;
    assert_eq!(a.code, Code::ResourceExhausted as u32, "{a:?}");
    assert!(a.message.contains("--max-produce-events"), "{a:?}");
    assert_eq!(answer(&mut open).await.code, 0);
}

#[tokio::test]
async fn shutdown_ends_the_stream_unavailable() {
    let (_redis, mut gw) = setup().await;
    let mut open = open(&mut gw, vec![request("orders", orders(1))]).await;
    assert_eq!(answer(&mut open).await.code, 0);
    gw.gateway.as_ref().unwrap().shutdown();
    let status = tokio::time::timeout(Duration::from_secs(10), open.answers.message())
        .await
        .expect("the stream ends")
        .expect_err("with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// Requests that arrive together share Redis pipelines (consecutive ones
/// to one stream); each still gets its own answer, in order, and a
/// failure in Redis fails only its own request.
#[tokio::test]
async fn requests_that_arrive_together_are_each_answered_in_order() {
    let (redis, mut gw) = setup().await;
    let _: () = redis::cmd("SET")
        .arg("not-a-stream")
        .arg("x")
        .query(&mut redis.conn())
        .unwrap();
    let order = |n: usize| event("order.placed", &[("order_id", &format!("o-{n}"))]);
    let mut keyed = order(3);
    keyed.idempotency_key = "k-3".into();
    let mut requests = vec![
        request("orders", vec![order(0)]),
        request("orders", vec![order(1), order(2)]),
        request("not-a-stream", vec![order(99)]),
        request("orders", vec![keyed]),
        request("orders", Vec::new()),
        request("audit", vec![order(4)]),
    ];
    requests.extend((5..100).map(|n| request("orders", vec![order(n)])));
    let count = requests.len();
    // All of them are queued before the stream opens.
    let mut open = open(&mut gw, requests).await;
    let mut answers = Vec::new();
    for _ in 0..count {
        answers.push(answer(&mut open).await);
    }
    drop(open.requests);
    assert!(open.answers.message().await.unwrap().is_none(), "ends OK");

    let code = |i: usize| answers[i].code;
    assert_eq!(code(2), Code::FailedPrecondition as u32, "{:?}", answers[2]);
    assert_eq!(code(4), Code::InvalidArgument as u32, "{:?}", answers[4]);
    let ok: Vec<usize> = (0..count).filter(|&i| i != 2 && i != 4).collect();
    assert!(ok.iter().all(|&i| code(i) == 0), "{answers:?}");
    assert_eq!(answers[1].ids.len(), 2);

    // Each request's IDs hold its own events. (Requests in flight at once
    // are appended concurrently, so the stream's order across requests is
    // not promised: the idempotent one, a script call, may land later.)
    let mut stored: HashMap<(&str, String), String> = HashMap::new();
    for stream in ["orders", "audit"] {
        for (id, order) in stream_order_ids(&mut gw, stream).await {
            stored.insert((stream, id), order);
        }
    }
    let mut seen = 0;
    for &i in &ok {
        let stream = if i == 5 { "audit" } else { "orders" };
        let held: Vec<&str> = answers[i]
            .ids
            .iter()
            .map(|id| stored[&(stream, id.clone())].as_str())
            .collect();
        let sent: Vec<String> = (seen..seen + answers[i].ids.len())
            .map(|n| format!("o-{n}"))
            .collect();
        assert_eq!(held, sent, "request {i}");
        seen += held.len();
    }
    assert_eq!(stored.len(), seen, "nothing else was appended");
}
