//! Security: TLS on the gRPC listener and towards Redis, bearer-token
//! authentication, per-stream authorization, the stream-name namespace and
//! request limits. Helpers shared by those files live here.

mod auth;
mod limits;
mod namespace;
mod pki;
mod redis_tls;
mod reload;
mod tls;

use std::collections::HashSet;

use streamgate::pb::{self, event_stream_client::EventStreamClient};
use streamgate::pb::{stream_admin_client::StreamAdminClient, trim_request};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::common::RedisServer;

/// A request carrying `authorization: <value>` when `value` is set.
pub fn with_auth<T>(message: T, value: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = value {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Every RPC of both services, each with a small valid request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    Produce,
    Subscribe,
    Ack,
    Nack,
    Extend,
    Reap,
    Replay,
    Tail,
    Trim,
    CreateGroup,
    DeleteGroup,
    SetGroupCursor,
    DescribeStream,
    ListGroups,
    ListConsumers,
    ListPending,
    RemoveConsumer,
    ProduceStream,
    Consume,
}

impl Rpc {
    pub const ALL: [Rpc; 19] = [
        Rpc::Produce,
        Rpc::Subscribe,
        Rpc::Ack,
        Rpc::Nack,
        Rpc::Extend,
        Rpc::Reap,
        Rpc::Replay,
        Rpc::Tail,
        Rpc::Trim,
        Rpc::CreateGroup,
        Rpc::DeleteGroup,
        Rpc::SetGroupCursor,
        Rpc::DescribeStream,
        Rpc::ListGroups,
        Rpc::ListConsumers,
        Rpc::ListPending,
        Rpc::RemoveConsumer,
        Rpc::ProduceStream,
        Rpc::Consume,
    ];

    /// The permission the contract says this RPC needs.
    pub fn permission(self) -> &'static str {
        match self {
            Rpc::Produce | Rpc::ProduceStream => "produce",
            Rpc::Subscribe
            | Rpc::Consume
            | Rpc::Ack
            | Rpc::Nack
            | Rpc::Extend
            | Rpc::Reap
            | Rpc::Replay
            | Rpc::Tail => "consume",
            _ => "admin",
        }
    }

    /// Calls this RPC on `stream` with the given `authorization` value.
    /// Streaming RPCs return once the stream is set up (or refused);
    /// ProduceStream once its one request is answered, a refusal in band
    /// becoming the status.
    pub async fn call(
        self,
        channel: &Channel,
        stream: &str,
        auth: Option<&str>,
    ) -> Result<(), Status> {
        let mut events = EventStreamClient::new(channel.clone());
        let mut admin = StreamAdminClient::new(channel.clone());
        let s = stream.to_owned();
        let (g, c) = ("g".to_owned(), "c".to_owned());
        let ids = vec!["1-1".to_owned()];
        match self {
            Rpc::Produce => events
                .produce(with_auth(
                    pb::ProduceRequest {
                        stream: s,
                        events: vec![crate::common::event("t", &[("k", "v")])],
                        ..Default::default()
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::Subscribe => events
                .subscribe(with_auth(crate::common::sub(&s, &g, &c), auth))
                .await
                .map(drop),
            Rpc::Ack => events
                .ack(with_auth(
                    pb::AckRequest {
                        stream: s,
                        group: g,
                        ids,
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::Nack => events
                .nack(with_auth(
                    pb::NackRequest {
                        stream: s,
                        group: g,
                        consumer: c,
                        ids,
                        delay_ms: 0,
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::Extend => events
                .extend(with_auth(
                    pb::ExtendRequest {
                        stream: s,
                        group: g,
                        consumer: c,
                        ids,
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::Reap => events
                .reap(with_auth(
                    pb::ReapRequest {
                        stream: s,
                        group: g,
                        consumer: c,
                        ..Default::default()
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::Replay => events
                .replay(with_auth(
                    pb::ReplayRequest {
                        stream: s,
                        ..Default::default()
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::Tail => events
                .tail(with_auth(
                    pb::TailRequest {
                        stream: s,
                        ..Default::default()
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::Trim => events
                .trim(with_auth(
                    pb::TrimRequest {
                        stream: s,
                        strategy: Some(trim_request::Strategy::MaxLen(100)),
                        ..Default::default()
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::CreateGroup => admin
                .create_group(with_auth(
                    pb::CreateGroupRequest {
                        stream: s,
                        group: g,
                        ..Default::default()
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::DeleteGroup => admin
                .delete_group(with_auth(
                    pb::DeleteGroupRequest {
                        stream: s,
                        group: g,
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::SetGroupCursor => admin
                .set_group_cursor(with_auth(
                    pb::SetGroupCursorRequest {
                        stream: s,
                        group: g,
                        id: "0".into(),
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::DescribeStream => admin
                .describe_stream(with_auth(pb::DescribeStreamRequest { stream: s }, auth))
                .await
                .map(drop),
            Rpc::ListGroups => admin
                .list_groups(with_auth(pb::ListGroupsRequest { stream: s }, auth))
                .await
                .map(drop),
            Rpc::ListConsumers => admin
                .list_consumers(with_auth(
                    pb::ListConsumersRequest {
                        stream: s,
                        group: g,
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::ListPending => admin
                .list_pending(with_auth(
                    pb::ListPendingRequest {
                        stream: s,
                        group: g,
                        ..Default::default()
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::RemoveConsumer => admin
                .remove_consumer(with_auth(
                    pb::RemoveConsumerRequest {
                        stream: s,
                        group: g,
                        consumer: c,
                        ..Default::default()
                    },
                    auth,
                ))
                .await
                .map(drop),
            Rpc::ProduceStream => {
                let request = pb::ProduceRequest {
                    stream: s,
                    events: vec![crate::common::event("t", &[("k", "v")])],
                    ..Default::default()
                };
                let requests = tokio_stream::iter([request]);
                let mut answers = events
                    .produce_stream(with_auth(requests, auth))
                    .await?
                    .into_inner();
                let answer = answers.message().await?.expect("one answer");
                match answer.code {
                    0 => Ok(()),
                    code => Err(Status::new(
                        tonic::Code::from_i32(code as i32),
                        answer.message,
                    )),
                }
            }
            Rpc::Consume => {
                let open = pb::ConsumeRequest {
                    kind: Some(pb::consume_request::Kind::Open(crate::common::sub(
                        &s, &g, &c,
                    ))),
                };
                // The request side stays open: a half-close would end the
                // stream before the test looks at it.
                let requests = tokio_stream::iter([open]).chain(tokio_stream::pending());
                events.consume(with_auth(requests, auth)).await.map(drop)
            }
        }
    }
}

/// Every key in Redis, lossily decoded (test Redis servers are small).
pub fn all_keys(redis: &RedisServer) -> HashSet<String> {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.conn())
        .unwrap();
    keys.iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}
