//! What a program serving the dashboard may add to it: consumers of its
//! own on one stream, which the page shows and its buttons steer (`Add
//! consumer`, `Remove consumer`, `Reclaim`, `Crash next 3`, `Reset demo`).
//!
//! `streamgate demo` is the one implementation. The dashboard knows it
//! only through this trait, so knowledge flows from the demo to the
//! dashboard and never back: the dashboard depends on the gateway's
//! in-process gRPC handle and on nothing that uses it.

use futures_util::future::BoxFuture;
use serde_json::Value;
use tonic::Status;

use super::{LocalGrpc, OnBehalf};
use crate::pb;

/// The consumers a demo runs on [`DemoControls::stream`]; see the module
/// docs.
pub trait DemoControls: Send + Sync {
    /// The stream the demo's consumers read.
    fn stream(&self) -> &str;

    /// `Reclaim`'s idle threshold when the page sets none.
    fn claim_min_idle_ms(&self) -> u64;

    /// The demo's fixed setup, for the page.
    fn info(&self) -> Value;

    /// Each running consumer's counters and newest deliveries.
    fn state(&self) -> Value;

    /// `Add consumer`: a new consumer in `group`, set up with the page's
    /// token (`who`).
    fn add_consumer<'a>(
        &'a self,
        local: &'a LocalGrpc,
        who: &'a OnBehalf,
        group: &'a str,
        consumer: &'a str,
    ) -> BoxFuture<'a, Result<(), Status>>;

    /// Stops a consumer, if one runs, once it has stopped reading.
    fn stop_consumer<'a>(&'a self, group: &'a str, consumer: &'a str) -> BoxFuture<'a, ()>;

    /// `Crash next N`: the consumer drops its next `n` deliveries.
    fn crash_next(&self, group: Option<&str>, consumer: &str, n: u32) -> Result<(), Status>;

    /// Gives a consumer the entries a `Reclaim` moved to it; false when it
    /// cannot take them now (they stay pending for it in Redis).
    fn hand_over(&self, group: &str, consumer: &str, entries: Vec<pb::Entry>) -> bool;

    /// `Reset demo`, every step an RPC with the page's token.
    fn reset<'a>(
        &'a self,
        local: &'a LocalGrpc,
        who: &'a OnBehalf,
    ) -> BoxFuture<'a, Result<(), Status>>;
}
