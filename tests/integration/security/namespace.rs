//! Stream names are validated so that no request reaches a key outside
//! `--key-prefix` or forges a bookkeeping key inside it.

use streamgate::pb;
use tonic::Code;

use super::{Rpc, all_keys};
use crate::common::{RedisServer, TestGateway, config, event, orders, produce, sub};

#[tokio::test]
async fn invalid_stream_names_are_invalid_argument_on_every_rpc_and_write_nothing() {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    config.key_prefix = "app:".into();
    let gw = TestGateway::start(config).await;
    let too_long = "s".repeat(257);
    let names = [
        "{app:orders}:nack:g",
        "orders}",
        "with space",
        "tab\there",
        "new\nline",
        "nul\0",
        "caf\u{e9}",
        "\u{202e}rtl",
        too_long.as_str(),
        "",
    ];
    for rpc in Rpc::ALL {
        for name in names {
            let status = rpc
                .call(&gw.channel, name, None)
                .await
                .expect_err(&format!("{rpc:?} accepted {name:?}"));
            assert_eq!(status.code(), Code::InvalidArgument, "{rpc:?} {name:?}");
            assert!(
                status.message().starts_with("invalid stream"),
                "{rpc:?}: {}",
                status.message()
            );
        }
    }
    assert!(all_keys(&redis).is_empty(), "{:?}", all_keys(&redis));
    // The longest allowed name works.
    let longest = "s".repeat(256);
    Rpc::Produce
        .call(&gw.channel, &longest, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_dead_letter_stream_is_validated_like_any_stream() {
    let (redis, mut gw) = crate::common::setup().await;
    for name in ["{orders}:nack:g", "has space", "x".repeat(300).as_str()] {
        let mut req = sub("orders", "g", "c");
        req.dead_letter_stream = name.to_owned();
        let status = gw.events.subscribe(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("invalid dead_letter_stream"),
            "{}",
            status.message()
        );
    }
    assert!(all_keys(&redis).is_empty());
}

/// A stream name may be 256 bytes long, so `<stream>:dlq` may not fit: a
/// reclaiming Subscribe that relies on that default is told to name its
/// dead-letter stream, and one that names it is served.
#[tokio::test]
async fn a_default_dead_letter_stream_over_the_limit_must_be_named() {
    let (redis, mut gw) = crate::common::setup().await;
    let reclaiming = |stream: &str, dead_letter_stream: &str| {
        let mut req = sub(stream, "g", "c");
        req.reclaim = Some(pb::Reclaim {
            min_idle_ms: 60_000,
            interval_ms: 0,
        });
        req.dead_letter_stream = dead_letter_stream.to_owned();
        req
    };
    for len in [253, 256] {
        let status = gw
            .events
            .subscribe(reclaiming(&"s".repeat(len), ""))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{len}: {status:?}");
        let message = status.message();
        assert!(
            message.starts_with("invalid dead_letter_stream")
                && message.contains(&format!("would be {} bytes long", len + 4))
                && message.contains("set dead_letter_stream"),
            "{message}"
        );
    }
    assert!(all_keys(&redis).is_empty(), "{:?}", all_keys(&redis));

    let longest = "s".repeat(256);
    for req in [
        reclaiming(&longest, "dead"),
        // The default fits exactly.
        reclaiming(&"s".repeat(252), ""),
        // Without reclaim nothing is dead-lettered: the default is unused.
        sub(&longest, "g2", "c"),
    ] {
        let stream = req.stream.len();
        gw.events
            .subscribe(req)
            .await
            .unwrap_or_else(|e| panic!("a {stream}-byte stream: {e:?}"));
    }
}

/// Exercises every kind of key the gateway writes (stream, idempotency
/// key, Nack schedule, dead letters, groups) under a prefix and checks
/// that every key in Redis starts with it.
#[tokio::test]
async fn every_key_the_gateway_writes_starts_with_the_prefix() {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    config.key_prefix = "tenant-a:".into();
    let mut gw = TestGateway::start(config).await;
    let mut keyed = event("order.paid", &[("order_id", "o-1")]);
    keyed.idempotency_key = "pay-o-1".into();
    let mut ids = produce(&mut gw, "orders", orders(2)).await;
    ids.extend(produce(&mut gw, "orders", vec![keyed]).await);

    let mut req = sub("orders", "g", "c");
    req.reclaim = Some(pb::Reclaim {
        min_idle_ms: 1,
        interval_ms: 10,
    });
    req.max_deliveries = 1;
    req.dead_letter_stream = "dead".into();
    let mut stream = gw.events.subscribe(req).await.unwrap().into_inner();
    crate::common::take_entries(&mut stream, 3).await;
    gw.events
        .nack(pb::NackRequest {
            stream: "orders".into(),
            group: "g".into(),
            consumer: "c".into(),
            ids: vec![ids[0].clone()],
            delay_ms: 60_000,
        })
        .await
        .unwrap();
    // With max_deliveries 1, reclaimed entries go to the dead-letter stream.
    crate::common::eventually("dead letters", || {
        let keys = all_keys(&redis);
        async move { keys.contains("tenant-a:dead").then_some(()) }
    })
    .await;
    let keys = all_keys(&redis);
    assert!(keys.len() >= 3, "{keys:?}");
    for key in &keys {
        assert!(
            key.starts_with("tenant-a:"),
            "{key:?} escapes the prefix ({keys:?})"
        );
    }
}
