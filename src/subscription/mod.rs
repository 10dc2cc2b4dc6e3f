//! The Subscribe reader: a remote client as a consumer-group member.
//!
//! A subscription reads with non-blocking XREADGROUP on the shared
//! connection; the [`crate::driver`] does everything else (room in the
//! client's buffer, waiting for the stream's doorbell bell or the group's
//! acks, heartbeats, outage riding, shutdown). So an idle subscription holds
//! no Redis connection and no blocked command, and nothing is left blocked
//! in Redis to take entries for a client that is gone.
//!
//! Nothing is acknowledged here. An entry read but not delivered (client
//! gone between read and send) stays in the group's pending entries list,
//! where `pending_first`, a reclaiming subscription or Reap recovers it.
//!
//! Each read, in order: re-create a lost group (with `create_group`); while
//! `pending_first` lasts, re-deliver the consumer's own PEL (already counted
//! in flight, so never held back); otherwise respect `max_in_flight` (the
//! consumer's PEL count in Redis, re-checked when an Ack arrives through
//! this gateway or after one `--block-ms`), run a reclaim round when one is
//! due, else read new entries. Reclaim rounds keep their own timer: every
//! `reclaim.interval_ms`, and earlier when a Nack comes due (known from the
//! Nack itself when it passed through this gateway, else from the previous
//! round, which reports the group's earliest scheduled Nack).
//!
//! In ordered consumption ([`SubscribeSpec::holder`]) each partition is
//! read by an [`ordered::OrderedPart`] instead, while the subscription owns
//! it ([`crate::ownership`]).

mod ordered;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use futures_util::future::try_join_all;

use crate::broker::{Broker, Holder, ReclaimSpec, now_ms, partition_stream};
use crate::delivery::{Delivery, LoopSettings};
use crate::doorbell::Doorbell;
use crate::driver::{self, Found, Live, LiveRead, Then, Wakers};
use crate::error::{Error, Result};
use crate::ids::{GroupStart, StreamId};
use crate::model::Push;
use crate::ownership::{Owners, Ownership};
use crate::parts;
use crate::rewinds::Rewinds;
use crate::shutdown::Shutdown;
use ordered::OrderedPart;

/// Automatic recovery settings.
#[derive(Clone, Copy, Debug)]
pub struct ReclaimOptions {
    /// Claim entries idle at least this long.
    pub min_idle_ms: u64,
    /// How often.
    pub interval: Duration,
}

/// A validated Subscribe request.
#[derive(Clone, Debug)]
pub struct SubscribeSpec {
    /// Client stream name.
    pub stream: String,
    /// Consumer group.
    pub group: String,
    /// Consumer name.
    pub consumer: String,
    /// XREADGROUP COUNT.
    pub batch_size: u32,
    /// Create the group (MKSTREAM) when missing.
    pub create_group: bool,
    /// Start of a group created here.
    pub group_start: GroupStart,
    /// Re-deliver this consumer's PEL before new entries.
    pub pending_first: bool,
    /// Automatic recovery, if any.
    pub reclaim: Option<ReclaimOptions>,
    /// Dead-letter after this many deliveries (0 = never).
    pub max_deliveries: u32,
    /// Client name of the dead-letter stream.
    pub dead_letter_stream: String,
    /// Cap on the consumer's pending entries (0 = none).
    pub max_in_flight: u32,
    /// Heartbeat interval; `None` = off.
    pub heartbeat: Option<Duration>,
    /// The stream's partitions, 0 for a plain stream: looked up when the
    /// call starts (see [`crate::partition::Layouts`]).
    pub partitions: u32,
    /// Ordered consumption (`ordered`): the subscription's identity in
    /// its partitions' leases, which its in-band acks and Nacks present
    /// too.
    pub holder: Option<Holder>,
    /// An ordered Consume session's in-band Nacks, which reads of a
    /// partition must not overlap ([`crate::rewinds`]); set by
    /// [`crate::consume::start`].
    pub rewinds: Option<Arc<Rewinds>>,
}

/// What happens in a group through this gateway that its subscriptions
/// here should hear about at once: acks (room under `max_in_flight`) and
/// Nacks (a reclaim round may come due earlier than planned).
#[derive(Default)]
pub struct GroupSignals {
    /// Stream, then group: nested so that every Ack can look its group up
    /// by reference, without building a key.
    groups: Mutex<HashMap<String, HashMap<String, Weak<Signals>>>>,
}

/// The signals of one group; alive while a subscription holds them.
struct Signals {
    /// Bumped by every Ack.
    acked: watch::Sender<u64>,
    /// The Nack inboxes of the group's reclaiming subscriptions here.
    nacks: Mutex<Vec<Weak<NackInbox>>>,
}

/// The Nacks announced to one reclaiming subscription since its latest
/// round began: the earliest due time (Unix ms), [`NO_NACK`] when none.
///
/// A Nack is announced only once its schedule is written to Redis, and a
/// round empties its subscription's inbox before its script reads that
/// schedule. So a Nack announced before a round began is in what the round
/// reads (and the round plans the next one by the earliest due time it
/// reports), and one announced after it is in the inbox. Which Nacks a
/// round saw is decided by that order alone, never by comparing clocks: a
/// Nack due in the millisecond a round began, or announced while a round
/// runs, may well not be in what that round read. Each subscription has
/// an inbox of its own, since each empties it at its own rounds.
type NackInbox = watch::Sender<i64>;

/// An empty [`NackInbox`].
const NO_NACK: i64 = i64::MAX;

impl Signals {
    fn lock_nacks(&self) -> std::sync::MutexGuard<'_, Vec<Weak<NackInbox>>> {
        self.nacks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new subscription's inbox, empty: its first round, due at once,
    /// reads every Nack announced before.
    fn nack_inbox(&self) -> Arc<NackInbox> {
        let inbox = Arc::new(watch::channel(NO_NACK).0);
        let mut inboxes = self.lock_nacks();
        inboxes.retain(|inbox| inbox.strong_count() > 0);
        inboxes.push(Arc::downgrade(&inbox));
        inbox
    }
}

impl GroupSignals {
    /// The signals of a group, shared by its subscriptions on this gateway.
    fn watch(&self, stream: &str, group: &str) -> Arc<Signals> {
        let mut streams = self.lock();
        for groups in streams.values_mut() {
            groups.retain(|_, w| w.strong_count() > 0);
        }
        streams.retain(|_, groups| !groups.is_empty());
        let groups = streams.entry(stream.to_owned()).or_default();
        if let Some(signals) = groups.get(group).and_then(Weak::upgrade) {
            return signals;
        }
        let signals = Arc::new(Signals {
            acked: watch::channel(0).0,
            nacks: Mutex::default(),
        });
        groups.insert(group.to_owned(), Arc::downgrade(&signals));
        signals
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Weak<Signals>>>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, stream: &str, group: &str) -> Option<Arc<Signals>> {
        self.lock()
            .get(stream)
            .and_then(|groups| groups.get(group))
            .and_then(Weak::upgrade)
    }

    /// Tells the group's subscriptions that entries were acknowledged.
    pub fn acked(&self, stream: &str, group: &str) {
        if let Some(signals) = self.get(stream, group) {
            signals.acked.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Tells the group's subscriptions that Nacked entries come due at
    /// `due_ms` (Unix ms). Called once the Nack is scheduled in Redis (see
    /// [`NackInbox`]).
    pub fn nacked(&self, stream: &str, group: &str, due_ms: i64) {
        if let Some(signals) = self.get(stream, group) {
            signals.lock_nacks().retain(|inbox| {
                let Some(inbox) = inbox.upgrade() else {
                    return false;
                };
                // An inbox keeps its earliest due time: a later one is
                // read from Redis by the round that one brings on.
                inbox.send_if_modified(|earliest| {
                    let earlier = due_ms < *earliest;
                    if earlier {
                        *earliest = due_ms;
                    }
                    earlier
                });
                true
            });
        }
    }
}

/// Joins the group (creating it if asked to) and starts the subscription's
/// driver; its pushes and final error arrive on the returned stream. Setup
/// happens before this returns, so an entry produced after the client got
/// its response headers is never "before" a group created here. On a
/// stream of `spec.partitions` partitions (0: a plain stream) each partition is
/// subscribed as a plain stream would be (its own group state, reclaim,
/// Nacks, `max_in_flight` and `pending_first`), and the driver reads them
/// in turn ([`crate::parts`]). In ordered consumption (`spec.holder`) a
/// coordinator ([`crate::ownership`]) takes the subscription's share of
/// the partitions, and each partition is read only while owned; an
/// unordered subscription of a group consumed in order is refused.
pub async fn start(
    broker: Broker,
    spec: SubscribeSpec,
    loops: LoopSettings,
    group: (&GroupSignals, &Owners),
    doorbell: &Doorbell,
    shutdown: Shutdown,
) -> Result<Delivery<Push>> {
    let (signals, owners) = group;
    if spec.partitions == 0 {
        if spec.holder.is_some() {
            return Err(Error::invalid(
                "ordered",
                format!(
                    "needs a partitioned stream; {:?} is not one (CreateStream with partitions)",
                    spec.stream
                ),
            ));
        }
        let live = prepare(broker, spec, signals, doorbell, None).await?;
        return Ok(driver::start(live, loops, shutdown));
    }
    if spec.holder.is_none()
        && broker
            .has_ordered_members(&spec.stream, &spec.group)
            .await?
    {
        return Err(Error::FailedPrecondition(format!(
            "group {:?} of {:?} is consumed in order (ordered subscriptions are open); an \
             unordered subscription would read every partition and break that order: subscribe \
             with `ordered`, or wait until the ordered consumers are gone (their membership \
             lapses within two --partition-lease-ms)",
            spec.group, spec.stream
        )));
    }
    let ownership = spec.holder.clone().map(|holder| {
        let ownership = owners.start(
            broker.clone(),
            &spec.stream,
            &spec.group,
            holder.clone(),
            spec.partitions,
            &shutdown,
        );
        (holder, ownership)
    });
    let lives = try_join_all((0..spec.partitions).map(|p| {
        let spec = SubscribeSpec {
            stream: partition_stream(&spec.stream, p),
            partitions: 0,
            ..spec.clone()
        };
        let ordered = ownership
            .clone()
            .map(|(holder, ownership)| (p, holder, ownership));
        prepare(broker.clone(), spec, signals, doorbell, ordered)
    }))
    .await
    .map_err(|e| e.about(&spec.stream))?;
    let changes = ownership.iter().map(|(_, o)| o.changes()).collect();
    let live = parts::combine(&spec.stream, lives, changes, &shutdown);
    Ok(driver::start(live, loops, shutdown))
}

/// Joins the group of one stream (creating it if asked to): the live
/// stream to drive. With `ordered` (the partition this is, the
/// subscription's lease identity and its ownership) the partition is read
/// by an [`OrderedPart`].
async fn prepare(
    broker: Broker,
    spec: SubscribeSpec,
    signals: &GroupSignals,
    doorbell: &Doorbell,
    ordered: Option<(u32, Holder, Arc<Ownership>)>,
) -> Result<Live<Subscription>> {
    let group = signals.watch(&spec.stream, &spec.group);
    let bell = doorbell.watch(&spec.stream).await?;
    if spec.create_group {
        broker
            .create_group(&spec.stream, &spec.group, spec.group_start, true)
            .await?;
    }
    let ordered = ordered.map(|(partition, holder, ownership)| {
        OrderedPart::new(
            partition,
            holder,
            ownership,
            spec.reclaim,
            group.nack_inbox(),
        )
    });
    // An ordered reader re-delivers on its own (see `OrderedPart`).
    let reclaim = (spec.reclaim)
        .filter(|_| ordered.is_none())
        .map(|options| Reclaim::new(options, &group));
    let replan = match &ordered {
        Some(part) => Some(part.nacks.subscribe()),
        None => reclaim.as_ref().map(Reclaim::replan),
    };
    let wakers = Wakers {
        entries: bell.rings,
        recheck: bell.recheck,
        room: (spec.max_in_flight > 0).then(|| group.acked.subscribe()),
        replan,
    };
    let live = Live {
        room: spec.batch_size,
        heartbeat: spec.heartbeat,
        wakers,
        reader: Subscription {
            from: if spec.pending_first {
                From::Pending(StreamId::MIN)
            } else {
                From::New
            },
            reclaim,
            ordered,
            broker,
            spec,
            waiting_for_room: false,
            recreated: 0,
            group_lost: false,
            _group: group,
        },
    };
    Ok(live)
}

/// Which entries the next read asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum From {
    /// This consumer's own pending entries after this ID (`pending_first`).
    Pending(StreamId),
    /// Entries never delivered to the group.
    New,
}

/// The reclaim timer of a subscription.
struct Reclaim {
    options: ReclaimOptions,
    /// When the next round is due.
    next: Instant,
    /// Where an unfinished idle scan continues.
    after: Option<StreamId>,
    /// Nacks announced through this gateway since the latest round began.
    nacks: Arc<NackInbox>,
}

impl Reclaim {
    /// A timer whose first round is due at once.
    fn new(options: ReclaimOptions, group: &Signals) -> Reclaim {
        Reclaim {
            options,
            next: Instant::now(),
            after: None,
            nacks: group.nack_inbox(),
        }
    }

    /// What wakes the driver when [`Reclaim::due`] may have moved.
    fn replan(&self) -> watch::Receiver<i64> {
        self.nacks.subscribe()
    }

    /// When the next round is due, seen at `now`: its planned time, or
    /// earlier for a Nack announced since the latest round began.
    fn due(&self, now: Instant) -> Instant {
        match *self.nacks.borrow() {
            NO_NACK => self.next,
            nack => earlier(self.next, nack, now),
        }
    }

    /// A round begins at `now`: the Nacks announced so far are in the
    /// schedule it reads (see [`NackInbox`]). It stays due until it
    /// completes, so one that fails (Redis away) is retried by the next
    /// read.
    fn begin_round(&mut self, now: Instant) {
        // Emptied silently: this is no news for the driver.
        self.nacks.send_if_modified(|earliest| {
            *earliest = NO_NACK;
            false
        });
        self.next = now;
    }

    /// The round that began last completed at `now`: it stopped its idle
    /// scan at `after` (`None`: complete) and found the group's earliest
    /// scheduled Nack due at `next_nack_due_ms`.
    fn end_round(&mut self, after: Option<StreamId>, next_nack_due_ms: Option<i64>, now: Instant) {
        self.after = after;
        // A scan that stopped mid-PEL continues at the next read; a
        // complete one waits for the interval, or for the next Nack due.
        self.next = if after.is_some() {
            now
        } else {
            let next = now + self.options.interval;
            next_nack_due_ms.map_or(next, |due| earlier(next, due, now))
        };
    }
}

/// Whichever comes first: `next`, or wall-clock time `due_ms` (Unix ms)
/// seen at `now`, which is `now` once it has passed (a due Nack is due
/// *at* `now`).
fn earlier(next: Instant, due_ms: i64, now: Instant) -> Instant {
    let wait = u64::try_from(due_ms.saturating_sub(now_ms())).unwrap_or(0);
    now.checked_add(Duration::from_millis(wait))
        .map_or(next, |due| next.min(due))
}

/// One consumer's reader.
struct Subscription {
    broker: Broker,
    spec: SubscribeSpec,
    from: From,
    reclaim: Option<Reclaim>,
    /// Ordered consumption: the partition's ordered reader, which then
    /// does all the reading.
    ordered: Option<OrderedPart>,
    /// The last read found no room under `max_in_flight`: no timed work
    /// until room frees up.
    waiting_for_room: bool,
    /// Group losses since the last delivery, and whether the group must be
    /// re-created (see [`Subscription::read`]).
    recreated: u32,
    group_lost: bool,
    /// Keeps the group's signals alive while the subscription runs.
    _group: Arc<Signals>,
}

impl LiveRead for Subscription {
    fn describe(&self) -> String {
        let spec = &self.spec;
        format!(
            "subscription {}/{}/{}",
            spec.stream, spec.group, spec.consumer
        )
    }

    /// The group may vanish under the subscription (Redis restarted without
    /// persistence, FLUSHALL, DeleteGroup). A subscription opened with
    /// `create_group` re-creates it (and the stream) at its
    /// `group_start_id` at the start of its next read, i.e. only once the
    /// driver has made sure its client is still there (a cancelled
    /// subscription must not resurrect a group an admin just deleted).
    /// Three losses without a delivery in between end it with NOT_FOUND
    /// rather than spinning.
    async fn read(&mut self, room: u32) -> Result<Found> {
        match self.try_read(room).await {
            Ok(found) => {
                if !found.entries.is_empty() {
                    self.recreated = 0;
                }
                Ok(found)
            }
            Err(err @ Error::GroupNotFound { .. }) => {
                if !self.spec.create_group || self.recreated >= 3 {
                    return Err(err);
                }
                self.recreated += 1;
                self.group_lost = true;
                Ok(Found::nothing(Then::ReadAgain))
            }
            Err(err) => Err(err),
        }
    }

    fn due(&self) -> Option<Instant> {
        if let Some(ordered) = &self.ordered {
            return ordered.due();
        }
        if self.waiting_for_room {
            return None;
        }
        let now = Instant::now();
        self.reclaim.as_ref().map(|reclaim| reclaim.due(now))
    }
}

impl Subscription {
    async fn try_read(&mut self, room: u32) -> Result<Found> {
        let spec = &self.spec;
        if self.group_lost {
            tracing::warn!(stream = %spec.stream, group = %spec.group, "consumer group vanished; re-creating it");
            self.broker
                .create_group(&spec.stream, &spec.group, spec.group_start, true)
                .await?;
            self.group_lost = false;
        }
        if let Some(ordered) = &mut self.ordered {
            return ordered.read(&self.broker, &self.spec, room).await;
        }
        if let From::Pending(after) = self.from {
            // The consumer's own PEL already counts against
            // `max_in_flight`: re-delivering it never raises the count, so
            // a consumer that crashed at its limit still gets it back.
            let page = self
                .broker
                .read_pending(&spec.stream, &spec.group, &spec.consumer, after, room)
                .await?;
            self.from = page.last.map_or(From::New, From::Pending);
            return Ok(Found::new(page.entries, Then::ReadAgain));
        }
        let room = self.room_under_cap(room).await?;
        self.waiting_for_room = room == 0;
        if room == 0 {
            return Ok(Found::nothing(Then::AwaitRoom));
        }
        let reclaimed = self.reclaim_if_due(room).await?;
        if !reclaimed.is_empty() {
            return Ok(Found::new(reclaimed, Then::ReadAgain));
        }
        let spec = &self.spec;
        let entries = self
            .broker
            .read_new(&spec.stream, &spec.group, &spec.consumer, room)
            .await?;
        Ok(Found::new(entries, Then::AwaitEntries))
    }

    /// `room`, less what `max_in_flight` forbids. 0 means wait for acks.
    async fn room_under_cap(&self, room: u32) -> Result<u32> {
        let spec = &self.spec;
        if spec.max_in_flight == 0 {
            return Ok(room);
        }
        let in_flight = self
            .broker
            .consumer_pending(&spec.stream, &spec.group, &spec.consumer)
            .await?;
        let free = u64::from(spec.max_in_flight).saturating_sub(in_flight);
        Ok(room.min(u32::try_from(free).unwrap_or(u32::MAX)))
    }

    /// A reclaim round, when one is due.
    async fn reclaim_if_due(&mut self, room: u32) -> Result<Vec<crate::model::Entry>> {
        let Some(reclaim) = self.reclaim.as_mut() else {
            return Ok(Vec::new());
        };
        let now = Instant::now();
        if now < reclaim.due(now) {
            return Ok(Vec::new());
        }
        reclaim.begin_round(now);
        let spec = &self.spec;
        let round = self
            .broker
            .reclaim(
                &spec.stream,
                &ReclaimSpec {
                    group: &spec.group,
                    consumer: &spec.consumer,
                    min_idle_ms: reclaim.options.min_idle_ms,
                    after: reclaim.after,
                    count: room,
                    max_deliveries: spec.max_deliveries,
                    dead_letter_stream: &spec.dead_letter_stream,
                },
            )
            .await?;
        if !round.dead_lettered.is_empty() || !round.deleted_ids.is_empty() {
            tracing::info!(
                stream = %spec.stream, group = %spec.group,
                dead_lettered = round.dead_lettered.len(), trimmed = round.deleted_ids.len(),
                dead_letter_stream = %spec.dead_letter_stream, "moved entries to the dead-letter stream"
            );
        }
        reclaim.end_round(round.after, round.next_nack_due_ms, Instant::now());
        Ok(round.entries)
    }
}

#[cfg(test)]
mod tests {
    //! The reclaim timer without Redis: what a round plans, and which
    //! Nacks announced through this gateway move the next round earlier.
    //! A Nack is announced after its schedule is written to Redis, and a
    //! round reads that schedule in its script, between `begin_round` and
    //! `end_round`; the tests replay those orders.

    use super::*;

    const INTERVAL: Duration = Duration::from_secs(600);

    fn reclaiming(signals: &GroupSignals) -> (Reclaim, Arc<Signals>) {
        let group = signals.watch("orders", "g");
        let options = ReclaimOptions {
            min_idle_ms: 600_000,
            interval: INTERVAL,
        };
        (Reclaim::new(options, &group), group)
    }

    /// A complete round at `now` that found no Nack scheduled: the next
    /// one is an interval away.
    fn quiet_round(reclaim: &mut Reclaim, now: Instant) {
        reclaim.begin_round(now);
        reclaim.end_round(None, None, now);
        assert_eq!(reclaim.due(now), now + INTERVAL);
    }

    /// The Nack computed its due time, the round began and read the
    /// schedule before the Nack's script wrote it, then the Nack was
    /// announced while the round ran: the round did not see it.
    #[test]
    fn a_nack_announced_while_a_round_runs_makes_the_next_round_due_at_once() {
        let signals = GroupSignals::default();
        let (mut reclaim, _group) = reclaiming(&signals);
        let mut replan = reclaim.replan();
        replan.borrow_and_update();
        let now = Instant::now();
        let due = now_ms();
        reclaim.begin_round(now);
        signals.nacked("orders", "g", due);
        reclaim.end_round(None, None, now);
        assert!(replan.has_changed().unwrap(), "the driver is woken");
        assert_eq!(reclaim.due(now), now);
    }

    /// A round completed; then a Nack is announced whose due time is no
    /// later than the millisecond that round began (a Nack with delay 0 in
    /// the same millisecond): its schedule was written after the round's
    /// script, so it is still to be taken.
    #[test]
    fn a_nack_due_when_the_last_round_began_is_not_taken_as_seen() {
        let signals = GroupSignals::default();
        let (mut reclaim, _group) = reclaiming(&signals);
        let now = Instant::now();
        let due = now_ms();
        quiet_round(&mut reclaim, now);
        signals.nacked("orders", "g", due);
        assert_eq!(reclaim.due(now), now);
    }

    /// Two Nacks announced before the subscription's next round: the one
    /// due now is not put off until the later one comes due.
    #[test]
    fn a_later_nack_does_not_displace_an_earlier_one_not_yet_taken() {
        let signals = GroupSignals::default();
        let (mut reclaim, _group) = reclaiming(&signals);
        let now = Instant::now();
        quiet_round(&mut reclaim, now);
        signals.nacked("orders", "g", now_ms());
        signals.nacked("orders", "g", now_ms() + 60_000);
        assert_eq!(reclaim.due(now), now);
    }

    /// Every reclaiming subscription of the group here hears a Nack, and
    /// a round of one does not take it as seen by another: their rounds
    /// read Redis at different times.
    #[test]
    fn each_subscription_keeps_its_own_account_of_the_nacks_it_has_read() {
        let signals = GroupSignals::default();
        let (mut a, _group) = reclaiming(&signals);
        let (mut b, _group) = reclaiming(&signals);
        let now = Instant::now();
        quiet_round(&mut a, now);
        quiet_round(&mut b, now);
        signals.nacked("orders", "g", now_ms());
        assert_eq!((a.due(now), b.due(now)), (now, now));
        quiet_round(&mut a, now);
        assert_eq!(b.due(now), now);
    }

    /// A Nack with a delay moves the next round to its due time; once a
    /// round has begun after the announcement, the schedule that round read
    /// plans instead (here: empty, say another gateway's round took the
    /// entry), and no round runs for the Nack announced here.
    #[test]
    fn a_delayed_nack_plans_the_next_round_until_a_round_read_the_schedule() {
        let signals = GroupSignals::default();
        let (mut reclaim, _group) = reclaiming(&signals);
        let now = Instant::now();
        quiet_round(&mut reclaim, now);
        signals.nacked("orders", "g", now_ms() + 60_000);
        let due = reclaim.due(now);
        assert!(
            due > now && due <= now + Duration::from_secs(60),
            "{:?}",
            due - now
        );
        quiet_round(&mut reclaim, now);
    }

    /// A round whose script never completed (Redis went away) is still
    /// due, with whatever it was due for.
    #[test]
    fn a_round_that_did_not_complete_stays_due() {
        let signals = GroupSignals::default();
        let (mut reclaim, _group) = reclaiming(&signals);
        let now = Instant::now();
        quiet_round(&mut reclaim, now);
        signals.nacked("orders", "g", now_ms());
        reclaim.begin_round(now);
        assert_eq!(reclaim.due(now), now);
    }

    /// A Nack due at the end of time (`delay_ms` up to i64::MAX is
    /// accepted) leaves the interval in charge.
    #[test]
    fn a_nack_due_at_the_end_of_time_leaves_the_interval() {
        let signals = GroupSignals::default();
        let (mut reclaim, _group) = reclaiming(&signals);
        let now = Instant::now();
        quiet_round(&mut reclaim, now);
        signals.nacked("orders", "g", i64::MAX);
        assert_eq!(reclaim.due(now), now + INTERVAL);
        reclaim.begin_round(now);
        reclaim.end_round(None, Some(i64::MAX), now);
        assert_eq!(reclaim.due(now), now + INTERVAL);
    }
}
