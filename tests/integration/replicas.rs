//! `--produce-wait-replicas`: Produce answers only once replicas hold the
//! write, on a standalone master with a real replica.

use redis::Commands;
use streamgate::config::Settings;
use streamgate::pb;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::common::{RedisServer, TestGateway, config, event, eventually};

/// A master and `replicas` replicas of it, each through its first sync.
fn replicated(replicas: usize) -> (RedisServer, Vec<RedisServer>) {
    // Without the default 5 s pause before a diskless full sync.
    let master = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let port = master.port().to_string();
    let copies: Vec<RedisServer> = (0..replicas)
        .map(|_| RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]))
        .collect();
    (master, copies)
}

/// WAIT's timeout where no replica can confirm.
const SHORT: u64 = 300;
/// WAIT's timeout where replicas must confirm, even on a loaded machine.
const AMPLE: u64 = 5000;
/// WAIT's timeout where one replica must confirm but a second one cannot:
/// every attempt takes this long.
const BOTH: u64 = 2000;

/// Waits until the master streams writes to every replica and hears their
/// acknowledgements: a replica reports its link up, and the master lists it
/// online, a moment before the master starts streaming to it, so the test
/// asks WAIT itself (on a connection of its own) until it counts them all.
async fn synced(master: &RedisServer, replicas: &[RedisServer]) {
    let mut conn = master.conn();
    eventually("the master's replicas acknowledge its writes", || {
        let _: u64 = conn.incr("replication-probe", 1).unwrap();
        let confirmed: usize = redis::cmd("WAIT")
            .arg(replicas.len())
            .arg(100)
            .query(&mut conn)
            .unwrap();
        async move { (confirmed == replicas.len()).then_some(()) }
    })
    .await;
}

/// A gateway on `master` that waits for `replicas` replicas, giving WAIT
/// `timeout_ms`: [`SHORT`] where the replicas cannot answer, so that the
/// case ends quickly, [`AMPLE`] where they must, [`BOTH`] where some must
/// and some cannot.
async fn gateway(master: &RedisServer, replicas: u32, timeout_ms: u64) -> TestGateway {
    TestGateway::start(Settings {
        produce_wait_replicas: replicas,
        redis_timeout_ms: timeout_ms,
        ..config(master)
    })
    .await
}

/// Three order events with idempotency keys `<tag>-0..2`.
fn keyed(tag: &str) -> Vec<pb::Event> {
    (0..3)
        .map(|i| pb::Event {
            idempotency_key: format!("{tag}-{i}"),
            ..event("order.placed", &[("order_id", &format!("o-{i}"))])
        })
        .collect()
}

fn request(stream: &str, events: Vec<pb::Event>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        stream: stream.to_owned(),
        events,
        ..Default::default()
    }
}

/// The IDs of a stream, read on one server.
fn stored_ids(server: &RedisServer, stream: &str) -> Vec<String> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut server.conn())
        .unwrap();
    entries.into_iter().map(|(id, _)| id).collect()
}

#[tokio::test]
async fn an_answer_means_the_replica_holds_the_entries() {
    let (master, replicas) = replicated(1);
    synced(&master, &replicas).await;
    let mut gw = gateway(&master, 1, AMPLE).await;

    let plain = gw
        .events
        .produce(request("orders", vec![event("order.paid", &[])]))
        .await
        .expect("a write the replica confirmed")
        .into_inner()
        .ids;
    let keyed_ids = gw
        .events
        .produce(request("orders", keyed("a")))
        .await
        .expect("an idempotent write the replica confirmed")
        .into_inner()
        .ids;
    // No waiting here: WAIT counted the replica only once it had applied
    // everything the gateway wrote.
    let on_replica = stored_ids(&replicas[0], "orders");
    assert_eq!(on_replica, [plain, keyed_ids].concat());
}

#[tokio::test]
async fn a_stalled_replica_makes_produce_unavailable_and_a_retry_writes_nothing_twice() {
    let (master, replicas) = replicated(1);
    synced(&master, &replicas).await;
    let mut gw = gateway(&master, 1, SHORT).await;

    replicas[0].signal("STOP");
    // Twice: the retry finds its keys and writes no entry, yet it must not
    // be confirmed while the replica lacks the original write.
    for attempt in 0..2 {
        let refused = gw
            .events
            .produce(request("orders", keyed("b")))
            .await
            .expect_err("no replica can confirm the write");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(
            refused
                .message()
                .contains("only 0 of 1 replicas confirmed the write within 300 ms"),
            "attempt {attempt}: {}",
            refused.message()
        );
    }
    replicas[0].signal("CONT");
    // The write is on the master all the same ...
    let first = stored_ids(&master, "orders");
    assert_eq!(first.len(), 3);

    // ... so the retry with the same keys answers its IDs, writing nothing
    // (through a gateway that gives the replica time to catch up).
    let mut patient = gateway(&master, 1, AMPLE).await;
    let retried = patient
        .events
        .produce(request("orders", keyed("b")))
        .await
        .expect("the retry is confirmed once the replica is back")
        .into_inner()
        .ids;
    assert_eq!(retried, first);
    assert_eq!(stored_ids(&master, "orders"), first);
    assert_eq!(stored_ids(&replicas[0], "orders"), first);
}

#[tokio::test]
async fn asking_for_more_replicas_than_exist_names_how_many_confirmed() {
    let (master, replicas) = replicated(1);
    synced(&master, &replicas).await;
    let mut gw = gateway(&master, 2, BOTH).await;

    for attempt in 0..2 {
        let refused = gw
            .events
            .produce(request("orders", keyed("c")))
            .await
            .expect_err("one replica cannot stand for two");
        assert_eq!(refused.code(), Code::Unavailable);
        assert!(
            refused.message().contains("only 1 of 2 replicas"),
            "attempt {attempt}: {}",
            refused.message()
        );
    }
    let len: u64 = master.conn().xlen("orders").unwrap();
    assert_eq!(len, 3, "the retry wrote nothing twice");
}

#[tokio::test]
async fn without_replicas_nothing_is_confirmed() {
    let (master, _) = replicated(0);
    let mut gw = gateway(&master, 1, SHORT).await;
    let refused = gw
        .events
        .produce(request("orders", vec![event("order.paid", &[])]))
        .await
        .expect_err("a lone master cannot confirm a replicated write");
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(refused.message().contains("only 0 of 1 replicas"));
}

#[tokio::test]
async fn produce_stream_reports_each_unconfirmed_request_in_band() {
    let (master, replicas) = replicated(1);
    synced(&master, &replicas).await;
    let mut gw = gateway(&master, 2, BOTH).await;

    let requests = vec![
        request("orders", keyed("d")),
        request("orders", vec![event("order.paid", &[])]),
    ];
    let mut answers = gw
        .events
        .produce_stream(tokio_stream::iter(requests))
        .await
        .expect("ProduceStream opens")
        .into_inner();
    for _ in 0..2 {
        let answer = answers
            .next()
            .await
            .expect("one answer per request")
            .expect("the stream goes on");
        assert_eq!(answer.code, Code::Unavailable as u32);
        assert!(
            answer.message.contains("only 1 of 2 replicas"),
            "{answer:?}"
        );
        assert!(answer.ids.is_empty());
    }
    assert!(answers.next().await.is_none(), "ends after the half-close");
}
