//! Random and malformed requests for every RPC of both services, and how
//! to send one.

use std::time::Duration;

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use streamgate::pb::stream_admin_client::StreamAdminClient;
use streamgate::pb::{self, event_stream_client::EventStreamClient, trim_request};
use tonic::Status;
use tonic::transport::Channel;

/// One request to one RPC.
#[derive(Clone, Debug)]
pub enum Call {
    Produce(pb::ProduceRequest),
    Subscribe(pb::SubscribeRequest),
    Ack(pb::AckRequest),
    Nack(pb::NackRequest),
    Extend(pb::ExtendRequest),
    Reap(pb::ReapRequest),
    Replay(pb::ReplayRequest),
    Tail(pb::TailRequest),
    Trim(pb::TrimRequest),
    CreateGroup(pb::CreateGroupRequest),
    DeleteGroup(pb::DeleteGroupRequest),
    SetGroupCursor(pb::SetGroupCursorRequest),
    DescribeStream(pb::DescribeStreamRequest),
    ListGroups(pb::ListGroupsRequest),
    ListConsumers(pb::ListConsumersRequest),
    ListPending(pb::ListPendingRequest),
    RemoveConsumer(pb::RemoveConsumerRequest),
}

/// Names: mostly ones that exist (so calls reach Redis), plus arbitrary
/// unicode and control characters, hash-tag braces, lengths around the
/// 256-byte stream-name limit, and large strings.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        12 => select(vec!["s1", "s2", "g", "c", "d", "s1:dlq", "str", "0", "$"])
            .prop_map(String::from),
        3 => "[a-z0-9:._-]{1,12}",
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => r"[{}*? \t\r\n\x00\x7f\u{e9}\u{202e}]{1,6}",
        1 => (250usize..262).prop_map(|n| "n".repeat(n)),
        1 => (1usize..64 * 1024).prop_map(|n| "x".repeat(n)),
    ]
    .boxed()
}

/// Stream IDs: the special ones, well-formed, out of range and garbage.
fn id() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(vec!["-", "+", "$", ">", "0", "0-0", "", "0-1", "1-1"]).prop_map(String::from),
        3 => "[0-9]{1,3}-[0-9]{1,3}",
        2 => "[0-9]{1,20}(-[0-9]{1,20})?",
        1 => select(vec![
            "18446744073709551615-18446744073709551615",
            "18446744073709551616-0",
            "-1",
            "1-",
            "1--1",
            "(1-1",
        ])
        .prop_map(String::from),
        1 => "[-+$>0-9a-z]{0,8}",
        1 => any::<String>(),
    ]
    .boxed()
}

fn u32s() -> BoxedStrategy<u32> {
    prop_oneof![Just(0u32), 1u32..20, any::<u32>()].boxed()
}

fn u64s() -> BoxedStrategy<u64> {
    prop_oneof![Just(0u64), 1u64..100, any::<u64>()].boxed()
}

fn optional_text() -> BoxedStrategy<String> {
    prop_oneof![2 => Just(String::new()), 1 => text()].boxed()
}

fn event() -> impl Strategy<Value = pb::Event> {
    (
        text(),
        btree_map(text(), text(), 0..4),
        btree_map(text(), vec(any::<u8>(), 0..16), 0..2),
        optional_text(),
        optional_text(),
    )
        .prop_map(
            |(r#type, fields, binary_fields, idempotency_key, key)| pb::Event {
                r#type,
                fields,
                binary_fields,
                idempotency_key,
                key,
            },
        )
}

/// Any call, each RPC about equally often.
pub fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        (
            text(),
            vec(event(), 0..4),
            option::of(u64s()),
            any::<bool>()
        )
            .prop_map(|(stream, events, max_len, exact)| Call::Produce(
                pb::ProduceRequest {
                    stream,
                    events,
                    max_len,
                    exact,
                }
            )),
        (
            (text(), text(), text(), u32s(), any::<bool>(), id()),
            (
                any::<bool>(),
                option::of((u64s(), u64s())),
                u32s(),
                optional_text(),
                u32s(),
                option::of(u32s()),
                any::<bool>(),
            )
        )
            .prop_map(
                |((stream, group, consumer, batch_size, create_group, group_start_id), rest)| {
                    let (
                        pending_first,
                        reclaim,
                        max_deliveries,
                        dead_letter_stream,
                        max_in_flight,
                        heartbeat_ms,
                        ordered,
                    ) = rest;
                    Call::Subscribe(pb::SubscribeRequest {
                        stream,
                        group,
                        consumer,
                        batch_size,
                        create_group,
                        group_start_id,
                        pending_first,
                        reclaim: reclaim.map(|(min_idle_ms, interval_ms)| pb::Reclaim {
                            min_idle_ms,
                            interval_ms,
                        }),
                        max_deliveries,
                        dead_letter_stream,
                        max_in_flight,
                        heartbeat_ms,
                        ordered,
                    })
                }
            ),
        (text(), text(), vec(id(), 0..4))
            .prop_map(|(stream, group, ids)| Call::Ack(pb::AckRequest { stream, group, ids })),
        (text(), text(), text(), vec(id(), 0..4), u64s()).prop_map(
            |(stream, group, consumer, ids, delay_ms)| Call::Nack(pb::NackRequest {
                stream,
                group,
                consumer,
                ids,
                delay_ms,
            })
        ),
        (text(), text(), text(), vec(id(), 0..4)).prop_map(|(stream, group, consumer, ids)| {
            Call::Extend(pb::ExtendRequest {
                stream,
                group,
                consumer,
                ids,
            })
        }),
        (text(), text(), text(), u64s(), u32s(), u32s(), id()).prop_map(
            |(stream, group, consumer, min_idle_ms, page_count, max_pages, start_id)| {
                Call::Reap(pb::ReapRequest {
                    stream,
                    group,
                    consumer,
                    min_idle_ms,
                    page_count,
                    max_pages,
                    start_id,
                })
            }
        ),
        (text(), id(), id(), u64s(), any::<bool>(), u32s()).prop_map(
            |(stream, start, end, limit, reverse, page_size)| Call::Replay(pb::ReplayRequest {
                stream,
                start,
                end,
                limit,
                reverse,
                page_size,
            })
        ),
        (text(), id(), u32s(), option::of(u32s())).prop_map(
            |(stream, start_id, batch_size, heartbeat_ms)| Call::Tail(pb::TailRequest {
                stream,
                start_id,
                batch_size,
                heartbeat_ms,
            })
        ),
        (
            text(),
            any::<bool>(),
            u64s(),
            any::<bool>(),
            option::of(prop_oneof![
                u64s().prop_map(trim_request::Strategy::MaxLen),
                id().prop_map(trim_request::Strategy::MinId),
            ])
        )
            .prop_map(|(stream, exact, limit, acked_by_all_groups, strategy)| {
                Call::Trim(pb::TrimRequest {
                    stream,
                    exact,
                    limit,
                    acked_by_all_groups,
                    strategy,
                })
            }),
        (text(), text(), id(), option::of(any::<bool>())).prop_map(
            |(stream, group, start_id, mkstream)| Call::CreateGroup(pb::CreateGroupRequest {
                stream,
                group,
                start_id,
                mkstream,
            })
        ),
        (text(), text()).prop_map(|(stream, group)| Call::DeleteGroup(pb::DeleteGroupRequest {
            stream,
            group
        })),
        (text(), text(), id()).prop_map(|(stream, group, id)| Call::SetGroupCursor(
            pb::SetGroupCursorRequest { stream, group, id }
        )),
        text().prop_map(|stream| Call::DescribeStream(pb::DescribeStreamRequest { stream })),
        text().prop_map(|stream| Call::ListGroups(pb::ListGroupsRequest { stream })),
        (text(), text()).prop_map(|(stream, group)| Call::ListConsumers(
            pb::ListConsumersRequest { stream, group }
        )),
        (
            text(),
            text(),
            option::of(text()),
            u64s(),
            id(),
            id(),
            u32s()
        )
            .prop_map(
                |(stream, group, consumer, min_idle_ms, start, end, count)| {
                    Call::ListPending(pb::ListPendingRequest {
                        stream,
                        group,
                        consumer,
                        min_idle_ms,
                        start,
                        end,
                        count,
                    })
                }
            ),
        (text(), text(), text(), optional_text()).prop_map(
            |(stream, group, consumer, handover_to)| {
                Call::RemoveConsumer(pb::RemoveConsumerRequest {
                    stream,
                    group,
                    consumer,
                    handover_to,
                })
            }
        ),
    ]
}

/// How long a server stream is read before it is dropped.
const FIRST_MESSAGE: Duration = Duration::from_millis(20);

/// The first message of a server stream, or its status, within
/// [`FIRST_MESSAGE`]; silence is fine.
async fn first<T>(stream: tonic::Streaming<T>) -> Result<(), Status> {
    let mut stream = stream;
    match tokio::time::timeout(FIRST_MESSAGE, stream.message()).await {
        Ok(Err(status)) => Err(status),
        _ => Ok(()),
    }
}

/// Sends `call`; for server streams, also reads a little of the stream.
pub async fn send(channel: &Channel, call: Call) -> Result<(), Status> {
    let mut events = EventStreamClient::new(channel.clone());
    let mut admin = StreamAdminClient::new(channel.clone());
    match call {
        Call::Produce(r) => events.produce(r).await.map(drop),
        Call::Subscribe(r) => first(events.subscribe(r).await?.into_inner()).await,
        Call::Ack(r) => events.ack(r).await.map(drop),
        Call::Nack(r) => events.nack(r).await.map(drop),
        Call::Extend(r) => events.extend(r).await.map(drop),
        Call::Reap(r) => events.reap(r).await.map(drop),
        Call::Replay(r) => first(events.replay(r).await?.into_inner()).await,
        Call::Tail(r) => first(events.tail(r).await?.into_inner()).await,
        Call::Trim(r) => events.trim(r).await.map(drop),
        Call::CreateGroup(r) => admin.create_group(r).await.map(drop),
        Call::DeleteGroup(r) => admin.delete_group(r).await.map(drop),
        Call::SetGroupCursor(r) => admin.set_group_cursor(r).await.map(drop),
        Call::DescribeStream(r) => admin.describe_stream(r).await.map(drop),
        Call::ListGroups(r) => admin.list_groups(r).await.map(drop),
        Call::ListConsumers(r) => admin.list_consumers(r).await.map(drop),
        Call::ListPending(r) => admin.list_pending(r).await.map(drop),
        Call::RemoveConsumer(r) => admin.remove_consumer(r).await.map(drop),
    }
}
