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

use crate::broker::{Broker, Outcome, partition_stream};
use crate::delivery::{Delivery, LoopSettings};
use crate::doorbell::Doorbell;
use crate::error::{Error, Result};
use crate::group_ops::GroupOps;
use crate::ids::StreamId;
use crate::model::Push;
use crate::ownership::Owners;
use crate::partition::qualified;
use crate::rewinds::{Held, Rewinds};
use crate::shutdown::Shutdown;
use crate::subscription::{self, GroupSignals, SubscribeSpec};

/// Confirms waiting to be sent, at most; the client's operations wait
/// while it does not read its confirms.
const CONFIRM_BUFFER: usize = 16;

/// An entry ID of an operation: its partition (0 on a plain stream) and
/// its Redis ID.
pub type EntryId = (u32, StreamId);

/// An operation a client sends on its Consume stream, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Acknowledge entries.
    Ack(Vec<EntryId>),
    /// Schedule entries for redelivery after a delay.
    Nack {
        /// The entries.
        ids: Vec<EntryId>,
        /// Milliseconds until they come due
        /// ([`crate::group_ops::nack_delay`]).
        delay_ms: i64,
    },
    /// Reset the entries' idle time (extend their lease).
    Extend(Vec<EntryId>),
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

/// The answer to one operation, IDs as the client gave them (qualified
/// on a partitioned stream), partition by partition in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// What was asked.
    pub op: OpKind,
    /// IDs it took effect for.
    pub done: Vec<String>,
    /// IDs that were not pending: nothing was done for them.
    pub not_pending: Vec<String>,
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
    group: (Arc<GroupSignals>, GroupOps, Arc<Owners>),
    doorbell: &Doorbell,
    shutdown: Shutdown,
    ops: S,
) -> Result<Session>
where
    S: Stream<Item = Result<Op>> + Send + Unpin + 'static,
{
    let (signals, group_ops, owners) = group;
    let partitions = spec.partitions;
    let spec = SubscribeSpec {
        rewinds: (spec.holder.is_some() && partitions > 0).then(|| Rewinds::new(partitions)),
        ..spec
    };
    let pushes = subscription::start(
        broker,
        spec.clone(),
        loops,
        (&signals, &owners),
        doorbell,
        shutdown.clone(),
    )
    .await?;
    let (confirms, confirmed) = mpsc::channel(CONFIRM_BUFFER);
    let rewinds = spec.rewinds.clone();
    let applier = Applier {
        group_ops,
        spec,
        partitions,
    };
    shutdown.clone().spawn(applier.run(ops, confirms, shutdown));
    Ok(Session {
        pushes: Some(pushes),
        confirms: confirmed,
        rewinds,
        ended: false,
    })
}

/// Applies a client's operations in order.
struct Applier {
    group_ops: GroupOps,
    spec: SubscribeSpec,
    /// The stream's partitions; 0 for a plain stream.
    partitions: u32,
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
            let (result, held) = match op {
                Ok(op) => self.apply(op).await,
                Err(err) => (Err(err), Vec::new()),
            };
            let failed = result.is_err();
            // A Nack's partitions stay held until its Confirm is queued
            // (see `crate::rewinds`).
            let sent = confirms.send(result).await;
            drop(held);
            if sent.is_err() || failed {
                return;
            }
        }
    }

    /// Applies `op` partition by partition (on a plain stream: once). An
    /// ordered session's Nack holds its partitions until the caller has
    /// queued the Confirm, and moves the epoch of each partition where it
    /// took effect ([`Rewinds::nacked`]).
    async fn apply(&self, op: Op) -> (Result<Confirm>, Vec<Held>) {
        let (kind, ids, delay_ms) = match op {
            Op::Ack(ids) => (OpKind::Ack, ids, 0),
            Op::Nack { ids, delay_ms } => (OpKind::Nack, ids, delay_ms),
            Op::Extend(ids) => (OpKind::Extend, ids, 0),
        };
        let groups = by_partition(ids);
        let rewinds = self.spec.rewinds.as_ref().filter(|_| kind == OpKind::Nack);
        let mut held = match rewinds {
            Some(rewinds) => {
                let partitions: Vec<u32> = groups.iter().map(|(p, _)| *p).collect();
                rewinds.hold_all(&partitions).await
            }
            None => Vec::new(),
        };
        let confirm = self.apply_each(kind, groups, delay_ms, &mut held).await;
        (confirm, held)
    }

    /// [`Applier::apply`] on `groups` (IDs by partition), with `held` the
    /// held partitions of an ordered session's Nack, in increasing order.
    async fn apply_each(
        &self,
        kind: OpKind,
        groups: Vec<(u32, Vec<StreamId>)>,
        delay_ms: i64,
        held: &mut [Held],
    ) -> Result<Confirm> {
        let mut confirm = Confirm {
            op: kind,
            done: Vec::new(),
            not_pending: Vec::new(),
        };
        let mut order: Vec<u32> = groups.iter().map(|(p, _)| *p).collect();
        order.sort_unstable();
        order.dedup();
        for (partition, ids) in groups {
            let outcome = self
                .apply_on(kind, partition, &ids, delay_ms)
                .await
                .map_err(|e| e.about(&self.spec.stream))?;
            if let (OpKind::Nack, Some(rewinds), Some(from)) =
                (kind, &self.spec.rewinds, outcome.done.iter().min())
                && let Ok(i) = order.binary_search(&partition)
                && let Some(guard) = held.get_mut(i)
            {
                rewinds.nacked(partition, guard, *from);
            }
            let show = |id: &StreamId| match self.partitions {
                0 => id.to_string(),
                _ => qualified(partition, &id.to_string()),
            };
            confirm.done.extend(outcome.done.iter().map(show));
            confirm
                .not_pending
                .extend(outcome.not_pending.iter().map(show));
        }
        Ok(confirm)
    }

    /// One operation on the entries of one partition.
    async fn apply_on(
        &self,
        kind: OpKind,
        partition: u32,
        ids: &[StreamId],
        delay_ms: i64,
    ) -> Result<Outcome> {
        let (ops, spec) = (&self.group_ops, &self.spec);
        let stream = match self.partitions {
            0 => spec.stream.clone(),
            _ => partition_stream(&spec.stream, partition),
        };
        let (group, consumer, holder) = (&spec.group, &spec.consumer, spec.holder.as_ref());
        match kind {
            OpKind::Ack => ops.ack_each(&stream, group, holder, ids).await,
            OpKind::Nack => {
                ops.nack(&stream, group, consumer, holder, ids, delay_ms)
                    .await
            }
            OpKind::Extend => ops.extend(&stream, group, consumer, ids).await,
        }
    }
}

/// `ids` grouped by partition, partitions in order of first appearance,
/// IDs in request order within each.
fn by_partition(ids: Vec<EntryId>) -> Vec<(u32, Vec<StreamId>)> {
    let mut groups: Vec<(u32, Vec<StreamId>)> = Vec::new();
    for (partition, id) in ids {
        match groups.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, ids)) => ids.push(id),
            None => groups.push((partition, vec![id])),
        }
    }
    groups
}

/// The response stream of a Consume call: the subscription's pushes and
/// the confirms, merged. Confirms go first, so a client waiting for one is
/// never held up behind a batch (and, in an ordered session, so that what
/// was read after a Nack follows its Confirm: see [`crate::rewinds`]).
pub struct Session {
    /// The subscription; dropped (which stops it) when the session ends.
    pushes: Option<Delivery<Push>>,
    confirms: mpsc::Receiver<Result<Confirm>>,
    /// An ordered session's Nacks: entries they overtook are dropped.
    rewinds: Option<Arc<Rewinds>>,
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
        let polled = Pin::new(pushes).poll_next(cx);
        match polled {
            Poll::Ready(Some(Ok(Push::Entries(mut entries)))) if self.rewinds.is_some() => {
                let rewinds = self.rewinds.as_ref().expect("checked");
                entries.retain(|e| !rewinds.stale(e.partition.unwrap_or(0), e.epoch, e.id));
                if entries.is_empty() {
                    // Nothing left to send: poll again (registers the waker).
                    return self.poll_next(cx);
                }
                Poll::Ready(Some(Ok(Out::Push(Push::Entries(entries)))))
            }
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
