//! Probes of what the gateway, the bench and Redis use: Redis connections
//! (told apart by client name, on every node of a cluster), resident
//! memory, CPU time, and the commands Redis executed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::{ADMIN_NAME, CLIENT_NAME, GATEWAY_THREADS, Rig};
use crate::Fallible;
use crate::system;

/// CPU time used so far (or in a phase) by each party. The client is the
/// bench's load generator: gRPC clients on the gateway side, redis-rs on
/// the direct side.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// The gateway's threads (in-process) or process (`--gateway-pid`).
    pub gateway: Option<Duration>,
    /// Every other thread of the bench process.
    pub client: Duration,
    /// The redis-server process, when it runs on this machine.
    pub redis: Option<Duration>,
}

impl Cpu {
    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: Cpu) -> Cpu {
        let diff = |now: Option<Duration>, then: Option<Duration>| Some(now?.saturating_sub(then?));
        Cpu {
            gateway: diff(self.gateway, earlier.gateway),
            client: self.client.saturating_sub(earlier.client),
            redis: diff(self.redis, earlier.redis),
        }
    }
}

/// Resources the gateway holds at one instant.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// Redis connections not opened by the bench: the gateway's (plus any
    /// other client of a shared Redis).
    pub gateway_connections: u64,
    /// Those connections by client name (`CLIENT SETNAME`; `""` for
    /// unnamed ones), e.g. the tracking wake-up's `streamgate-watch`.
    pub gateway_by_name: BTreeMap<String, u64>,
    /// Connections the bench's direct side holds (not its admin and probe
    /// connections).
    pub bench_connections: u64,
    /// Resident memory of the gateway process, when known.
    pub rss_mb: Option<f64>,
}

impl Usage {
    /// The larger of each figure (the names of the reading with more
    /// gateway connections).
    pub fn max(self, other: Usage) -> Usage {
        let gateway_by_name = if other.gateway_connections > self.gateway_connections {
            other.gateway_by_name
        } else {
            self.gateway_by_name
        };
        Usage {
            gateway_connections: self.gateway_connections.max(other.gateway_connections),
            gateway_by_name,
            bench_connections: self.bench_connections.max(other.bench_connections),
            rss_mb: match (self.rss_mb, other.rss_mb) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// One Redis node as the probes see it: a connection named
/// [`ADMIN_NAME`] and the server's process ID.
pub(super) struct Probe {
    conn: MultiplexedConnection,
    pid: Option<u32>,
    /// Whether the node serves slots as a master (always, for one Redis).
    master: bool,
}

impl Rig {
    /// A probe per Redis node (made once).
    async fn probes(&self) -> Fallible<&[Probe]> {
        let probes = self
            .probes
            .get_or_try_init(|| async {
                let mut probes = Vec::new();
                for (url, master) in self.node_urls().await? {
                    let mut conn = super::single(&url, Duration::from_secs(5)).await?;
                    redis::cmd("CLIENT")
                        .arg("SETNAME")
                        .arg(ADMIN_NAME)
                        .query_async::<()>(&mut conn)
                        .await?;
                    let info: String = redis::cmd("INFO")
                        .arg("server")
                        .query_async(&mut conn)
                        .await?;
                    let pid = info
                        .lines()
                        .find_map(|l| l.strip_prefix("process_id:"))
                        .and_then(|pid| pid.trim().parse().ok());
                    probes.push(Probe { conn, pid, master });
                }
                Fallible::Ok(probes)
            })
            .await?;
        Ok(probes)
    }

    /// Counts Redis connections by name, on every node, and reads the
    /// gateway's RSS. Replication links (flags `S` and `M`) and the
    /// bench's admin connections count on neither side.
    pub async fn usage(&self) -> Fallible<Usage> {
        let ours = format!("name={CLIENT_NAME}");
        let admin = format!("name={ADMIN_NAME}");
        let (mut bench, mut others) = (0u64, 0u64);
        let mut by_name = BTreeMap::new();
        for probe in self.probes().await? {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut probe.conn.clone())
                .await?;
            for line in list.lines().filter(|l| !l.trim().is_empty()) {
                let mut fields = line.split(' ');
                if fields.clone().any(|field| field == admin)
                    || fields.clone().any(|field| {
                        field
                            .strip_prefix("flags=")
                            .is_some_and(|flags| flags.contains(['S', 'M']))
                    })
                {
                    continue;
                }
                if fields.clone().any(|field| field == ours) {
                    bench += 1;
                } else {
                    others += 1;
                    let name = fields
                        .find_map(|field| field.strip_prefix("name="))
                        .unwrap_or_default();
                    *by_name.entry(name.to_owned()).or_insert(0) += 1;
                }
            }
        }
        Ok(Usage {
            gateway_connections: others,
            gateway_by_name: by_name,
            bench_connections: bench,
            rss_mb: self.rss_mb(),
        })
    }

    /// XADD calls so far on each master, in slot order (`INFO
    /// commandstats`; XADDs inside scripts count too): the difference
    /// over a phase shows how the work was spread over the masters.
    pub async fn xadds_per_master(&self) -> Fallible<Vec<u64>> {
        let mut out = Vec::new();
        for probe in self.probes().await?.iter().filter(|p| p.master) {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut probe.conn.clone())
                .await?;
            let calls = info
                .lines()
                .find_map(|l| l.strip_prefix("cmdstat_xadd:calls="))
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            out.push(calls);
        }
        Ok(out)
    }

    /// Commands executed so far on every master (one Redis: the server),
    /// by command, from `INFO commandstats`. The difference of two
    /// readings is what clients ran in between, plus the first reading's
    /// own `INFO` per master (Redis counts a command once it has run);
    /// [`Commands::since`] takes those off, and the replicas' `REPLCONF`
    /// acknowledgements, which are replication, not clients' work.
    pub async fn commands(&self) -> Fallible<Commands> {
        let mut calls = BTreeMap::new();
        let mut usec = BTreeMap::new();
        let mut masters = 0;
        for probe in self.probes().await?.iter().filter(|p| p.master) {
            masters += 1;
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut probe.conn.clone())
                .await?;
            for line in info.lines() {
                let Some((name, rest)) = line
                    .strip_prefix("cmdstat_")
                    .and_then(|l| l.split_once(":calls="))
                else {
                    continue;
                };
                let n: u64 = rest
                    .split(',')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                *calls.entry(name.to_owned()).or_insert(0) += n;
                let spent: u64 = rest
                    .split(',')
                    .find_map(|field| field.strip_prefix("usec="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                *usec.entry(name.to_owned()).or_insert(0) += spent;
            }
        }
        Ok(Commands {
            calls,
            usec,
            masters,
            at: Instant::now(),
        })
    }

    /// Runs `work` while sampling [`Rig::usage`] every 250 ms; returns its
    /// output and the peak of each figure. Sampling runs beside the work
    /// because resources are released the moment the work ends. (Not for
    /// latency runs with many clients: `CLIENT LIST` is O(clients) and
    /// blocks Redis meanwhile.)
    pub async fn while_sampling<T>(&self, work: impl Future<Output = T>) -> Fallible<(T, Usage)> {
        let mut peak = self.usage().await?;
        let mut work = std::pin::pin!(work);
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                out = &mut work => return Ok((out, peak)),
                _ = every.tick() => peak = peak.max(self.usage().await?),
            }
        }
    }

    /// CPU used so far by the gateway, the bench's clients and Redis (every
    /// node of a cluster, replicas included: replication is part of what
    /// a write costs).
    pub async fn cpu(&self) -> Cpu {
        let redis = match self.probes().await {
            Ok(probes) => probes
                .iter()
                .map(|p| p.pid.and_then(system::process_cpu))
                .sum::<Option<Duration>>(),
            Err(_) => None,
        };
        let threads = self.embedded().as_ref().map(|e| e.threads.clone());
        Cpu {
            gateway: match (threads, self.gateway_pid) {
                (Some(threads), _) => Some(system::threads_cpu(|name| name == threads)),
                (None, Some(pid)) => system::process_cpu(pid),
                (None, None) => None,
            },
            // Any other rig's gateway counts on neither side.
            client: system::threads_cpu(|name| !name.starts_with(GATEWAY_THREADS)),
            redis,
        }
    }

    /// RSS of the gateway process, when known.
    pub fn rss_mb(&self) -> Option<f64> {
        match (self.embedded().is_some(), self.gateway_pid) {
            (true, _) => system::rss_mb(None),
            (false, Some(pid)) => system::rss_mb(Some(pid)),
            (false, None) => None,
        }
    }

    /// Waits (up to `deadline`) until the gateway holds no more than
    /// `connections` Redis connections: closed subscriptions notice the
    /// departed client within one block period and release theirs.
    pub async fn wait_for_gateway_connections(
        &self,
        connections: u64,
        deadline: Duration,
    ) -> Fallible<u64> {
        let start = Instant::now();
        loop {
            let now = self.usage().await?.gateway_connections;
            if now <= connections || start.elapsed() > deadline {
                return Ok(now);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Commands executed on the masters up to one instant ([`Rig::commands`]).
#[derive(Clone, Debug)]
pub struct Commands {
    /// Calls by command (`xreadgroup`, `client|tracking`, ...).
    calls: BTreeMap<String, u64>,
    /// Microseconds Redis spent in each command (`usec`; a script's
    /// includes the commands it ran, which count on their own too).
    usec: BTreeMap<String, u64>,
    /// Masters read (each reading costs one `INFO` on each).
    masters: u64,
    at: Instant,
}

impl Commands {
    /// Commands clients ran between `earlier` and `self`, by command,
    /// without the bench's own readings and replication's `REPLCONF`;
    /// and the seconds in between.
    pub fn since(&self, earlier: &Commands) -> (BTreeMap<String, u64>, f64) {
        let mut out = BTreeMap::new();
        for (name, &now) in &self.calls {
            let mut n = now.saturating_sub(earlier.calls.get(name).copied().unwrap_or(0));
            if name == "info" {
                n = n.saturating_sub(earlier.masters);
            }
            if name == "replconf" || n == 0 {
                continue;
            }
            out.insert(name.clone(), n);
        }
        (out, (self.at - earlier.at).as_secs_f64())
    }

    /// Microseconds Redis spent in each command between `earlier` and
    /// `self` (commands that took none left out).
    pub fn usec_since(&self, earlier: &Commands) -> BTreeMap<String, u64> {
        self.usec
            .iter()
            .map(|(name, &now)| {
                let then = earlier.usec.get(name).copied().unwrap_or(0);
                (name.clone(), now.saturating_sub(then))
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
