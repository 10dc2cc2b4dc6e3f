//! StreamAdmin.ListStreams: SCAN TYPE stream under the key prefix, paged,
//! filtered to what the caller may inspect.

use std::collections::BTreeSet;

use streamgate::pb;
use tonic::{Code, Request};

use crate::common::{RedisServer, TestGateway, config, token_sha256};

/// Every stream name of a listing, following `next_cursor` to the end;
/// also returns how many pages it took.
async fn list_all(
    gw: &mut TestGateway,
    limit: u32,
    token: Option<&str>,
) -> (Vec<pb::StreamSummary>, usize) {
    let mut all = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let mut request = Request::new(pb::ListStreamsRequest { cursor, limit });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let page = gw
            .admin
            .list_streams(request)
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        all.extend(page.streams);
        if page.next_cursor.is_empty() {
            return (all, pages);
        }
        assert!(pages < 1000, "the listing does not end");
        cursor = page.next_cursor;
    }
}

fn names(streams: &[pb::StreamSummary]) -> BTreeSet<String> {
    streams.iter().map(|s| s.name.clone()).collect()
}

#[tokio::test]
async fn pages_through_the_streams_under_the_prefix_only() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let mut expected = BTreeSet::new();
    for i in 0..25 {
        let name = format!("s{i:02}");
        let _: String = redis::cmd("XADD")
            .arg(format!("app:{name}"))
            .arg("*")
            .arg("n")
            .arg(i)
            .query(&mut conn)
            .unwrap();
        expected.insert(name);
    }
    // Not listed: another prefix, other key types under the prefix (a
    // bookkeeping set among them), and a stream whose name the API could
    // never address.
    let _: String = redis::cmd("XADD")
        .arg("other:s")
        .arg("*")
        .arg("a")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("app:plain")
        .arg("x")
        .query(&mut conn)
        .unwrap();
    let _: i64 = redis::cmd("SADD")
        .arg("app:{app:s01}:idem:k")
        .arg("x")
        .query(&mut conn)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("app:has space")
        .arg("*")
        .arg("a")
        .arg("1")
        .query(&mut conn)
        .unwrap();

    let mut cfg = config(&redis);
    cfg.key_prefix = "app:".to_owned();
    let mut gw = TestGateway::start(cfg).await;
    let (streams, pages) = list_all(&mut gw, 5, None).await;
    // SCAN may return a key twice while Redis resizes its keyspace (the
    // documented guarantee is "at least once"), so compare the sets.
    assert_eq!(names(&streams), expected);
    assert!(pages >= 2, "25 streams with limit 5 fit one page");

    let s03 = streams.iter().find(|s| s.name == "s03").unwrap();
    let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg("app:s03")
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(s03.length, 1);
    assert_eq!(s03.last_entry_id, last[0].0);
    assert_eq!(s03.group_count, 0);
}

#[tokio::test]
async fn the_prefix_matches_itself_only_even_with_glob_characters() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    for key in ["a*[x]:one", "abc[x]:two", "a*[x]:", "ab"] {
        let _: String = redis::cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("a")
            .arg("1")
            .query(&mut conn)
            .unwrap();
    }
    let _: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("a*[x]:one")
        .arg("g")
        .arg("0")
        .query(&mut conn)
        .unwrap();
    let mut cfg = config(&redis);
    cfg.key_prefix = "a*[x]:".to_owned();
    let mut gw = TestGateway::start(cfg).await;
    let (streams, _) = list_all(&mut gw, 0, None).await;
    // `a*[x]:` itself would be the empty name, which no request can use.
    assert_eq!(names(&streams), BTreeSet::from(["one".to_owned()]));
    assert_eq!(streams[0].group_count, 1);
}

#[tokio::test]
async fn bad_cursors_and_limits_are_refused_before_redis() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(config(&redis)).await;
    let err = gw
        .admin
        .list_streams(pb::ListStreamsRequest {
            cursor: "nope".into(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("cursor"), "{}", err.message());
    let err = gw
        .admin
        .list_streams(pb::ListStreamsRequest {
            cursor: String::new(),
            limit: 1_000_000,
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("limit"), "{}", err.message());
    assert!(matches!(
        err.code(),
        Code::InvalidArgument | Code::ResourceExhausted
    ));
}

#[tokio::test]
async fn callers_see_only_streams_they_may_inspect() {
    const OPS: &str = "tok-ops-orders-0123456789";
    const CONSUMER: &str = "tok-consumer-all-0123456789";
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    for key in ["orders.eu", "orders.us", "payments"] {
        let _: String = redis::cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("a")
            .arg("1")
            .query(&mut conn)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.toml");
    std::fs::write(
        &path,
        format!(
            "[[tokens]]\nname = \"ops\"\nsha256 = \"{}\"\n\
             allow = [ {{ streams = \"orders.*\", permissions = [\"admin\"] }} ]\n\
             [[tokens]]\nname = \"consumer\"\nsha256 = \"{}\"\n\
             allow = [ {{ streams = \"*\", permissions = [\"consume\", \"produce\"] }} ]\n",
            token_sha256(OPS),
            token_sha256(CONSUMER)
        ),
    )
    .unwrap();
    let mut cfg = config(&redis);
    cfg.auth_config = Some(path);
    let mut gw = TestGateway::start(cfg).await;

    let (streams, _) = list_all(&mut gw, 0, Some(OPS)).await;
    assert_eq!(
        names(&streams),
        BTreeSet::from(["orders.eu".to_owned(), "orders.us".to_owned()])
    );
    let (streams, _) = list_all(&mut gw, 0, Some(CONSUMER)).await;
    assert!(streams.is_empty(), "listed without admin: {streams:?}");
    let err = gw
        .admin
        .list_streams(pb::ListStreamsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}
