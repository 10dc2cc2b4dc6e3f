//! Ordered consumption's scripts against a real Redis: the lease fences
//! reads, acks and Nacks; a new owner takes the whole pending entries list
//! oldest first; a Nack holds its partition back, then re-delivers from the
//! nacked entry on; entries pending elsewhere send the scan back; poison
//! entries leave for the dead-letter stream.

use redis::Commands;

use super::{Broker, Holder, Ordered, OrderedRead, Scan, now_ms};
use crate::config::Settings;
use crate::ids::StreamId;
use crate::model::Entry;
use crate::test_redis::TestRedis;

const LEASE_MS: u64 = 600_000;

struct Rig {
    redis: TestRedis,
    broker: Broker,
    /// IDs of the entries added, oldest first.
    ids: Vec<StreamId>,
}

/// A stream `p` with `n` entries and a group `g` from its start.
async fn rig(n: usize) -> Rig {
    let redis = TestRedis::start();
    let settings = Settings {
        redis_url: redis.url(),
        redis_timeout_ms: 2000,
        ..Settings::default()
    };
    let broker = Broker::connect(settings.broker_options())
        .await
        .expect("broker");
    let mut conn = redis.conn();
    let mut ids = Vec::new();
    for i in 0..n {
        let id: String = conn.xadd("p", "*", &[("n", i.to_string())]).unwrap();
        ids.push(id.parse().unwrap());
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("p")
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut conn)
        .unwrap();
    Rig { redis, broker, ids }
}

impl Rig {
    /// `consumer` reads `count` new entries directly, as any client could.
    fn read_as(&self, consumer: &str, count: usize) {
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg("p")
            .arg(">")
            .query(&mut self.redis.conn())
            .unwrap();
    }

    /// Who each pending entry is pending with, oldest first.
    fn pending(&self) -> Vec<(StreamId, String)> {
        let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg("p")
            .arg("g")
            .arg("-")
            .arg("+")
            .arg(1000)
            .query(&mut self.redis.conn())
            .unwrap();
        (rows.into_iter())
            .map(|(id, consumer, _, _)| (id.parse().unwrap(), consumer))
            .collect()
    }

    async fn owning(&self, consumer: &str) -> Holder {
        let holder = Holder::new(consumer);
        assert!(
            (self.broker)
                .acquire_lease("p", "g", &holder, LEASE_MS)
                .await
                .unwrap()
        );
        holder
    }

    async fn read(&self, holder: &Holder, scan: Scan, max_deliveries: u32) -> Ordered {
        let read = OrderedRead {
            group: "g",
            holder,
            scan,
            count: 100,
            max_deliveries,
            dead_letter_stream: "p:dlq",
            min_idle_ms: 0,
            max_in_flight: 0,
        };
        self.broker.read_ordered("p", &read).await.unwrap()
    }
}

/// The entries of a read, with where it goes on.
fn read(outcome: Ordered) -> (Vec<Entry>, Scan) {
    match outcome {
        Ordered::Read { entries, next } => (entries, next),
        other => panic!("expected entries, got {other:?}"),
    }
}

fn ids(entries: &[Entry]) -> Vec<StreamId> {
    entries.iter().map(|e| e.id).collect()
}

#[tokio::test]
async fn without_the_lease_nothing_is_read() {
    let rig = rig(3).await;
    let stranger = Holder::new("a");
    assert!(matches!(
        rig.read(&stranger, Scan::New, 0).await,
        Ordered::Lost
    ));
    let _owner = rig.owning("b").await;
    assert!(matches!(
        rig.read(&stranger, Scan::New, 0).await,
        Ordered::Lost
    ));
    assert!(rig.pending().is_empty(), "nothing was delivered");
}

#[tokio::test]
async fn a_new_owner_takes_every_pending_entry_oldest_first_then_reads_new_ones() {
    let rig = rig(6).await;
    rig.read_as("old", 3);
    rig.read_as("other", 2);
    let new = rig.owning("new").await;
    let (entries, next) = read(rig.read(&new, Scan::Pending(None), 0).await);
    assert_eq!(ids(&entries), rig.ids[..5]);
    assert!(entries.iter().all(|e| e.redelivered));
    let counts: Vec<u64> = entries.iter().map(|e| e.delivery_count).collect();
    assert_eq!(
        counts,
        [2, 1, 1, 1, 1],
        "a delivery counts for the head only"
    );
    assert_eq!(next, Scan::New);
    let (entries, _) = read(rig.read(&new, Scan::New, 0).await);
    assert_eq!(ids(&entries), rig.ids[5..]);
    assert!(!entries[0].redelivered);
    assert!(rig.pending().iter().all(|(_, c)| c == "new"));
}

#[tokio::test]
async fn a_nack_holds_the_partition_until_due_then_redelivers_from_the_nacked_entry() {
    let rig = rig(6).await;
    let a = rig.owning("a").await;
    let (entries, _) = read(rig.read(&a, Scan::New, 0).await);
    assert_eq!(entries.len(), 6);
    let later = now_ms() + 60_000;
    let nacked = (rig.broker)
        .nack_held("p", "g", &a, &rig.ids[2..3], later)
        .await
        .unwrap();
    assert_eq!(nacked.done, rig.ids[2..3]);
    let _: String = rig.redis.conn().xadd("p", "*", &[("n", "6")]).unwrap();
    match rig.read(&a, Scan::New, 0).await {
        Ordered::Hold(due) => assert_eq!(due, later),
        other => panic!("expected the partition held back, got {other:?}"),
    }
    // Due now: the nacked entry and every later one, in order, then new.
    (rig.broker)
        .nack_held("p", "g", &a, &rig.ids[2..3], now_ms())
        .await
        .unwrap();
    let (entries, next) = read(rig.read(&a, Scan::New, 0).await);
    assert_eq!(ids(&entries), rig.ids[2..]);
    assert!(entries.iter().all(|e| e.redelivered));
    assert_eq!(next, Scan::New);
    let (entries, _) = read(rig.read(&a, Scan::New, 0).await);
    assert_eq!(entries.len(), 1, "the entry added meanwhile comes after");
}

#[tokio::test]
async fn entries_pending_with_someone_else_send_the_scan_back_to_the_start() {
    let rig = rig(4).await;
    let a = rig.owning("a").await;
    read(rig.read(&a, Scan::New, 0).await);
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg("p")
        .arg("g")
        .arg("intruder")
        .arg(0)
        .arg(rig.ids[1].to_string())
        .query(&mut rig.redis.conn())
        .unwrap();
    let (entries, _) = read(rig.read(&a, Scan::New, 0).await);
    assert_eq!(ids(&entries), rig.ids, "everything pending, in order");
    assert!(rig.pending().iter().all(|(_, c)| c == "a"));
}

#[tokio::test]
async fn an_entry_delivered_max_deliveries_times_leaves_for_the_dead_letter_stream() {
    let rig = rig(3).await;
    rig.read_as("old", 3);
    let a = rig.owning("a").await;
    // Delivered twice now (once to `old`, once here).
    read(rig.read(&a, Scan::Pending(None), 3).await);
    (rig.broker)
        .nack_held("p", "g", &a, &rig.ids[..1], now_ms())
        .await
        .unwrap();
    read(rig.read(&a, Scan::New, 3).await);
    (rig.broker)
        .nack_held("p", "g", &a, &rig.ids[..1], now_ms())
        .await
        .unwrap();
    let (entries, _) = read(rig.read(&a, Scan::New, 3).await);
    assert_eq!(ids(&entries), rig.ids[1..], "the partition moves on");
    let dead: redis::streams::StreamRangeReply = rig.redis.conn().xrange_all("p:dlq").unwrap();
    assert_eq!(dead.ids.len(), 1);
    let id: Option<String> = dead.ids[0].get("dlq.id");
    assert_eq!(id, Some(rig.ids[0].to_string()));
    assert_eq!(rig.pending().len(), 2, "the dead letter is acknowledged");
}

#[tokio::test]
async fn acks_and_nacks_take_effect_only_for_the_leases_holder() {
    let rig = rig(3).await;
    let a = rig.owning("a").await;
    read(rig.read(&a, Scan::New, 0).await);
    let b = Holder::new("a");
    let ack = rig
        .broker
        .ack_held("p", "g", &b, &rig.ids[..1])
        .await
        .unwrap();
    assert_eq!((ack.done.len(), ack.not_pending.len()), (0, 1));
    let nack = (rig.broker)
        .nack_held("p", "g", &b, &rig.ids[..1], now_ms())
        .await
        .unwrap();
    assert!(nack.done.is_empty());
    let ack = rig
        .broker
        .ack_held("p", "g", &a, &rig.ids[..1])
        .await
        .unwrap();
    assert_eq!(ack.done, rig.ids[..1]);
}

#[tokio::test]
async fn a_unary_ack_takes_only_the_owners_entries_in_id_order() {
    let rig = rig(4).await;
    rig.read_as("old", 2);
    let new = rig.owning("new").await;
    rig.read_as("new", 2);
    let ack = |ids: &'static [usize]| {
        let ids: Vec<StreamId> = ids.iter().map(|&i| rig.ids[i]).collect();
        let broker = rig.broker.clone();
        async move { broker.ack_owned("p", "g", &ids).await.unwrap() }
    };
    assert_eq!(ack(&[0, 1]).await, 0, "pending with `old`, owned by `new`");
    assert_eq!(
        ack(&[2, 3]).await,
        0,
        "the owner's, but older ones are pending"
    );
    assert!(rig.broker.keep_lease("p", "g", &new, 0).await.unwrap());
    assert_eq!(ack(&[3, 0]).await, 2, "nobody owns it: a plain ack");
}

#[tokio::test]
async fn in_band_acks_take_effect_in_id_order_only() {
    let rig = rig(3).await;
    let a = rig.owning("a").await;
    read(rig.read(&a, Scan::New, 0).await);
    let ack = |i: &[usize]| {
        let ids: Vec<StreamId> = i.iter().map(|&i| rig.ids[i]).collect();
        let (broker, a) = (rig.broker.clone(), a.clone());
        async move { broker.ack_held("p", "g", &a, &ids).await.unwrap().done }
    };
    assert!(ack(&[1]).await.is_empty(), "entry 0 is still pending");
    assert_eq!(ack(&[0, 1]).await, rig.ids[..2]);
    assert_eq!(ack(&[2]).await, rig.ids[2..]);
}

#[tokio::test]
async fn leases_are_kept_and_released_only_by_their_holder() {
    let rig = rig(0).await;
    let a = rig.owning("a").await;
    let b = Holder::new("b");
    assert!(
        !rig.broker
            .acquire_lease("p", "g", &b, LEASE_MS)
            .await
            .unwrap()
    );
    assert!(!rig.broker.keep_lease("p", "g", &b, LEASE_MS).await.unwrap());
    assert!(!rig.broker.keep_lease("p", "g", &b, 0).await.unwrap());
    assert_eq!(
        rig.broker.lease_owner("p", "g").await.unwrap().as_deref(),
        Some("a")
    );
    assert!(rig.broker.keep_lease("p", "g", &a, LEASE_MS).await.unwrap());
    assert!(rig.broker.keep_lease("p", "g", &a, 0).await.unwrap());
    assert_eq!(rig.broker.lease_owner("p", "g").await.unwrap(), None);
    assert!(
        rig.broker
            .acquire_lease("p", "g", &b, LEASE_MS)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn members_come_back_sorted_and_leave_at_once() {
    let rig = rig(0).await;
    for name in ["c", "a", "b"] {
        rig.broker
            .renew_membership("p", "g", name, LEASE_MS)
            .await
            .unwrap();
    }
    let members = rig
        .broker
        .renew_membership("p", "g", "a", LEASE_MS)
        .await
        .unwrap();
    assert_eq!(members, ["a", "b", "c"]);
    rig.broker.leave_membership("p", "g", "b").await.unwrap();
    let members = rig
        .broker
        .renew_membership("p", "g", "a", LEASE_MS)
        .await
        .unwrap();
    assert_eq!(members, ["a", "c"]);
}

#[tokio::test]
async fn no_room_under_max_in_flight_reads_nothing() {
    let rig = rig(5).await;
    let a = rig.owning("a").await;
    let capped = |holder| OrderedRead {
        group: "g",
        holder,
        scan: Scan::New,
        count: 100,
        max_deliveries: 0,
        dead_letter_stream: "p:dlq",
        min_idle_ms: 0,
        max_in_flight: 2,
    };
    let (entries, _) = read(rig.broker.read_ordered("p", &capped(&a)).await.unwrap());
    assert_eq!(entries.len(), 2);
    assert!(matches!(
        rig.broker.read_ordered("p", &capped(&a)).await.unwrap(),
        Ordered::Full
    ));
}
