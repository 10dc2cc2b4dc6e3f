//! The gateway as a process: health, reflection, graceful shutdown, and the
//! real binary end to end.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use streamgate::pb;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::common::{
    DEADLINE, RedisServer, eventually, next_batch, orders, produce, setup, sub, subscribe,
};

#[tokio::test]
async fn health_reports_serving_for_the_server_and_each_service() {
    let (_redis, gw) = setup().await;
    let mut health = HealthClient::new(gw.channel.clone());
    // Every service is known from the start (NOT_SERVING until Redis has
    // answered a PING), then SERVING.
    for service in ["", "streamgate.v1.EventStream", "streamgate.v1.StreamAdmin"] {
        eventually("SERVING", || {
            let mut health = health.clone();
            async move {
                let r = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .expect("a known service");
                (r.into_inner().status() == ServingStatus::Serving).then_some(())
            }
        })
        .await;
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_the_services_in_both_protocol_versions() {
    use tonic_reflection::pb::{v1, v1alpha};
    let (_redis, gw) = setup().await;

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(gw.channel.clone());
    let mut replies = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        replies.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "streamgate.v1.EventStream",
        "streamgate.v1.StreamAdmin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(gw.channel.clone());
    let mut replies = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        replies.next().await.unwrap().unwrap().message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(_))
    ));
}

#[tokio::test]
async fn shutdown_ends_open_subscriptions_with_unavailable_and_stops() {
    let (_redis, mut gw) = setup().await;
    produce(&mut gw, "orders", orders(1)).await;
    let mut first = subscribe(&mut gw, sub("orders", "g", "a")).await;
    let mut second = subscribe(&mut gw, sub("orders", "other", "b")).await;
    next_batch(&mut first).await.unwrap();
    next_batch(&mut second).await.unwrap();
    gw.stop().await;
    for s in [&mut first, &mut second] {
        let status = next_batch(s).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
}

/// The real binary: prints its address, serves, and exits 0 on SIGTERM.
#[tokio::test]
async fn the_binary_serves_and_exits_cleanly_on_sigterm() {
    let redis = RedisServer::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            &redis.url(),
            "--block-ms",
            "200",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the binary");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::event_stream_client::EventStreamClient::new(channel);
    let produced = client
        .produce(pb::ProduceRequest {
            stream: "orders".into(),
            events: orders(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ids;
    assert_eq!(produced.len(), 2);
    let mut open = client
        .subscribe(sub("orders", "g", "w"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_batch(&mut open).await.unwrap().len(), 2);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        next_batch(&mut open).await.unwrap_err().code(),
        Code::Unavailable
    );
    let exit = tokio::time::timeout(DEADLINE, tokio::task::spawn_blocking(move || child.wait()))
        .await
        .expect("exits within the deadline")
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn the_binary_refuses_to_start_with_a_bad_redis_url() {
    let output = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            "http://nowhere",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("redis-url"), "{stderr}");
}

/// A pair of flags clap cannot check alone is refused by
/// `Settings::validate` before anything starts, with one line naming both.
#[tokio::test]
async fn the_binary_refuses_a_buffer_smaller_than_one_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args([
            "--max-message-bytes",
            "8192",
            "--max-buffered-bytes",
            "4096",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "nothing was announced");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("streamgate: invalid setting max_buffered_bytes (--max-buffered-bytes)")
            && stderr.contains("--max-message-bytes"),
        "{stderr}"
    );
}
