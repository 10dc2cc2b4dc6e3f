//! Conversions between proto messages and domain types, done once at the
//! API boundary.

use crate::broker::{ConsumerInfo, GroupInfo, PendingEntry, StreamInfo, StreamSummary};
use crate::error::Result;
use crate::ids::StreamId;
use crate::model::{Entry, Event};
use crate::pb;

impl From<Entry> for pb::Entry {
    fn from(e: Entry) -> pb::Entry {
        pb::Entry {
            id: match e.partition {
                Some(p) => crate::partition::qualified(p, &e.id.to_string()),
                None => e.id.to_string(),
            },
            r#type: e.event_type,
            ts_ms: e.ts_ms,
            fields: e.fields,
            delivery_count: e.delivery_count,
            binary_fields: e.binary_fields,
            redelivered: e.redelivered,
            partition: e.partition.unwrap_or(0),
            key: e.key,
        }
    }
}

/// Entries in order, as proto.
pub fn entries(entries: Vec<Entry>) -> Vec<pb::Entry> {
    entries.into_iter().map(pb::Entry::from).collect()
}

/// An optional ID on the wire: empty when there is none.
fn id_or_empty(id: Option<StreamId>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

/// Validates the `index`-th event of a Produce request.
pub fn event(index: usize, e: pb::Event) -> Result<Event> {
    let mut event =
        Event::new(index, e.r#type, e.fields, e.binary_fields)?.with_key(index, e.key)?;
    event.idempotency_key = e.idempotency_key;
    Ok(event)
}

impl From<StreamInfo> for pb::DescribeStreamResponse {
    fn from(s: StreamInfo) -> Self {
        pb::DescribeStreamResponse {
            length: s.length,
            first_entry_id: id_or_empty(s.first_entry_id),
            last_entry_id: id_or_empty(s.last_entry_id),
            last_generated_id: s.last_generated_id.to_string(),
            group_count: s.group_count,
            partitions: 0,
        }
    }
}

impl From<GroupInfo> for pb::GroupInfo {
    fn from(g: GroupInfo) -> Self {
        pb::GroupInfo {
            name: g.name,
            consumers: g.consumers,
            pending: g.pending,
            last_delivered_id: g.last_delivered_id.to_string(),
            lag: g.lag,
            entries_read: g.entries_read,
        }
    }
}

impl From<ConsumerInfo> for pb::ConsumerInfo {
    fn from(c: ConsumerInfo) -> Self {
        pb::ConsumerInfo {
            name: c.name,
            pending: c.pending,
            idle_ms: c.idle_ms,
            inactive_ms: c.inactive_ms,
        }
    }
}

impl From<PendingEntry> for pb::PendingEntry {
    fn from(p: PendingEntry) -> Self {
        pb::PendingEntry {
            id: p.id.to_string(),
            consumer: p.consumer,
            idle_ms: p.idle_ms,
            delivery_count: p.delivery_count,
        }
    }
}

impl From<StreamSummary> for pb::StreamSummary {
    fn from(s: StreamSummary) -> Self {
        pb::StreamSummary {
            name: s.name,
            length: s.length,
            last_entry_id: id_or_empty(s.last_entry_id),
            group_count: s.group_count,
        }
    }
}
