//! The `/metrics` endpoint: counters move with traffic, gauges follow Redis.

use std::net::SocketAddr;

use streamgate::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Request};

use crate::common::{
    RedisServer, TestGateway, config, event, eventually, ids, orders, produce, sub, subscribe,
    take_entries, token_sha256,
};

/// One scrape over plain HTTP/1.1.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to /metrics");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: streamgate\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("application/openmetrics-text"),
        "{response}"
    );
    response
}

/// The value of the sample `series` (name with labels), if exported.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn gateway_with_metrics() -> (RedisServer, TestGateway, SocketAddr) {
    let redis = RedisServer::start();
    let mut cfg = config(&redis);
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.metrics_poll_ms = 100;
    let gw = TestGateway::start(cfg).await;
    let addr = gw
        .gateway
        .as_ref()
        .unwrap()
        .metrics_addr()
        .expect("metrics enabled");
    (redis, gw, addr)
}

#[tokio::test]
async fn counters_move_with_traffic() {
    let (_redis, mut gw, addr) = gateway_with_metrics().await;
    produce(&mut gw, "orders", orders(5)).await;
    let bad = gw.events.produce(pb::ProduceRequest::default()).await;
    assert!(bad.is_err());

    let mut s = subscribe(&mut gw, sub("orders", "g", "w")).await;
    let got = take_entries(&mut s, 5).await;
    let text = scrape(addr).await;
    assert_eq!(
        sample(&text, "streamgate_entries_produced_total"),
        Some(5.0)
    );
    assert_eq!(
        sample(&text, "streamgate_entries_delivered_total"),
        Some(5.0)
    );
    assert_eq!(sample(&text, "streamgate_open_subscriptions"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            r#"streamgate_rpc_requests_total{rpc="Produce",code="Ok"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"streamgate_rpc_requests_total{rpc="Produce",code="InvalidArgument"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"streamgate_rpc_duration_seconds_count{rpc="Produce",code="Ok"}"#
        ),
        Some(1.0)
    );

    gw.events
        .ack(pb::AckRequest {
            stream: "orders".into(),
            group: "g".into(),
            ids: ids(&got[..2]),
        })
        .await
        .unwrap();
    drop(s);
    let text = eventually(
        "the closed subscription is no longer counted",
        || async move {
            let text = scrape(addr).await;
            (sample(&text, "streamgate_open_subscriptions") == Some(0.0)).then_some(text)
        },
    )
    .await;
    assert_eq!(sample(&text, "streamgate_entries_acked_total"), Some(2.0));

    let reaped = gw
        .events
        .reap(pb::ReapRequest {
            stream: "orders".into(),
            group: "g".into(),
            consumer: "w2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reaped.claimed.len(), 3);
    let text = scrape(addr).await;
    assert_eq!(
        sample(&text, "streamgate_entries_reclaimed_total"),
        Some(3.0)
    );
    assert_eq!(sample(&text, "streamgate_redis_up"), Some(1.0));
}

#[tokio::test]
async fn group_gauges_follow_redis_and_disappear_with_the_group() {
    let (redis, mut gw, addr) = gateway_with_metrics().await;
    produce(&mut gw, "orders", orders(10)).await;
    crate::common::read_directly(&redis, "orders", "g", "w", 4);
    let pending = r#"streamgate_group_pending{stream="orders",group="g"}"#;
    let lag = r#"streamgate_group_lag{stream="orders",group="g"}"#;
    let idle = r#"streamgate_group_oldest_pending_idle_seconds{stream="orders",group="g"}"#;
    let text = eventually("the poller exported the group", || async move {
        let text = scrape(addr).await;
        (sample(&text, pending) == Some(4.0) && sample(&text, idle).is_some_and(|s| s > 0.0))
            .then_some(text)
    })
    .await;
    assert_eq!(sample(&text, lag), Some(6.0));
    assert_eq!(
        sample(&text, r#"streamgate_stream_length{stream="orders"}"#),
        Some(10.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"streamgate_group_consumers{stream="orders",group="g"}"#
        ),
        Some(1.0)
    );

    gw.admin
        .delete_group(pb::DeleteGroupRequest {
            stream: "orders".into(),
            group: "g".into(),
        })
        .await
        .unwrap();
    eventually("the deleted group's series are gone", || async move {
        let text = scrape(addr).await;
        (sample(&text, pending).is_none() && sample(&text, lag).is_none()).then_some(())
    })
    .await;
}

/// A Produce request for `stream` carrying `token`, if any.
fn produce_as(
    token: Option<&str>,
    stream: &str,
    events: Vec<pb::Event>,
) -> Request<pb::ProduceRequest> {
    let mut request = Request::new(pb::ProduceRequest {
        stream: stream.to_owned(),
        events,
        ..Default::default()
    });
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[tokio::test]
async fn refusals_before_the_handler_are_counted_too() {
    const TOKEN: &str = "tok-metrics-producer-0123456789";
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.toml");
    let policy = format!(
        r#"
[[tokens]]
name = "producer"
sha256 = "{}"
allow = [ {{ streams = "orders", permissions = ["produce"] }} ]
"#,
        token_sha256(TOKEN)
    );
    std::fs::write(&path, policy).unwrap();
    let mut cfg = config(&redis);
    cfg.auth_config = Some(path);
    cfg.max_message_bytes = 64 * 1024;
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let mut gw = TestGateway::start(cfg).await;
    let addr = gw.gateway.as_ref().unwrap().metrics_addr().unwrap();

    // Refused by the auth interceptor, twice, on both services.
    for _ in 0..2 {
        let status = gw
            .events
            .produce(produce_as(None, "orders", orders(1)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let status = gw
        .admin
        .describe_stream(pb::DescribeStreamRequest {
            stream: "orders".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // Refused by the message-size layer: tonic stops decoding it.
    let huge = "x".repeat(100 * 1024);
    let status = gw
        .events
        .produce(produce_as(
            Some(TOKEN),
            "orders",
            vec![event("t", &[("blob", &huge)])],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Refused by the handler, and one that passes.
    let status = gw
        .events
        .produce(produce_as(Some(TOKEN), "payments", orders(1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    gw.events
        .produce(produce_as(Some(TOKEN), "orders", orders(1)))
        .await
        .expect("an authorized produce");
    // Health checks are not counted.
    tonic_health::pb::health_client::HealthClient::new(gw.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers");

    let text = scrape(addr).await;
    let requests = |rpc: &str, code: &str| {
        sample(
            &text,
            &format!(r#"streamgate_rpc_requests_total{{rpc="{rpc}",code="{code}"}}"#),
        )
    };
    assert_eq!(requests("Produce", "Unauthenticated"), Some(2.0), "{text}");
    assert_eq!(
        requests("DescribeStream", "Unauthenticated"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        requests("Produce", "ResourceExhausted"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(requests("Produce", "PermissionDenied"), Some(1.0), "{text}");
    assert_eq!(requests("Produce", "Ok"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"streamgate_rpc_duration_seconds_count{rpc="Produce",code="ResourceExhausted"}"#
        ),
        Some(1.0)
    );
    assert!(
        !text.contains("Health"),
        "health checks are not counted: {text}"
    );
    assert!(!text.contains(r#"rpc="Check""#), "{text}");
}
