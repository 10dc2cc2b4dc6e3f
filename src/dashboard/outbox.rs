//! What the gateway holds for one open page: a queue between the page's
//! live view task and its HTTP response, bounded in events and in bytes.
//!
//! The view never waits for the page. A page that reads slowly (or not at
//! all) would otherwise make the gateway hold, on its behalf, everything
//! the stream gets meanwhile; instead [`Outbox::offer`] refuses what does
//! not fit and the view decides what that means (entries are skipped and
//! counted, a view of the whole stream is sent again later). A page that
//! takes nothing for [`LiveLimits::stall`] while events wait for it is
//! ended ([`Outbox::abort`]): the connection closes and everything queued
//! for it goes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::LiveLimits;

/// Why an event was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// No room: the page is behind.
    Full,
    /// The page went away.
    Gone,
}

/// The view's end.
pub(super) struct Outbox {
    shared: Arc<Shared>,
}

/// The response body's end: yields queued events; ends when the view
/// ends, or fails (closing the connection) when the view gave up on the
/// page.
pub(super) struct Sending {
    shared: Arc<Shared>,
}

struct Shared {
    limits: LiveLimits,
    state: Mutex<State>,
    /// Cancelled when the response body is dropped: the page went away.
    gone: CancellationToken,
}

#[derive(Default)]
struct State {
    events: VecDeque<String>,
    /// The bytes of `events`.
    bytes: usize,
    /// Since when the page has taken nothing although events waited.
    waiting_since: Option<Instant>,
    /// The view ended: send what is queued, then end.
    ended: bool,
    /// The view gave up on the page: send nothing more, fail the body.
    aborted: bool,
    /// The body, waiting for an event.
    waker: Option<Waker>,
}

/// A queue for one page.
pub(super) fn outbox(limits: LiveLimits) -> (Outbox, Sending) {
    let shared = Arc::new(Shared {
        limits,
        state: Mutex::default(),
        gone: CancellationToken::new(),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        Sending { shared },
    )
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Outbox {
    /// Queues `event` if it fits: fewer than `queued_events` events
    /// waiting and its bytes within `queued_bytes`. An empty queue takes
    /// any one event, so that a single event larger than the byte bound
    /// (a stream with very many groups) is late rather than never sent.
    pub fn offer(&self, event: String) -> Result<(), Refused> {
        if self.shared.gone.is_cancelled() {
            return Err(Refused::Gone);
        }
        let limits = self.shared.limits;
        let waker = {
            let mut state = self.shared.lock();
            let fits = state.events.is_empty()
                || (state.events.len() < limits.queued_events
                    && state.bytes + event.len() <= limits.queued_bytes);
            if !fits {
                return Err(Refused::Full);
            }
            state.bytes += event.len();
            state.events.push_back(event);
            state.waiting_since.get_or_insert_with(Instant::now);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The byte bound.
    pub fn max_bytes(&self) -> usize {
        self.shared.limits.queued_bytes
    }

    /// Whether the page has taken nothing for `stall` although events
    /// waited for it all that time.
    pub fn stalled(&self) -> bool {
        self.shared
            .lock()
            .waiting_since
            .is_some_and(|since| since.elapsed() >= self.shared.limits.stall)
    }

    /// Completes when the page goes away.
    pub fn gone(&self) -> WaitForCancellationFutureOwned {
        self.shared.gone.clone().cancelled_owned()
    }

    /// Gives up on the page: drops what is queued and closes the
    /// connection instead of ending the response, which would need the
    /// page to read what is queued first.
    pub fn abort(self) {
        {
            let mut state = self.shared.lock();
            state.aborted = true;
            state.events.clear();
            state.bytes = 0;
            state.waiting_since = None;
        }
        // Dropping `self` wakes the body.
    }

    /// Bytes queued now.
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.shared.lock().bytes
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.ended = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Stream for Sending {
    type Item = std::io::Result<String>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut state = self.shared.lock();
        if state.aborted {
            return Poll::Ready(Some(Err(std::io::Error::other(
                "the page took nothing for too long",
            ))));
        }
        if let Some(event) = state.events.pop_front() {
            state.bytes -= event.len();
            // The page is reading: what still waits, waits from now.
            state.waiting_since = (!state.events.is_empty()).then(Instant::now);
            return Poll::Ready(Some(Ok(event)));
        }
        if state.ended {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.shared.gone.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::*;

    fn limits() -> LiveLimits {
        LiveLimits {
            max_views: 1,
            queued_events: 4,
            queued_bytes: 100,
            stall: Duration::from_secs(60),
        }
    }

    fn bytes(n: usize) -> String {
        "x".repeat(n)
    }

    async fn take(sending: &mut Sending) -> String {
        sending.next().await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn at_most_so_many_events() {
        let (outbox, mut sending) = outbox(limits());
        for _ in 0..4 {
            outbox.offer(bytes(1)).unwrap();
        }
        assert_eq!(outbox.offer(bytes(1)), Err(Refused::Full));
        take(&mut sending).await;
        outbox.offer(bytes(1)).unwrap();
        assert_eq!(outbox.offer(bytes(1)), Err(Refused::Full));
    }

    #[tokio::test]
    async fn at_most_so_many_bytes() {
        let (outbox, mut sending) = outbox(limits());
        outbox.offer(bytes(60)).unwrap();
        outbox.offer(bytes(40)).unwrap();
        assert_eq!(outbox.offer(bytes(1)), Err(Refused::Full));
        assert_eq!(outbox.queued_bytes(), 100);
        assert_eq!(take(&mut sending).await.len(), 60);
        assert_eq!(outbox.offer(bytes(61)), Err(Refused::Full));
        outbox.offer(bytes(60)).unwrap();
        assert_eq!(outbox.queued_bytes(), 100);
    }

    #[tokio::test]
    async fn an_empty_queue_takes_one_event_over_the_byte_bound() {
        let (outbox, mut sending) = outbox(limits());
        outbox.offer(bytes(500)).unwrap();
        assert_eq!(outbox.offer(bytes(1)), Err(Refused::Full));
        assert_eq!(take(&mut sending).await.len(), 500);
        outbox.offer(bytes(1)).unwrap();
    }

    #[tokio::test]
    async fn a_page_gone_refuses_everything() {
        let (outbox, sending) = outbox(limits());
        drop(sending);
        assert_eq!(outbox.offer(bytes(1)), Err(Refused::Gone));
        outbox.gone().await;
    }

    #[tokio::test]
    async fn the_end_of_the_view_sends_what_is_queued_then_ends() {
        let (outbox, mut sending) = outbox(limits());
        outbox.offer("last".to_owned()).unwrap();
        drop(outbox);
        assert_eq!(take(&mut sending).await, "last");
        assert!(sending.next().await.is_none());
    }

    #[tokio::test]
    async fn an_abort_drops_what_is_queued_and_fails_the_body() {
        let (outbox, mut sending) = outbox(limits());
        outbox.offer(bytes(10)).unwrap();
        outbox.abort();
        assert!(sending.next().await.unwrap().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_only_when_nothing_was_taken_for_the_whole_stall() {
        let (outbox, mut sending) = outbox(limits());
        // Nothing waiting: an idle page is not stalled.
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(!outbox.stalled());
        outbox.offer(bytes(1)).unwrap();
        outbox.offer(bytes(1)).unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!outbox.stalled());
        // The page takes one: the other waits from now.
        take(&mut sending).await;
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!outbox.stalled());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(outbox.stalled());
        take(&mut sending).await;
        assert!(!outbox.stalled());
    }
}
