//! `streamgate.v1.StreamAdmin`: group administration and inspection.

use tonic::{Request, Response, Status};

use super::{Context, bounded, required};
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

    async fn create_group(&self, req: pb::CreateGroupRequest) -> Result<pb::CreateGroupResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let start = GroupStart::parse("start_id", &req.start_id)?;
        let mkstream = req.mkstream.unwrap_or(true);
        let created = self
            .ctx
            .broker
            .create_group(stream, group, start, mkstream)
            .await?;
        Ok(pb::CreateGroupResponse { created })
    }

    async fn delete_group(&self, req: pb::DeleteGroupRequest) -> Result<pb::DeleteGroupResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let deleted = self.ctx.broker.delete_group(stream, group).await?;
        Ok(pb::DeleteGroupResponse { deleted })
    }

    async fn set_group_cursor(
        &self,
        req: pb::SetGroupCursorRequest,
    ) -> Result<pb::SetGroupCursorResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let id = GroupStart::parse("id", required("id", &req.id)?)?;
        self.ctx.broker.set_group_cursor(stream, group, id).await?;
        Ok(pb::SetGroupCursorResponse {})
    }

    async fn describe_stream(
        &self,
        req: pb::DescribeStreamRequest,
    ) -> Result<pb::DescribeStreamResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        Ok(self.ctx.broker.describe_stream(stream).await?.into())
    }

    async fn list_groups(&self, req: pb::ListGroupsRequest) -> Result<pb::ListGroupsResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        let groups = self.ctx.broker.list_groups(stream).await?;
        Ok(pb::ListGroupsResponse {
            groups: groups.into_iter().map(Into::into).collect(),
        })
    }

    async fn list_consumers(
        &self,
        req: pb::ListConsumersRequest,
    ) -> Result<pb::ListConsumersResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let consumers = self.ctx.broker.list_consumers(stream, group).await?;
        Ok(pb::ListConsumersResponse {
            consumers: consumers.into_iter().map(Into::into).collect(),
        })
    }

    async fn list_pending(&self, req: pb::ListPendingRequest) -> Result<pb::ListPendingResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let consumer = match &req.consumer {
            Some(c) => Some(required("consumer", c)?.to_owned()),
            None => None,
        };
        let filter = PendingFilter {
            consumer,
            min_idle_ms: req.min_idle_ms,
            range: IdRange::parse("start", &req.start, "end", &req.end)?,
            count: bounded(
                "count",
                req.count,
                DEFAULT_PENDING_COUNT,
                self.ctx.settings.max_batch_size,
            )?,
        };
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
        req: pb::RemoveConsumerRequest,
    ) -> Result<pb::RemoveConsumerResponse> {
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let consumer = required("consumer", &req.consumer)?;
        let handover_to = (!req.handover_to.is_empty()).then_some(req.handover_to.as_str());
        if handover_to == Some(consumer) {
            return Err(Error::invalid("handover_to", "must differ from consumer"));
        }
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
        self.ctx
            .track("CreateGroup", self.create_group(r.into_inner()))
            .await
    }

    async fn delete_group(
        &self,
        r: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        self.ctx
            .track("DeleteGroup", self.delete_group(r.into_inner()))
            .await
    }

    async fn set_group_cursor(
        &self,
        r: Request<pb::SetGroupCursorRequest>,
    ) -> Result<Response<pb::SetGroupCursorResponse>, Status> {
        self.ctx
            .track("SetGroupCursor", self.set_group_cursor(r.into_inner()))
            .await
    }

    async fn describe_stream(
        &self,
        r: Request<pb::DescribeStreamRequest>,
    ) -> Result<Response<pb::DescribeStreamResponse>, Status> {
        self.ctx
            .track("DescribeStream", self.describe_stream(r.into_inner()))
            .await
    }

    async fn list_groups(
        &self,
        r: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        self.ctx
            .track("ListGroups", self.list_groups(r.into_inner()))
            .await
    }

    async fn list_consumers(
        &self,
        r: Request<pb::ListConsumersRequest>,
    ) -> Result<Response<pb::ListConsumersResponse>, Status> {
        self.ctx
            .track("ListConsumers", self.list_consumers(r.into_inner()))
            .await
    }

    async fn list_pending(
        &self,
        r: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, Status> {
        self.ctx
            .track("ListPending", self.list_pending(r.into_inner()))
            .await
    }

    async fn remove_consumer(
        &self,
        r: Request<pb::RemoveConsumerRequest>,
    ) -> Result<Response<pb::RemoveConsumerResponse>, Status> {
        self.ctx
            .track("RemoveConsumer", self.remove_consumer(r.into_inner()))
            .await
    }
}
