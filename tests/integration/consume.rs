//! Consume: subscribe and acknowledge on one bidirectional stream.

use std::time::{Duration, Instant};

use streamgate::pb::{
    self, ConfirmOp, ConsumeRequest, ConsumeResponse, consume_request, consume_response,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::common::{
    DEADLINE, RedisServer, TestGateway, config, ids, orders, pending_count, produce, read_directly,
    setup, sub,
};

/// An open Consume stream.
pub(crate) struct Open {
    /// `None` once half-closed.
    requests: Option<mpsc::Sender<ConsumeRequest>>,
    responses: Streaming<ConsumeResponse>,
}

impl Open {
    pub(crate) async fn send(&self, kind: consume_request::Kind) {
        self.requests
            .as_ref()
            .expect("not half-closed")
            .send(ConsumeRequest { kind: Some(kind) })
            .await
            .expect("the gateway takes requests");
    }

    async fn ack(&self, ids: &[String]) {
        self.send(consume_request::Kind::Ack(pb::AckIds { ids: ids.to_vec() }))
            .await;
    }

    /// The next message that is not a heartbeat.
    pub(crate) async fn next(&mut self) -> Result<Option<consume_response::Kind>, Status> {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.responses.message())
                .await
                .expect("a message within the deadline")?;
            match message.and_then(|m| m.kind) {
                Some(consume_response::Kind::Heartbeat(_)) => continue,
                other => return Ok(other),
            }
        }
    }

    /// Entries until `n` have arrived; fails on a confirm.
    pub(crate) async fn entries(&mut self, n: usize) -> Vec<pb::Entry> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next().await.expect("the stream goes on") {
                Some(consume_response::Kind::Batch(batch)) => out.extend(batch.entries),
                other => panic!("expected a batch, got {other:?}"),
            }
        }
        out
    }

    /// Acks `ids` and answers the confirm's done and not-pending lists.
    pub(crate) async fn acked(&mut self, ids: &[&String]) -> (Vec<String>, Vec<String>) {
        let ids: Vec<String> = ids.iter().map(|id| (*id).clone()).collect();
        self.ack(&ids).await;
        let confirm = self.confirm().await;
        (confirm.done, confirm.not_pending)
    }

    /// The next confirm; fails on anything else.
    pub(crate) async fn confirm(&mut self) -> pb::Confirm {
        match self.next().await.expect("the stream goes on") {
            Some(consume_response::Kind::Confirm(confirm)) => confirm,
            other => panic!("expected a confirm, got {other:?}"),
        }
    }
}

/// Opens a Consume stream whose first message is `first`.
async fn open_with(gw: &mut TestGateway, first: Option<consume_request::Kind>) -> Open {
    open_on(&mut gw.events, first).await
}

/// Opens a Consume stream on `client` whose first message is `first`.
pub(crate) async fn open_on(
    client: &mut pb::event_stream_client::EventStreamClient<tonic::transport::Channel>,
    first: Option<consume_request::Kind>,
) -> Open {
    let (requests, rx) = mpsc::channel(64);
    requests.send(ConsumeRequest { kind: first }).await.unwrap();
    let responses = client
        .consume(ReceiverStream::new(rx))
        .await
        .expect("Consume answers")
        .into_inner();
    Open {
        requests: Some(requests),
        responses,
    }
}

pub(crate) async fn open(gw: &mut TestGateway, req: pb::SubscribeRequest) -> Open {
    open_with(gw, Some(consume_request::Kind::Open(req))).await
}

/// The status a Consume call ends with: when the first message is refused
/// tonic may report it on the call or as the first message.
async fn refused(gw: &mut TestGateway, first: Option<consume_request::Kind>) -> Status {
    let (requests, rx) = mpsc::channel(4);
    requests.send(ConsumeRequest { kind: first }).await.unwrap();
    match gw.events.consume(ReceiverStream::new(rx)).await {
        Err(status) => status,
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("the stream is refused"),
    }
}

#[tokio::test]
async fn the_first_message_must_be_open() {
    let (_redis, mut gw) = setup().await;
    let ack = consume_request::Kind::Ack(pb::AckIds {
        ids: vec!["1-0".into()],
    });
    let status = refused(&mut gw, Some(ack)).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("open"), "{status:?}");
    let status = refused(&mut gw, None).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // The open request is validated like Subscribe's.
    let bad = consume_request::Kind::Open(pb::SubscribeRequest {
        group: String::new(),
        ..sub("orders", "g", "a")
    });
    let status = refused(&mut gw, Some(bad)).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("group"), "{status:?}");
}

#[tokio::test]
async fn acks_in_band_are_confirmed_with_what_was_pending() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(3)).await;
    let mut c = open(&mut gw, sub("orders", "g", "a")).await;
    let got = c.entries(3).await;
    assert_eq!(ids(&got), produced);
    assert!(got.iter().all(|e| e.delivery_count == 1 && !e.redelivered));

    c.ack(&produced[..2]).await;
    let confirm = c.confirm().await;
    assert_eq!(confirm.op(), ConfirmOp::Ack);
    assert_eq!(confirm.done, produced[..2]);
    assert!(confirm.not_pending.is_empty());
    assert_eq!(pending_count(&redis, "orders", "g"), 1);

    // Acking again, plus one still pending: only that one takes effect.
    c.ack(&produced).await;
    let confirm = c.confirm().await;
    assert_eq!(confirm.done, produced[2..]);
    assert_eq!(confirm.not_pending, produced[..2]);
    assert_eq!(pending_count(&redis, "orders", "g"), 0);
}

#[tokio::test]
async fn an_ack_takes_exactly_the_ids_pending_in_the_group_in_any_order() {
    let (redis, mut gw) = setup().await;
    let p = produce(&mut gw, "orders", orders(6)).await;
    let theirs = read_directly(&redis, "orders", "g", "other", 1);
    assert_eq!(theirs, p[..1]);
    let mut c = open(&mut gw, sub("orders", "g", "a")).await;
    assert_eq!(ids(&c.entries(5).await), p[1..]);
    let none: Vec<String> = Vec::new();

    // The consumer's own entries in delivery order (one XACK for all).
    assert_eq!(
        c.acked(&[&p[1], &p[2]]).await,
        (vec![p[1].clone(), p[2].clone()], none.clone())
    );
    // Out of order.
    assert_eq!(
        c.acked(&[&p[4], &p[3]]).await,
        (vec![p[4].clone(), p[3].clone()], none.clone())
    );
    // Another consumer's entry is pending in the group too, as for Ack; an
    // ID never delivered and one already acked are not pending.
    let never = "9999999999999-0".to_owned();
    assert_eq!(
        c.acked(&[&p[0], &p[1], &p[5], &never]).await,
        (
            vec![p[0].clone(), p[5].clone()],
            vec![p[1].clone(), never.clone()]
        )
    );
    assert_eq!(pending_count(&redis, "orders", "g"), 0);
}

#[tokio::test]
async fn half_close_ends_the_stream_ok_after_the_last_confirm() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(2)).await;
    let mut c = open(&mut gw, sub("orders", "g", "a")).await;
    c.entries(2).await;
    c.ack(&produced).await;
    c.requests = None;
    let confirm = match c.next().await.expect("the stream goes on") {
        Some(consume_response::Kind::Confirm(confirm)) => confirm,
        other => panic!("expected the confirm, got {other:?}"),
    };
    assert_eq!(confirm.done, produced);
    // Then the stream ends with OK.
    assert!(c.next().await.expect("ends OK").is_none());
    assert_eq!(pending_count(&redis, "orders", "g"), 0);
}

#[tokio::test]
async fn nack_and_extend_in_band_only_touch_this_consumers_entries() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(2)).await;
    // Another consumer holds the first entry.
    let theirs = read_directly(&redis, "orders", "g", "other", 1);
    assert_eq!(theirs, produced[..1]);
    let mut c = open(
        &mut gw,
        pb::SubscribeRequest {
            reclaim: Some(pb::Reclaim {
                min_idle_ms: 600_000,
                interval_ms: 600_000,
            }),
            ..sub("orders", "g", "a")
        },
    )
    .await;
    let mine = ids(&c.entries(1).await);
    assert_eq!(mine, produced[1..]);

    let both = produced.clone();
    c.send(consume_request::Kind::Extend(pb::ExtendIds {
        ids: both.clone(),
    }))
    .await;
    let confirm = c.confirm().await;
    assert_eq!(confirm.op(), ConfirmOp::Extend);
    assert_eq!(
        (confirm.done, confirm.not_pending),
        (mine.clone(), theirs.clone())
    );

    c.send(consume_request::Kind::Nack(pb::NackIds {
        ids: both,
        delay_ms: 0,
    }))
    .await;
    let confirm = c.confirm().await;
    assert_eq!(confirm.op(), ConfirmOp::Nack);
    assert_eq!((confirm.done, confirm.not_pending), (mine.clone(), theirs));
    // The nacked entry comes back at once, as a re-delivery.
    let again = c.entries(1).await;
    assert_eq!(ids(&again), mine);
    assert!(again[0].redelivered && again[0].delivery_count == 2);
}

#[tokio::test]
async fn an_in_band_ack_frees_max_in_flight_room_at_once() {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    // Anything that waited for a block period would take seconds.
    config.block_ms = 10_000;
    let mut gw = TestGateway::start(config).await;
    let produced = produce(&mut gw, "orders", orders(5)).await;
    let mut c = open(
        &mut gw,
        pb::SubscribeRequest {
            max_in_flight: 2,
            ..sub("orders", "g", "a")
        },
    )
    .await;
    assert_eq!(ids(&c.entries(2).await), produced[..2]);
    let acked = Instant::now();
    c.ack(&produced[..1]).await;
    assert_eq!(c.confirm().await.done, produced[..1]);
    assert_eq!(ids(&c.entries(1).await), produced[2..3]);
    assert!(
        acked.elapsed() < Duration::from_secs(5),
        "room freed by an in-band ack was used after {:?} (block 10 s)",
        acked.elapsed()
    );
}

#[tokio::test]
async fn pending_first_and_reclaim_work_as_in_subscribe() {
    let (redis, mut gw) = setup().await;
    let produced = produce(&mut gw, "orders", orders(3)).await;
    // `a` got the first entry before and crashed; `dead` holds the second.
    let own = read_directly(&redis, "orders", "g", "a", 1);
    let stuck = read_directly(&redis, "orders", "g", "dead", 1);
    // `dead` has been silent for a minute (XCLAIM's IDLE sets the clock),
    // while `a`'s own entries stay far below the threshold.
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&["orders", "g", "dead", "0", &stuck[0], "IDLE", "60000"][..])
        .query(&mut redis.conn())
        .unwrap();
    let mut c = open(
        &mut gw,
        pb::SubscribeRequest {
            pending_first: true,
            reclaim: Some(pb::Reclaim {
                min_idle_ms: 30_000,
                interval_ms: 50,
            }),
            ..sub("orders", "g", "a")
        },
    )
    .await;
    let got = c.entries(3).await;
    let first = &got[0];
    assert_eq!((&first.id, first.redelivered), (&own[0], true));
    let mut rest = ids(&got[1..]);
    rest.sort();
    let mut expected = vec![stuck[0].clone(), produced[2].clone()];
    expected.sort();
    assert_eq!(rest, expected);
    c.ack(&ids(&got)).await;
    assert_eq!(c.confirm().await.done.len(), 3);
}

#[tokio::test]
async fn a_malformed_id_or_a_second_open_ends_the_stream_invalid() {
    let (_redis, mut gw) = setup().await;
    let mut c = open(&mut gw, sub("orders", "g", "a")).await;
    c.ack(&["not-an-id".to_owned()]).await;
    let status = c.next().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("ack.ids[0]"), "{status:?}");

    let mut c = open(&mut gw, sub("orders", "g", "a")).await;
    c.send(consume_request::Kind::Open(sub("orders", "g", "a")))
        .await;
    let status = c.next().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("open"), "{status:?}");
}

#[tokio::test]
async fn shutdown_ends_a_consume_stream_unavailable() {
    let (_redis, mut gw) = setup().await;
    let mut c = open(&mut gw, sub("orders", "g", "a")).await;
    produce(&mut gw, "orders", orders(1)).await;
    c.entries(1).await;
    gw.gateway.as_ref().unwrap().shutdown();
    let status = c.next().await.expect_err("ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}
