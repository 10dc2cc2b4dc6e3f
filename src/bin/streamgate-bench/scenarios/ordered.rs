//! S9 ordered-consume (issue 23): what ordered consumption costs. Three
//! Consume streams drain a stream of [`PARTITIONS`] partitions, each batch
//! acked in band (S7's consumer loop), once with `ordered: true` and once
//! with `ordered: false`, on the same number of keyed events. Both sides
//! run through the gateway: the report's `gateway` is the ordered side,
//! its `direct` the unordered one, and the ratio ordered / unordered.
//!
//! Both sides drain pre-loaded partitions, and neither clock includes the
//! rebalance. Each side fills [`PARTITIONS`] staging streams beforehand
//! (untimed; event `seq` has `Event.key` `k<seq>` and goes to the
//! partition the gateway would pick, with the fields the gateway writes),
//! creates the group on them, then opens its consumers on the (empty)
//! partitioned stream and waits until they are ready: ordered, until
//! `ListPartitions` shows every partition owned and each consumer owning
//! [`PARTITIONS`] / [`CONSUMERS`]; unordered, until Redis has run an
//! XREADGROUP for every consumer and partition. Then one `MULTI` of
//! `RENAME`s moves the staging streams (entries and group) onto the
//! partition keys, which wakes the readers like a write; the clock runs
//! from there until every event is acked.
//!
//! Beside throughput and CPU per party, each side reports Redis' calls
//! and time per command (`INFO commandstats`) per 100 events, and when
//! each partition's last entry arrived: where the ordered path's cost
//! goes, and in what order the partitions drain.
//!
//! A side that does not get every event acked fails the scenario, naming
//! what it delivered and acked. The ordered side also checks what ordered
//! consumption promises: each partition read by one consumer only, and
//! each consumer's entries of a partition in ID order (the targets).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use streamgate::pb::stream_admin_client::StreamAdminClient;
use streamgate::pb::{self, consume_request, consume_response};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::Channel;

use super::consume_ack::Progress;
use super::{Ctx, join_all};
use crate::Fallible;
use crate::options::ScenarioId;
use crate::payload;
use crate::report::{Report, Target};
use crate::rig::Commands;
use crate::stats::{Latency, Side};

/// Partitions of the stream.
pub const PARTITIONS: u32 = 12;
/// Consumers of the group: each owns `PARTITIONS / CONSUMERS` when ordered.
const CONSUMERS: usize = 3;
/// Entries per batch (and per in-band ack), as S7.
const BATCH: u32 = 100;
/// Entries per pipeline when filling the staging streams.
const FILL_CHUNK: u64 = 1000;
/// How often the readiness of the consumers is polled.
const POLL: Duration = Duration::from_millis(25);
const GROUP: &str = "bench";

/// The two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Ordered,
    Unordered,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Ordered => "ordered",
            Mode::Unordered => "unordered",
        }
    }
}

/// Runs both sides of S9.
pub async fn run(ctx: &Ctx<'_>) -> Fallible<Report> {
    let events = ctx.plan.consume_entries;
    let ordered = side(ctx, Mode::Ordered, events).await?;
    let unordered = side(ctx, Mode::Unordered, events).await?;
    let short: Vec<String> = [(Mode::Ordered, &ordered), (Mode::Unordered, &unordered)]
        .into_iter()
        .filter(|(_, side)| figure(side, "acked") < events)
        .map(|(mode, side)| {
            format!(
                "the {} side acked {} of {events} events within {} s (delivered {}, acks not pending {})",
                mode.name(),
                figure(side, "acked"),
                side.secs,
                figure(side, "delivered"),
                figure(side, "not_pending"),
            )
        })
        .collect();
    if !short.is_empty() {
        return Err(format!("S9 lost events: {}", short.join("; ")).into());
    }
    let shared = figure(&ordered, "shared_partitions") as f64;
    let out_of_order = figure(&ordered, "out_of_order") as f64;
    let params = json!({
        "events": events,
        "partitions": PARTITIONS,
        "consumers": CONSUMERS,
        "batch_size": BATCH,
        "event_keys": "Event.key k<seq>, a key per event; partition fnv1a32(key) mod 12",
        "load": "pre-loaded: staging streams filled beforehand (untimed), moved onto the partition keys with one MULTI of RENAMEs once the consumers are ready; timed from then until every event is acked",
        "gateway": "the ordered side: 3 Consume streams with ordered = true, each batch acked in band; timed once ListPartitions shows 4/4/4 owners",
        "direct": "the unordered side, through the gateway too: the same with ordered = false; timed once Redis has run an XREADGROUP per consumer and partition",
        "gateway_ordered_timings": ctx.rig.ordered_timings(),
    });
    let mut report = Report::new(
        ScenarioId::S9.as_str(),
        "ordered-consume",
        "events/s",
        "one consumer cycle: receive a batch, send its ack",
        "throughput",
        ordered,
        unordered,
        params,
    );
    report.wakeup = ctx.row().wakeup;
    report.gateway_label = Some("gateway, ordered".to_owned());
    report.direct_label = Some("gateway, unordered".to_owned());
    report.ratio_label = Some("ordered/unordered".to_owned());
    Ok(report
        .target(Target::at_most(
            "ordered: partitions read by more than one consumer",
            shared,
            0.0,
        ))
        .target(Target::at_most(
            "ordered: entries out of ID order within a partition",
            out_of_order,
            0.0,
        )))
}

/// An unsigned figure of a side's extras (0 when absent).
fn figure(side: &Side, key: &str) -> u64 {
    side.extra
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// The Redis keys of one side.
struct Keys {
    /// The stream's client name.
    stream: String,
    /// Partition `p` is `partitions[p]`.
    partitions: Vec<String>,
    /// Filled beforehand, renamed onto `partitions`.
    staged: Vec<String>,
    /// Everything the side may leave behind: the layout, the partitions,
    /// the staging streams, the gateway's bookkeeping of the group.
    clean: Vec<String>,
}

impl Keys {
    fn new(ctx: &Ctx<'_>, mode: Mode) -> Keys {
        let pid = std::process::id();
        let stream = format!("sgbench:{pid}:S9:{}", mode.name());
        let key = ctx.rig.gateway_key(&stream);
        let prefix = &ctx.rig.key_prefix;
        // As the gateway names them (docs/partitions.md): partition `p` is
        // `<stream>{p`, its bookkeeping `<prefix>{<key>}:...`.
        let partitions: Vec<String> = (0..PARTITIONS)
            .map(|p| ctx.rig.gateway_key(&format!("{stream}{{{p}")))
            .collect();
        let staged: Vec<String> = (0..PARTITIONS)
            .map(|p| ctx.rig.gateway_key(&format!("{stream}:staged:{p}")))
            .collect();
        let mut clean = vec![key.clone(), format!("{prefix}{{{key}}}:members:{GROUP}")];
        for partition in &partitions {
            clean.push(partition.clone());
            for what in ["owner", "nack"] {
                clean.push(format!("{prefix}{{{partition}}}:{what}:{GROUP}"));
            }
        }
        clean.extend(staged.iter().cloned());
        Keys {
            stream,
            partitions,
            staged,
            clean,
        }
    }
}

/// One side: set up, time the drain, check, clean up.
async fn side(ctx: &Ctx<'_>, mode: Mode, events: u64) -> Fallible<Side> {
    let keys = Keys::new(ctx, mode);
    let mut admin = StreamAdminClient::new(ctx.rig.channel().await?);
    let created = admin
        .create_stream(pb::CreateStreamRequest {
            stream: keys.stream.clone(),
            partitions: PARTITIONS,
        })
        .await?
        .into_inner();
    if created.partitions != PARTITIONS {
        return Err(format!(
            "CreateStream {:?}: {} partitions, not {PARTITIONS}",
            keys.stream, created.partitions
        )
        .into());
    }
    admin
        .create_group(pb::CreateGroupRequest {
            stream: keys.stream.clone(),
            group: GROUP.to_owned(),
            start_id: "0".to_owned(),
            mkstream: Some(true),
        })
        .await?;
    let per_partition = fill(ctx, &keys.staged, events).await?;

    let progress = Progress::new(events);
    // The consumers stay (idle) until `stop`, so that the owners can be
    // read once every event is acked; `clock` is when timing began.
    let stop = CancellationToken::new();
    let clock = Arc::new(OnceLock::new());
    let mut tasks = JoinSet::new();
    let before_open = ctx.rig.commands().await?;
    let opened = Instant::now();
    for i in 0..CONSUMERS {
        let mut client = ctx.rig.events().await?;
        let request = pb::SubscribeRequest {
            stream: keys.stream.clone(),
            group: GROUP.to_owned(),
            consumer: format!("c{i}"),
            batch_size: BATCH,
            create_group: false,
            ordered: mode == Mode::Ordered,
            ..Default::default()
        };
        let (requests, rx) = mpsc::channel(16);
        let open = consume_request::Kind::Open(request);
        requests
            .send(pb::ConsumeRequest { kind: Some(open) })
            .await?;
        let responses = client.consume(ReceiverStream::new(rx)).await?.into_inner();
        let (progress, stop, clock) = (progress.clone(), stop.clone(), clock.clone());
        tasks.spawn(consume(requests, responses, progress, stop, clock));
    }
    let owners_before = match mode {
        Mode::Ordered => Some(await_even_owners(ctx, &mut admin, &keys.stream).await?),
        Mode::Unordered => {
            await_first_reads(ctx, &before_open).await?;
            None
        }
    };
    let ready = opened.elapsed();

    let mut conn = ctx.rig.admin().await?;
    let mut rename = redis::pipe();
    rename.atomic();
    for (from, to) in keys.staged.iter().zip(&keys.partitions) {
        rename.cmd("RENAME").arg(from).arg(to).ignore();
    }
    let commands = ctx.rig.commands().await?;
    let cpu = ctx.rig.cpu().await;
    let start = *clock.get_or_init(Instant::now);
    rename.query_async::<()>(&mut conn).await?;
    let ((elapsed, complete), usage) = ctx
        .rig
        .while_sampling(progress.wait(start, ctx.plan.consume_deadline))
        .await?;
    let spent = ctx.rig.cpu().await.since(cpu);
    let after = ctx.rig.commands().await?;
    let (calls, _) = after.since(&commands);
    let usec = after.usec_since(&commands);
    let owners_after = match mode {
        Mode::Ordered => Some(shares(&owners(&mut admin, &keys.stream).await?)),
        Mode::Unordered => None,
    };
    stop.cancel();
    let parts = join_all(tasks).await?;
    // Not `Ctx::clean_up`'s wait for the gateway's idle connections: both
    // sides run through the gateway, and its tracking connection, which
    // outlives the subscriptions until its next sweep, serves the next
    // side as it is. The ordered subscriptions' leases are released first,
    // so nothing of theirs is written again after the keys are deleted.
    if mode == Mode::Ordered {
        await_released(&mut admin, &keys.stream).await?;
    }
    delete(ctx, &keys.clean).await?;

    let mut cycles = Latency::new();
    let (mut delivered, mut acked, mut not_pending, mut out_of_order) = (0, 0, 0, 0);
    let mut readers = vec![0u32; PARTITIONS as usize];
    let mut per_consumer = Vec::with_capacity(parts.len());
    for part in &parts {
        cycles.merge(&part.cycles);
        delivered += part.delivered;
        acked += part.acked;
        not_pending += part.not_pending;
        out_of_order += part.out_of_order;
        per_consumer.push(part.partitions.count_ones());
        for (p, readers) in readers.iter_mut().enumerate() {
            *readers += u32::from(part.partitions & (1 << p) != 0);
        }
    }
    let shared = readers.iter().filter(|&&n| n > 1).count() as u64;
    // When each partition's last entry arrived, ms after timing began.
    let drained_ms: Vec<u64> = (0..PARTITIONS as usize)
        .map(|p| {
            let at = parts.iter().filter_map(|part| part.last_at[p]).max();
            at.map_or(0, |at| {
                at.saturating_duration_since(start).as_millis() as u64
            })
        })
        .collect();
    let side = Side::new(acked, elapsed, &cycles)
        .with("delivered", delivered)
        .with("acked", acked)
        .with("complete", complete)
        .with("not_pending", not_pending)
        .with("out_of_order", out_of_order)
        .with("partitions_per_consumer", per_consumer)
        .with("shared_partitions", shared)
        .with("entries_per_partition", per_partition)
        .with("ready_ms", ready.as_millis() as u64)
        .with("owners_before", owners_before.map(shares_json))
        .with("owners_after", owners_after.map(shares_json))
        .with("redis_calls_per_100", per_hundred(&calls, acked))
        .with("redis_usec_per_100", per_hundred(&usec, acked))
        .with("drained_ms", drained_ms)
        .cpu(spent)
        .gateway_usage(&usage);
    Ok(side)
}

/// Deletes `keys`.
async fn delete(ctx: &Ctx<'_>, keys: &[String]) -> Fallible<()> {
    redis::cmd("DEL")
        .arg(keys)
        .query_async::<()>(&mut ctx.rig.admin().await?)
        .await?;
    Ok(())
}

/// A per-command figure of Redis (calls, or microseconds spent) per 100
/// acked events, by command (commands run inside scripts count too, as
/// Redis counts them; a script's time includes theirs), without the
/// bench's own probes (`client`, `info`) and the `MULTI` of `RENAME`s.
fn per_hundred(commands: &BTreeMap<String, u64>, acked: u64) -> serde_json::Value {
    let per: serde_json::Map<String, serde_json::Value> = commands
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "client|list" | "info" | "rename" | "multi" | "exec"
            )
        })
        .map(|(name, &n)| {
            let rate = n as f64 * 100.0 / acked.max(1) as f64;
            (name.clone(), json!((rate * 100.0).round() / 100.0))
        })
        .collect();
    serde_json::Value::Object(per)
}

/// Fills the staging streams (uncapped, untimed) with `events` keyed
/// events, each in the partition the gateway would pick, and creates the
/// group at their start. Answers the events per partition.
async fn fill(ctx: &Ctx<'_>, staged: &[String], events: u64) -> Fallible<Vec<u64>> {
    let mut admin = ctx.rig.admin().await?;
    let mut per_partition = vec![0u64; staged.len()];
    let mut seq = 0;
    while seq < events {
        let n = FILL_CHUNK.min(events - seq);
        let mut pipe = redis::pipe();
        for s in seq..seq + n {
            let p = payload::partition_of(&payload::partition_key(s), PARTITIONS) as usize;
            per_partition[p] += 1;
            pipe.add_command(payload::keyed_xadd(&staged[p], None, s))
                .ignore();
        }
        pipe.query_async::<()>(&mut admin).await?;
        seq += n;
    }
    for key in staged {
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<()>(&mut admin)
            .await?;
    }
    Ok(per_partition)
}

/// The owner of each partition in the group, from `ListPartitions` (empty:
/// none).
async fn owners(admin: &mut StreamAdminClient<Channel>, stream: &str) -> Fallible<Vec<String>> {
    let partitions = admin
        .list_partitions(pb::ListPartitionsRequest {
            stream: stream.to_owned(),
            group: GROUP.to_owned(),
        })
        .await?
        .into_inner()
        .partitions;
    Ok(partitions.into_iter().map(|p| p.owner).collect())
}

/// How many partitions each owner holds (`""`: unowned).
fn shares(owners: &[String]) -> BTreeMap<String, usize> {
    let mut shares = BTreeMap::new();
    for owner in owners {
        *shares.entry(owner.clone()).or_default() += 1;
    }
    shares
}

fn shares_json(shares: BTreeMap<String, usize>) -> serde_json::Value {
    json!(shares)
}

/// Polls `ListPartitions` until every consumer owns its even share and no
/// partition is unowned (the steady state the ordered side is timed in),
/// within the plan's set-up deadline. Answers the shares.
async fn await_even_owners(
    ctx: &Ctx<'_>,
    admin: &mut StreamAdminClient<Channel>,
    stream: &str,
) -> Fallible<BTreeMap<String, usize>> {
    let deadline = Instant::now() + ctx.plan.setup_deadline;
    let even = PARTITIONS as usize / CONSUMERS;
    loop {
        let shares = shares(&owners(admin, stream).await?);
        let settled = shares.len() == CONSUMERS
            && !shares.contains_key("")
            && shares.values().all(|&n| n == even);
        if settled {
            return Ok(shares);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the ordered consumers' partitions were not shared {even} each within {:?}: owners {shares:?}",
                ctx.plan.setup_deadline
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `ListPartitions` until no partition has an owner any more (the
/// closed ordered subscriptions have released their leases), for at most
/// the lease time's default (5 s), after which the leases lapse anyway.
async fn await_released(admin: &mut StreamAdminClient<Channel>, stream: &str) -> Fallible<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if owners(admin, stream).await?.iter().all(String::is_empty) {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Polls until Redis has run an XREADGROUP for every unordered consumer
/// and partition since `before` (each subscription has read each
/// partition once: it is live), within the plan's set-up deadline. (An
/// XREADGROUP that finds nothing creates no consumer in Redis 7.0, so the
/// group's consumer list cannot tell.)
async fn await_first_reads(ctx: &Ctx<'_>, before: &Commands) -> Fallible<()> {
    let want = (CONSUMERS as u64) * u64::from(PARTITIONS);
    let deadline = Instant::now() + ctx.plan.setup_deadline;
    loop {
        let (calls, _) = ctx.rig.commands().await?.since(before);
        let reads = calls.get("xreadgroup").copied().unwrap_or(0);
        if reads >= want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the unordered consumers ran {reads} of {want} first reads within {:?}",
                ctx.plan.setup_deadline
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What one consumer did.
struct Consumed {
    /// Entries received.
    delivered: u64,
    /// Entries the gateway confirmed acked.
    acked: u64,
    /// Acked IDs the gateway reported not pending (acks that did not take).
    not_pending: u64,
    /// Entries whose ID was not above the previous one of its partition.
    out_of_order: u64,
    /// Bit `p`: an entry of partition `p` arrived.
    partitions: u64,
    /// The last `(ms, seq)` received in each partition.
    last: Vec<Option<(u64, u64)>>,
    /// When an entry of each partition last arrived.
    last_at: Vec<Option<Instant>>,
    cycles: Latency,
}

impl Consumed {
    /// Notes which partition an entry came from, and whether it came in
    /// order.
    fn saw(&mut self, entry: &pb::Entry, now: Instant) {
        let p = entry.partition as usize;
        if p >= self.last.len() {
            return;
        }
        self.partitions |= 1 << p;
        self.last_at[p] = Some(now);
        let id = entry.id.split_once('/').map_or(&*entry.id, |(_, id)| id);
        let parsed = id
            .split_once('-')
            .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)));
        if let Some(id) = parsed {
            if self.last[p].is_some_and(|last| id <= last) {
                self.out_of_order += 1;
            }
            self.last[p] = Some(id);
        }
    }
}

/// One Consume stream until `stop`: ack every batch in band (S7's loop),
/// count the confirms, note each entry's partition and order. Cycles are
/// timed from `clock` (when timing began) for the first batch.
async fn consume(
    requests: mpsc::Sender<pb::ConsumeRequest>,
    mut responses: Streaming<pb::ConsumeResponse>,
    progress: Arc<Progress>,
    stop: CancellationToken,
    clock: Arc<OnceLock<Instant>>,
) -> Fallible<Consumed> {
    let mut out = Consumed {
        delivered: 0,
        acked: 0,
        not_pending: 0,
        out_of_order: 0,
        partitions: 0,
        last: vec![None; PARTITIONS as usize],
        last_at: vec![None; PARTITIONS as usize],
        cycles: Latency::new(),
    };
    let mut cycle: Option<Instant> = None;
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            message = responses.message() => message?,
        };
        match message.and_then(|m| m.kind) {
            Some(consume_response::Kind::Batch(batch)) => {
                let now = Instant::now();
                let mut ids = Vec::with_capacity(batch.entries.len());
                for entry in batch.entries {
                    out.saw(&entry, now);
                    ids.push(entry.id);
                }
                out.delivered += ids.len() as u64;
                let ack = consume_request::Kind::Ack(pb::AckIds { ids });
                requests
                    .send(pb::ConsumeRequest { kind: Some(ack) })
                    .await?;
                if let Some(from) = cycle.or_else(|| clock.get().copied()) {
                    out.cycles.record(now.saturating_duration_since(from));
                }
                cycle = Some(now);
            }
            Some(consume_response::Kind::Confirm(confirm)) => {
                let n = confirm.done.len() as u64;
                out.acked += n;
                out.not_pending += confirm.not_pending.len() as u64;
                progress.add(n);
            }
            Some(consume_response::Kind::Heartbeat(_)) => {}
            None => {
                return Err(
                    "the gateway ended a Consume stream before every event was acked".into(),
                );
            }
        }
    }
    Ok(out)
}
