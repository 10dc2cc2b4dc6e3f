//! What the page shows of a stream, read through the gateway's own RPCs
//! and turned into JSON.

use serde_json::{Value, json};
use tonic::{Code, Status};

use super::DemoControls;
use crate::local::{LocalGrpc, OnBehalf};
use crate::pb;

/// Pending entries shown per group.
const PENDING_SHOWN: u32 = 50;

/// An entry as the page shows it.
pub(super) fn entry_json(e: &pb::Entry) -> Value {
    let binary: Vec<&String> = e.binary_fields.keys().collect();
    json!({
        "id": e.id,
        "type": e.r#type,
        "ts_ms": e.ts_ms,
        "fields": e.fields,
        "binary_fields": binary,
        "delivery_count": e.delivery_count,
    })
}

/// Most bytes of one entry the page is sent: the page shows entries as
/// one line each, and a large one would cost the gateway (and the
/// browser) its whole size per open page.
pub(super) const ENTRY_SHOWN_BYTES: usize = 16 * 1024;

/// Bytes of an entry's type shown when its fields are left out.
const TYPE_SHOWN_BYTES: usize = 256;

/// An entry as the page shows it, or, when its JSON would be larger than
/// [`ENTRY_SHOWN_BYTES`], its ID, type, time and delivery count with
/// `omitted_bytes` (about the size of what was left out) instead of its
/// fields. Replay and Reap over gRPC return it whole.
pub(super) fn entry_shown(e: &pb::Entry) -> Value {
    // JSON escaping only adds bytes, so the raw size decides most entries
    // without building the JSON of a large one.
    let raw: usize = e.r#type.len()
        + e.fields
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + e.binary_fields.keys().map(String::len).sum::<usize>();
    if raw <= ENTRY_SHOWN_BYTES {
        let json = entry_json(e);
        if json_len(&json) <= ENTRY_SHOWN_BYTES {
            return json;
        }
    }
    let raw_values: usize = e.binary_fields.values().map(Vec::len).sum();
    let event_type = if e.r#type.len() <= TYPE_SHOWN_BYTES {
        e.r#type.as_str()
    } else {
        ""
    };
    json!({
        "id": e.id,
        "type": event_type,
        "ts_ms": e.ts_ms,
        "fields": {},
        "binary_fields": [],
        "delivery_count": e.delivery_count,
        "omitted_bytes": raw + raw_values,
    })
}

/// The length of `value` as JSON text, without building the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// A ListStreams page.
pub(super) fn streams_json(page: &pb::ListStreamsResponse) -> Value {
    let streams: Vec<Value> = page
        .streams
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "length": s.length,
                "last_entry_id": s.last_entry_id,
                "group_count": s.group_count,
            })
        })
        .collect();
    json!({ "streams": streams, "next_cursor": page.next_cursor })
}

/// Everything the stream view shows: the stream (DescribeStream) and, when
/// it is partitioned, its partitions (ListPartitions), its groups
/// (ListGroups) with their consumers (ListConsumers) and pending
/// entries (ListPending), and its dead-letter stream's length. All calls
/// need `admin` on the stream, as with grpcurl. A stream that does not
/// exist (yet) is shown as such rather than as an error.
pub(super) async fn stream(
    local: &LocalGrpc,
    who: &OnBehalf,
    name: &str,
    demo: Option<&dyn DemoControls>,
) -> Result<Value, Status> {
    let mut admin = local.admin();
    let info = match admin
        .describe_stream(who.request(pb::DescribeStreamRequest {
            stream: name.to_owned(),
        }))
        .await
    {
        Ok(info) => Some(info.into_inner()),
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => return Err(status),
    };
    let mut groups = Vec::new();
    let partitioned = info.as_ref().is_some_and(|i| i.partitions > 0);
    if info.is_some() {
        let listed = admin
            .list_groups(who.request(pb::ListGroupsRequest {
                stream: name.to_owned(),
            }))
            .await?
            .into_inner()
            .groups;
        for g in listed {
            groups.push(group(local, who, name, g, partitioned).await?);
        }
    }
    let dead_letter = format!("{name}:dlq");
    let dlq = match admin
        .describe_stream(who.request(pb::DescribeStreamRequest {
            stream: dead_letter.clone(),
        }))
        .await
    {
        Ok(info) => json!({ "stream": dead_letter, "length": info.into_inner().length }),
        Err(status) if status.code() == Code::NotFound => {
            json!({ "stream": dead_letter, "length": 0 })
        }
        Err(status) => json!({ "stream": dead_letter, "length": null,
                               "error": super::http::error_json(&status)["error"] }),
    };
    let exists = info.is_some();
    let info = info.unwrap_or_default();
    let partitions = match info.partitions {
        0 => Vec::new(),
        _ => admin
            .list_partitions(who.request(pb::ListPartitionsRequest {
                stream: name.to_owned(),
                group: String::new(),
            }))
            .await?
            .into_inner()
            .partitions
            .into_iter()
            .map(|p| {
                json!({
                    "partition": p.partition,
                    "key": p.key,
                    "length": p.length,
                    "last_entry_id": p.last_entry_id,
                })
            })
            .collect(),
    };
    Ok(json!({
        "stream": name,
        "exists": exists,
        "length": info.length,
        "first_entry_id": info.first_entry_id,
        "last_entry_id": info.last_entry_id,
        "last_generated_id": info.last_generated_id,
        "partitions": partitions,
        "groups": groups,
        "dead_letter": dlq,
        "demo": demo.filter(|d| d.stream() == name).map(|d| d.state()),
    }))
}

/// One group with its consumers and pending entries, and on a
/// `partitioned` stream the owner of each partition (ordered consumption;
/// "" where none). A group deleted between the listing and these calls is
/// shown empty.
async fn group(
    local: &LocalGrpc,
    who: &OnBehalf,
    stream: &str,
    g: pb::GroupInfo,
    partitioned: bool,
) -> Result<Value, Status> {
    let mut admin = local.admin();
    let owners: Vec<String> = if partitioned {
        match admin
            .list_partitions(who.request(pb::ListPartitionsRequest {
                stream: stream.to_owned(),
                group: g.name.clone(),
            }))
            .await
        {
            Ok(r) => (r.into_inner().partitions.into_iter())
                .map(|p| p.owner)
                .collect(),
            Err(status) if status.code() == Code::NotFound => Vec::new(),
            Err(status) => return Err(status),
        }
    } else {
        Vec::new()
    };
    let consumers = match admin
        .list_consumers(who.request(pb::ListConsumersRequest {
            stream: stream.to_owned(),
            group: g.name.clone(),
        }))
        .await
    {
        Ok(r) => r.into_inner().consumers,
        Err(status) if status.code() == Code::NotFound => Vec::new(),
        Err(status) => return Err(status),
    };
    let pending = match admin
        .list_pending(who.request(pb::ListPendingRequest {
            stream: stream.to_owned(),
            group: g.name.clone(),
            count: PENDING_SHOWN,
            ..pb::ListPendingRequest::default()
        }))
        .await
    {
        Ok(r) => r.into_inner().entries,
        Err(status) if status.code() == Code::NotFound => Vec::new(),
        Err(status) => return Err(status),
    };
    let consumers: Vec<Value> = consumers
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "pending": c.pending,
                "idle_ms": c.idle_ms,
                "inactive_ms": c.inactive_ms,
            })
        })
        .collect();
    let pending: Vec<Value> = pending
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "consumer": p.consumer,
                "idle_ms": p.idle_ms,
                "delivery_count": p.delivery_count,
            })
        })
        .collect();
    Ok(json!({
        "name": g.name,
        "consumer_count": g.consumers,
        "pending": g.pending,
        "last_delivered_id": g.last_delivered_id,
        "lag": g.lag,
        "entries_read": g.entries_read,
        "consumers": consumers,
        "pending_entries": pending,
        "owners": owners,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &str) -> pb::Entry {
        pb::Entry {
            id: "1-0".to_owned(),
            r#type: "t".to_owned(),
            fields: [("f".to_owned(), value.to_owned())].into(),
            ..pb::Entry::default()
        }
    }

    #[test]
    fn an_entry_the_page_can_show_is_shown_whole() {
        let e = entry(&"x".repeat(ENTRY_SHOWN_BYTES - 100));
        assert_eq!(entry_shown(&e), entry_json(&e));
    }

    #[test]
    fn a_large_entry_is_shown_without_its_fields() {
        let e = entry(&"x".repeat(10 * ENTRY_SHOWN_BYTES));
        let shown = entry_shown(&e);
        assert_eq!(shown["id"], "1-0");
        assert_eq!(shown["type"], "t");
        assert_eq!(shown["fields"], json!({}));
        assert_eq!(shown["omitted_bytes"], 1 + 1 + 10 * ENTRY_SHOWN_BYTES);
        assert!(shown.to_string().len() < 1024);
    }

    #[test]
    fn escaping_counts_towards_the_size() {
        // Raw size under the bound, JSON (every byte escaped as \u0001)
        // six times over it.
        let e = entry(&"\u{1}".repeat(ENTRY_SHOWN_BYTES / 2));
        assert!(entry_shown(&e).get("omitted_bytes").is_some());
    }
}
