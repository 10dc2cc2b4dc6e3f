//! S6 produce-stream: the gateway side of S2's work (64 single events in
//! flight) on one ProduceStream instead of 64 unary calls; the direct side
//! is S2's (64 single XADDs in flight on one connection).
//!
//! A sender keeps `tasks` requests unanswered at all times (a semaphore
//! permit per request in flight); answers come back in request order, so
//! the receiver pairs each with the send instant at the head of a queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use streamgate::pb;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::produce::Shape;
use super::{Ctx, SideKind};
use crate::Fallible;
use crate::payload;
use crate::stats::{Latency, Side};

/// Runs the gateway side of S6.
pub async fn gateway_side(ctx: &Ctx<'_>, shape: Shape) -> Fallible<Side> {
    let stream = ctx.stream(shape.id, SideKind::Gateway, 0);
    let mut client = ctx.rig.events().await?;
    let max_len = Some(ctx.rig.max_len);
    let request = |seq: u64| pb::ProduceRequest {
        stream: stream.clone(),
        events: vec![payload::event(seq)],
        max_len,
        ..Default::default()
    };
    let in_flight = Arc::new(Semaphore::new(shape.tasks));
    let sent: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let (requests, rx) = mpsc::channel(shape.tasks);
    let cpu = ctx.rig.cpu().await;
    let start = Instant::now();
    let deadline = start + ctx.plan.produce_for;
    // The first request is queued before the call, as a client would.
    in_flight.clone().acquire_owned().await?.forget();
    sent.lock().unwrap().push_back(Instant::now());
    requests.send(request(0)).await?;
    let mut answers = client
        .produce_stream(ReceiverStream::new(rx))
        .await?
        .into_inner();

    let sender = {
        let (in_flight, sent) = (in_flight.clone(), sent.clone());
        async move {
            let mut seq = 1;
            while Instant::now() < deadline {
                in_flight.acquire().await?.forget();
                sent.lock().unwrap().push_back(Instant::now());
                requests.send(request(seq)).await?;
                seq += 1;
            }
            // Dropping `requests` half-closes: the stream ends after the
            // last answer.
            Fallible::Ok(())
        }
    };
    let receiver = async {
        let mut latency = Latency::new();
        let mut count = 0u64;
        while let Some(answer) = answers.message().await? {
            if answer.code != 0 || answer.ids.len() != 1 {
                return Err(format!("ProduceStream answered {answer:?}").into());
            }
            let at = sent.lock().unwrap().pop_front();
            if let Some(at) = at {
                latency.record(at.elapsed());
            }
            in_flight.add_permits(1);
            count += 1;
        }
        Fallible::Ok((count, latency))
    };
    let ((sent_ok, received), usage) = ctx
        .rig
        .while_sampling(async { tokio::join!(sender, receiver) })
        .await?;
    sent_ok?;
    let (count, latency) = received?;
    let elapsed = start.elapsed();
    let spent = ctx.rig.cpu().await.since(cpu);
    drop(client);
    ctx.clean_up(&[ctx.key(SideKind::Gateway, &stream)]).await?;
    Ok(Side::new(count, elapsed, &latency)
        .gateway_usage(&usage)
        .cpu(spent))
}
