//! One demo consumer: a client of the gateway's public gRPC API, like any
//! service would be, that subscribes, "processes" (records) what it gets
//! and acks it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::pb::{self, event_stream_client::EventStreamClient, subscribe_response};

/// Deliveries a consumer remembers for the page.
const RECENT: usize = 12;
/// Pause before a failed subscription is opened again.
const RETRY: Duration = Duration::from_millis(500);

/// What the page shows of a demo consumer; shared with its task.
#[derive(Debug, Default)]
pub struct Stats {
    /// Entries processed and acknowledged.
    pub processed: u64,
    /// Deliveries dropped unacknowledged by `Crash next 3`.
    pub dropped: u64,
    /// Deliveries still to drop.
    pub crash_left: u32,
    /// The newest deliveries, newest first.
    pub recent: VecDeque<Value>,
    /// Why the last subscription or ack failed, until the next success.
    pub error: Option<String>,
}

impl Stats {
    fn note(&mut self, entry: &pb::Entry, outcome: &str) {
        self.recent.push_front(json!({
            "id": entry.id,
            "type": entry.r#type,
            "delivery_count": entry.delivery_count,
            "outcome": outcome,
        }));
        self.recent.truncate(RECENT);
    }
}

/// Locks stats; a panicked holder leaves plain counters, still usable.
pub fn lock(stats: &Mutex<Stats>) -> std::sync::MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a worker works.
pub struct Spec {
    /// Gateway connection.
    pub channel: Channel,
    /// Stream name.
    pub stream: String,
    /// Consumer group.
    pub group: String,
    /// Consumer name.
    pub consumer: String,
}

/// Runs until `stop`: subscribes (creating the group if needed), handles
/// every delivery and every batch handed over by `Reclaim`.
pub async fn run(
    spec: Spec,
    stats: Arc<Mutex<Stats>>,
    mut handed: Receiver<Vec<pb::Entry>>,
    stop: CancellationToken,
) {
    let mut client = EventStreamClient::new(spec.channel.clone());
    while !stop.is_cancelled() {
        let opened = client
            .subscribe(pb::SubscribeRequest {
                stream: spec.stream.clone(),
                group: spec.group.clone(),
                consumer: spec.consumer.clone(),
                create_group: true,
                group_start_id: "$".to_owned(),
                ..pb::SubscribeRequest::default()
            })
            .await;
        let mut deliveries = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => {
                lock(&stats).error = Some(status.message().to_owned());
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        lock(&stats).error = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Some(entries) = handed.recv() => {
                    process(&mut client, &spec, &stats, entries, false).await;
                }
                message = deliveries.message() => match message {
                    Ok(Some(pb::SubscribeResponse {
                        kind: Some(subscribe_response::Kind::Batch(batch)),
                    })) => process(&mut client, &spec, &stats, batch.entries, true).await,
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(status) => {
                        lock(&stats).error = Some(status.message().to_owned());
                        break;
                    }
                },
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Processes entries: while a crash is armed, fresh deliveries are
/// dropped (they stay pending, as with a worker that died mid-batch);
/// everything else is recorded and acknowledged in one Ack.
async fn process(
    client: &mut EventStreamClient<Channel>,
    spec: &Spec,
    stats: &Mutex<Stats>,
    entries: Vec<pb::Entry>,
    may_crash: bool,
) {
    let mut ids = Vec::new();
    {
        let mut stats = lock(stats);
        for entry in &entries {
            if may_crash && stats.crash_left > 0 {
                stats.crash_left -= 1;
                stats.dropped += 1;
                stats.note(entry, "dropped");
            } else {
                stats.note(entry, "processed");
                ids.push(entry.id.clone());
            }
        }
    }
    if ids.is_empty() {
        return;
    }
    let acked = client
        .ack(pb::AckRequest {
            stream: spec.stream.clone(),
            group: spec.group.clone(),
            ids,
        })
        .await;
    let mut stats = lock(stats);
    match acked {
        Ok(response) => {
            stats.processed += response.into_inner().acked;
            stats.error = None;
        }
        Err(status) => stats.error = Some(status.message().to_owned()),
    }
}
