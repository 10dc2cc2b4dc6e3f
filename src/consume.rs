//! The Consume session: a subscription and its acks, nacks and extends on
//! one bidirectional stream.
//!
//! The delivering half is an ordinary subscription (the same reader and
//! [`crate::driver`] as Subscribe, so every option behaves the same). The
//! other half applies the client's operations in the order they arrive,
//! one at a time, through the same [`GroupOps`] as the unary Ack, Nack
//! and Extend, and answers each with a [`Confirm`] saying which IDs took
//! effect. The two halves meet
//! in [`Session`], the response stream, which ends cleanly once the client
//! has half-closed and every Confirm is sent.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};

use crate::broker::{Broker, Outcome};
use crate::delivery::{Delivery, LoopSettings};
use crate::doorbell::Doorbell;
use crate::error::{Error, Result};
use crate::group_ops::GroupOps;
use crate::ids::StreamId;
use crate::model::Push;
use crate::shutdown::Shutdown;
use crate::subscription::{self, GroupSignals, SubscribeSpec};

/// Confirms waiting to be sent, at most; the client's operations wait
/// while it does not read its confirms.
const CONFIRM_BUFFER: usize = 16;

/// An operation a client sends on its Consume stream, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Acknowledge entries.
    Ack(Vec<StreamId>),
    /// Schedule entries for redelivery after a delay.
    Nack {
        /// The entries.
        ids: Vec<StreamId>,
        /// Milliseconds until they come due
        /// ([`crate::group_ops::nack_delay`]).
        delay_ms: i64,
    },
    /// Reset the entries' idle time (extend their lease).
    Extend(Vec<StreamId>),
}

/// Which operation a confirm answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// An ack.
    Ack,
    /// A nack.
    Nack,
    /// An extend.
    Extend,
}

/// The answer to one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// What was asked.
    pub op: OpKind,
    /// Which IDs it took effect for.
    pub outcome: Outcome,
}

/// What the session sends its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// Entries or a heartbeat, as Subscribe sends them.
    Push(Push),
    /// The answer to an operation.
    Confirm(Confirm),
}

/// Opens the subscription (setup done before this returns, as for
/// Subscribe) and starts applying `ops` through `group`'s operations;
/// the returned session is the response stream.
pub async fn start<S>(
    broker: Broker,
    spec: SubscribeSpec,
    loops: LoopSettings,
    group: (Arc<GroupSignals>, GroupOps),
    doorbell: &Doorbell,
    shutdown: Shutdown,
    ops: S,
) -> Result<Session>
where
    S: Stream<Item = Result<Op>> + Send + Unpin + 'static,
{
    let (signals, group_ops) = group;
    // Plain streams only so far: a partitioned stream's key holds its
    // layout, which the first read refuses (FAILED_PRECONDITION).
    let pushes = subscription::start(
        broker,
        spec.clone(),
        0,
        loops,
        &signals,
        doorbell,
        shutdown.clone(),
    )
    .await?;
    let (confirms, confirmed) = mpsc::channel(CONFIRM_BUFFER);
    let applier = Applier { group_ops, spec };
    shutdown.clone().spawn(applier.run(ops, confirms, shutdown));
    Ok(Session {
        pushes: Some(pushes),
        confirms: confirmed,
        ended: false,
    })
}

/// Applies a client's operations in order.
struct Applier {
    group_ops: GroupOps,
    spec: SubscribeSpec,
}

impl Applier {
    /// Applies operations until the client half-closes (the confirms
    /// channel then closes, ending the session cleanly), an operation
    /// fails (its error ends the session) or shutdown.
    async fn run<S>(self, mut ops: S, confirms: mpsc::Sender<Result<Confirm>>, shutdown: Shutdown)
    where
        S: Stream<Item = Result<Op>> + Unpin,
    {
        loop {
            let op = tokio::select! {
                biased;
                () = shutdown.triggered() => {
                    let _ = confirms.send(Err(Error::ShuttingDown)).await;
                    return;
                }
                () = confirms.closed() => return,
                op = ops.next() => op,
            };
            let Some(op) = op else { return };
            let result = match op {
                Ok(op) => self.apply(op).await,
                Err(err) => Err(err),
            };
            let failed = result.is_err();
            if confirms.send(result).await.is_err() || failed {
                return;
            }
        }
    }

    async fn apply(&self, op: Op) -> Result<Confirm> {
        let (ops, spec) = (&self.group_ops, &self.spec);
        let (stream, group, consumer) = (&spec.stream, &spec.group, &spec.consumer);
        let (op, outcome) = match op {
            Op::Ack(ids) => (OpKind::Ack, ops.ack_each(stream, group, &ids).await?),
            Op::Nack { ids, delay_ms } => (
                OpKind::Nack,
                ops.nack(stream, group, consumer, &ids, delay_ms).await?,
            ),
            Op::Extend(ids) => (
                OpKind::Extend,
                ops.extend(stream, group, consumer, &ids).await?,
            ),
        };
        Ok(Confirm { op, outcome })
    }
}

/// The response stream of a Consume call: the subscription's pushes and
/// the confirms, merged. Confirms go first, so a client waiting for one is
/// never held up behind a batch.
pub struct Session {
    /// The subscription; dropped (which stops it) when the session ends.
    pushes: Option<Delivery<Push>>,
    confirms: mpsc::Receiver<Result<Confirm>>,
    ended: bool,
}

impl Stream for Session {
    type Item = Result<Out>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.confirms.poll_recv(cx) {
            Poll::Ready(Some(Ok(confirm))) => return Poll::Ready(Some(Ok(Out::Confirm(confirm)))),
            Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(self.end(err)))),
            // The client half-closed and every confirm is out.
            Poll::Ready(None) => {
                self.ended = true;
                self.pushes = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let Some(pushes) = self.pushes.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(pushes).poll_next(cx) {
            Poll::Ready(Some(Ok(push))) => Poll::Ready(Some(Ok(Out::Push(push)))),
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(self.end(err)))),
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Session {
    /// Ends the session with `err`: nothing more is sent.
    fn end(&mut self, err: Error) -> Error {
        self.ended = true;
        self.pushes = None;
        err
    }
}
