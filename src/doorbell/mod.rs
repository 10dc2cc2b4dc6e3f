//! Waking idle read loops without a Redis connection each.
//!
//! A blocked XREADGROUP per subscription would pin one Redis connection per
//! open stream, capping a gateway at Redis' `maxclients` and costing memory
//! on both sides. Instead every live stream reads without blocking and,
//! when it found nothing, waits for its stream's bell: a version counter
//! the doorbell moves on when the stream may have new entries. Two ways to
//! ring it ([`Wakeup`]):
//!
//! - [`tracking`] (the default): one connection per Redis node with
//!   `CLIENT TRACKING on`; Redis itself says which watched stream was
//!   written. Connections: one per node, whatever the number of streams
//!   or slots; Redis work while nothing is written: none.
//! - [`xread`]: blocking XREADs over up to 100 streams each (on a cluster,
//!   of one slot each). The fallback where the server refuses tracking.
//!
//! No wake-up is missed with either: a loop takes the bell's version
//! *before* its non-blocking read, and after an empty read waits for a
//! version newer than that one, so an entry that arrived in between has
//! already moved the version on. Each mechanism rings every bell whose
//! stream it may have lost sight of (a dropped connection, a failover).
//! The bell also says how long a loop may wait when nothing rings before
//! it reads anyway ([`Bell::recheck`]): a safety net, long with tracking.

#[cfg(test)]
mod tests;
mod tracking;
mod xread;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::config::Wakeup;
use crate::error::Result;
use crate::shutdown::Shutdown;
use tracking::Tracker;
use xread::{SHARD_LINGER, Xread};

/// The version counter behind a bell.
type Rings = watch::Receiver<u64>;

/// A stream's bell.
pub(crate) struct Bell {
    /// Moves on when the stream may have new entries.
    pub rings: Rings,
    /// Longest wait for a ring before reading anyway.
    pub recheck: Duration,
}

/// A recheck interval drawn from 3/4 to all of `recheck`, so that
/// streams watched at the same moment (a fleet of subscribers
/// reconnecting) do not all re-read at the same moment ever after.
fn spread(recheck: Duration) -> Duration {
    recheck.mul_f64(0.75 + 0.25 * fastrand::f64())
}

/// A connection counted in a gauge for as long as it is held.
struct Counted<T> {
    inner: T,
    gauge: Gauge,
}

impl<T> Counted<T> {
    fn new(inner: T, gauge: &Gauge) -> Counted<T> {
        gauge.inc();
        Counted {
            inner,
            gauge: gauge.clone(),
        }
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl<T> std::ops::Deref for Counted<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> std::ops::DerefMut for Counted<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// The gauges of the connections each wake-up holds.
#[derive(Clone, Default)]
pub(crate) struct WakeupGauges {
    /// Tracking connections.
    pub tracking: Gauge,
    /// Blocking XREAD connections.
    pub xread: Gauge,
}

/// How the doorbell waits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DoorbellOptions {
    /// The mechanism asked for.
    pub wakeup: Wakeup,
    /// Longest blocking XREAD, and the XREAD wake-up's recheck.
    pub block: Duration,
    /// The tracking wake-up's recheck.
    pub idle_recheck: Duration,
}

/// The doorbell of one gateway.
pub(crate) struct Doorbell {
    /// `None` with `--wakeup xread`.
    tracking: Option<Tracker>,
    xread: Xread,
    options: DoorbellOptions,
}

impl Doorbell {
    /// A doorbell that opens connections as streams are watched and
    /// closes them once nobody waits on them; everything stops at
    /// `shutdown`.
    pub(crate) fn start(
        broker: Broker,
        options: DoorbellOptions,
        gauges: WakeupGauges,
        shutdown: Shutdown,
    ) -> Arc<Doorbell> {
        Arc::new(Doorbell {
            tracking: (options.wakeup == Wakeup::Tracking)
                .then(|| Tracker::new(broker.clone(), gauges.tracking, shutdown.clone())),
            xread: Xread::new(broker, options.block, SHARD_LINGER, gauges.xread, shutdown),
            options,
        })
    }

    /// Rings `stream`'s bell on this gateway, for a change Redis reports
    /// to nobody (a group's cursor moved).
    pub(crate) fn ring(&self, stream: &str) {
        if let Some(tracking) = &self.tracking {
            tracking.ring(stream);
        }
        self.xread.ring(stream);
    }

    /// The bell of `stream`, which rings for every entry appended after
    /// this call returns.
    pub(crate) async fn watch(&self, stream: &str) -> Result<Bell> {
        if let Some(tracking) = &self.tracking
            && let Some(rings) = tracking.watch(stream).await?
        {
            return Ok(Bell {
                rings,
                recheck: spread(self.options.idle_recheck),
            });
        }
        Ok(Bell {
            rings: self.xread.watch(stream).await?,
            recheck: self.options.block,
        })
    }
}
