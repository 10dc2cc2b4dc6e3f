//! A client that floods the gateway while Redis is stalled (SIGSTOP): the
//! gateway holds at most `--max-buffered-bytes` of its requests (plus a
//! stated slack for what a process needs around them), pushes back on the
//! client instead of reading more, and once Redis returns answers every
//! request it read, in order, with nothing lost or written twice.
//!
//! The gateway is the real binary, so that its memory is measured alone.

use std::net::SocketAddr;

use streamgate::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::common::{GatewayProcess, RedisServer, eventually};
use crate::metrics::{sample, scrape};

/// The budget under test.
const BUDGET: u64 = 16 << 20;

/// What the process may grow by beyond the budget: while Redis is stopped
/// each held request exists twice, as the XADD command that waits for its
/// reply and as its encoding queued on the connection (measured: growth
/// about 2.2 times the budget at 8, 16, 32 and 64 MiB), plus a constant
/// for HTTP/2 receive windows (1 MiB per stream, 16 MiB per connection)
/// and what the allocator keeps while the backlog drains (measured on the
/// three servers: growth 41 to 57 MiB at a 16 MiB budget).
const SLACK: u64 = BUDGET + (48 << 20);

/// One request's payload: the size of the flood (900 KiB).
const PAYLOAD: usize = 900 << 10;

/// Requests offered: ten times the budget.
const REQUESTS: usize = 180;

/// Acks offered on a Consume stream, of [`ACK_IDS`] IDs each (~6 KiB;
/// 12 MiB in all, far more than HTTP/2 lets sit unread).
const ACKS: usize = 2000;
const ACK_IDS: usize = 500;

/// Resident and peak resident memory of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        let n = line[key.len()..].trim().trim_end_matches(" kB").trim();
        n.parse::<u64>().unwrap() * 1024
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

async fn metric(addr: SocketAddr, series: &str) -> f64 {
    sample(&scrape(addr).await, series).unwrap_or_else(|| panic!("{series} is exported"))
}

fn request(i: usize) -> pb::ProduceRequest {
    pb::ProduceRequest {
        stream: "flood".into(),
        events: vec![pb::Event {
            r#type: "blob".into(),
            fields: [
                ("i".to_owned(), i.to_string()),
                ("blob".to_owned(), "x".repeat(PAYLOAD)),
            ]
            .into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn open() -> pb::ConsumeRequest {
    pb::ConsumeRequest {
        kind: Some(pb::consume_request::Kind::Open(pb::SubscribeRequest {
            stream: "acks".into(),
            group: "g".into(),
            consumer: "c".into(),
            create_group: true,
            ..Default::default()
        })),
    }
}

/// The `i`-th ack: IDs no entry has, so each comes back not pending.
fn ack(i: usize) -> pb::ConsumeRequest {
    let ids = (0..ACK_IDS).map(|n| format!("{}-{n}", i + 1)).collect();
    pb::ConsumeRequest {
        kind: Some(pb::consume_request::Kind::Ack(pb::AckIds { ids })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_while_redis_is_stopped_stays_within_the_byte_budget() {
    let redis = RedisServer::start();
    let gateway = GatewayProcess::start(
        &redis.url(),
        "127.0.0.1:0",
        &[
            "--max-buffered-bytes",
            &BUDGET.to_string(),
            "--metrics-listen",
            "127.0.0.1:0",
            // Nothing times out while Redis is stopped: every request is
            // answered once it is back.
            "--redis-timeout-ms",
            "300000",
        ],
    );
    let metrics: SocketAddr = gateway.line_after("metrics on ").parse().unwrap();
    let mut client = gateway.events().await;

    // Warm up the paths the flood takes, then take the baseline.
    let (requests, rx) = mpsc::channel(1);
    let mut answers = client
        .produce_stream(ReceiverStream::new(rx))
        .await
        .expect("ProduceStream opens")
        .into_inner();
    requests.send(request(0)).await.unwrap();
    let first = answers.message().await.unwrap().unwrap();
    assert_eq!(first.code, 0, "{first:?}");
    let (ops, rx) = mpsc::channel(1);
    ops.send(open()).await.unwrap();
    let mut session = client
        .consume(ReceiverStream::new(rx))
        .await
        .expect("Consume opens")
        .into_inner();
    let (before, _) = memory(gateway.pid());

    redis.signal("STOP");
    let offer = tokio::spawn(async move {
        for i in 1..=REQUESTS {
            if requests.send(request(i)).await.is_err() {
                break;
            }
        }
    });
    let offer_acks = tokio::spawn(async move {
        for i in 0..ACKS {
            if ops.send(ack(i)).await.is_err() {
                break;
            }
        }
    });
    // The gateway holds a full budget and has stopped reading the client
    // (the ProduceStream waits for room; the Consume call, busy with its
    // first ack, is not reading either way).
    eventually(
        "the budget is used up and the gateway pushes back",
        || async {
            let held = metric(metrics, "streamgate_buffered_request_bytes").await;
            let waiting = metric(metrics, "streamgate_read_pushback_calls").await;
            (held + 2.0 * PAYLOAD as f64 > BUDGET as f64 && waiting >= 1.0).then_some(())
        },
    )
    .await;
    let held = metric(metrics, "streamgate_buffered_request_bytes").await;
    assert!(held <= BUDGET as f64, "held {held} bytes");
    let (stalled, _) = memory(gateway.pid());
    assert!(
        !offer.is_finished(),
        "the client could hand over everything"
    );

    redis.signal("CONT");
    let resumed = std::time::Instant::now();
    let mut ids = vec![first.ids[0].clone()];
    for i in 1..=REQUESTS {
        let answer = answers.message().await.unwrap().unwrap();
        assert_eq!(
            (answer.code, answer.ids.len()),
            (0, 1),
            "request {i}: {answer:?}"
        );
        ids.push(answer.ids[0].clone());
    }
    offer.await.unwrap();
    // Every ack confirmed, in order, each for exactly its own IDs.
    for i in 0..ACKS {
        let confirm = loop {
            match session.message().await.unwrap().unwrap().kind {
                Some(pb::consume_response::Kind::Confirm(confirm)) => break confirm,
                _ => continue,
            }
        };
        let mut got = [confirm.done, confirm.not_pending].concat();
        got.sort();
        let pb::consume_request::Kind::Ack(mut sent) = ack(i).kind.unwrap() else {
            unreachable!()
        };
        sent.ids.sort();
        assert_eq!(got, sent.ids, "ack {i}");
    }
    offer_acks.await.unwrap();
    let drained = resumed.elapsed();
    let (_, peak) = memory(gateway.pid());
    eprintln!(
        "flood: budget {} MiB; RSS before {} MiB, while stalled {} MiB, peak {} MiB (growth {} \
         MiB); drained in {} ms",
        BUDGET >> 20,
        before >> 20,
        stalled >> 20,
        peak >> 20,
        peak.saturating_sub(before) >> 20,
        drained.as_millis()
    );
    assert!(
        peak.saturating_sub(before) <= BUDGET + SLACK,
        "RSS grew by {} MiB",
        peak.saturating_sub(before) >> 20
    );

    // In order, each written once: the stream holds exactly the requests,
    // in the order they were sent, under the IDs the answers gave.
    let range: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&["flood", "-", "+"][..])
        .query(&mut redis.conn())
        .unwrap();
    let written: Vec<(String, String)> = range
        .ids
        .iter()
        .map(|entry| (entry.id.clone(), entry.get("i").expect("field i")))
        .collect();
    let expected: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i.to_string()))
        .collect();
    assert_eq!(written, expected);
}
