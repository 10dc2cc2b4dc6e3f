//! Background refresh of the per-stream and per-group gauges.
//!
//! Lag and pending live in Redis, not in the gateway, so they are read with
//! XINFO GROUPS and XPENDING on a timer, one stream after the other (a
//! bounded load: at most [`super::MAX_POLLED_STREAMS`] streams per round,
//! one XINFO STREAM + XINFO GROUPS + one XPENDING per group each).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::{GroupLabels, Metrics, StreamLabels};
use crate::broker::{Broker, PendingFilter};
use crate::error::Error;
use crate::ids::IdRange;
use crate::ids::StreamId;
use crate::shutdown::Shutdown;

/// Refreshes the gauges every `every` until shutdown.
pub async fn run(broker: Broker, metrics: Arc<Metrics>, every: Duration, shutdown: Shutdown) {
    // Groups exported per stream, to drop the series of deleted groups.
    let mut exported: HashMap<String, HashSet<String>> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(every) => {}
        }
        for stream in metrics.streams() {
            let before = exported.remove(&stream).unwrap_or_default();
            match refresh(&broker, &metrics, &stream).await {
                Ok(groups) => {
                    for gone in before.difference(&groups) {
                        remove_group(&metrics, &stream, gone);
                    }
                    exported.insert(stream, groups);
                }
                Err(Error::StreamNotFound { .. }) => {
                    for gone in &before {
                        remove_group(&metrics, &stream, gone);
                    }
                    metrics.stream_length.remove(&StreamLabels {
                        stream: stream.clone(),
                    });
                    metrics.forget_stream(&stream);
                }
                Err(e) => {
                    tracing::debug!(%stream, error = %e, "metrics poll failed");
                    exported.insert(stream, before);
                }
            }
        }
    }
}

/// Updates one stream's gauges; returns the names of its groups.
async fn refresh(
    broker: &Broker,
    metrics: &Metrics,
    stream: &str,
) -> Result<HashSet<String>, Error> {
    let info = broker.describe_stream(stream).await?;
    metrics
        .stream_length
        .get_or_create(&StreamLabels {
            stream: stream.to_owned(),
        })
        .set(gauge_value(info.length));
    let mut names = HashSet::new();
    for group in broker.list_groups(stream).await? {
        let labels = GroupLabels {
            stream: stream.to_owned(),
            group: group.name.clone(),
        };
        match group.lag {
            Some(lag) => {
                metrics
                    .group_lag
                    .get_or_create(&labels)
                    .set(gauge_value(lag));
            }
            None => {
                metrics.group_lag.remove(&labels);
            }
        }
        metrics
            .group_pending
            .get_or_create(&labels)
            .set(gauge_value(group.pending));
        metrics
            .group_consumers
            .get_or_create(&labels)
            .set(gauge_value(group.consumers));
        let oldest = if group.pending == 0 {
            0
        } else {
            let filter = PendingFilter {
                consumer: None,
                min_idle_ms: 0,
                range: IdRange {
                    low: StreamId::MIN,
                    high: StreamId::MAX,
                },
                count: 1,
            };
            broker
                .list_pending(stream, &group.name, &filter)
                .await?
                .first()
                .map_or(0, |p| p.idle_ms)
        };
        metrics
            .group_oldest_pending_idle
            .get_or_create(&labels)
            .set(oldest as f64 / 1000.0);
        names.insert(group.name);
    }
    Ok(names)
}

fn remove_group(metrics: &Metrics, stream: &str, group: &str) {
    let labels = GroupLabels {
        stream: stream.to_owned(),
        group: group.to_owned(),
    };
    metrics.group_lag.remove(&labels);
    metrics.group_pending.remove(&labels);
    metrics.group_consumers.remove(&labels);
    metrics.group_oldest_pending_idle.remove(&labels);
}

/// Gauges are signed; Redis counts never reach `i64::MAX`.
fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
