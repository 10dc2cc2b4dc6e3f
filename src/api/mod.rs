//! The gRPC services: one file per proto service.
//!
//! The tonic trait methods are the handlers, and every one takes the same
//! steps: split the request into caller and message ([`Caller::split`]),
//! validate the message into domain values (so malformed input is
//! INVALID_ARGUMENT before any Redis call), authorize the caller for each
//! stream it touches (`Context::authorize`), call the broker, convert the
//! result to proto. Domain errors become a `Status` with `?`, through the
//! one mapping in [`crate::error`]. Request counts and latencies are not a
//! handler's business: [`crate::metrics::rpc`] records them around every
//! route.

mod caller;
mod convert;
mod event_stream;
mod partitioned;
mod partitioned_admin;
mod partitioned_replay;
mod stream_admin;
mod streaming;

use std::sync::Arc;
use std::time::Duration;

pub use caller::Caller;
pub use event_stream::EventStreamService;
pub use stream_admin::StreamAdminService;
use tokio_util::task::TaskTracker;

use crate::auth::Permission;
use crate::broker::Broker;
use crate::delivery::LoopSettings;
use crate::doorbell::Doorbell;
use crate::error::{Error, Result};
use crate::group_ops::GroupOps;
use crate::limits::{EventLimits, SubscriptionSlots};
use crate::metrics::Metrics;
use crate::ownership::Owners;
use crate::shutdown::Shutdown;
use crate::subscription::GroupSignals;

/// Request defaults and limits shared by the services.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Default MAXLEN for Produce; 0 = no cap.
    pub default_max_len: u64,
    /// Default Subscribe batch size.
    pub default_batch_size: u32,
    /// Upper bound for every batch, page and count value in a request.
    pub max_batch_size: u32,
    /// Upper bound for events in one Produce.
    pub max_produce_events: usize,
    /// Block time, outage grace and stall timeout of read loops.
    pub loops: LoopSettings,
    /// Heartbeat interval when a request sets none; zero = off.
    pub default_heartbeat: Duration,
    /// Bounds on one produced event.
    pub event_limits: EventLimits,
}

/// What every handler needs; cheap to clone.
#[derive(Clone)]
pub struct Context {
    /// Redis.
    pub broker: Broker,
    /// Defaults and limits.
    pub settings: Arc<ApiSettings>,
    /// Ends long-lived streams.
    pub shutdown: Shutdown,
    /// Where entries are counted and served streams noted.
    pub metrics: Arc<Metrics>,
    /// Tells subscriptions about acks (room under `max_in_flight`) and
    /// Nacks (an earlier reclaim round) in their group.
    pub groups: Arc<GroupSignals>,
    /// Ack, Nack and Extend, for the unary rpcs and Consume alike.
    pub group_ops: GroupOps,
    /// Ordered consumption's partition ownership.
    pub owners: Arc<Owners>,
    /// Wakes idle subscriptions and tails when their stream gets entries.
    pub doorbell: Arc<Doorbell>,
    /// Which streams are partitioned, as looked up.
    pub layouts: Arc<crate::partition::Layouts>,
    /// Open Subscribe, Tail and Consume streams, against their limits.
    pub subscriptions: Arc<SubscriptionSlots>,
    /// Where long-lived tasks are spawned, so that shutdown can wait for
    /// them ([`crate::server::Gateway::wait`]).
    pub tasks: TaskTracker,
}

impl ApiSettings {
    /// A live stream's (Subscribe's, Tail's) `batch_size`: the request's,
    /// or the default when 0, checked against the maximum.
    fn batch_size(&self, requested: u32) -> Result<u32> {
        bounded(
            "batch_size",
            requested,
            self.default_batch_size,
            self.max_batch_size,
        )
    }

    /// A live stream's heartbeat interval from the request's
    /// `heartbeat_ms`: unset = the default, 0 = off.
    fn heartbeat(&self, requested: Option<u32>) -> Option<Duration> {
        let every = requested.map_or(self.default_heartbeat, |ms| {
            Duration::from_millis(u64::from(ms))
        });
        (!every.is_zero()).then_some(every)
    }
}

impl Context {
    /// Validates the request field `stream` ([`crate::namespace`]).
    fn stream<'a>(&self, name: &'a str) -> Result<&'a str> {
        crate::namespace::stream_name("stream", name)
    }

    /// Checks that `caller` holds `permission` on `stream`, and remembers
    /// the stream for metrics (only now, so that refused callers cannot
    /// fill the metrics poller's set of streams).
    fn authorize(&self, caller: &Caller, permission: Permission, stream: &str) -> Result<()> {
        let Some(principal) = &caller.principal else {
            return Err(Error::Unauthenticated(
                "the request was not authenticated".into(),
            ));
        };
        if !principal.allows(permission, stream) {
            return Err(Error::PermissionDenied {
                principal: principal.name().to_owned(),
                permission: permission.as_str(),
                stream: stream.to_owned(),
            });
        }
        self.metrics.note_stream(stream);
        Ok(())
    }
}

/// Rejects an empty name; `field` is the request field.
fn required<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        Err(Error::invalid(field, "must not be empty"))
    } else {
        Ok(value)
    }
}

/// A number that goes to Redis as an integer argument: Redis integers are
/// signed 64-bit, so anything above `i64::MAX` would make Redis fail the
/// command (and the client would see INTERNAL instead of its mistake).
fn redis_int(field: &str, value: u64) -> Result<u64> {
    if i64::try_from(value).is_err() {
        return Err(Error::invalid(
            field,
            format!("{value} is too large (at most {})", i64::MAX),
        ));
    }
    Ok(value)
}

/// `value`, or `default` when 0, checked against `max`.
fn bounded(field: &str, value: u32, default: u32, max: u32) -> Result<u32> {
    let value = if value == 0 { default } else { value };
    if value > max {
        return Err(Error::LimitExceeded(format!(
            "{field} {value} exceeds the limit of {max} (--max-batch-size)"
        )));
    }
    Ok(value)
}
