//! The group rpcs on streams plain or partitioned: Ack, Nack, Extend, Reap,
//! Trim, StreamAdmin's group administration and ListStreams.
//!
//! A partitioned stream is served partition by partition, each partition
//! being the plain operation on its internal stream (see `broker::layout`),
//! and answered as one stream: counts summed, rows merged by name, IDs
//! partition-qualified (`<partition>/<ms>-<seq>`). Errors name the stream
//! the client named, never a partition's internal name. A plain stream
//! takes the one plain call, as before partitions existed.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::TryFutureExt;
use futures_util::future::try_join_all;

use super::Context;
use crate::broker::{GroupInfo, PendingFilter, ReapSpec, StreamSummary, TrimTo, partition_stream};
use crate::error::{Error, Result};
use crate::ids::{GroupStart, IdRange, StreamId};
use crate::model::Entry;
use crate::partition::{parse_id, qualified};
use crate::pb;

/// What a Reap did, IDs as the client sees them.
pub(super) struct ReapedStream {
    /// Entries now owned by the reaping consumer (`partition` set on a
    /// partitioned stream).
    pub claimed: Vec<Entry>,
    /// Pending IDs whose entries no longer exist.
    pub deleted_ids: Vec<String>,
    /// Where to continue; `0-0` when the scan is complete.
    pub next_start_id: String,
}

/// Checks the form of an entry ID before the stream's layout is known
/// (`ms-seq` or `<partition>/<ms>-<seq>`), so that a malformed request is
/// refused before any Redis call; whether the stream wants the partition
/// is checked once its layout is known ([`parse_id`]).
pub(super) fn check_id(field: &str, text: &str) -> Result<()> {
    match text.split_once('/') {
        Some((p, id)) if p.parse::<u32>().is_ok() => StreamId::parse(field, id).map(drop),
        // Refused, saying that the partition is no number.
        Some(_) => parse_id(field, text, 1).map(drop),
        None => StreamId::parse(field, text).map(drop),
    }
}

/// Checks the form of a request's ID list ([`check_id`]); at least one.
pub(super) fn check_ids(field: &str, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Err(Error::invalid(field, "at least one ID is required"));
    }
    ids.iter()
        .enumerate()
        .try_for_each(|(i, id)| check_id(&format!("{field}[{i}]"), id))
}

/// Checks the form of a ListPending bound: `-`/`+`, `ms`, `ms-seq`, each
/// optionally after `<partition>/`.
pub(super) fn check_pending_range(start: &str, end: &str) -> Result<()> {
    let (_, low) = split_bound("start", start, None)?;
    let (_, high) = split_bound("end", end, None)?;
    IdRange::parse("start", low, "end", high).map(drop)
}

/// The request's IDs by partition (0 alone on a plain stream), each
/// partition's in request order.
fn by_partition(
    field: &str,
    ids: &[String],
    partitions: u32,
) -> Result<BTreeMap<u32, Vec<StreamId>>> {
    let mut out: BTreeMap<u32, Vec<StreamId>> = BTreeMap::new();
    for (i, text) in ids.iter().enumerate() {
        let (p, id) = parse_id(&format!("{field}[{i}]"), text, partitions)?;
        out.entry(p).or_default().push(id);
    }
    Ok(out)
}

/// Splits a ListPending bound into its partition (when qualified) and the
/// bound within the partition; with `partitions` known (0: a plain stream,
/// whose one partition is 0), checks that the partition exists.
fn split_bound<'a>(
    field: &str,
    text: &'a str,
    partitions: Option<u32>,
) -> Result<(Option<u32>, &'a str)> {
    let Some((p, rest)) = text.split_once('/') else {
        return Ok((None, text));
    };
    let p: u32 = p
        .parse()
        .map_err(|_| Error::invalid(field, format!("{text:?}: {p:?} is not a partition number")))?;
    if let Some(partitions) = partitions
        && p >= partitions.max(1)
    {
        return Err(Error::invalid(
            field,
            format!(
                "{text:?} names partition {p}; the stream has {}",
                match partitions {
                    0 => "one (it is not partitioned)".to_owned(),
                    n => format!("{n} (0 to {})", n - 1),
                }
            ),
        ));
    }
    if matches!(rest, "" | "-" | "+") {
        return Err(Error::invalid(
            field,
            format!("{text:?}: after <partition>/ comes an ID, <ms> or <ms>-<seq>"),
        ));
    }
    Ok((Some(p), rest))
}

impl Context {
    /// Runs `op` on each of `partitions` of `stream` (given the partition
    /// and its internal stream name) concurrently; results in that order.
    async fn each<T, F>(
        stream: &str,
        partitions: impl IntoIterator<Item = u32>,
        op: impl Fn(u32, String) -> F,
    ) -> Result<Vec<T>>
    where
        F: Future<Output = Result<T>>,
    {
        try_join_all(
            partitions
                .into_iter()
                .map(|p| op(p, partition_stream(stream, p)).map_err(|e| e.about(stream))),
        )
        .await
    }

    /// Ack: how many of `ids` were pending and are now acknowledged.
    pub(super) async fn ack_ids(&self, stream: &str, group: &str, ids: &[String]) -> Result<u64> {
        let n = self.partitions(stream).await?;
        let mut per = by_partition("ids", ids, n)?;
        if n == 0 {
            let ids = per.remove(&0).unwrap_or_default();
            return self.group_ops.ack(stream, group, &ids).await;
        }
        let counts = Self::each(stream, per.keys().copied(), |p, name| {
            let ids = &per[&p];
            async move { self.group_ops.ack_owned(&name, group, ids).await }
        })
        .await?;
        Ok(counts.into_iter().sum())
    }

    /// Nack: how many of `ids` were pending for `consumer` and are now
    /// scheduled for redelivery after `delay_ms`.
    pub(super) async fn nack_ids(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[String],
        delay_ms: i64,
    ) -> Result<u64> {
        let n = self.partitions(stream).await?;
        let mut per = by_partition("ids", ids, n)?;
        if n == 0 {
            let ids = per.remove(&0).unwrap_or_default();
            let nacked = (self.group_ops)
                .nack(stream, group, consumer, None, &ids, delay_ms)
                .await?;
            return Ok(nacked.done.len() as u64);
        }
        let counts = Self::each(stream, per.keys().copied(), |p, name| {
            let ids = &per[&p];
            async move {
                let nacked = (self.group_ops)
                    .nack(&name, group, consumer, None, ids, delay_ms)
                    .await?;
                Ok(nacked.done.len() as u64)
            }
        })
        .await?;
        Ok(counts.into_iter().sum())
    }

    /// Extend: how many of `ids` were pending for `consumer` and had their
    /// idle time reset.
    pub(super) async fn extend_ids(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[String],
    ) -> Result<u64> {
        let n = self.partitions(stream).await?;
        let mut per = by_partition("ids", ids, n)?;
        if n == 0 {
            let ids = per.remove(&0).unwrap_or_default();
            let extended = (self.group_ops)
                .extend(stream, group, consumer, &ids)
                .await?;
            return Ok(extended.done.len() as u64);
        }
        let counts = Self::each(stream, per.keys().copied(), |p, name| {
            let ids = &per[&p];
            async move {
                let extended = (self.group_ops).extend(&name, group, consumer, ids).await?;
                Ok(extended.done.len() as u64)
            }
        })
        .await?;
        Ok(counts.into_iter().sum())
    }

    /// Reap from `start` (the request's `start_id`; empty = the beginning).
    /// A partitioned stream is scanned partition by partition in order, the
    /// request's `max_pages` shared among them; its cursor is
    /// `<partition>/<ms>-<seq>`, and `0-0` says the scan is complete.
    pub(super) async fn reap_stream(
        &self,
        stream: &str,
        group: &str,
        mut spec: ReapSpec,
        start: &str,
    ) -> Result<ReapedStream> {
        let n = self.partitions(stream).await?;
        let (mut p, cursor) = match start {
            "" => (0, StreamId::MIN),
            text => parse_id("start_id", text, n)?,
        };
        if n == 0 {
            spec.start = cursor;
            let reaped = self.broker.reap(stream, group, &spec).await?;
            return Ok(ReapedStream {
                claimed: reaped.claimed,
                deleted_ids: reaped.deleted_ids.iter().map(ToString::to_string).collect(),
                next_start_id: reaped.next_start_id.to_string(),
            });
        }
        let mut out = ReapedStream {
            claimed: Vec::new(),
            deleted_ids: Vec::new(),
            next_start_id: StreamId::MIN.to_string(),
        };
        let mut budget = spec.max_pages;
        spec.start = cursor;
        loop {
            spec.max_pages = budget;
            let reaped = (self.broker)
                .reap(&partition_stream(stream, p), group, &spec)
                .await
                .map_err(|e| e.about(stream))?;
            budget = budget.saturating_sub(reaped.pages);
            out.claimed.extend(reaped.claimed.into_iter().map(|mut e| {
                e.partition = Some(p);
                e
            }));
            out.deleted_ids
                .extend((reaped.deleted_ids.iter()).map(|id| qualified(p, &id.to_string())));
            if reaped.next_start_id != StreamId::MIN {
                out.next_start_id = qualified(p, &reaped.next_start_id.to_string());
                break;
            }
            p += 1;
            if p == n {
                break;
            }
            if budget == 0 {
                out.next_start_id = qualified(p, &StreamId::MIN.to_string());
                break;
            }
            spec.start = StreamId::MIN;
        }
        Ok(out)
    }

    /// Trim: on a partitioned stream, `to` applies to every partition
    /// (`max_len` per partition, `min_id` in each); the removed entries
    /// are summed.
    pub(super) async fn trim_stream(
        &self,
        stream: &str,
        to: &TrimTo,
        exact: bool,
        limit: u64,
        acked_by_all_groups: bool,
    ) -> Result<u64> {
        let broker = &self.broker;
        let trim = |name: String| async move {
            if acked_by_all_groups {
                broker.safe_trim(&name, to, exact, limit).await
            } else {
                broker.trim(&name, to, exact, limit).await
            }
        };
        let n = self.partitions(stream).await?;
        if n == 0 {
            return trim(stream.to_owned()).await;
        }
        let trimmed = Self::each(stream, 0..n, |_, name| trim(name)).await?;
        Ok(trimmed.into_iter().sum())
    }

    /// CreateGroup, in every partition; true if created in any.
    pub(super) async fn create_group_on(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
        mkstream: bool,
    ) -> Result<bool> {
        let n = self.partitions(stream).await?;
        if n == 0 {
            return (self.broker)
                .create_group(stream, group, start, mkstream)
                .await;
        }
        let created = Self::each(stream, 0..n, |_, name| async move {
            (self.broker)
                .create_group(&name, group, start, mkstream)
                .await
        })
        .await?;
        Ok(created.contains(&true))
    }

    /// DeleteGroup, in every partition; true if deleted in any. Rings the
    /// doorbell of each stream touched, so that the group's idle readers
    /// here learn of it at once.
    pub(super) async fn delete_group_on(&self, stream: &str, group: &str) -> Result<bool> {
        let n = self.partitions(stream).await?;
        if n == 0 {
            let deleted = self.broker.delete_group(stream, group).await?;
            self.doorbell.ring(stream);
            return Ok(deleted);
        }
        let deleted = Self::each(stream, 0..n, |_, name| async move {
            let deleted = self.broker.delete_group(&name, group).await?;
            self.doorbell.ring(&name);
            Ok(deleted)
        })
        .await?;
        Ok(deleted.contains(&true))
    }

    /// SetGroupCursor: `$`, `0` or `ms-seq`, in every partition. Rings the
    /// doorbell of each stream touched (a rewound group has entries to
    /// deliver that no write announced).
    pub(super) async fn set_group_cursor_on(
        &self,
        stream: &str,
        group: &str,
        id: GroupStart,
    ) -> Result<()> {
        let n = self.partitions(stream).await?;
        if n == 0 {
            self.broker.set_group_cursor(stream, group, id).await?;
            self.doorbell.ring(stream);
            return Ok(());
        }
        Self::each(stream, 0..n, |_, name| async move {
            self.broker.set_group_cursor(&name, group, id).await?;
            self.doorbell.ring(&name);
            Ok(())
        })
        .await
        .map(drop)
    }

    /// ListGroups. On a partitioned stream, one row per group name (in the
    /// order of their first partition): `consumers` counts distinct names,
    /// `pending` is summed, `lag` and `entries_read` are summed when every
    /// partition of the group reports them, and `last_delivered_id` is the
    /// highest of the partitions' cursors, partition-qualified.
    pub(super) async fn list_groups_of(&self, stream: &str) -> Result<Vec<pb::GroupInfo>> {
        let n = self.partitions(stream).await?;
        if n == 0 {
            let groups = self.broker.list_groups(stream).await?;
            return Ok(groups.into_iter().map(Into::into).collect());
        }
        let per = Self::each(stream, 0..n, |_, name| async move {
            self.broker.list_groups(&name).await
        })
        .await?;
        let mut order: Vec<String> = Vec::new();
        let mut rows: HashMap<String, Vec<(u32, GroupInfo)>> = HashMap::new();
        for (p, groups) in per.into_iter().enumerate() {
            for g in groups {
                if !rows.contains_key(&g.name) {
                    order.push(g.name.clone());
                }
                rows.entry(g.name.clone()).or_default().push((p as u32, g));
            }
        }
        // The distinct consumers of each group, over its partitions.
        let with_consumers: Vec<(u32, String)> = (rows.values().flatten())
            .filter(|(_, g)| g.consumers > 0)
            .map(|(p, g)| (*p, g.name.clone()))
            .collect();
        let consumers = try_join_all(with_consumers.iter().map(|(p, group)| {
            let name = partition_stream(stream, *p);
            async move {
                let consumers = self.broker.list_consumers(&name, group).await;
                consumers.map_err(|e| e.about(stream))
            }
        }))
        .await?;
        let mut distinct: HashMap<&str, HashSet<String>> = HashMap::new();
        for ((_, group), found) in with_consumers.iter().zip(consumers) {
            (distinct.entry(group.as_str()).or_default()).extend(found.into_iter().map(|c| c.name));
        }
        Ok(order
            .into_iter()
            .map(|name| {
                let parts = &rows[&name];
                let sum = |f: fn(&GroupInfo) -> Option<u64>| {
                    parts.iter().map(|(_, g)| f(g)).sum::<Option<u64>>()
                };
                let (p, cursor) = parts
                    .iter()
                    .map(|(p, g)| (*p, g.last_delivered_id))
                    .max_by_key(|(_, id)| *id)
                    .unwrap_or((0, StreamId::MIN));
                pb::GroupInfo {
                    consumers: distinct.get(name.as_str()).map_or(0, |c| c.len() as u64),
                    pending: parts.iter().map(|(_, g)| g.pending).sum(),
                    last_delivered_id: qualified(p, &cursor.to_string()),
                    lag: sum(|g| g.lag),
                    entries_read: sum(|g| g.entries_read),
                    name,
                }
            })
            .collect())
    }

    /// ListConsumers. On a partitioned stream, one row per consumer name
    /// (in the order of their first partition): `pending` summed, `idle_ms`
    /// and `inactive_ms` the least over the partitions.
    pub(super) async fn list_consumers_of(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<Vec<pb::ConsumerInfo>> {
        let n = self.partitions(stream).await?;
        if n == 0 {
            let consumers = self.broker.list_consumers(stream, group).await?;
            return Ok(consumers.into_iter().map(Into::into).collect());
        }
        let per = Self::each(stream, 0..n, |_, name| async move {
            self.broker.list_consumers(&name, group).await
        })
        .await?;
        let mut out: Vec<pb::ConsumerInfo> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for c in per.into_iter().flatten() {
            let Some(&i) = at.get(&c.name) else {
                at.insert(c.name.clone(), out.len());
                out.push(c.into());
                continue;
            };
            let row = &mut out[i];
            row.pending += c.pending;
            row.idle_ms = row.idle_ms.min(c.idle_ms);
            row.inactive_ms = match (row.inactive_ms, c.inactive_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(out)
    }

    /// ListPending between `start` and `end` (checked by
    /// [`check_pending_range`]). On a partitioned stream the entries come
    /// in (partition, ID) order, IDs qualified, at most `filter.count` in
    /// all: an unqualified bound applies within every partition, a
    /// qualified one (`<partition>/<ms>-<seq>`) bounds that order.
    pub(super) async fn list_pending_of(
        &self,
        stream: &str,
        group: &str,
        filter: PendingFilter,
        start: &str,
        end: &str,
    ) -> Result<Vec<pb::PendingEntry>> {
        let n = self.partitions(stream).await?;
        let (from, low) = split_bound("start", start, Some(n))?;
        let (to, high) = split_bound("end", end, Some(n))?;
        // Each partition's range within the bounds.
        let mut ranges = BTreeMap::new();
        for p in from.unwrap_or(0)..=to.unwrap_or(n.max(1) - 1) {
            let low = if from.is_some_and(|f| f < p) {
                "-"
            } else {
                low
            };
            let high = if to.is_some_and(|t| t > p) { "+" } else { high };
            let range = IdRange::parse("start", low, "end", high)?;
            if !range.is_empty() {
                ranges.insert(p, range);
            }
        }
        if n == 0 {
            let Some(&range) = ranges.get(&0) else {
                return Ok(Vec::new());
            };
            let filter = PendingFilter { range, ..filter };
            let entries = self.broker.list_pending(stream, group, &filter).await?;
            return Ok(entries.into_iter().map(Into::into).collect());
        }
        let filter = &filter;
        let found = Self::each(stream, ranges.keys().copied(), |p, name| {
            let filter = PendingFilter {
                range: ranges[&p],
                ..filter.clone()
            };
            async move {
                let entries = self.broker.list_pending(&name, group, &filter).await?;
                Ok((p, entries))
            }
        })
        .await?;
        Ok(found
            .into_iter()
            .flat_map(|(p, entries)| {
                entries.into_iter().map(move |e| pb::PendingEntry {
                    id: qualified(p, &e.id.to_string()),
                    ..e.into()
                })
            })
            .take(filter.count as usize)
            .collect())
    }

    /// RemoveConsumer: hands over and removes `consumer` in every partition
    /// it is in; NOT_FOUND when it is in none. Without `handover_to`, a
    /// consumer with pending entries in any partition is refused before
    /// any partition is touched. Returns how many entries were handed
    /// over.
    pub(super) async fn remove_consumer_from(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        handover_to: Option<&str>,
    ) -> Result<u64> {
        let n = self.partitions(stream).await?;
        if n == 0 {
            return (self.broker)
                .remove_consumer(stream, group, consumer, handover_to)
                .await;
        }
        if handover_to.is_none() {
            let pending = Self::each(stream, 0..n, |_, name| async move {
                self.broker.consumer_pending(&name, group, consumer).await
            })
            .await?;
            let total: u64 = pending.iter().sum();
            if total > 0 {
                return Err(Error::FailedPrecondition(format!(
                    "consumer {consumer:?} of group {group:?} on stream {stream:?} has {total} \
                     pending entries; removing it would destroy them: set handover_to"
                )));
            }
        }
        let removed = Self::each(stream, 0..n, |_, name| async move {
            match (self.broker)
                .remove_consumer(&name, group, consumer, handover_to)
                .await
            {
                Ok(handed_over) => Ok(Some(handed_over)),
                Err(Error::ConsumerNotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        if removed.iter().all(Option::is_none) {
            return Err(Error::ConsumerNotFound {
                stream: stream.to_owned(),
                group: group.to_owned(),
                consumer: consumer.to_owned(),
            });
        }
        Ok(removed.into_iter().flatten().sum())
    }

    /// One page of ListStreams: the streams among SCAN's `found` keys that
    /// `allowed` admits, with their summaries. A partitioned stream is
    /// listed once, where the scan meets its partition 0, with its length
    /// and group count summed over the partitions and its newest entry's
    /// ID qualified.
    pub(super) async fn stream_page(
        &self,
        found: Vec<String>,
        allowed: impl Fn(&str) -> bool,
    ) -> Result<Vec<pb::StreamSummary>> {
        enum Listed {
            Plain(String),
            Partitioned(String, u32),
        }
        let mut listed = Vec::new();
        let mut keys = Vec::new();
        for name in found {
            if crate::namespace::stream_name("stream", &name).is_ok() {
                if allowed(&name) {
                    keys.push(name.clone());
                    listed.push(Listed::Plain(name));
                }
                continue;
            }
            let Some(base) = name.strip_suffix(&partition_stream("", 0)) else {
                continue;
            };
            if crate::namespace::stream_name("stream", base).is_err() || !allowed(base) {
                continue;
            }
            let n = match self.partitions(base).await {
                Ok(n) => n,
                // The name's key holds something else: no partitioned stream.
                Err(Error::WrongType { .. }) => 0,
                Err(e) => return Err(e),
            };
            if n > 0 {
                keys.extend((0..n).map(|p| partition_stream(base, p)));
                listed.push(Listed::Partitioned(base.to_owned(), n));
            }
        }
        let mut summaries: HashMap<String, StreamSummary> = (self.broker)
            .stream_summaries(keys)
            .await?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        Ok(listed
            .into_iter()
            .filter_map(|item| match item {
                Listed::Plain(name) => summaries.remove(&name).map(Into::into),
                Listed::Partitioned(name, n) => {
                    let mut row = pb::StreamSummary {
                        name: name.clone(),
                        ..Default::default()
                    };
                    let mut newest: Option<(u32, StreamId)> = None;
                    for p in 0..n {
                        let Some(s) = summaries.remove(&partition_stream(&name, p)) else {
                            continue;
                        };
                        row.length += s.length;
                        row.group_count += s.group_count;
                        if let Some(id) = s.last_entry_id
                            && newest.is_none_or(|(_, best)| id > best)
                        {
                            newest = Some((p, id));
                        }
                    }
                    row.last_entry_id = newest
                        .map(|(p, id)| qualified(p, &id.to_string()))
                        .unwrap_or_default();
                    Some(row)
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_for_form_before_the_layout_is_known() {
        assert!(check_ids("ids", &["5-1".into(), "3/5-1".into()]).is_ok());
        let err = check_ids("ids", &[]).unwrap_err().to_string();
        assert!(err.contains("at least one"), "{err}");
        for (text, says) in [("x/5-1", "not a partition number"), ("3/5-x", "ids[0]")] {
            let err = check_ids("ids", &[text.into()]).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn pending_bounds_may_name_a_partition() {
        assert!(check_pending_range("", "").is_ok());
        assert!(check_pending_range("2/5-1", "3/7").is_ok());
        assert!(check_pending_range("2/-", "").is_err());
        assert_eq!(
            split_bound("start", "2/5-1", Some(4)).unwrap(),
            (Some(2), "5-1")
        );
        assert_eq!(split_bound("start", "5-1", Some(4)).unwrap(), (None, "5-1"));
        assert_eq!(
            split_bound("start", "0/5", Some(0)).unwrap(),
            (Some(0), "5")
        );
        let err = split_bound("end", "1/5", Some(0)).unwrap_err().to_string();
        assert!(err.contains("not partitioned"), "{err}");
        let err = split_bound("end", "4/5", Some(4)).unwrap_err().to_string();
        assert!(err.contains("0 to 3"), "{err}");
    }

    #[test]
    fn partition_errors_name_the_stream() {
        let err = Error::GroupNotFound {
            stream: partition_stream("orders", 3),
            group: "g".into(),
        }
        .about("orders");
        assert_eq!(
            err.to_string(),
            "consumer group \"g\" does not exist on stream \"orders\""
        );
    }
}
