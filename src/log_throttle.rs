//! At most one log line per kind of trouble per interval, carrying how
//! often it happened since the previous line.
//!
//! A Redis at `maxmemory` refuses every write, and a gateway serving
//! thousands of Produce calls a second would otherwise log thousands of
//! identical lines a second: the log fills, the disk with it, and the one
//! line an operator needs scrolls away. Counting instead of logging keeps
//! the signal (what, and how often) at a bounded cost.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Decides, per kind, whether an occurrence gets a log line. The caller
/// passes the time, so that tests drive the clock instead of sleeping.
pub struct LogThrottle {
    every: Duration,
    /// One tally per kind seen so far. A handful of kinds exist (the Redis
    /// conditions and `internal`), so a list beats a map.
    kinds: Mutex<Vec<Tally>>,
}

struct Tally {
    kind: String,
    /// When the last line of this kind was logged.
    logged_at: Instant,
    /// Occurrences since that line.
    unlogged: u64,
}

impl LogThrottle {
    /// A throttle allowing one line per kind every `every`.
    pub const fn new(every: Duration) -> LogThrottle {
        LogThrottle {
            every,
            kinds: Mutex::new(Vec::new()),
        }
    }

    /// Counts one occurrence of `kind` at `now`. Returns `Some(count)` when
    /// it is to be logged: the first occurrence of a kind, or the first one
    /// at least `every` after the kind's last line; `count` is how many
    /// occurrences that line stands for (those counted silently since the
    /// last line, plus this one). Returns `None` when the occurrence is only
    /// counted.
    ///
    /// Occurrences counted after the last line are reported with the next
    /// occurrence that is logged: a condition that stops leaves its tail
    /// unreported, which is the price of needing no timer task.
    pub fn occurred(&self, kind: &str, now: Instant) -> Option<u64> {
        // A panic elsewhere while holding the lock leaves plain counters
        // behind, still fit to use.
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tally) = kinds.iter_mut().find(|t| t.kind == kind) else {
            kinds.push(Tally {
                kind: kind.to_owned(),
                logged_at: now,
                unlogged: 0,
            });
            return Some(1);
        };
        tally.unlogged += 1;
        if now.saturating_duration_since(tally.logged_at) < self.every {
            return None;
        }
        let count = std::mem::take(&mut tally.unlogged);
        tally.logged_at = now;
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_first_occurrence_is_logged_then_one_line_a_minute_with_the_count() {
        let throttle = LogThrottle::new(MINUTE);
        let t0 = Instant::now();
        assert_eq!(throttle.occurred("OOM", t0), Some(1));
        for s in 1..=59 {
            assert_eq!(
                throttle.occurred("OOM", t0 + Duration::from_secs(s)),
                None,
                "{s} s"
            );
        }
        // 59 counted silently, plus this one.
        assert_eq!(throttle.occurred("OOM", t0 + MINUTE), Some(60));
        assert_eq!(throttle.occurred("OOM", t0 + MINUTE), None);
        // The next minute counts from the last line, not from the first.
        assert_eq!(
            throttle.occurred("OOM", t0 + 2 * MINUTE - Duration::from_millis(1)),
            None
        );
        assert_eq!(throttle.occurred("OOM", t0 + 2 * MINUTE), Some(3));
    }

    #[test]
    fn each_kind_has_its_own_minute_and_count() {
        let throttle = LogThrottle::new(MINUTE);
        let t0 = Instant::now();
        assert_eq!(throttle.occurred("OOM", t0), Some(1));
        assert_eq!(throttle.occurred("READONLY", t0), Some(1));
        assert_eq!(throttle.occurred("OOM", t0), None);
        assert_eq!(
            throttle.occurred("internal", t0 + Duration::from_secs(30)),
            Some(1)
        );
        assert_eq!(throttle.occurred("OOM", t0 + MINUTE), Some(2));
        assert_eq!(throttle.occurred("READONLY", t0 + MINUTE), Some(1));
        assert_eq!(throttle.occurred("internal", t0 + MINUTE), None);
    }

    #[test]
    fn a_long_silence_logs_the_next_occurrence_at_once() {
        let throttle = LogThrottle::new(MINUTE);
        let t0 = Instant::now();
        assert_eq!(throttle.occurred("BUSY", t0), Some(1));
        assert_eq!(
            throttle.occurred("BUSY", t0 + Duration::from_secs(3600)),
            Some(1)
        );
    }
}
