//! How many long-lived streams (Subscribe, Tail and Consume) may be open
//! at once, per client connection and on the whole gateway.
//!
//! Each open subscription costs a task, a hand-off buffer, a place in the
//! doorbell's watch list and its share of the reads on the shared Redis
//! connection, so without a cap one client could take the gateway's
//! capacity from everyone. A connection is identified by the peer's address and port, which is
//! unique among the gateway's open TCP connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};

/// Counts open subscriptions against the two limits.
#[derive(Debug)]
pub struct SubscriptionSlots {
    max_total: usize,
    max_per_connection: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_connection: HashMap<SocketAddr, usize>,
}

/// One open subscription's place; dropping it (with the response stream)
/// frees the place.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<SubscriptionSlots>,
    peer: Option<SocketAddr>,
}

impl SubscriptionSlots {
    /// Limits of `max_total` open subscriptions on the gateway and
    /// `max_per_connection` on one client connection.
    pub fn new(max_total: usize, max_per_connection: usize) -> SubscriptionSlots {
        SubscriptionSlots {
            max_total,
            max_per_connection,
            open: Mutex::default(),
        }
    }

    /// Takes a place for a subscription from `peer` (unknown peers only
    /// count toward the total), or says which limit is reached.
    pub fn acquire(self: &Arc<Self>, peer: Option<SocketAddr>) -> Result<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.max_total {
            return Err(Error::LimitExceeded(format!(
                "the gateway has {} open subscriptions (Subscribe, Tail and Consume), the \
                 limit (--max-subscriptions); try again later or another gateway",
                self.max_total
            )));
        }
        if let Some(peer) = peer {
            let count = open.per_connection.entry(peer).or_default();
            if *count >= self.max_per_connection {
                return Err(Error::LimitExceeded(format!(
                    "this connection has {} open subscriptions (Subscribe, Tail and \
                     Consume), the limit (--max-subscriptions-per-connection); open another \
                     connection",
                    self.max_per_connection
                )));
            }
            *count += 1;
        }
        open.total += 1;
        Ok(Slot {
            slots: self.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        if let Some(peer) = self.peer
            && let Some(count) = open.per_connection.get_mut(&peer)
        {
            *count -= 1;
            if *count == 0 {
                open.per_connection.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn peer(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn per_connection_limit_counts_each_peer_separately() {
        let slots = Arc::new(SubscriptionSlots::new(10, 2));
        let _a1 = slots.acquire(peer(1)).unwrap();
        let a2 = slots.acquire(peer(1)).unwrap();
        let err = slots.acquire(peer(1)).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(
            err.to_string()
                .contains("--max-subscriptions-per-connection")
        );
        let _b1 = slots.acquire(peer(2)).unwrap();
        drop(a2);
        let _a3 = slots.acquire(peer(1)).unwrap();
        assert_eq!(slots.open.lock().unwrap().total, 3);
    }

    #[test]
    fn total_limit_spans_connections_and_frees_on_drop() {
        let slots = Arc::new(SubscriptionSlots::new(2, 5));
        let a = slots.acquire(peer(1)).unwrap();
        let _b = slots.acquire(None).unwrap();
        let err = slots.acquire(peer(3)).unwrap_err();
        assert!(err.to_string().contains("(--max-subscriptions)"), "{err}");
        drop(a);
        assert!(slots.acquire(peer(3)).is_ok());
        let open = slots.open.lock().unwrap();
        assert!(!open.per_connection.contains_key(&peer(1).unwrap()));
    }
}
