//! The gRPC services: one file per proto service.
//!
//! Every handler takes the same steps: validate the request into domain
//! values (so malformed input is INVALID_ARGUMENT before any Redis call),
//! call the broker, convert the result to proto. Handlers return domain
//! errors; [`Context::track`] turns them into a `Status` (through the one
//! mapping in [`crate::error`]) and records the request's metrics.

mod convert;
mod event_stream;
mod stream_admin;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use event_stream::EventStreamService;
pub use stream_admin::StreamAdminService;
use tonic::{Response, Status};

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::subscription::AckSignals;

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
    /// Upper bound of one blocking read.
    pub block: Duration,
    /// Heartbeat interval when a request sets none; zero = off.
    pub default_heartbeat: Duration,
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
    /// Where requests are counted.
    pub metrics: Arc<Metrics>,
    /// Wakes subscriptions paused by `max_in_flight` when acks arrive.
    pub acks: Arc<AckSignals>,
}

impl Context {
    /// Runs a handler body, records its outcome and latency as `rpc`, and
    /// maps its error to a status.
    async fn track<T>(
        &self,
        rpc: &'static str,
        body: impl Future<Output = Result<T>>,
    ) -> Result<Response<T>, Status> {
        let start = Instant::now();
        let result = body.await.map(Response::new).map_err(Status::from);
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.observe_rpc(rpc, code, start.elapsed());
        result
    }

    /// Validates a stream name and remembers the stream for metrics.
    fn stream<'a>(&self, name: &'a str) -> Result<&'a str> {
        let name = required("stream", name)?;
        self.metrics.note_stream(name);
        Ok(name)
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

/// An optional request interval in milliseconds: unset = `default`, 0 = off.
fn interval(value: Option<u32>, default: Duration) -> Option<Duration> {
    let every = value.map_or(default, |ms| Duration::from_millis(u64::from(ms)));
    (!every.is_zero()).then_some(every)
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
