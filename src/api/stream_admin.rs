//! `streamgate.v1.StreamAdmin`: group administration and inspection.

use tonic::{Request, Response, Status};

use super::partitioned_admin::check_pending_range;
use super::{Caller, Context, bounded, redis_int, required};
use crate::auth::Permission;
use crate::broker::PendingFilter;
use crate::error::{Error, Result};
use crate::ids::{GroupStart, IdRange};
use crate::pb::{self, stream_admin_server::StreamAdmin};

/// Default rows of ListPending.
const DEFAULT_PENDING_COUNT: u32 = 100;
/// Default streams per ListStreams page.
const DEFAULT_LIST_STREAMS_LIMIT: u32 = 100;
/// SCAN steps one ListStreams call may take: bounds the Redis work of a
/// call on a keyspace where few keys are streams (the caller continues
/// with the cursor).
const MAX_SCAN_STEPS: usize = 16;

/// Implements the StreamAdmin service.
#[derive(Clone)]
pub struct StreamAdminService {
    ctx: Context,
}

impl StreamAdminService {
    /// A service answering from `ctx`.
    pub fn new(ctx: Context) -> Self {
        StreamAdminService { ctx }
    }
}

#[tonic::async_trait]
impl StreamAdmin for StreamAdminService {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let start = GroupStart::parse("start_id", &req.start_id)?;
        let mkstream = req.mkstream.unwrap_or(true);
        self.ctx.authorize(&caller, Permission::Admin, stream)?;
        let created = (self.ctx)
            .create_group_on(stream, group, start, mkstream)
            .await?;
        Ok(Response::new(pb::CreateGroupResponse { created }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        self.ctx.authorize(&caller, Permission::Admin, stream)?;
        // Redis reports no write: the group's idle subscribers here learn
        // of it at once (to end, or re-create it: the doorbell rings),
        // elsewhere at their next safety-net read.
        let deleted = self.ctx.delete_group_on(stream, group).await?;
        Ok(Response::new(pb::DeleteGroupResponse { deleted }))
    }

    async fn set_group_cursor(
        &self,
        request: Request<pb::SetGroupCursorRequest>,
    ) -> Result<Response<pb::SetGroupCursorResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let id = GroupStart::parse("id", required("id", &req.id)?)?;
        self.ctx.authorize(&caller, Permission::Admin, stream)?;
        // A rewound group has entries to deliver that no write announced:
        // the stream's idle readers here read now (the doorbell rings),
        // elsewhere at their next safety-net read.
        self.ctx.set_group_cursor_on(stream, group, id).await?;
        Ok(Response::new(pb::SetGroupCursorResponse {}))
    }

    async fn describe_stream(
        &self,
        request: Request<pb::DescribeStreamRequest>,
    ) -> Result<Response<pb::DescribeStreamResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        self.ctx.authorize(&caller, Permission::Admin, stream)?;
        Ok(Response::new(self.ctx.describe(stream).await?))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        self.ctx.authorize(&caller, Permission::Admin, stream)?;
        let groups = self.ctx.list_groups_of(stream).await?;
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn list_consumers(
        &self,
        request: Request<pb::ListConsumersRequest>,
    ) -> Result<Response<pb::ListConsumersResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        self.ctx.authorize(&caller, Permission::Admin, stream)?;
        let consumers = self.ctx.list_consumers_of(stream, group).await?;
        Ok(Response::new(pb::ListConsumersResponse { consumers }))
    }

    async fn list_pending(
        &self,
        request: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let consumer = match &req.consumer {
            Some(c) => Some(required("consumer", c)?.to_owned()),
            None => None,
        };
        let filter = PendingFilter {
            consumer,
            min_idle_ms: redis_int("min_idle_ms", req.min_idle_ms)?,
            range: IdRange::parse("start", "-", "end", "+")?,
            count: bounded(
                "count",
                req.count,
                DEFAULT_PENDING_COUNT,
                self.ctx.settings.max_batch_size,
            )?,
        };
        check_pending_range(&req.start, &req.end)?;
        self.ctx.authorize(&caller, Permission::Admin, stream)?;
        let entries = (self.ctx)
            .list_pending_of(stream, group, filter, &req.start, &req.end)
            .await?;
        Ok(Response::new(pb::ListPendingResponse { entries }))
    }

    async fn remove_consumer(
        &self,
        request: Request<pb::RemoveConsumerRequest>,
    ) -> Result<Response<pb::RemoveConsumerResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let consumer = required("consumer", &req.consumer)?;
        let handover_to = (!req.handover_to.is_empty()).then_some(req.handover_to.as_str());
        if handover_to == Some(consumer) {
            return Err(Error::invalid("handover_to", "must differ from consumer").into());
        }
        self.ctx.authorize(&caller, Permission::Admin, stream)?;
        let handed_over = (self.ctx)
            .remove_consumer_from(stream, group, consumer, handover_to)
            .await?;
        Ok(Response::new(pb::RemoveConsumerResponse {
            removed: true,
            handed_over,
        }))
    }

    /// Lists only what the caller could inspect anyway: a stream appears if
    /// the caller holds `admin` on it (the permission of DescribeStream),
    /// so a listing never reveals names a caller could not otherwise learn.
    /// Names the API cannot address ([`crate::namespace`]) are left out too.
    async fn list_streams(
        &self,
        request: Request<pb::ListStreamsRequest>,
    ) -> Result<Response<pb::ListStreamsResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let mut cursor: u64 = match req.cursor.as_str() {
            "" => 0,
            text => text
                .parse()
                .map_err(|_| Error::invalid("cursor", "is not a cursor returned by ListStreams"))?,
        };
        let limit = bounded(
            "limit",
            req.limit,
            DEFAULT_LIST_STREAMS_LIMIT,
            self.ctx.settings.max_batch_size,
        )?;
        let Some(principal) = &caller.principal else {
            return Err(Error::Unauthenticated("the request was not authenticated".into()).into());
        };
        let allowed = |name: &str| principal.allows(Permission::Admin, name);
        let mut streams = Vec::new();
        for _ in 0..MAX_SCAN_STEPS {
            let step = self.ctx.broker.scan_streams(cursor, limit).await?;
            cursor = step.cursor;
            streams.extend(self.ctx.stream_page(step.names, allowed).await?);
            if cursor == 0 || streams.len() >= limit as usize {
                break;
            }
        }
        Ok(Response::new(pb::ListStreamsResponse {
            streams,
            next_cursor: if cursor == 0 {
                String::new()
            } else {
                cursor.to_string()
            },
        }))
    }

    async fn create_stream(
        &self,
        request: Request<pb::CreateStreamRequest>,
    ) -> Result<Response<pb::CreateStreamResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        self.ctx.authorize(&caller, Permission::Admin, stream)?;
        let (created, partitions) = self.ctx.create_stream(stream, req.partitions).await?;
        Ok(Response::new(pb::CreateStreamResponse {
            created,
            partitions,
        }))
    }

    async fn list_partitions(
        &self,
        request: Request<pb::ListPartitionsRequest>,
    ) -> Result<Response<pb::ListPartitionsResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        self.ctx.authorize(&caller, Permission::Admin, stream)?;
        let partitions = self.ctx.list_partitions(stream, &req.group).await?;
        Ok(Response::new(pb::ListPartitionsResponse { partitions }))
    }
}
