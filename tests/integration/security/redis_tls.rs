//! The gateway's own connections to Redis: `rediss://` with a private CA
//! and a client certificate, and an ACL user confined to the key prefix.
//! Debian's redis-server is built with TLS, so this runs against a real
//! TLS port. The Valkey builds from PyPI are built without TLS: the server
//! itself says so when asked for a TLS port, and then the ACL half runs
//! over plain TCP and the run says loudly that TLS went untested.

use std::time::Duration;

use streamgate::pb;
use tonic::Code;

use super::all_keys;
use super::pki::{Ca, write};
use crate::common::{
    RedisServer, TestGateway, announce, config, eventually, free_port, orders, produce, sub,
};

/// An ACL user that may touch only keys under `app:` (and run the
/// gateway's commands and scripts), next to the default user the test
/// harness pings with.
const ALICE: [&str; 8] = [
    "--user",
    "alice",
    "on",
    ">s3cret",
    "~app:*",
    "&*",
    "+@all",
    "-@dangerous",
];

struct TlsRedis {
    redis: RedisServer,
    tls_port: u16,
    ca: Ca,
    dir: tempfile::TempDir,
}

/// A redis-server with a TLS port that requires client certificates from
/// `ca` (alongside its plaintext port, which the harness uses), or `None`
/// when the server binary was built without TLS (it refuses the TLS port
/// and says why; any other refusal fails the test).
fn tls_redis() -> Option<TlsRedis> {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("redis CA");
    let leaf = ca.server();
    let cert = write(dir.path(), "redis.pem", &leaf.cert);
    let key = write(dir.path(), "redis.key", &leaf.key);
    let ca_file = write(dir.path(), "ca.pem", &ca.pem());
    let tls_port = free_port();
    let mut args = vec![
        "--tls-port".to_owned(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        cert.display().to_string(),
        "--tls-key-file".into(),
        key.display().to_string(),
        "--tls-ca-cert-file".into(),
        ca_file.display().to_string(),
        "--tls-auth-clients".into(),
        "yes".into(),
    ];
    args.extend(ALICE.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match RedisServer::try_start_with(&args) {
        Ok(redis) => Some(TlsRedis {
            redis,
            tls_port,
            ca,
            dir,
        }),
        Err(e) if e.lacks_tls() => None,
        Err(e) => panic!("the TLS server did not come up:\n{}", e.log),
    }
}

/// A server without TLS with the ACL user, and gateway settings for
/// `redis://user:password@...` with the `app:` prefix: what is left to
/// test when the server binary has no TLS.
fn plain_acl_redis(user_password: &str) -> (RedisServer, streamgate::config::Settings) {
    let redis = RedisServer::start_with(&ALICE);
    let mut config = config(&redis);
    config.redis_url = redis
        .url()
        .replacen("redis://", &format!("redis://{user_password}@"), 1);
    config.key_prefix = "app:".into();
    (redis, config)
}

impl TlsRedis {
    /// Gateway settings for `rediss://user:password@127.0.0.1:<tls port>`
    /// with the CA and a client certificate.
    fn config(&self, user_password: &str) -> streamgate::config::Settings {
        let client = self.ca.client("gateway");
        let mut config = config(&self.redis);
        config.redis_url = format!("rediss://{user_password}@127.0.0.1:{}", self.tls_port);
        config.key_prefix = "app:".into();
        config.redis_ca = Some(write(self.dir.path(), "trust.pem", &self.ca.pem()));
        config.redis_client_cert = Some(write(self.dir.path(), "gw.pem", &client.cert));
        config.redis_client_key = Some(write(self.dir.path(), "gw.key", &client.key));
        config
    }
}

#[tokio::test]
async fn the_gateway_works_over_rediss_as_an_acl_user_confined_to_its_prefix() {
    match tls_redis() {
        Some(tls) => works_as_alice(&tls.redis, tls.config("alice:s3cret")).await,
        None => {
            announce(
                "the server was built without TLS (it says \"Failed finding TLS support\"): \
                 the gateway's rediss:// connection is NOT tested against it; \
                 the ACL user confined to its prefix is tested over plain TCP",
            );
            let (redis, config) = plain_acl_redis("alice:s3cret");
            works_as_alice(&redis, config).await;
        }
    }
}

/// Produce, Subscribe, Ack and the Lua scripts work as the confined ACL
/// user, and every key the gateway wrote is under its prefix.
async fn works_as_alice(redis: &RedisServer, config: streamgate::config::Settings) {
    let mut gw = TestGateway::start(config).await;

    let ids = produce(&mut gw, "orders", orders(3)).await;
    assert_eq!(ids.len(), 3);
    let mut stream = gw
        .events
        .subscribe(sub("orders", "g", "c"))
        .await
        .expect("subscribe over TLS")
        .into_inner();
    let entries = crate::common::take_entries(&mut stream, 3).await;
    let acked = gw
        .events
        .ack(pb::AckRequest {
            stream: "orders".into(),
            group: "g".into(),
            ids: crate::common::ids(&entries),
        })
        .await
        .unwrap()
        .into_inner()
        .acked;
    assert_eq!(acked, 3);
    // Lua scripts (idempotent produce, Nack) run under the ACL user too.
    let mut event = orders(1).remove(0);
    event.idempotency_key = "k1".into();
    produce(&mut gw, "orders", vec![event]).await;
    gw.events
        .nack(pb::NackRequest {
            stream: "orders".into(),
            group: "g".into(),
            consumer: "c".into(),
            ids: vec![ids[0].clone()],
            delay_ms: 0,
        })
        .await
        .expect("nack");

    let keys = all_keys(redis);
    assert!(keys.contains("app:orders"), "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("app:")), "{keys:?}");
}

#[tokio::test]
async fn wrong_redis_credentials_or_trust_are_unavailable_never_internal() {
    let Some(tls) = tls_redis() else {
        announce(
            "the server was built without TLS (it says \"Failed finding TLS support\"): \
             an untrusted server certificate and a missing client certificate are NOT \
             tested against it; a wrong password is tested over plain TCP",
        );
        let (redis, mut wrong_password) = plain_acl_redis("alice:wrong");
        wrong_password.redis_timeout_ms = 500;
        refused_as_unavailable(&redis, vec![("wrong password", wrong_password)]).await;
        return;
    };
    let mut wrong_password = tls.config("alice:wrong");
    wrong_password.redis_timeout_ms = 500;
    let mut untrusted = tls.config("alice:s3cret");
    untrusted.redis_ca = Some(write(tls.dir.path(), "other.pem", &Ca::new("other").pem()));
    untrusted.redis_timeout_ms = 500;
    let mut no_client_cert = tls.config("alice:s3cret");
    no_client_cert.redis_client_cert = None;
    no_client_cert.redis_client_key = None;
    no_client_cert.redis_timeout_ms = 500;
    refused_as_unavailable(
        &tls.redis,
        vec![
            ("wrong password", wrong_password),
            ("untrusted server certificate", untrusted),
            ("no client certificate", no_client_cert),
        ],
    )
    .await;
}

/// Each gateway setting is refused by `redis`: the gateway does not start,
/// or answers UNAVAILABLE, and writes nothing.
async fn refused_as_unavailable(
    redis: &RedisServer,
    configs: Vec<(&str, streamgate::config::Settings)>,
) {
    for (what, config) in configs {
        // The gateway may refuse to start, or start and answer UNAVAILABLE:
        // both are fine; INTERNAL or success are not.
        let Ok(gateway) = streamgate::server::start(&config).await else {
            continue;
        };
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let events = pb::event_stream_client::EventStreamClient::new(channel);
        let code = eventually(what, || {
            let mut events = events.clone();
            async move {
                let call = events.produce(pb::ProduceRequest {
                    stream: "orders".into(),
                    events: orders(1),
                    ..Default::default()
                });
                match tokio::time::timeout(Duration::from_secs(5), call).await {
                    Ok(Err(status)) => Some(status.code()),
                    Ok(Ok(_)) => Some(Code::Ok),
                    Err(_) => None,
                }
            }
        })
        .await;
        assert_eq!(code, Code::Unavailable, "{what}");
        gateway.shutdown();
    }
    assert!(all_keys(redis).is_empty());
}
