//! Integration tests of the gateway against real `redis-server` processes.
//! One test binary, one module per surface.

mod ack_reap;
mod admin;
mod cadence;
mod cluster;
mod common;
mod consume;
mod dashboard;
mod errors;
mod failover;
mod faults;
mod flood;
mod fuzz;
mod guarantees;
mod keys;
mod lifecycle;
mod list_streams;
mod loss;
mod metrics;
mod ordered;
mod ordered_chaos;
mod partitioned_admin;
mod partitioned_replay;
mod partitions;
mod produce;
mod produce_stream;
mod reading;
mod redis_cluster;
mod replay_trim;
mod replicas;
mod security;
mod servers;
mod subscribe;
mod tail;
mod wakeup;
