//! streamgate: a gRPC gateway to Redis Streams consumer groups.
//!
//! Services in any language produce events, join consumer groups with
//! at-least-once delivery, acknowledge, recover the entries of crashed
//! consumers, replay history and apply retention, all through one gRPC API
//! (`proto/streamgate/v1`). The gateway is stateless: every piece of
//! delivery state lives in Redis, so instances scale out behind a load
//! balancer and a crashed gateway loses nothing.
//!
//! # Layout
//!
//! Knowledge flows one way, from the wire to Redis:
//!
//! - `main.rs`: the command line; thin.
//! - [`config`]: flags and environment variables.
//! - [`server`]: tonic wiring: services, reflection, health, shutdown.
//! - [`api`]: one file per proto service; each handler validates,
//!   authorizes, calls the broker and converts. Knows nothing of RESP.
//! - [`auth`]: bearer-token authentication (a tonic interceptor) and the
//!   grants handlers check; [`tls`]: certificates for the gRPC listener
//!   and for `rediss://`; [`limits`]: event, message and subscription
//!   limits; [`namespace`]: which stream names may become Redis keys.
//! - [`broker`]: typed Redis Streams operations on a shared multiplexed
//!   connection, plus [`broker::Waiter`], the doorbell's blocking
//!   connection. Knows nothing of gRPC.
//! - [`doorbell`]: a few blocking XREADs (one per 100 watched streams)
//!   that wake the idle read loops.
//! - [`subscription`], [`tail`] and [`replay`]: the read loops behind the
//!   server-streaming RPCs, driven by [`delivery`]'s bounded hand-off.
//!   [`outage`] is how they ride out a lost Redis connection.
//! - [`metrics`]: the Prometheus registry, `/metrics` and the group poller.
//! - [`ids`], [`model`]: stream IDs and the event/entry data model.
//! - [`error`]: the one error enum and the one mapping to gRPC status.
//! - [`shutdown`]: the signal every long-lived task watches.
//! - [`pb`]: code generated from the protos.

pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod delivery;
pub mod doorbell;
pub mod error;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod namespace;
pub mod outage;
pub mod pb;
pub mod replay;
pub mod server;
pub mod shutdown;
pub mod subscription;
pub mod tail;
pub mod tls;
