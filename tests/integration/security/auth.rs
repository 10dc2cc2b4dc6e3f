//! Bearer tokens and per-stream permissions.

use std::path::PathBuf;

use streamgate::config::Settings;
use streamgate::pb::{self, event_stream_client::EventStreamClient};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{Rpc, bearer, with_auth};
use crate::common::{RedisServer, TestGateway, config, orders, token_sha256};

/// Tokens of the test config: each grants one permission on `orders.*`,
/// `worker` also may write dead letters, `admin` may administer anything.
pub const PRODUCER: &str = "tok-producer-0123456789";
pub const CONSUMER: &str = "tok-consumer-0123456789";
pub const WORKER: &str = "tok-worker-0123456789";
pub const ADMIN: &str = "tok-admin-0123456789";

/// The auth config text for the tokens above, plus `extra`.
pub fn auth_toml(extra: &str) -> String {
    format!(
        r#"
[[tokens]]
name = "orders-producer"
sha256 = "{}"
allow = [ {{ streams = "orders.*", permissions = ["produce"] }} ]

[[tokens]]
name = "orders-consumer"
sha256 = "{}"
allow = [ {{ streams = "orders.*", permissions = ["consume"] }} ]

[[tokens]]
name = "orders-worker"
sha256 = "{}"
allow = [
  {{ streams = "orders.*", permissions = ["consume"] }},
  {{ streams = "*:dlq", permissions = ["produce"] }},
  {{ streams = "dead.orders", permissions = ["produce"] }},
]

[[tokens]]
name = "ops"
sha256 = "{}"
allow = [ {{ streams = "*", permissions = ["admin"] }} ]
{extra}"#,
        token_sha256(PRODUCER),
        token_sha256(CONSUMER),
        token_sha256(WORKER),
        token_sha256(ADMIN),
    )
}

/// Writes `text` as the auth config of `config`.
fn with_auth_file(mut config: Settings, dir: &tempfile::TempDir, text: &str) -> Settings {
    let path: PathBuf = dir.path().join("auth.toml");
    std::fs::write(&path, text).unwrap();
    config.auth_config = Some(path);
    config
}

async fn secured(extra: &str, anonymous: bool) -> (RedisServer, TestGateway, tempfile::TempDir) {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = with_auth_file(config(&redis), &dir, &auth_toml(extra));
    config.allow_anonymous = anonymous;
    let gw = TestGateway::start(config).await;
    (redis, gw, dir)
}

fn code(result: Result<(), tonic::Status>) -> Code {
    result.err().map_or(Code::Ok, |s| s.code())
}

#[tokio::test]
async fn missing_malformed_or_unknown_tokens_are_unauthenticated_on_every_rpc() {
    let (_redis, gw, _dir) = secured("", false).await;
    let unknown = bearer("tok-nobody");
    for rpc in Rpc::ALL {
        for auth in [
            None,
            Some("Basic b3JkZXJzOnB3"),
            Some("Bearer"),
            Some(unknown.as_str()),
        ] {
            let result = rpc.call(&gw.channel, "orders.eu", auth).await;
            assert_eq!(code(result), Code::Unauthenticated, "{rpc:?} with {auth:?}");
        }
    }
    // The message says what to send, without echoing the token.
    let status = Rpc::Produce
        .call(&gw.channel, "orders.eu", Some(&unknown))
        .await
        .unwrap_err();
    assert_eq!(status.message(), "unknown token");
    let status = Rpc::Produce
        .call(&gw.channel, "orders.eu", None)
        .await
        .unwrap_err();
    assert!(
        status.message().contains("authorization: Bearer"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn health_and_reflection_need_no_token() {
    let (_redis, gw, _dir) = secured("", false).await;
    HealthClient::new(gw.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health without a token");
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(gw.channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection without a token")
        .into_inner();
    assert!(responses.message().await.unwrap().is_some());
}

#[tokio::test]
async fn each_rpc_needs_its_permission_on_the_stream_and_patterns_decide() {
    let (_redis, gw, _dir) = secured("", false).await;
    let tokens = [
        ("produce", PRODUCER),
        ("consume", CONSUMER),
        ("admin", ADMIN),
    ];
    for rpc in Rpc::ALL {
        for (permission, token) in tokens {
            let auth = bearer(token);
            let result = rpc.call(&gw.channel, "orders.eu", Some(&auth)).await;
            if permission == rpc.permission() {
                assert!(
                    !matches!(code(result), Code::PermissionDenied | Code::Unauthenticated),
                    "{rpc:?} must be allowed with {permission}"
                );
            } else {
                let status = result.expect_err(&format!("{rpc:?} refused with {permission}"));
                assert_eq!(status.code(), Code::PermissionDenied, "{rpc:?}: {status:?}");
                let message = status.message();
                assert!(
                    message.contains(rpc.permission()) && message.contains("\"orders.eu\""),
                    "{rpc:?}: the message names the permission and stream: {message}"
                );
            }
        }
        // The pattern `orders.*` covers neither `orders` nor `payments`.
        if rpc.permission() != "admin" {
            let token = if rpc.permission() == "produce" {
                PRODUCER
            } else {
                CONSUMER
            };
            for stream in ["orders", "payments", "xorders.eu"] {
                let result = rpc.call(&gw.channel, stream, Some(&bearer(token))).await;
                assert_eq!(code(result), Code::PermissionDenied, "{rpc:?} on {stream}");
            }
        }
    }
}

#[tokio::test]
async fn a_refused_request_changes_nothing_in_redis() {
    let (redis, gw, _dir) = secured("", false).await;
    for rpc in Rpc::ALL {
        let token = if rpc.permission() == "produce" {
            CONSUMER
        } else {
            PRODUCER
        };
        let _ = rpc
            .call(&gw.channel, "orders.eu", Some(&bearer(token)))
            .await;
    }
    assert!(super::all_keys(&redis).is_empty());
}

#[tokio::test]
async fn reclaiming_subscriptions_also_need_produce_on_the_dead_letter_stream() {
    let (_redis, gw, _dir) = secured("", false).await;
    let mut events = EventStreamClient::new(gw.channel.clone());
    let reclaiming = |dead_letter_stream: &str| {
        let mut req = crate::common::sub("orders.eu", "g", "c");
        req.reclaim = Some(pb::Reclaim {
            min_idle_ms: 60_000,
            interval_ms: 0,
        });
        req.max_deliveries = 3;
        req.dead_letter_stream = dead_letter_stream.to_owned();
        req
    };
    // consume alone: not enough once dead letters may be written.
    let status = events
        .subscribe(with_auth(reclaiming(""), Some(&bearer(CONSUMER))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("produce") && status.message().contains("orders.eu:dlq"),
        "{}",
        status.message()
    );
    // Without reclaim nothing is dead-lettered: consume suffices.
    events
        .subscribe(with_auth(
            crate::common::sub("orders.eu", "g", "c"),
            Some(&bearer(CONSUMER)),
        ))
        .await
        .expect("plain subscribe with consume");
    // worker may write `*:dlq` and `dead.orders`, nothing else.
    for dlq in ["", "dead.orders"] {
        events
            .subscribe(with_auth(reclaiming(dlq), Some(&bearer(WORKER))))
            .await
            .unwrap_or_else(|s| panic!("dead letters to {dlq:?}: {s:?}"));
    }
    let status = events
        .subscribe(with_auth(reclaiming("payments"), Some(&bearer(WORKER))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("\"payments\""),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn anonymous_callers_need_allow_anonymous_and_get_only_the_anonymous_grants() {
    let anonymous = r#"
[anonymous]
allow = [ { streams = "public.*", permissions = ["consume"] } ]
"#;
    let (_redis, gw, _dir) = secured(anonymous, true).await;
    assert_eq!(
        code(Rpc::Replay.call(&gw.channel, "public.news", None).await),
        Code::Ok
    );
    let status = Rpc::Produce
        .call(&gw.channel, "public.news", None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("\"anonymous\""),
        "{}",
        status.message()
    );
    assert_eq!(
        code(Rpc::Replay.call(&gw.channel, "orders.eu", None).await),
        Code::PermissionDenied
    );
    // A bad token is still refused, not downgraded to anonymous.
    let bad = bearer("tok-nobody");
    assert_eq!(
        code(
            Rpc::Replay
                .call(&gw.channel, "public.news", Some(&bad))
                .await
        ),
        Code::Unauthenticated
    );
    // Tokens keep working next to anonymous access.
    let mut events = EventStreamClient::new(gw.channel.clone());
    events
        .produce(with_auth(
            pb::ProduceRequest {
                stream: "orders.eu".into(),
                events: orders(1),
                ..Default::default()
            },
            Some(&bearer(PRODUCER)),
        ))
        .await
        .expect("producer token");

    // The same file without --allow-anonymous: no token, no entry.
    let (_redis, gw, _dir) = secured(anonymous, false).await;
    assert_eq!(
        code(Rpc::Replay.call(&gw.channel, "public.news", None).await),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn without_an_auth_config_every_caller_may_do_everything() {
    let (_redis, gw) = crate::common::setup().await;
    for rpc in Rpc::ALL {
        let result = rpc.call(&gw.channel, "any.stream", None).await;
        assert!(
            !matches!(code(result), Code::PermissionDenied | Code::Unauthenticated),
            "{rpc:?}"
        );
    }
}

#[tokio::test]
async fn a_bad_auth_config_refuses_to_start() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    for text in [
        "[[tokens]]\nname = \"x\"\n",
        "tokens = [",
        "[[tokens]]\nname=\"x\"\nsha256=\"00\"\n",
    ] {
        let config = with_auth_file(config(&redis), &dir, text);
        let err = streamgate::server::start(&config).await.err().expect(text);
        assert!(err.to_string().contains("auth config"), "{err}");
    }
    let mut missing = config(&redis);
    missing.auth_config = Some(dir.path().join("nope.toml"));
    assert!(streamgate::server::start(&missing).await.is_err());
}
