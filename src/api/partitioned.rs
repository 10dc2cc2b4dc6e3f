//! The rpcs that know partitioned streams: CreateStream, ListPartitions,
//! DescribeStream's sums and Produce's routing (see [`crate::partition`]).

use futures_util::future::try_join_all;

use super::Context;
use super::event_stream::Append;
use crate::broker::{Layout, StreamInfo, partition_stream};
use crate::error::{Error, Result};
use crate::ids::StreamId;
use crate::model::Event;
use crate::partition::{MAX_PARTITIONS, partition_of, qualified};
use crate::pb;

impl Context {
    /// The partition count of `stream`, 0 for a plain stream (one Redis
    /// round trip the first time this gateway sees the stream).
    pub(super) async fn partitions(&self, stream: &str) -> Result<u32> {
        self.layouts.partitions(&self.broker, stream).await
    }

    /// CreateStream: records a partitioned layout (and creates its
    /// partitions) or creates a plain stream; `(created, partitions)`.
    pub(super) async fn create_stream(&self, stream: &str, partitions: u32) -> Result<(bool, u32)> {
        if partitions > MAX_PARTITIONS {
            return Err(Error::invalid(
                "partitions",
                format!("is {partitions}; a stream has at most {MAX_PARTITIONS}"),
            ));
        }
        let wanted = if partitions >= 2 { partitions } else { 0 };
        let (created, layout) = self.broker.layout(stream, wanted).await?;
        let has = match layout {
            Layout::Missing => {
                // A plain stream asked for, and none there yet.
                self.broker.create_empty_stream(stream).await?;
                return Ok((true, 0));
            }
            Layout::Plain => 0,
            Layout::Partitioned(n) => n,
        };
        if has != wanted {
            let shape = |n: u32| match n {
                0 => "a plain stream (1 partition)".to_owned(),
                n => format!("{n} partitions"),
            };
            return Err(Error::FailedPrecondition(format!(
                "stream {stream:?} exists with {}; asked for {}: the partition count of a \
                 stream cannot change",
                shape(has),
                shape(wanted)
            )));
        }
        self.layouts.remember(stream, has);
        if created {
            try_join_all((0..has).map(|p| async move {
                self.broker
                    .create_empty_stream(&partition_stream(stream, p))
                    .await
            }))
            .await?;
        }
        Ok((created, has))
    }

    /// DescribeStream of a stream, plain or partitioned (sums and the
    /// oldest / newest entries over the partitions, IDs qualified).
    pub(super) async fn describe(&self, stream: &str) -> Result<pb::DescribeStreamResponse> {
        let partitions = self.partitions(stream).await?;
        if partitions == 0 {
            return Ok(self.broker.describe_stream(stream).await?.into());
        }
        let infos = self.partition_infos(stream, partitions).await?;
        let oldest = pick(&infos, |i| i.first_entry_id, |a, b| a < b);
        let newest = pick(&infos, |i| i.last_entry_id, |a, b| a > b);
        let generated = infos
            .iter()
            .enumerate()
            .max_by_key(|(_, i)| i.last_generated_id)
            .map(|(p, i)| qualified(p as u32, &i.last_generated_id.to_string()))
            .unwrap_or_default();
        Ok(pb::DescribeStreamResponse {
            length: infos.iter().map(|i| i.length).sum(),
            first_entry_id: oldest,
            last_entry_id: newest,
            last_generated_id: generated,
            group_count: infos.iter().map(|i| i.group_count).sum(),
            partitions,
        })
    }

    /// Every partition's XINFO STREAM, in order; a partition not created
    /// yet is empty.
    async fn partition_infos(&self, stream: &str, partitions: u32) -> Result<Vec<StreamInfo>> {
        try_join_all((0..partitions).map(|p| async move {
            match self
                .broker
                .describe_stream(&partition_stream(stream, p))
                .await
            {
                Err(Error::StreamNotFound { .. }) => Ok(StreamInfo::default()),
                other => other,
            }
        }))
        .await
    }

    /// ListPartitions.
    pub(super) async fn list_partitions(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<Vec<pb::PartitionInfo>> {
        let partitions = self.partitions(stream).await?;
        let names: Vec<String> = match partitions {
            0 => vec![stream.to_owned()],
            n => (0..n).map(|p| partition_stream(stream, p)).collect(),
        };
        try_join_all(names.iter().enumerate().map(|(p, name)| async move {
            let info = self.broker.describe_stream(name).await?;
            let mut row = pb::PartitionInfo {
                partition: p as u32,
                key: self.broker.key(name),
                length: info.length,
                last_entry_id: info
                    .last_entry_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                ..Default::default()
            };
            if !group.is_empty() {
                let groups = self.broker.list_groups(name).await?;
                let found = groups
                    .into_iter()
                    .find(|g| g.name == group)
                    .ok_or_else(|| Error::GroupNotFound {
                        stream: stream.to_owned(),
                        group: group.to_owned(),
                    })?;
                row.pending = found.pending;
                row.lag = found.lag;
                if partitions > 0 {
                    row.owner = (self.broker.lease_owner(name, group).await?).unwrap_or_default();
                }
            }
            Ok(row)
        }))
        .await
    }

    /// Produce's write: to the stream, or on a partitioned stream to each
    /// event's partition. Returns the IDs in request order (qualified on a
    /// partitioned stream). A request spread over several partitions is
    /// written partition by partition, not atomically: retry it with
    /// idempotency keys.
    pub(super) async fn append(&self, append: Append) -> Result<Vec<String>> {
        let partitions = self
            .layouts
            .partitions(&self.broker, &append.stream)
            .await?;
        if partitions == 0 {
            return self
                .broker
                .produce(&append.stream, append.events, append.cap)
                .await;
        }
        // Taken only when the request has keyless events, so that keyed
        // requests do not move the turn on.
        let mut keyless = None;
        let mut groups: Vec<(Vec<usize>, Vec<Event>)> =
            (0..partitions).map(|_| Default::default()).collect();
        for (i, event) in append.events.into_iter().enumerate() {
            let p = match event.key.as_str() {
                "" => *keyless.get_or_insert_with(|| self.layouts.next_keyless(partitions)),
                key => partition_of(key, partitions),
            };
            let (order, events) = &mut groups[p as usize];
            order.push(i);
            events.push(event);
        }
        let total = groups.iter().map(|(order, _)| order.len()).sum();
        let stream = &append.stream;
        let written = try_join_all(
            groups
                .into_iter()
                .enumerate()
                .filter(|(_, (order, _))| !order.is_empty())
                .map(|(p, (order, events))| async move {
                    let name = partition_stream(stream, p as u32);
                    let ids = self.broker.produce(&name, events, append.cap).await?;
                    Ok::<_, Error>((p as u32, order, ids))
                }),
        )
        .await?;
        let mut ids = vec![String::new(); total];
        for (p, order, written) in written {
            for (i, id) in order.into_iter().zip(written) {
                ids[i] = qualified(p, &id);
            }
        }
        Ok(ids)
    }
}

/// The partition-qualified ID that `better` prefers among the partitions'
/// `id`s; empty when none has one.
fn pick(
    infos: &[StreamInfo],
    id: impl Fn(&StreamInfo) -> Option<StreamId>,
    better: impl Fn(&StreamId, &StreamId) -> bool,
) -> String {
    let mut best: Option<(usize, StreamId)> = None;
    for (p, info) in infos.iter().enumerate() {
        if let Some(candidate) = id(info)
            && best.as_ref().is_none_or(|(_, b)| better(&candidate, b))
        {
            best = Some((p, candidate));
        }
    }
    best.map(|(p, id)| qualified(p as u32, &id.to_string()))
        .unwrap_or_default()
}
