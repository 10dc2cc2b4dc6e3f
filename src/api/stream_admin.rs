//! `streamgate.v1.StreamAdmin`: group administration and inspection.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{ApiSettings, bounded, required};
use crate::broker::{Broker, PendingFilter};
use crate::error::Error;
use crate::ids::{GroupStart, IdRange};
use crate::pb::{self, stream_admin_server::StreamAdmin};

/// Default rows of ListPending.
const DEFAULT_PENDING_COUNT: u32 = 100;

/// Implements the StreamAdmin service on a [`Broker`].
#[derive(Clone)]
pub struct StreamAdminService {
    broker: Broker,
    settings: Arc<ApiSettings>,
}

impl StreamAdminService {
    /// A service answering from `broker`.
    pub fn new(broker: Broker, settings: Arc<ApiSettings>) -> Self {
        StreamAdminService { broker, settings }
    }
}

#[tonic::async_trait]
impl StreamAdmin for StreamAdminService {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let req = request.into_inner();
        let stream = required("stream", &req.stream)?;
        let group = required("group", &req.group)?;
        let start = GroupStart::parse("start_id", &req.start_id)?;
        let created = self
            .broker
            .create_group(stream, group, start, req.mkstream.unwrap_or(true))
            .await?;
        Ok(Response::new(pb::CreateGroupResponse { created }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let req = request.into_inner();
        let stream = required("stream", &req.stream)?;
        let group = required("group", &req.group)?;
        let deleted = self.broker.delete_group(stream, group).await?;
        Ok(Response::new(pb::DeleteGroupResponse { deleted }))
    }

    async fn set_group_cursor(
        &self,
        request: Request<pb::SetGroupCursorRequest>,
    ) -> Result<Response<pb::SetGroupCursorResponse>, Status> {
        let req = request.into_inner();
        let stream = required("stream", &req.stream)?;
        let group = required("group", &req.group)?;
        let id = GroupStart::parse("id", required("id", &req.id)?)?;
        self.broker.set_group_cursor(stream, group, id).await?;
        Ok(Response::new(pb::SetGroupCursorResponse {}))
    }

    async fn describe_stream(
        &self,
        request: Request<pb::DescribeStreamRequest>,
    ) -> Result<Response<pb::DescribeStreamResponse>, Status> {
        let req = request.into_inner();
        let stream = required("stream", &req.stream)?;
        let info = self.broker.describe_stream(stream).await?;
        Ok(Response::new(info.into()))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let req = request.into_inner();
        let stream = required("stream", &req.stream)?;
        let groups = self.broker.list_groups(stream).await?;
        Ok(Response::new(pb::ListGroupsResponse {
            groups: groups.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_consumers(
        &self,
        request: Request<pb::ListConsumersRequest>,
    ) -> Result<Response<pb::ListConsumersResponse>, Status> {
        let req = request.into_inner();
        let stream = required("stream", &req.stream)?;
        let group = required("group", &req.group)?;
        let consumers = self.broker.list_consumers(stream, group).await?;
        Ok(Response::new(pb::ListConsumersResponse {
            consumers: consumers.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_pending(
        &self,
        request: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, Status> {
        let req = request.into_inner();
        let stream = required("stream", &req.stream)?;
        let group = required("group", &req.group)?;
        let consumer = match &req.consumer {
            Some(c) => Some(required("consumer", c)?.to_owned()),
            None => None,
        };
        let range = IdRange::parse("start", &req.start, "end", &req.end)?;
        let filter = PendingFilter {
            consumer,
            min_idle_ms: req.min_idle_ms,
            range,
            count: bounded(
                "count",
                req.count,
                DEFAULT_PENDING_COUNT,
                self.settings.max_batch_size,
            )?,
        };
        let entries = if range.is_empty() {
            Vec::new()
        } else {
            self.broker.list_pending(stream, group, &filter).await?
        };
        Ok(Response::new(pb::ListPendingResponse {
            entries: entries.into_iter().map(Into::into).collect(),
        }))
    }

    async fn remove_consumer(
        &self,
        request: Request<pb::RemoveConsumerRequest>,
    ) -> Result<Response<pb::RemoveConsumerResponse>, Status> {
        let req = request.into_inner();
        let stream = required("stream", &req.stream)?;
        let group = required("group", &req.group)?;
        let consumer = required("consumer", &req.consumer)?;
        let handover_to = (!req.handover_to.is_empty()).then_some(req.handover_to.as_str());
        if handover_to == Some(consumer) {
            return Err(Error::invalid("handover_to", "must differ from consumer").into());
        }
        let handed_over = self
            .broker
            .remove_consumer(stream, group, consumer, handover_to)
            .await?;
        Ok(Response::new(pb::RemoveConsumerResponse {
            removed: true,
            handed_over,
        }))
    }
}
