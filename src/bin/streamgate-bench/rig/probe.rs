//! Probes of what the gateway, the bench and Redis use: Redis connections
//! (told apart by client name), resident memory and CPU time.

use std::time::{Duration, Instant};

use super::{CLIENT_NAME, GATEWAY_THREADS, Rig};
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
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Redis connections not opened by the bench: the gateway's (plus any
    /// other client of a shared Redis).
    pub gateway_connections: u64,
    /// Connections the bench itself holds, besides its probe.
    pub bench_connections: u64,
    /// Resident memory of the gateway process, when known.
    pub rss_mb: Option<f64>,
}

impl Usage {
    /// The larger of each figure.
    pub fn max(self, other: Usage) -> Usage {
        Usage {
            gateway_connections: self.gateway_connections.max(other.gateway_connections),
            bench_connections: self.bench_connections.max(other.bench_connections),
            rss_mb: match (self.rss_mb, other.rss_mb) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

impl Rig {
    /// Counts Redis connections by name and reads the gateway's RSS.
    pub async fn usage(&self) -> Fallible<Usage> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut self.admin().await?)
            .await?;
        let ours = format!("name={CLIENT_NAME}");
        let (mut bench, mut others) = (0u64, 0u64);
        for line in list.lines().filter(|l| !l.trim().is_empty()) {
            if line.split(' ').any(|field| field == ours) {
                bench += 1;
            } else {
                others += 1;
            }
        }
        Ok(Usage {
            gateway_connections: others,
            // Minus the admin connection that asked.
            bench_connections: bench.saturating_sub(1),
            rss_mb: self.rss_mb(),
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

    /// CPU used so far by the gateway, the bench's clients and Redis.
    pub async fn cpu(&self) -> Cpu {
        let redis_pid = *self
            .redis_pid
            .get_or_init(|| async {
                let info: String = redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut self.admin().await.ok()?)
                    .await
                    .ok()?;
                info.lines()
                    .find_map(|l| l.strip_prefix("process_id:"))?
                    .trim()
                    .parse()
                    .ok()
            })
            .await;
        Cpu {
            gateway: match (&self.embedded, self.gateway_pid) {
                (Some(_), _) => Some(system::threads_cpu(|name| name == GATEWAY_THREADS)),
                (None, Some(pid)) => system::process_cpu(pid),
                (None, None) => None,
            },
            client: system::threads_cpu(|name| name != GATEWAY_THREADS),
            redis: redis_pid.and_then(system::process_cpu),
        }
    }

    /// RSS of the gateway process, when known.
    pub fn rss_mb(&self) -> Option<f64> {
        match (&self.embedded, self.gateway_pid) {
            (Some(_), _) => system::rss_mb(None),
            (None, Some(pid)) => system::rss_mb(Some(pid)),
            (None, None) => None,
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
