//! The gRPC services: one file per proto service.
//!
//! Every handler takes the same steps: validate the request into domain
//! values (so malformed input is INVALID_ARGUMENT before any Redis call),
//! call the broker, convert the result to proto. Status codes are decided
//! only in [`crate::error`].

mod convert;
mod event_stream;
mod stream_admin;

use std::time::Duration;

pub use event_stream::EventStreamService;
pub use stream_admin::StreamAdminService;

use crate::error::{Error, Result};

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
}

/// Rejects an empty name; `field` is the request field.
fn required<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        Err(Error::invalid(field, "must not be empty"))
    } else {
        Ok(value)
    }
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
