//! `streamgate.v1.StreamAdmin`: group administration and inspection.

use tonic::{Request, Response, Status};

use super::{Caller, Context, bounded, redis_int, required};
use crate::auth::Permission;
use crate::broker::PendingFilter;
use crate::error::{Error, Result};
use crate::ids::{GroupStart, IdRange};
use crate::pb::{self, stream_admin_server::StreamAdmin};

/// Default rows of ListPending.
const DEFAULT_PENDING_COUNT: u32 = 100;

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

    async fn create_group(
        &self,
        caller: &Caller,
        req: pb::CreateGroupRequest,
    ) -> Result<pb::CreateGroupResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let start = GroupStart::parse("start_id", &req.start_id)?;
        let mkstream = req.mkstream.unwrap_or(true);
        self.ctx.authorize(caller, Permission::Admin, stream)?;
        let created = self
            .ctx
            .broker
            .create_group(stream, group, start, mkstream)
            .await?;
        Ok(pb::CreateGroupResponse { created })
    }

    async fn delete_group(
        &self,
        caller: &Caller,
        req: pb::DeleteGroupRequest,
    ) -> Result<pb::DeleteGroupResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        self.ctx.authorize(caller, Permission::Admin, stream)?;
        let deleted = self.ctx.broker.delete_group(stream, group).await?;
        Ok(pb::DeleteGroupResponse { deleted })
    }

    async fn set_group_cursor(
        &self,
        caller: &Caller,
        req: pb::SetGroupCursorRequest,
    ) -> Result<pb::SetGroupCursorResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let id = GroupStart::parse("id", required("id", &req.id)?)?;
        self.ctx.authorize(caller, Permission::Admin, stream)?;
        self.ctx.broker.set_group_cursor(stream, group, id).await?;
        Ok(pb::SetGroupCursorResponse {})
    }

    async fn describe_stream(
        &self,
        caller: &Caller,
        req: pb::DescribeStreamRequest,
    ) -> Result<pb::DescribeStreamResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        self.ctx.authorize(caller, Permission::Admin, stream)?;
        Ok(self.ctx.broker.describe_stream(stream).await?.into())
    }

    async fn list_groups(
        &self,
        caller: &Caller,
        req: pb::ListGroupsRequest,
    ) -> Result<pb::ListGroupsResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        self.ctx.authorize(caller, Permission::Admin, stream)?;
        let groups = self.ctx.broker.list_groups(stream).await?;
        Ok(pb::ListGroupsResponse {
            groups: groups.into_iter().map(Into::into).collect(),
        })
    }

    async fn list_consumers(
        &self,
        caller: &Caller,
        req: pb::ListConsumersRequest,
    ) -> Result<pb::ListConsumersResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        self.ctx.authorize(caller, Permission::Admin, stream)?;
        let consumers = self.ctx.broker.list_consumers(stream, group).await?;
        Ok(pb::ListConsumersResponse {
            consumers: consumers.into_iter().map(Into::into).collect(),
        })
    }

    async fn list_pending(
        &self,
        caller: &Caller,
        req: pb::ListPendingRequest,
    ) -> Result<pb::ListPendingResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let consumer = match &req.consumer {
            Some(c) => Some(required("consumer", c)?.to_owned()),
            None => None,
        };
        let filter = PendingFilter {
            consumer,
            min_idle_ms: redis_int("min_idle_ms", req.min_idle_ms)?,
            range: IdRange::parse("start", &req.start, "end", &req.end)?,
            count: bounded(
                "count",
                req.count,
                DEFAULT_PENDING_COUNT,
                self.ctx.settings.max_batch_size,
            )?,
        };
        self.ctx.authorize(caller, Permission::Admin, stream)?;
        let entries = if filter.range.is_empty() {
            Vec::new()
        } else {
            self.ctx.broker.list_pending(stream, group, &filter).await?
        };
        Ok(pb::ListPendingResponse {
            entries: entries.into_iter().map(Into::into).collect(),
        })
    }

    async fn remove_consumer(
        &self,
        caller: &Caller,
        req: pb::RemoveConsumerRequest,
    ) -> Result<pb::RemoveConsumerResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let consumer = required("consumer", &req.consumer)?;
        let handover_to = (!req.handover_to.is_empty()).then_some(req.handover_to.as_str());
        if handover_to == Some(consumer) {
            return Err(Error::invalid("handover_to", "must differ from consumer"));
        }
        self.ctx.authorize(caller, Permission::Admin, stream)?;
        let handed_over = self
            .ctx
            .broker
            .remove_consumer(stream, group, consumer, handover_to)
            .await?;
        Ok(pb::RemoveConsumerResponse {
            removed: true,
            handed_over,
        })
    }
}

#[tonic::async_trait]
impl StreamAdmin for StreamAdminService {
    async fn create_group(
        &self,
        r: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let (caller, req) = Caller::split(r);
        self.ctx
            .track("CreateGroup", self.create_group(&caller, req))
            .await
    }

    async fn delete_group(
        &self,
        r: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let (caller, req) = Caller::split(r);
        self.ctx
            .track("DeleteGroup", self.delete_group(&caller, req))
            .await
    }

    async fn set_group_cursor(
        &self,
        r: Request<pb::SetGroupCursorRequest>,
    ) -> Result<Response<pb::SetGroupCursorResponse>, Status> {
        let (caller, req) = Caller::split(r);
        self.ctx
            .track("SetGroupCursor", self.set_group_cursor(&caller, req))
            .await
    }

    async fn describe_stream(
        &self,
        r: Request<pb::DescribeStreamRequest>,
    ) -> Result<Response<pb::DescribeStreamResponse>, Status> {
        let (caller, req) = Caller::split(r);
        self.ctx
            .track("DescribeStream", self.describe_stream(&caller, req))
            .await
    }

    async fn list_groups(
        &self,
        r: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let (caller, req) = Caller::split(r);
        self.ctx
            .track("ListGroups", self.list_groups(&caller, req))
            .await
    }

    async fn list_consumers(
        &self,
        r: Request<pb::ListConsumersRequest>,
    ) -> Result<Response<pb::ListConsumersResponse>, Status> {
        let (caller, req) = Caller::split(r);
        self.ctx
            .track("ListConsumers", self.list_consumers(&caller, req))
            .await
    }

    async fn list_pending(
        &self,
        r: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, Status> {
        let (caller, req) = Caller::split(r);
        self.ctx
            .track("ListPending", self.list_pending(&caller, req))
            .await
    }

    async fn remove_consumer(
        &self,
        r: Request<pb::RemoveConsumerRequest>,
    ) -> Result<Response<pb::RemoveConsumerResponse>, Status> {
        let (caller, req) = Caller::split(r);
        self.ctx
            .track("RemoveConsumer", self.remove_consumer(&caller, req))
            .await
    }
}
