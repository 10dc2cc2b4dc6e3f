//! The byte budget (`--max-buffered-bytes`): request bytes the gateway
//! holds for calls not yet answered, over the whole gateway.
//!
//! Why a budget in bytes: while Redis is slow or stalled, answers stop and
//! whatever the gateway keeps reading piles up in its memory. Counting
//! calls or messages does not bound that (one call can send thousands of
//! 4 MiB messages); counting bytes does. When the budget is used up, a call
//! waits before it lets more of its body through, so the gateway stops
//! reading that client and HTTP/2 flow control pushes back on it, on its
//! side of the network, until answers release bytes.
//!
//! Why a fair share: one flooding call must not take the whole budget and
//! leave every other client waiting behind it. While several calls wait
//! for room, each may grow only up to an equal part of the budget, so the
//! room that answers free goes to the others first; a call that holds
//! nothing may always take its next message when the budget has room for
//! it, and any call may when nothing at all is held, so every call makes
//! progress. Calls that hold bytes without asking for more (a Consume
//! applying an ack) do not shrink anyone's share.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// What the budget reports to the metrics.
#[derive(Clone, Debug, Default)]
pub(crate) struct BudgetMetrics {
    /// Bytes held now.
    pub held: Gauge,
    /// Calls waiting for room now: clients the gateway is not reading.
    pub waiting: Gauge,
    /// Seconds calls spent waiting for room (summed over calls).
    pub waited: Counter<f64, std::sync::atomic::AtomicU64>,
}

/// The gateway's budget; see the module docs.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    limit: usize,
    totals: Mutex<Totals>,
    /// Woken whenever bytes are released.
    freed: Notify,
    metrics: BudgetMetrics,
}

#[derive(Debug, Default)]
struct Totals {
    /// Bytes held by every call.
    held: usize,
    /// Calls waiting for room: the fair share is the limit divided among
    /// them.
    contenders: usize,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: usize, metrics: BudgetMetrics) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            limit,
            totals: Mutex::default(),
            freed: Notify::new(),
            metrics,
        })
    }

    /// The account of one call.
    pub(crate) fn share(self: &Arc<Self>) -> Share {
        Share {
            budget: self.clone(),
            held: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
        }
    }

    fn totals(&self) -> MutexGuard<'_, Totals> {
        // The totals stay consistent across a panic (every update is a
        // few additions), so a poisoned lock is still usable.
        self.totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One call's bytes. Its fields change only under the budget's lock, so
/// the totals always agree with the calls; dropping it releases whatever
/// it still holds.
#[derive(Debug)]
pub(crate) struct Share {
    budget: Arc<ByteBudget>,
    held: AtomicUsize,
    waiting: AtomicBool,
}

impl Share {
    /// Takes `bytes` at once if they fit, else takes nothing.
    pub(crate) fn try_hold(&self, bytes: usize) -> bool {
        let mut totals = self.budget.totals();
        if !self.fits(&totals, bytes) {
            return false;
        }
        self.take(&mut totals, bytes);
        true
    }

    /// Waits until `bytes` fit, then takes them.
    pub(crate) async fn hold(&self, bytes: usize) {
        let mut waiting = None;
        loop {
            let freed = self.budget.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release between the check
            // and the wait still wakes this call.
            freed.as_mut().enable();
            {
                let mut totals = self.budget.totals();
                if self.fits(&totals, bytes) {
                    self.stop_waiting(&mut totals);
                    self.take(&mut totals, bytes);
                    break;
                }
                if waiting.is_none() {
                    self.waiting.store(true, Ordering::Relaxed);
                    totals.contenders += 1;
                    waiting = Some(Waiting::new(self));
                }
            }
            freed.await;
        }
    }

    /// Gives `bytes` back (at most what the call holds).
    pub(crate) fn release(&self, bytes: usize) {
        let mut totals = self.budget.totals();
        let bytes = bytes.min(self.held.load(Ordering::Relaxed));
        if bytes == 0 {
            return;
        }
        self.held.fetch_sub(bytes, Ordering::Relaxed);
        totals.held -= bytes;
        self.budget.metrics.held.set(gauge(totals.held));
        drop(totals);
        self.budget.freed.notify_waiters();
    }

    /// Gives back everything the call holds.
    pub(crate) fn release_all(&self) {
        self.release(usize::MAX);
    }

    /// Whether `bytes` more may be held by this call now.
    fn fits(&self, totals: &Totals, bytes: usize) -> bool {
        if totals.held == 0 {
            return true;
        }
        if totals.held + bytes > self.budget.limit {
            return false;
        }
        let held = self.held.load(Ordering::Relaxed);
        let others = totals.contenders - usize::from(self.contends());
        held == 0 || held + bytes <= self.budget.limit / (others + 1)
    }

    fn contends(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    fn take(&self, totals: &mut Totals, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        totals.held += bytes;
        self.budget.metrics.held.set(gauge(totals.held));
    }

    fn stop_waiting(&self, totals: &mut Totals) {
        if self.waiting.swap(false, Ordering::Relaxed) {
            totals.contenders -= 1;
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.release_all();
    }
}

/// A call waiting for room: counted while it waits, and its waiting time
/// added up when the wait ends, or is abandoned (the call ended while it
/// waited), which also clears its waiting mark.
struct Waiting<'a> {
    share: &'a Share,
    since: Instant,
}

impl Waiting<'_> {
    fn new(share: &Share) -> Waiting<'_> {
        share.budget.metrics.waiting.inc();
        Waiting {
            share,
            since: Instant::now(),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let share = self.share;
        let metrics = &share.budget.metrics;
        metrics.waiting.dec();
        metrics.waited.inc_by(self.since.elapsed().as_secs_f64());
        share.stop_waiting(&mut share.budget.totals());
    }
}

fn gauge(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn budget(limit: usize) -> Arc<ByteBudget> {
        ByteBudget::new(limit, BudgetMetrics::default())
    }

    #[test]
    fn a_lone_call_may_fill_the_budget_and_no_more() {
        let budget = budget(100);
        let call = budget.share();
        assert!(call.try_hold(60));
        assert!(call.try_hold(40));
        assert!(!call.try_hold(1));
        call.release(50);
        assert!(call.try_hold(50));
        assert_eq!(budget.metrics.held.get(), 100);
        drop(call);
        assert_eq!(budget.metrics.held.get(), 0);
        assert_eq!(budget.totals().contenders, 0);
    }

    #[test]
    fn an_empty_budget_admits_any_message() {
        let budget = budget(100);
        let call = budget.share();
        assert!(call.try_hold(150));
        assert!(!budget.share().try_hold(1));
    }

    #[test]
    fn a_waiting_call_caps_a_flooding_one_at_half() {
        let budget = budget(100);
        let flood = budget.share();
        assert!(flood.try_hold(90));
        let other = budget.share();
        let mut wait = Box::pin(other.hold(20));
        assert!(wait.as_mut().now_or_never().is_none(), "no room yet");
        // The flood releases some, yet may not grow past half while the
        // other call waits; the other call gets in.
        flood.release(30);
        assert!(!flood.try_hold(1));
        assert!(wait.as_mut().now_or_never().is_some());
        assert_eq!(budget.metrics.held.get(), 80);
        assert_eq!(budget.totals().contenders, 0);
    }

    #[test]
    fn an_abandoned_wait_leaves_no_contender_behind() {
        let budget = budget(100);
        let flood = budget.share();
        assert!(flood.try_hold(100));
        let other = budget.share();
        let mut wait = Box::pin(other.hold(10));
        assert!(wait.as_mut().now_or_never().is_none());
        assert_eq!(budget.totals().contenders, 1);
        assert_eq!(budget.metrics.waiting.get(), 1);
        drop(wait);
        assert_eq!(budget.totals().contenders, 0);
        assert_eq!(budget.metrics.waiting.get(), 0);
        flood.release(50);
        assert!(flood.try_hold(50), "alone again: the whole budget");
    }

    #[tokio::test]
    async fn a_release_wakes_the_waiter() {
        let budget = budget(10);
        let first = budget.share();
        assert!(first.try_hold(10));
        let second = Arc::new(budget.share());
        let waiter = tokio::spawn({
            let second = second.clone();
            async move { second.hold(5).await }
        });
        // The test runtime runs one task at a time: the waiter has run up
        // to its wait when this task is back.
        tokio::task::yield_now().await;
        assert_eq!(budget.metrics.waiting.get(), 1, "the second call waits");
        first.release_all();
        tokio::time::timeout(std::time::Duration::from_secs(15), waiter)
            .await
            .expect("the release wakes the waiter")
            .unwrap();
        assert_eq!(budget.metrics.held.get(), 5);
        assert_eq!(budget.metrics.waiting.get(), 0);
    }
}
