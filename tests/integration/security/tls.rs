//! TLS on the gRPC listener, with and without client certificates.

use std::time::Duration;

use streamgate::server;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::pki::{Ca, Leaf, write};
use crate::common::{RedisServer, config};

/// A TLS channel trusting `ca`, presenting `client` if given.
async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &Ca,
    client: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some(leaf) = client {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Whether a health check goes through on `channel` (connect errors count
/// as no).
async fn health_ok(channel: Result<Channel, tonic::transport::Error>) -> bool {
    let Ok(channel) = channel else { return false };
    let mut health = HealthClient::new(channel);
    let check = health.check(HealthCheckRequest {
        service: String::new(),
    });
    matches!(
        tokio::time::timeout(Duration::from_secs(5), check).await,
        Ok(Ok(_))
    )
}

async fn plaintext_ok(addr: std::net::SocketAddr) -> bool {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    health_ok(channel).await
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_and_refuses_plaintext() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let leaf = ca.server();
    let mut config = config(&redis);
    config.tls_cert = Some(write(dir.path(), "server.pem", &leaf.cert));
    config.tls_key = Some(write(dir.path(), "server.key", &leaf.key));
    let gateway = server::start(&config)
        .await
        .expect("gateway starts with TLS");
    let addr = gateway.addr();

    let channel = tls_channel(addr, &ca, None).await.expect("TLS handshake");
    assert!(health_ok(Ok(channel.clone())).await);
    let mut events = streamgate::pb::event_stream_client::EventStreamClient::new(channel);
    let ids = events
        .produce(streamgate::pb::ProduceRequest {
            stream: "orders".into(),
            events: crate::common::orders(2),
            ..Default::default()
        })
        .await
        .expect("produce over TLS")
        .into_inner()
        .ids;
    assert_eq!(ids.len(), 2);

    assert!(!plaintext_ok(addr).await, "plaintext must not be served");
    let stranger = Ca::new("someone else");
    assert!(
        !health_ok(tls_channel(addr, &stranger, None).await).await,
        "a client must not accept a certificate from a CA it does not trust"
    );
    gateway.shutdown();
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let leaf = server_ca.server();
    let mut config = config(&redis);
    config.tls_cert = Some(write(dir.path(), "server.pem", &leaf.cert));
    config.tls_key = Some(write(dir.path(), "server.key", &leaf.key));
    config.tls_client_ca = Some(write(dir.path(), "clients.pem", &client_ca.pem()));
    let gateway = server::start(&config)
        .await
        .expect("gateway starts with mTLS");
    let addr = gateway.addr();

    let good = client_ca.client("worker-1");
    assert!(
        health_ok(tls_channel(addr, &server_ca, Some(&good)).await).await,
        "a client certificate from the client CA is accepted"
    );
    assert!(
        !health_ok(tls_channel(addr, &server_ca, None).await).await,
        "no client certificate: refused"
    );
    let forged = Ca::new("client CA").client("worker-1");
    assert!(
        !health_ok(tls_channel(addr, &server_ca, Some(&forged)).await).await,
        "a certificate from another CA with the same name: refused"
    );
    assert!(!plaintext_ok(addr).await);
    gateway.shutdown();
}

#[tokio::test]
async fn incomplete_or_unreadable_tls_settings_refuse_to_start() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let leaf = Ca::new("ca").server();
    let cert = write(dir.path(), "server.pem", &leaf.cert);
    let garbage = write(dir.path(), "garbage.pem", "not a key");

    let mut only_cert = config(&redis);
    only_cert.tls_cert = Some(cert.clone());
    let err = server::start(&only_cert).await.err().expect("refused");
    assert!(err.to_string().contains("--tls-key"), "{err}");

    let mut missing = config(&redis);
    missing.tls_cert = Some(cert.clone());
    missing.tls_key = Some(dir.path().join("missing.key"));
    let err = server::start(&missing).await.err().expect("refused");
    assert!(err.to_string().contains("missing.key"), "{err}");

    let mut bad_key = config(&redis);
    bad_key.tls_cert = Some(cert);
    bad_key.tls_key = Some(garbage);
    assert!(
        server::start(&bad_key).await.is_err(),
        "a key that is not PEM"
    );

    let mut ca_only = config(&redis);
    ca_only.tls_client_ca = Some(dir.path().join("ca.pem"));
    assert!(server::start(&ca_only).await.is_err());
}
