//! Writes that count only once replicas hold them
//! (`--produce-wait-replicas N`).
//!
//! Redis replicates asynchronously: a master answers a write before any
//! replica has it, and a failover in that window loses the write although
//! the client was told it succeeded. `WAIT N timeout` closes the window: it
//! answers how many replicas acknowledged everything *this connection* has
//! written so far. Two consequences shape this module:
//!
//! - The write and its WAIT travel in one pipeline on one connection. A
//!   WAIT sent separately could be routed (after a failover) to a new
//!   master on a fresh connection, which has written nothing and so would
//!   vouch for a write it never saw.
//! - Redis holds the connection that sent WAIT until the replicas answer or
//!   the timeout passes, so durable writes get connections of their own (a
//!   small pool): on the shared connection a WAIT would stall every read,
//!   ack and heartbeat queued behind it.
//!
//! A write that fewer replicas confirm in time is still on the master; the
//! caller hears UNAVAILABLE and retries with the same idempotency keys,
//! which writes nothing twice (the keys were written with the entries).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::{Pipeline, Value};

use super::BrokerOptions;
use super::link::{Backend, Link};
use crate::error::{Error, Result};

/// Connections (per node, on a cluster) that durable writes take turns on.
/// Each WAIT occupies its connection for about one replica round trip;
/// four let that many writes wait at once without opening a connection per
/// request.
const POOL: usize = 4;

/// Extra time a durable connection gives a reply beyond WAIT's own
/// timeout, so that Redis' "not enough replicas" answer arrives rather
/// than a client-side timeout.
const REPLY_SLACK: Duration = Duration::from_secs(1);

/// The durable-write connections and what they wait for.
pub(super) struct Durable {
    /// Replicas that must hold a write.
    replicas: u32,
    /// WAIT's timeout, in milliseconds: `--redis-timeout-ms`.
    timeout_ms: u64,
    pool: Vec<Backend>,
    next: AtomicUsize,
}

impl Durable {
    /// The pool for `options.wait_replicas` replicas, or `None` when writes
    /// need not wait. Connects lazily, like the shared connection.
    pub(super) fn open(options: &BrokerOptions) -> Result<Option<Durable>> {
        if options.wait_replicas == 0 {
            return Ok(None);
        }
        let mut patient = options.clone();
        patient.response_timeout += REPLY_SLACK;
        let pool = (0..POOL)
            .map(|_| Backend::open(&patient))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Durable {
            replicas: options.wait_replicas,
            timeout_ms: u64::try_from(options.response_timeout.as_millis()).unwrap_or(u64::MAX),
            pool,
            next: AtomicUsize::new(0),
        }))
    }

    /// A connection of the pool, in turn.
    pub(super) async fn link(&self) -> Result<Link> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[turn].link().await
    }

    /// Appends WAIT to a pipeline of writes. Sent on one of
    /// [`Durable::link`]'s connections, the pipeline is routed by its first
    /// key; WAIT has none, so it rides along to the same node, and its reply
    /// (the pipeline's last) is for [`Durable::check`].
    pub(super) fn wait_after(&self, pipe: &mut Pipeline) {
        pipe.cmd("WAIT").arg(self.replicas).arg(self.timeout_ms);
    }

    /// Ok when WAIT's answer counts enough replicas; else UNAVAILABLE
    /// naming how many confirmed.
    pub(super) fn check(&self, wait: Value) -> Result<()> {
        match wait {
            Value::Int(n) if n >= i64::from(self.replicas) => Ok(()),
            Value::Int(n) => Err(Error::Unavailable(format!(
                "only {n} of {} replicas confirmed the write within {} ms \
                 (--produce-wait-replicas); it may still be on the master alone: \
                 retry with the same idempotency keys",
                self.replicas, self.timeout_ms
            ))),
            // Such as "WAIT cannot be used with replica instances" when the
            // node was demoted under us: the write's fate is unknown.
            Value::ServerError(e) => Err(Error::Unavailable(format!(
                "could not confirm the write on replicas: {e}; retry with the same idempotency keys"
            ))),
            other => Err(Error::Internal(format!(
                "WAIT answered {other:?}, not a replica count"
            ))),
        }
    }
}
