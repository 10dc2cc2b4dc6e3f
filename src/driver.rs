//! The live-stream driver: one loop for every stream that stays open
//! waiting for new entries (Subscribe, Tail, and Consume's deliveries).
//!
//! A live stream repeats three steps: take room in the client's buffer,
//! read from Redis into that room, and when there was nothing, wait. The
//! waiting is where the hard parts are, and they are all here, once:
//!
//! - **Back-pressure.** The driver reserves room for one push *before* it
//!   reads, so the gateway never holds more than one batch a client has not
//!   taken; a client that takes nothing for `--client-stall-timeout-ms` is
//!   cut off (what was read stays pending in Redis).
//! - **One `select!`** over: shutdown (ends the stream with UNAVAILABLE at
//!   once), the client going away (ends the loop at once), the wake-ups the
//!   reader asked for (its stream's doorbell bell, its group's acks, a
//!   re-plan of its timers) and the next timer.
//! - **Timers at their own resolution.** The next timer is the earliest of
//!   the heartbeat, the reader's own timed work ([`LiveRead::due`], e.g. a
//!   reclaim round or a Nack coming due) and the longest wait: for entries
//!   the bell's recheck (`--idle-recheck-ms` with the tracking wake-up), for
//!   room `--block-ms` (acks through another gateway ring nothing here).
//!   So `heartbeat_ms: 200` beats every 200 ms whatever the waits are.
//! - **Outage riding.** A read that fails because Redis is unreachable is
//!   retried with backoff ([`Outage`]) for `--redis-outage-grace-ms`, with
//!   heartbeats going on meanwhile, then the stream ends UNAVAILABLE.
//!
//! A reader ([`LiveRead`]) only implements "read into this much room" and
//! says what to wait for when it found nothing. Nothing a reader starts in
//! Redis is ever cancelled half-way: the driver only waits between reads.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use crate::delivery::{self, Closed, Delivery, Feed, LoopSettings};
use crate::error::{Error, Result};
use crate::model::{Entry, Push};
use crate::outage::Outage;
use crate::shutdown::Shutdown;

/// What to wait for after a read that found nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Read again at once (a scan has more pages, a state just changed).
    ReadAgain,
    /// New entries in the stream: wait for its bell.
    AwaitEntries,
    /// Room under the reader's own cap: wait for acks.
    AwaitRoom,
}

/// The outcome of one read.
#[derive(Debug)]
pub struct Found {
    /// Entries to push, in order; may be empty.
    pub entries: Vec<Entry>,
    /// What to wait for when `entries` is empty.
    pub then: Then,
}

impl Found {
    /// `entries`, and when there are none, wait as `then` says.
    pub fn new(entries: Vec<Entry>, then: Then) -> Found {
        Found { entries, then }
    }

    /// Nothing this time; wait as `then` says.
    pub fn nothing(then: Then) -> Found {
        Found::new(Vec::new(), then)
    }
}

/// The reading half of a live stream.
pub trait LiveRead: Send {
    /// A name for log lines, e.g. `subscription orders/notifications/a`.
    fn describe(&self) -> String;

    /// Reads at most `room` entries without blocking in Redis. Called only
    /// once the room is reserved in the client's buffer.
    fn read(&mut self, room: u32) -> impl Future<Output = Result<Found>> + Send;

    /// When the reader next has timed work to do (a reclaim round); the
    /// driver reads again at that instant even if nothing rang.
    fn due(&self) -> Option<Instant> {
        None
    }
}

/// What can end a wait early, besides timers.
pub struct Wakers {
    /// Rings when the stream gets new entries (the doorbell's bell).
    pub entries: watch::Receiver<u64>,
    /// Longest wait for `entries` before reading anyway (the bell's
    /// safety net; see [`crate::doorbell::Bell::recheck`]).
    pub recheck: Duration,
    /// Changes when room may have become free (an ack in the group).
    pub room: Option<watch::Receiver<u64>>,
    /// Changes when the reader's timers may have moved ([`LiveRead::due`]).
    pub replan: Option<watch::Receiver<i64>>,
}

impl Wakers {
    /// Marks every current value as seen: taken *before* a read, so that a
    /// change landing between the read and the wait still ends the wait.
    fn mark_seen(&mut self) {
        self.entries.borrow_and_update();
        if let Some(room) = &mut self.room {
            room.borrow_and_update();
        }
        if let Some(replan) = &mut self.replan {
            replan.borrow_and_update();
        }
    }
}

/// A live stream to drive.
pub struct Live<R> {
    /// Reads entries.
    pub reader: R,
    /// Entries per push at most (the request's batch size).
    pub room: u32,
    /// Heartbeat interval; `None` = off.
    pub heartbeat: Option<Duration>,
    /// What ends a wait early.
    pub wakers: Wakers,
}

/// Starts `live` on its own task and returns the stream it feeds, ending
/// with the driver's error if any.
pub fn start<R: LiveRead + 'static>(
    live: Live<R>,
    loops: LoopSettings,
    shutdown: Shutdown,
) -> Delivery<Push> {
    let (feed, delivery) = delivery::channel(1);
    shutdown.clone().spawn(async move {
        let outcome = drive(&feed, live, loops, &shutdown).await;
        feed.finish(outcome);
    });
    delivery
}

/// Why the driver waits.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// After a read that found nothing.
    For(Then),
    /// Before retrying during an outage.
    Backoff(Duration),
}

/// Runs `live` until its client leaves (`Ok`), shutdown
/// ([`Error::ShuttingDown`]), a stall, an outage past its grace or another
/// error.
pub async fn drive<R: LiveRead>(
    feed: &Feed<Push>,
    mut live: Live<R>,
    loops: LoopSettings,
    shutdown: &Shutdown,
) -> Result<()> {
    let mut beat = Heartbeat::new(live.heartbeat);
    let mut outage: Option<Outage> = None;
    loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.triggered() => return Err(Error::ShuttingDown),
            permit = timeout(loops.stall_timeout, feed.reserve()) => match permit {
                Ok(Ok(permit)) => permit,
                Ok(Err(Closed)) => return Ok(()),
                Err(_) => return Err(Error::ClientStalled(loops.stall_timeout)),
            },
        };
        let push = loop {
            live.wakers.mark_seen();
            let wait = match live.reader.read(live.room).await {
                Ok(found) => {
                    if let Some(outage) = outage.take() {
                        outage.end(&live.reader.describe());
                    }
                    if !found.entries.is_empty() {
                        break Push::Entries(found.entries);
                    }
                    Wait::For(found.then)
                }
                Err(err @ (Error::Unavailable(_) | Error::Timeout(_))) => {
                    let outage =
                        outage.get_or_insert_with(|| Outage::begin(&live.reader.describe(), &err));
                    match outage.next_delay(loops.outage_grace) {
                        Some(delay) => Wait::Backoff(delay),
                        None => return Err(err),
                    }
                }
                Err(err) => return Err(err),
            };
            if beat.is_due() {
                break Push::Heartbeat;
            }
            let now = Instant::now();
            let mut deadline = match wait {
                Wait::For(Then::ReadAgain) => now,
                Wait::For(Then::AwaitEntries) => now + live.wakers.recheck,
                Wait::For(Then::AwaitRoom) => now + loops.block,
                Wait::Backoff(delay) => now + delay,
            };
            if !matches!(wait, Wait::Backoff(_))
                && let Some(due) = live.reader.due()
            {
                deadline = deadline.min(due);
            }
            if let Some(due) = beat.due() {
                deadline = deadline.min(due);
            }
            let wakers = &mut live.wakers;
            tokio::select! {
                biased;
                () = shutdown.triggered() => return Err(Error::ShuttingDown),
                () = feed.closed() => return Ok(()),
                () = changed(Some(&mut wakers.entries)),
                    if matches!(wait, Wait::For(Then::AwaitEntries)) => {}
                () = changed(wakers.room.as_mut()),
                    if matches!(wait, Wait::For(Then::AwaitRoom)) => {}
                () = changed(wakers.replan.as_mut()), if matches!(wait, Wait::For(_)) => {}
                () = sleep_until(deadline) => {}
            }
            if beat.is_due() {
                break Push::Heartbeat;
            }
        };
        beat.restart();
        permit.send(push);
        if shutdown.is_triggered() {
            return Err(Error::ShuttingDown);
        }
    }
}

/// Completes when `rx` sees a new value; never when there is no receiver
/// or its sender is gone (nothing will ring it any more).
async fn changed<T>(rx: Option<&mut watch::Receiver<T>>) {
    if let Some(rx) = rx
        && rx.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// When the next heartbeat is due: one interval after the last push.
#[derive(Debug)]
struct Heartbeat {
    every: Option<Duration>,
    last: Instant,
}

impl Heartbeat {
    fn new(every: Option<Duration>) -> Heartbeat {
        Heartbeat {
            every,
            last: Instant::now(),
        }
    }

    fn due(&self) -> Option<Instant> {
        self.every.map(|every| self.last + every)
    }

    fn is_due(&self) -> bool {
        self.due().is_some_and(|due| Instant::now() >= due)
    }

    /// Something was pushed: the silence starts over.
    fn restart(&mut self) {
        self.last = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    //! The driver without Redis: readers scripted in memory, time paused
    //! (tokio's clock only moves when every task waits), so cadences are
    //! exact and the tests take no wall-clock time.

    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use tokio_stream::StreamExt;

    use super::*;
    use crate::ids::StreamId;

    const LOOPS: LoopSettings = LoopSettings {
        block: Duration::from_secs(1),
        outage_grace: Duration::from_secs(3),
        stall_timeout: Duration::from_secs(600),
    };

    /// Answers reads from a script; an empty script means "nothing new".
    /// Records the (virtual) time of every read.
    #[derive(Default)]
    struct Script {
        answers: VecDeque<Result<Found>>,
        reads: Arc<Mutex<Vec<Instant>>>,
        due: Option<Instant>,
        /// Redis is unreachable until then.
        down_until: Option<Instant>,
    }

    impl LiveRead for Script {
        fn describe(&self) -> String {
            "script".to_owned()
        }

        async fn read(&mut self, _room: u32) -> Result<Found> {
            self.reads.lock().unwrap().push(Instant::now());
            if self.down_until.is_some_and(|t| Instant::now() < t) {
                return Err(Error::Unavailable("connection refused".to_owned()));
            }
            self.answers
                .pop_front()
                .unwrap_or_else(|| Ok(Found::nothing(Then::AwaitEntries)))
        }

        fn due(&self) -> Option<Instant> {
            self.due.filter(|due| *due > Instant::now())
        }
    }

    fn entry(ms: u64) -> Entry {
        Entry::from_pairs(StreamId { ms, seq: 0 }, Vec::new())
    }

    fn live(reader: Script, heartbeat: Option<Duration>) -> (Live<Script>, watch::Sender<u64>) {
        let (bell, entries) = watch::channel(0);
        let live = Live {
            reader,
            room: 10,
            heartbeat,
            wakers: Wakers {
                entries,
                recheck: LOOPS.block,
                room: None,
                replan: None,
            },
        };
        (live, bell)
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_their_own_cadence_whatever_the_block_time() {
        let (live, _bell) = live(Script::default(), Some(Duration::from_millis(200)));
        let start = Instant::now();
        let mut pushes = start_driver(live, Shutdown::new());
        for n in 1..=5 {
            let push = pushes.next().await.unwrap().unwrap();
            assert_eq!(push, Push::Heartbeat);
            assert_eq!(start.elapsed(), Duration::from_millis(200 * n));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_bell_ends_the_wait_and_entries_are_pushed() {
        let reads = Arc::new(Mutex::new(Vec::new()));
        let script = Script {
            answers: VecDeque::from([
                Ok(Found::nothing(Then::AwaitEntries)),
                Ok(Found::new(vec![entry(7)], Then::AwaitEntries)),
            ]),
            reads: reads.clone(),
            ..Script::default()
        };
        let (live, bell) = live(script, None);
        let start = Instant::now();
        let mut pushes = start_driver(live, Shutdown::new());
        tokio::time::sleep(Duration::from_millis(300)).await;
        bell.send_modify(|v| *v += 1);
        let push = pushes.next().await.unwrap().unwrap();
        assert_eq!(push, Push::Entries(vec![entry(7)]));
        let reads = reads.lock().unwrap().clone();
        assert_eq!(reads[1] - start, Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn the_readers_own_timer_is_honoured_before_the_block_time() {
        let reads = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let script = Script {
            reads: reads.clone(),
            due: Some(start + Duration::from_millis(100)),
            ..Script::default()
        };
        let (live, _bell) = live(script, Some(Duration::from_millis(250)));
        let mut pushes = start_driver(live, Shutdown::new());
        assert_eq!(pushes.next().await.unwrap().unwrap(), Push::Heartbeat);
        let reads = reads.lock().unwrap().clone();
        let offsets: Vec<_> = reads.iter().map(|t| *t - start).collect();
        assert_eq!(offsets[..2], [Duration::ZERO, Duration::from_millis(100)]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_ridden_out_with_heartbeats_then_resumes() {
        let start = Instant::now();
        let script = Script {
            answers: VecDeque::from([Ok(Found::new(vec![entry(1)], Then::AwaitEntries))]),
            down_until: Some(start + Duration::from_secs(1)),
            ..Script::default()
        };
        let (live, _bell) = live(script, Some(Duration::from_millis(100)));
        let mut pushes = start_driver(live, Shutdown::new());
        let mut beats = 0;
        loop {
            match pushes.next().await.unwrap().unwrap() {
                Push::Heartbeat => beats += 1,
                Push::Entries(entries) => {
                    assert_eq!(entries, vec![entry(1)]);
                    break;
                }
            }
        }
        // Backoff waits are cut short by the heartbeat timer: the client
        // heard from the stream every 100 ms while Redis was away.
        assert!(beats >= 9, "{beats} heartbeats in a 1 s outage");
        assert!(start.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_past_its_grace_ends_the_stream_unavailable() {
        let script = Script {
            down_until: Some(Instant::now() + Duration::from_secs(3600)),
            ..Script::default()
        };
        let (live, _bell) = live(script, None);
        let start = Instant::now();
        let mut pushes = start_driver(live, Shutdown::new());
        match pushes.next().await {
            Some(Err(Error::Unavailable(_))) => {}
            other => panic!("expected UNAVAILABLE, got {other:?}"),
        }
        assert!(start.elapsed() >= LOOPS.outage_grace);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_an_idle_stream_at_once() {
        let (live, _bell) = live(Script::default(), None);
        let shutdown = Shutdown::new();
        let mut pushes = start_driver(live, shutdown.clone());
        tokio::time::sleep(Duration::from_millis(10)).await;
        let start = Instant::now();
        shutdown.trigger();
        assert!(matches!(
            pushes.next().await,
            Some(Err(Error::ShuttingDown))
        ));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_leaves_ends_the_driver_at_once() {
        let reads = Arc::new(Mutex::new(Vec::new()));
        let script = Script {
            reads: reads.clone(),
            ..Script::default()
        };
        let (live, _bell) = live(script, None);
        let (feed, delivery) = delivery::channel(1);
        let driver = tokio::spawn(async move { drive(&feed, live, LOOPS, &Shutdown::new()).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let start = Instant::now();
        drop(delivery);
        assert!(driver.await.unwrap().is_ok());
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(
            reads.lock().unwrap().len(),
            1,
            "no read after the client left"
        );
    }

    fn start_driver(live: Live<Script>, shutdown: Shutdown) -> Delivery<Push> {
        start(live, LOOPS, shutdown)
    }
}
