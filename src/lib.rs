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
//! - `bin/streamgate`: the command line and environment (clap); thin.
//! - [`config`]: the gateway's settings, plain values with defaults.
//! - [`server`]: tonic wiring: services, reflection, health, shutdown.
//! - [`api`]: one file per proto service; each handler validates,
//!   authorizes, calls the broker and converts. Knows nothing of RESP.
//! - [`auth`]: bearer-token authentication (a tonic interceptor) and the
//!   grants handlers check; [`tls`]: certificates for the gRPC listener
//!   and for `rediss://`; [`limits`]: event and subscription limits, how
//!   every request is read and the byte budget; [`namespace`]: which stream
//!   names may become Redis keys.
//! - [`broker`]: typed Redis Streams operations on a shared multiplexed
//!   connection, plus the doorbell's own connections (a tracking one per
//!   node, or blocking XREADs). Knows nothing of gRPC.
//! - [`doorbell`]: wakes idle live streams: one `CLIENT TRACKING`
//!   connection per Redis node says which watched stream was written
//!   (blocking XREADs where the server refuses tracking).
//! - [`driver`]: the one loop behind every live stream (Subscribe, Tail,
//!   Consume): room in the client's buffer, waiting, heartbeats, timers,
//!   outage riding ([`outage`]), shutdown. [`subscription`] and [`tail`]
//!   are its readers, [`parts`] combines one reader per partition of a
//!   partitioned stream; [`replay`] is a paging loop (merging partitions).
//!   [`delivery`] is the bounded hand-off from a reading task to a
//!   response stream.
//! - [`partition`]: partitioned streams at the API: which streams are
//!   partitioned (looked up once per gateway), the key hash, qualified IDs;
//!   the layout itself lives at the stream's key (`broker::layout`).
//! - [`ownership`]: ordered consumption's partition ownership: a
//!   rebalancing task per ordered subscription (membership, shares,
//!   leases in Redis); the subscription reads only what it owns.
//! - [`metrics`]: the Prometheus registry, the per-RPC metrics layer,
//!   `/metrics` and the group poller.
//! - [`local`]: the gateway's routes as an in-process gRPC handle.
//!   [`dashboard`]: the live web page (`--http-listen`, started by the
//!   binary), a thin face over that handle; [`demo`]: `streamgate
//!   demo`'s consumers, clients of the public API, which the dashboard
//!   steers through [`dashboard::DemoControls`] without knowing the demo.
//! - [`ids`], [`model`]: stream IDs and the event/entry data model.
//! - [`error`]: the one error enum and the one mapping to gRPC status;
//!   it logs Redis conditions and internal errors through
//!   [`log_throttle`], one line a minute per kind with a count.
//! - [`shutdown`]: the signal every long-lived task watches.
//! - [`pb`]: code generated from the protos.
//!
//! # How a Subscribe flows
//!
//! 1. `api::event_stream` validates the request into a
//!    [`subscription::SubscribeSpec`] (bad input is INVALID_ARGUMENT before
//!    any Redis call), authorizes the caller and takes a subscription slot.
//! 2. [`subscription::start`] watches the stream's bell on the
//!    [`doorbell`], creates the group if asked, and hands a
//!    [`driver::Live`] (the subscription as a [`driver::LiveRead`] plus its
//!    wake-ups) to [`driver::start`], which spawns the driver and returns
//!    the response stream. The client gets its headers only now, so an
//!    entry it produces afterwards is never "before" the group.
//! 3. The driver loops: reserve room for one push in the client's buffer,
//!    then `LiveRead::read` into that room. The subscription reads with the
//!    broker: its own pending entries first (`pending_first`), else a
//!    reclaim round when one is due, else XREADGROUP `>` without BLOCK.
//!    The [`broker`] decodes every reply into finished [`model::Entry`]
//!    values (ID, fields, delivery count, `redelivered`).
//! 4. Entries go to the client as one batch. Nothing new: the driver waits
//!    in one `select!` for the bell (Redis reported a write to the
//!    stream), an ack in the group (under `max_in_flight`), a Nack through
//!    this gateway, the next timer (heartbeat, reclaim round, the bell's
//!    recheck),
//!    the client leaving or shutdown. A Redis outage is retried with
//!    backoff for `--redis-outage-grace-ms` with heartbeats meanwhile.
//! 5. The stream ends when the client leaves (nothing more is read; what
//!    was read but not sent stays pending), at shutdown (UNAVAILABLE), or
//!    with the error that stopped it, mapped once in [`error`].

// The public surface: what an embedder and the binaries use.
//
// - `config` and `server`: `Settings`, `server::start` and `Gateway`, to
//   run a gateway from code; `pb`: the generated messages and clients.
// - `local`, `dashboard` and `demo`: the binary composes them with the
//   gateway (the library's `server::start` serves gRPC and metrics only).
//
// Everything else is crate-private, so the compiler finds what nothing
// uses.
pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod broker;
pub mod config;
pub(crate) mod consume;
pub mod dashboard;
pub(crate) mod delivery;
pub mod demo;
pub(crate) mod doorbell;
pub(crate) mod driver;
pub(crate) mod error;
pub(crate) mod group_ops;
pub(crate) mod ids;
pub(crate) mod limits;
pub mod local;
pub(crate) mod log_throttle;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod namespace;
pub(crate) mod outage;
pub(crate) mod ownership;
pub(crate) mod partition;
pub(crate) mod parts;
pub mod pb;
pub(crate) mod replay;
pub(crate) mod rewinds;
pub mod server;
pub(crate) mod shutdown;
pub(crate) mod subscription;
pub(crate) mod tail;
#[cfg(test)]
mod test_redis;
pub(crate) mod tls;
