//! Raw bytes to every rpc: what a broken or hostile client can send below
//! the level of any gRPC library (undecodable messages, bodies cut short,
//! over-size prefixes, compressed flags, a valid message then garbage).
//! Every answer is a status the client can act on, naming the rpc:
//! INVALID_ARGUMENT or RESOURCE_EXHAUSTED, never INTERNAL, UNKNOWN, or OK
//! after a broken message, on unary, server-, client- and bidi-streaming
//! rpcs alike, whether the status travels in the headers or the trailers.

use prost::Message;
use streamgate::pb::{self, METHODS};
use tonic::Code;
use tonic::codegen::http;

use crate::common::{RedisServer, TestGateway, config, produce};

const MAX_MESSAGE: usize = 64 * 1024;

/// One gRPC message: flag, length, body.
fn framed(body: &[u8]) -> Vec<u8> {
    framed_as(0, body.len(), body)
}

fn framed_as(flag: u8, len: usize, body: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The status a raw call ends with, from the headers of a trailers-only
/// answer or from the trailers.
#[derive(Debug)]
struct Ended {
    code: Code,
    message: String,
}

/// Sends `body` as the whole request body of `path` over a fresh HTTP/2
/// connection and reads the answer to its end.
async fn raw_call(addr: std::net::SocketAddr, path: &str, body: Vec<u8>) -> Ended {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut stream) = send.send_request(request, false).unwrap();
    // The gateway may answer (and reset the stream) before it has read
    // everything; what it did not read does not matter.
    let _ = stream.send_data(body.into(), true);
    let response = response.await.expect("an HTTP answer");
    let (parts, mut body) = response.into_parts();
    if let Some(ended) = status_in(&parts.headers) {
        return ended;
    }
    while let Some(data) = body.data().await {
        let Ok(data) = data else { break };
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body.trailers().await.expect("trailers").expect("trailers");
    status_in(&trailers).expect("a grpc-status in the trailers")
}

fn status_in(map: &http::HeaderMap) -> Option<Ended> {
    let status = tonic::Status::from_header_map(map)?;
    Some(Ended {
        code: status.code(),
        message: status.message().to_owned(),
    })
}

async fn gateway() -> (RedisServer, TestGateway) {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    config.max_message_bytes = MAX_MESSAGE as u64;
    let mut gw = TestGateway::start(config).await;
    produce(&mut gw, "orders", crate::common::orders(3)).await;
    (redis, gw)
}

fn addr(gw: &TestGateway) -> std::net::SocketAddr {
    gw.gateway.as_ref().unwrap().addr()
}

fn assert_named(ended: &Ended, code: Code, rpc: &str, says: &str, case: &str) {
    assert_eq!(ended.code, code, "{case} on {rpc}: {ended:?}");
    assert!(
        ended.message.starts_with(&format!("{rpc}: ")) && ended.message.contains(says),
        "{case} on {rpc}: {ended:?} should name the rpc and say {says:?}"
    );
}

#[tokio::test]
async fn every_rpc_answers_broken_bodies_with_a_precise_status() {
    let (_redis, gw) = gateway().await;
    let addr = addr(&gw);
    for method in METHODS {
        let rpc = method.name;
        let cases: [(&str, Vec<u8>, Code, &str); 5] = [
            (
                "undecodable",
                // Field 1 with wire type 7, which protobuf does not have.
                framed(&[0x0f, 0x01]),
                Code::InvalidArgument,
                "cannot decode ",
            ),
            (
                "cut inside a message",
                framed_as(0, 100, &[0x0a; 10]),
                Code::InvalidArgument,
                "15 of its 105 bytes",
            ),
            (
                "cut inside a prefix",
                vec![0, 0, 0],
                Code::InvalidArgument,
                "prefix",
            ),
            (
                "over-size",
                framed_as(0, MAX_MESSAGE + 1, &[0; 1000]),
                Code::ResourceExhausted,
                "65536 bytes (--max-message-bytes)",
            ),
            (
                "compressed",
                framed_as(1, 2, &[0x08, 0x01]),
                Code::InvalidArgument,
                "compress",
            ),
        ];
        for (case, body, code, says) in cases {
            let ended = raw_call(addr, method.path, body).await;
            assert_named(&ended, code, rpc, says, case);
        }
        if !method.client_streaming {
            let ended = raw_call(addr, method.path, Vec::new()).await;
            assert_named(&ended, Code::InvalidArgument, rpc, "no message", "empty");
        }
    }
}

#[tokio::test]
async fn random_bytes_never_get_internal_or_unknown() {
    let (_redis, gw) = gateway().await;
    let addr = addr(&gw);
    let mut rng = fastrand::Rng::with_seed(19);
    for method in METHODS {
        for round in 0..20 {
            let len = rng.usize(0..200);
            let noise: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            // Half raw noise (any framing), half noise inside a frame.
            let body = if round % 2 == 0 {
                noise
            } else {
                framed(&noise)
            };
            let ended = raw_call(addr, method.path, body.clone()).await;
            assert!(
                !matches!(ended.code, Code::Internal | Code::Unknown),
                "{} <- {body:?}: {ended:?}",
                method.name
            );
        }
    }
}

/// A valid first message, then a broken one: the stream ends with the
/// broken message's status, never OK (a client must learn that what
/// followed was not applied).
#[tokio::test]
async fn a_client_stream_that_breaks_after_a_valid_message_ends_with_its_status() {
    let (_redis, gw) = gateway().await;
    let addr = addr(&gw);
    let produce = pb::ProduceRequest {
        stream: "orders".into(),
        events: crate::common::orders(1),
        ..Default::default()
    };
    let open = pb::ConsumeRequest {
        kind: Some(pb::consume_request::Kind::Open(pb::SubscribeRequest {
            stream: "orders".into(),
            group: "g".into(),
            consumer: "c".into(),
            create_group: true,
            group_start_id: "0".into(),
            ..Default::default()
        })),
    };
    let streams = [
        (
            "ProduceStream",
            "/streamgate.v1.EventStream/ProduceStream",
            produce.encode_to_vec(),
        ),
        (
            "Consume",
            "/streamgate.v1.EventStream/Consume",
            open.encode_to_vec(),
        ),
    ];
    for (rpc, path, valid) in streams {
        let broken: [(&str, Vec<u8>, Code, &str); 3] = [
            (
                "garbage",
                framed(&[0x0f, 0x01]),
                Code::InvalidArgument,
                "cannot decode ",
            ),
            (
                "over-size",
                framed_as(0, 6 << 20, &[0x12; 100]),
                Code::ResourceExhausted,
                "--max-message-bytes",
            ),
            (
                "cut short",
                framed_as(0, 50, &[0x12, 0x01]),
                Code::InvalidArgument,
                "ended",
            ),
        ];
        for (case, tail, code, says) in broken {
            let mut body = framed(&valid);
            body.extend(tail);
            let ended = raw_call(addr, path, body).await;
            assert_named(&ended, code, rpc, says, case);
        }
    }
}
