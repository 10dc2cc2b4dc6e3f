//! The fuzzed surface: thousands of random and malformed requests to every
//! RPC of both services against a real Redis. Whatever a client sends, the
//! gateway must answer with a status a client can act on (never INTERNAL
//! or UNKNOWN), must not panic, must keep serving, and must not create a
//! key outside `--key-prefix`.
//!
//! Deterministic by default; `STREAMGATE_FUZZ_CASES` (default 2000) and
//! `STREAMGATE_FUZZ_SEED` (a u64) explore further.

mod requests;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use streamgate::pb;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::common::{RedisServer, TestGateway, config, eventually, orders, read_directly};

const PREFIX: &str = "fz:";
/// Threads of the gateway's runtime; panics on them are counted.
const GATEWAY_THREAD: &str = "fuzz-gateway";

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Counts panics on the gateway's threads (tokio would otherwise swallow a
/// panicking task and the client might only see a closed stream).
fn count_gateway_panics() -> Arc<AtomicUsize> {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(GATEWAY_THREAD) {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    panics
}

/// Streams and a group with pending entries, so that random calls reach
/// real state in Redis and not only "not found"; and `str`, a key of
/// another type.
async fn seed(gw: &mut TestGateway, redis: &RedisServer) {
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}str"))
        .arg("not a stream")
        .query(&mut redis.conn())
        .unwrap();
    for stream in ["s1", "s2"] {
        crate::common::produce(gw, stream, orders(20)).await;
        read_directly(redis, &format!("{PREFIX}{stream}"), "g", "c", 5);
    }
}

#[test]
fn random_and_malformed_requests_never_break_the_gateway() {
    let cases = env_u64("STREAMGATE_FUZZ_CASES").unwrap_or(2000) as u32;
    let rng = match env_u64("STREAMGATE_FUZZ_SEED") {
        Some(seed) => {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&seed.to_le_bytes());
            TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
        }
        None => TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    };
    let panics = count_gateway_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(GATEWAY_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    let mut config = config(&redis);
    config.key_prefix = PREFIX.into();
    // Random requests open many short-lived streams at once; the limits
    // themselves are tested elsewhere.
    config.max_subscriptions_per_connection = 10_000;
    let mut gw = runtime.block_on(TestGateway::start(config));
    runtime.block_on(seed(&mut gw, &redis));

    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 500,
            ..Config::default()
        },
        rng,
    );
    let channel = gw.channel.clone();
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    let tally = std::sync::Mutex::new(&mut codes);
    let result = runner.run(&requests::call(), |call| {
        let outcome = runtime.block_on(requests::send(&channel, call.clone()));
        let code = outcome.as_ref().err().map_or(Code::Ok, |s| s.code());
        *tally
            .lock()
            .unwrap()
            .entry(format!("{code:?}"))
            .or_default() += 1;
        if matches!(code, Code::Internal | Code::Unknown) {
            return Err(TestCaseError::fail(short(&format!("{outcome:?}"))));
        }
        Ok(())
    });
    eprintln!("fuzz: {cases} cases, status codes: {codes:?}");
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, call)) => {
            panic!("{}\n  <- {}", reason, short(&format!("{call:?}")))
        }
        Err(TestError::Abort(reason)) => panic!("fuzzing aborted: {reason}"),
    }
    // Checked after a real round trip, so that read loops the fuzzer
    // abandoned have had time to notice and stop.
    runtime.block_on(still_serving(&mut gw));
    assert_eq!(panics.load(Ordering::SeqCst), 0, "the gateway panicked");
    let keys = crate::security::all_keys(&redis);
    let outside: Vec<_> = keys.iter().filter(|k| !k.starts_with(PREFIX)).collect();
    assert!(outside.is_empty(), "keys outside {PREFIX:?}: {outside:?}");
    drop(gw);
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
}

/// `text` with long runs of one character collapsed (generated strings
/// are up to 64 KiB) and cut at a few KiB, for failure messages.
fn short(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let mut run = 1;
        while chars.peek() == Some(&c) {
            chars.next();
            run += 1;
        }
        if run > 8 {
            out.push_str(&format!("{c}<x{run}>"));
        } else {
            out.extend(std::iter::repeat_n(c, run));
        }
        if out.len() > 4000 {
            out.push_str("...");
            break;
        }
    }
    out
}

/// Health says SERVING and a real Produce can be replayed.
async fn still_serving(gw: &mut TestGateway) {
    let health = tonic_health::pb::health_client::HealthClient::new(gw.channel.clone());
    eventually("health SERVING", || {
        let mut health = health.clone();
        async move {
            let status = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .ok()?
                .into_inner()
                .status();
            (status == ServingStatus::Serving).then_some(())
        }
    })
    .await;
    let ids = crate::common::produce(gw, "after-fuzz", orders(3)).await;
    let mut replay = gw
        .events
        .replay(pb::ReplayRequest {
            stream: "after-fuzz".into(),
            ..Default::default()
        })
        .await
        .expect("replay after fuzzing")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(page) = replay.message().await.expect("replay page") {
        seen.extend(page.entries.into_iter().map(|e| e.id));
    }
    assert_eq!(seen, ids);
}
