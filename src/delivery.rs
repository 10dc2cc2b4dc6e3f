//! A bounded hand-off from a reading task to a response stream, and the
//! pump of paging loops (Replay).
//!
//! The reading task must reserve buffer space *before* it reads from Redis
//! ([`Feed::reserve`]), so the gateway never holds more than the buffer
//! allows however slowly a client reads. When the client goes away the
//! receiving side is dropped, `reserve` fails, and the task stops reading.
//! The task's outcome travels separately from the data so that a terminal
//! error can always be delivered, even when the data buffer is full.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;

use std::time::Duration;

use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// How the long-lived read loops behave, from the command line.
#[derive(Clone, Copy, Debug)]
pub struct LoopSettings {
    /// Longest wait of an idle live stream before it reads again although
    /// nothing rang (and the doorbell's block).
    pub block: Duration,
    /// How long a loop rides out a Redis outage before it gives up.
    pub outage_grace: Duration,
    /// How long a client may take nothing before its stream is ended.
    pub stall_timeout: Duration,
}

/// Creates a feed/delivery pair buffering at most `capacity` items.
pub fn channel<T>(capacity: usize) -> (Feed<T>, Delivery<T>) {
    let (items_tx, items_rx) = mpsc::channel(capacity.max(1));
    let (end_tx, end_rx) = oneshot::channel();
    (
        Feed {
            items: items_tx,
            end: end_tx,
        },
        Delivery {
            items: items_rx,
            end: Some(end_rx),
        },
    )
}

/// The producing side, owned by the reading task.
pub struct Feed<T> {
    items: mpsc::Sender<T>,
    end: oneshot::Sender<Error>,
}

/// Why a feed cannot take more items: the client is gone.
#[derive(Debug)]
pub struct Closed;

impl<T> Feed<T> {
    /// Waits for buffer space. Fails once the client has gone away.
    pub async fn reserve(&self) -> Result<mpsc::Permit<'_, T>, Closed> {
        self.items.reserve().await.map_err(|_| Closed)
    }

    /// Completes when the client goes away.
    pub async fn closed(&self) {
        self.items.closed().await;
    }

    /// Ends the stream: after the buffered items, with `error` if given,
    /// otherwise cleanly.
    pub fn finish(self, outcome: Result<(), Error>) {
        if let Err(error) = outcome {
            let _ = self.end.send(error);
        }
    }
}

/// What one turn of a paging loop produced.
pub enum Turn<T> {
    /// Something to hand to the client.
    Item(T),
    /// The loop is done; end the stream cleanly.
    End,
}

/// A paging loop (Replay): each turn reads once from Redis, and the loop
/// ends by itself. Live streams, which wait for entries, are driven by
/// [`crate::driver`] instead.
pub trait ReadLoop: Send {
    /// What one turn hands to the client.
    type Item: Send;

    /// Reads once. Called only when buffer space for the item is reserved.
    fn turn(&mut self) -> impl Future<Output = Result<Turn<Self::Item>>> + Send;
}

/// Drives a read loop: each turn first waits for buffer space, then reads,
/// then hands the item over. Returns `Ok(())` when the loop ends or the
/// client went away, [`Error::ShuttingDown`] once `shutdown` fires (checked
/// before waiting and after every read), and [`Error::ClientStalled`] when
/// the client takes nothing for `stall` (what was read stays pending in
/// Redis, so nothing is lost).
pub async fn pump<L: ReadLoop>(
    feed: &Feed<L::Item>,
    shutdown: &Shutdown,
    stall: Duration,
    mut reads: L,
) -> Result<()> {
    loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.triggered() => return Err(Error::ShuttingDown),
            permit = tokio::time::timeout(stall, feed.reserve()) => match permit {
                Ok(Ok(permit)) => permit,
                Ok(Err(Closed)) => return Ok(()),
                Err(_) => return Err(Error::ClientStalled(stall)),
            },
        };
        match reads.turn().await? {
            Turn::Item(item) => permit.send(item),
            Turn::End => return Ok(()),
        }
        if shutdown.is_triggered() {
            return Err(Error::ShuttingDown);
        }
    }
}

/// Starts `reads` on its own task and returns the stream it feeds, ending
/// with the loop's error if any.
pub fn start<L: ReadLoop + 'static>(
    reads: L,
    stall: Duration,
    shutdown: Shutdown,
) -> Delivery<L::Item> {
    let (feed, delivery) = channel(1);
    shutdown.clone().spawn(async move {
        let outcome = pump(&feed, &shutdown, stall, reads).await;
        feed.finish(outcome);
    });
    delivery
}

/// The consuming side: a stream of items, then the task's error if any.
pub struct Delivery<T> {
    items: mpsc::Receiver<T>,
    end: Option<oneshot::Receiver<Error>>,
}

impl<T> Stream for Delivery<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(item) = ready!(self.items.poll_recv(cx)) {
            return Poll::Ready(Some(Ok(item)));
        }
        // All senders are gone: the task has finished (or panicked, in
        // which case the outcome sender was dropped and the stream ends).
        let Some(end) = self.end.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = ready!(Pin::new(end).poll(cx));
        self.end = None;
        Poll::Ready(outcome.ok().map(Err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn items_then_terminal_error() {
        let (feed, mut delivery) = channel::<u32>(1);
        tokio::spawn(async move {
            feed.reserve().await.unwrap().send(7);
            feed.finish(Err(Error::ShuttingDown));
        });
        assert_eq!(delivery.next().await.unwrap().unwrap(), 7);
        assert!(matches!(
            delivery.next().await,
            Some(Err(Error::ShuttingDown))
        ));
        assert!(delivery.next().await.is_none());
    }

    /// Counts up and fires the shutdown signal on its second turn.
    struct Counter {
        n: u32,
        stop: Shutdown,
    }

    impl ReadLoop for Counter {
        type Item = u32;

        async fn turn(&mut self) -> Result<Turn<u32>> {
            self.n += 1;
            if self.n == 2 {
                self.stop.trigger();
            }
            Ok(Turn::Item(self.n))
        }
    }

    #[tokio::test]
    async fn pump_stops_at_shutdown_with_an_error() {
        let shutdown = Shutdown::new();
        let reads = Counter {
            n: 0,
            stop: shutdown.clone(),
        };
        let mut delivery = start(reads, Duration::from_secs(60), shutdown);
        assert_eq!(delivery.next().await.unwrap().unwrap(), 1);
        // The item read before shutdown was noticed is still delivered.
        assert_eq!(delivery.next().await.unwrap().unwrap(), 2);
        assert!(matches!(
            delivery.next().await,
            Some(Err(Error::ShuttingDown))
        ));
    }

    #[tokio::test]
    async fn reserve_fails_once_the_client_is_gone() {
        let (feed, delivery) = channel::<u32>(1);
        drop(delivery);
        assert!(feed.reserve().await.is_err());
        feed.closed().await;
    }
}
