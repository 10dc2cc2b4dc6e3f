//! The one domain error type, how Redis errors become domain errors, and the
//! single mapping from domain errors to gRPC status codes.
//!
//! Keeping both translations here means a reader finds every status-code
//! decision in one file, and a Redis error a client can cause (a missing
//! group, a key of the wrong type) can never leak out as INTERNAL.

use std::time::{Duration, Instant};

use redis::{RedisError, ServerError};
use tonic::{Code, Status};

use crate::log_throttle::LogThrottle;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while serving a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed: an empty name, a bad ID, a reserved field.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The request field at fault, e.g. `ids[3]`.
        field: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A request that cannot be read: undecodable, cut short, compressed,
    /// or without its message.
    #[error("{rpc}: {reason}")]
    Unreadable {
        /// The rpc's method name, e.g. `ProduceStream`.
        rpc: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A client's request stream failed: the status it failed with, which
    /// the reading layer ([`crate::limits::ReadingLayer`]) settles on its
    /// way out.
    #[error("{}", .0.message())]
    RequestStream(Status),
    /// A configured limit was exceeded; the message names the limit.
    #[error("{0}")]
    LimitExceeded(String),
    /// The stream exists (or not) but the consumer group does not.
    #[error("consumer group {group:?} does not exist on stream {stream:?}")]
    GroupNotFound {
        /// Client stream name.
        stream: String,
        /// Group name.
        group: String,
    },
    /// The stream must exist for this request and does not.
    #[error("stream {stream:?} does not exist")]
    StreamNotFound {
        /// Client stream name.
        stream: String,
    },
    /// The consumer is not a member of the group.
    #[error("consumer {consumer:?} does not exist in group {group:?} of stream {stream:?}")]
    ConsumerNotFound {
        /// Client stream name.
        stream: String,
        /// Group name.
        group: String,
        /// Consumer name.
        consumer: String,
    },
    /// The stream's key holds another Redis type.
    #[error("the key of stream {stream:?} holds a value that is not a stream")]
    WrongType {
        /// Client stream name.
        stream: String,
    },
    /// The request is valid but the state of the stream refuses it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Redis cannot be reached, the connection was lost, or Redis refuses
    /// commands for now (loading, failover, read-only replica, ...; see
    /// [`REFUSING_FOR_NOW`]). Retryable. The live streams ride this out.
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    /// Redis is at `maxmemory` and refuses writes (`maxmemory-policy
    /// noeviction`, or nothing left it may evict): the reply `OOM`, as
    /// Redis worded it. Not a fault of the request and not a bug, so
    /// RESOURCE_EXHAUSTED: retrying soon is pointless until an operator or
    /// the consumers (trimming) free memory.
    #[error(
        "Redis is out of memory (maxmemory): {}; writes fail until memory is freed \
         (trim or delete streams) or maxmemory is raised",
        .0.trim_end_matches('.')
    )]
    RedisOutOfMemory(String),
    /// Redis did not answer within the configured timeout.
    #[error("Redis did not answer in time: {0}")]
    Timeout(String),
    /// Redis' ACL refused the command.
    #[error("Redis refused the command: {0}")]
    RedisPermission(String),
    /// The caller sent no credentials, malformed ones or a token the
    /// gateway does not know.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but its grants do not cover this stream.
    #[error("{principal:?} lacks the {permission:?} permission on stream {stream:?}")]
    PermissionDenied {
        /// Name of the token (or `anonymous`).
        principal: String,
        /// `produce`, `consume` or `admin`.
        permission: &'static str,
        /// Client stream name.
        stream: String,
    },
    /// The client stopped taking what a stream delivers.
    #[error(
        "the client took nothing for {} ms (--client-stall-timeout-ms); the subscription ended and its pending entries stay in the group's PEL",
        .0.as_millis()
    )]
    ClientStalled(std::time::Duration),
    /// The Redis server is too old (or otherwise unfit) to serve from; the
    /// message names the server and version found and what is required.
    #[error("{0}")]
    UnsupportedServer(String),
    /// The gateway is shutting down; reconnect to another instance.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// A bug: a reply of an unexpected shape, an invariant broken.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// This error as the client should read it when it arose on a
    /// partition of `stream`: about the stream the client named, never
    /// the partition's internal name.
    pub fn about(self, stream: &str) -> Error {
        let stream = stream.to_owned();
        match self {
            Error::GroupNotFound { group, .. } => Error::GroupNotFound { stream, group },
            Error::StreamNotFound { .. } => Error::StreamNotFound { stream },
            Error::ConsumerNotFound {
                group, consumer, ..
            } => Error::ConsumerNotFound {
                stream,
                group,
                consumer,
            },
            Error::WrongType { .. } => Error::WrongType { stream },
            other => other,
        }
    }

    /// An INVALID_ARGUMENT error for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Classifies a Redis error raised while working on `stream` (and
    /// `group`, where the command names one), so that the message names what
    /// the client asked for.
    ///
    /// Error replies are told apart by their code (the reply's first word),
    /// never by their wording: the code is the part Redis keeps stable, and
    /// since Redis 7.0 an error raised by `redis.call` inside a script or
    /// function keeps the code of the command that failed (`OOM command not
    /// allowed ... script: <sha>, on @user_script:1.`), so a condition met
    /// inside one of [`crate::broker`]'s scripts classifies like the same
    /// condition met by a plain command.
    pub fn from_redis(err: &RedisError, stream: &str, group: Option<&str>) -> Error {
        let reply = error_reply(err);
        let code = reply.as_ref().map(ServerError::code);
        let detail = reply
            .as_ref()
            .and_then(ServerError::details)
            .unwrap_or_default();
        match code {
            Some("NOGROUP") => match group {
                Some(group) => Error::GroupNotFound {
                    stream: stream.to_owned(),
                    group: group.to_owned(),
                },
                None => Error::StreamNotFound {
                    stream: stream.to_owned(),
                },
            },
            Some("WRONGTYPE") => Error::WrongType {
                stream: stream.to_owned(),
            },
            Some(OUT_OF_MEMORY) => {
                let said = said(OUT_OF_MEMORY, detail);
                log_redis_condition(OUT_OF_MEMORY, &said);
                Error::RedisOutOfMemory(said)
            }
            Some(code) if REFUSING_FOR_NOW.contains(&code) => {
                let said = said(code, detail);
                log_redis_condition(code, &said);
                Error::Unavailable(said)
            }
            Some("NOPERM") => Error::RedisPermission(err.to_string()),
            Some("ERR")
                if detail.contains("no such key")
                    || detail.contains("requires the key to exist") =>
            {
                Error::StreamNotFound {
                    stream: stream.to_owned(),
                }
            }
            Some("ERR") if detail.contains("equal or smaller than the target stream top item") => {
                Error::FailedPrecondition(format!(
                    "stream {stream:?}: the ID is not greater than the stream's last ID"
                ))
            }
            _ if err.is_timeout() => Error::Timeout(err.to_string()),
            _ if err.is_io_error()
                || err.kind() == redis::ErrorKind::ClusterConnectionNotFound
                || err.is_connection_dropped()
                || err.is_connection_refusal()
                || err.is_unrecoverable_error() =>
            {
                Error::Unavailable(err.to_string())
            }
            _ => Error::Internal(format!("unexpected Redis error: {err}")),
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } | Error::Unreadable { .. } => Code::InvalidArgument,
            Error::RequestStream(status) => status.code(),
            Error::LimitExceeded(_) | Error::ClientStalled(_) | Error::RedisOutOfMemory(_) => {
                Code::ResourceExhausted
            }
            Error::GroupNotFound { .. }
            | Error::StreamNotFound { .. }
            | Error::ConsumerNotFound { .. } => Code::NotFound,
            Error::WrongType { .. }
            | Error::FailedPrecondition(_)
            | Error::UnsupportedServer(_) => Code::FailedPrecondition,
            Error::Unavailable(_) | Error::ShuttingDown => Code::Unavailable,
            Error::Timeout(_) => Code::DeadlineExceeded,
            Error::RedisPermission(_) | Error::PermissionDenied { .. } => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Internal(_) => Code::Internal,
        }
    }
}

/// The code of Redis' reply when it is at `maxmemory` and may not evict.
const OUT_OF_MEMORY: &str = "OOM";

/// Codes of error replies by which Redis refuses a command for a while,
/// whatever the command: UNAVAILABLE, so that clients retry (later, or
/// against another gateway or node).
///
/// - `READONLY`: the node is a replica (a failover demoted it, or the
///   gateway points at a replica).
/// - `NOREPLICAS`: fewer replicas than `min-replicas-to-write` are
///   connected.
/// - `MISCONF`: the last RDB save failed and `stop-writes-on-bgsave-error`
///   stops writes.
/// - `BUSY`: a script or function has run past `busy-reply-threshold`.
/// - `LOADING`: the dataset is being loaded after a restart.
/// - `MASTERDOWN`: a replica lost its master and serves no stale data.
/// - `TRYAGAIN`, `CLUSTERDOWN`, `MOVED`, `ASK`: a cluster in motion.
///   redis-rs follows MOVED and ASK and retries TRYAGAIN and CLUSTERDOWN
///   itself; what still surfaces is a failover or resharding that outlasted
///   its retries.
const REFUSING_FOR_NOW: [&str; 10] = [
    "READONLY",
    "NOREPLICAS",
    "MISCONF",
    "BUSY",
    "LOADING",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MOVED",
    "ASK",
];

/// The error reply inside `err`: the error itself, or the first failed
/// command of a pipeline. redis-rs reports a pipeline run without
/// `ignore_errors` as one error whose `code()` is `None` for any code
/// outside its own short list (OOM, NOREPLICAS, MISCONF, BUSY, WRONGTYPE,
/// NOGROUP are all outside it) and whose `detail()` is always `None`; the
/// replies themselves still carry both.
fn error_reply(err: &RedisError) -> Option<ServerError> {
    let replies = err.clone().into_server_errors()?;
    replies.first().map(|(_, reply)| reply.clone())
}

/// The error reply as Redis sent it: `CODE detail`.
fn said(code: &str, detail: &str) -> String {
    if detail.is_empty() {
        code.to_owned()
    } else {
        format!("{code} {detail}")
    }
}

/// One log line a minute at most per kind of trouble: a Redis condition
/// refuses every request while it lasts, and a bug may hit every request.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The throttle of every error log line in this file, keyed by the Redis
/// code or `internal`.
static LOGGED: LogThrottle = LogThrottle::new(LOG_EVERY);

/// Logs a Redis condition where it is recognized: the UNAVAILABLE ones
/// become [`Error::Unavailable`], like a lost connection, so which
/// condition it was is known only here.
fn log_redis_condition(code: &str, said: &str) {
    if let Some(count) = LOGGED.occurred(code, Instant::now()) {
        tracing::warn!(
            redis_error = code,
            count,
            "Redis refuses commands: {said} (seen {count} time(s) since {code} was last \
             logged; logged at most once a minute)"
        );
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        if let Error::Internal(_) = err
            && let Some(count) = LOGGED.occurred("internal", Instant::now())
        {
            tracing::error!(
                error = %err,
                count,
                "internal error (seen {count} time(s) since an internal error was last \
                 logged; logged at most once a minute)"
            );
        }
        Status::new(err.code(), bounded_message(err.to_string()))
    }
}

/// Longest status message, in bytes.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Messages quote what the client sent (names, IDs), and the message
/// travels as an HTTP/2 header (`grpc-message`, percent-encoded): a quoted
/// 100 KB group name would exceed the peer's header-list limit, and the
/// client would see a protocol error instead of the status. So messages
/// are cut at [`MAX_MESSAGE_BYTES`].
fn bounded_message(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("... (truncated)");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Commands;

    /// A Redis error reply exactly as the server would send it.
    fn server_error(code: &str, detail: &str) -> RedisError {
        match redis::parse_redis_value(format!("-{code} {detail}\r\n").as_bytes()) {
            Ok(redis::Value::ServerError(err)) => err.into(),
            other => panic!("not an error reply: {other:?}"),
        }
    }

    #[test]
    fn nogroup_names_the_group_and_stream() {
        let err = Error::from_redis(
            &server_error("NOGROUP", "No such key 'orders' or consumer group 'g'"),
            "orders",
            Some("g"),
        );
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.to_string().contains("\"g\"") && err.to_string().contains("\"orders\""));
    }

    #[test]
    fn wrongtype_is_failed_precondition() {
        let err = Error::from_redis(
            &server_error(
                "WRONGTYPE",
                "Operation against a key holding the wrong kind of value",
            ),
            "orders",
            None,
        );
        assert_eq!(err.code(), Code::FailedPrecondition);
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        let group = "\u{e9}".repeat(100_000);
        let status = Status::from(Error::GroupNotFound {
            stream: "s".into(),
            group,
        });
        assert!(status.message().len() <= MAX_MESSAGE_BYTES + 20);
        assert!(status.message().ends_with("... (truncated)"));
        assert_eq!(
            Status::from(Error::ShuttingDown).message(),
            "the gateway is shutting down"
        );
    }

    /// How Redis 7.0 / Valkey 8.1 and Valkey 9.1 end an error reply raised
    /// by `redis.call` inside a script (EVALSHA); FCALL and a script
    /// refused before it runs send the bare reply.
    const SCRIPT_SUFFIXES: [&str; 3] = [
        "",
        " script: e81023deb3af3d1fd09b14ca33098d3a6f82f668, on @user_script:1.",
        " script: on @user_script:1.",
    ];

    #[test]
    fn out_of_memory_is_resource_exhausted_naming_maxmemory_and_quoting_redis() {
        for suffix in SCRIPT_SUFFIXES {
            let detail = format!("command not allowed when used memory > 'maxmemory'.{suffix}");
            let err = Error::from_redis(&server_error("OOM", &detail), "orders", None);
            assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
            let message = Status::from(err).message().to_owned();
            assert!(
                message.starts_with("Redis is out of memory (maxmemory): OOM command not allowed"),
                "{message}"
            );
            assert!(message.contains(suffix.trim_end_matches('.')), "{message}");
            assert!(message.contains("maxmemory is raised"), "{message}");
        }
    }

    #[test]
    fn conditions_refusing_commands_for_now_are_unavailable_with_what_redis_said() {
        for (code, detail) in [
            ("READONLY", "You can't write against a read only replica."),
            ("NOREPLICAS", "Not enough good replicas to write."),
            (
                "MISCONF",
                "Redis is configured to save RDB snapshots, but it's currently unable to \
                 persist to disk.",
            ),
            (
                "BUSY",
                "Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN \
                 NOSAVE.",
            ),
            ("LOADING", "Redis is loading the dataset in memory"),
            (
                "MASTERDOWN",
                "Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            ),
            ("TRYAGAIN", "Multiple keys request during rehashing of slot"),
            ("CLUSTERDOWN", "The cluster is down"),
            ("MOVED", "12722 127.0.0.1:7103"),
            ("ASK", "12722 127.0.0.1:7103"),
        ] {
            for suffix in SCRIPT_SUFFIXES {
                let detail = format!("{detail}{suffix}");
                let err = Error::from_redis(&server_error(code, &detail), "orders", None);
                assert_eq!(err.code(), Code::Unavailable, "{code}: {err}");
                assert_eq!(
                    err.to_string(),
                    format!("Redis is unavailable: {code} {detail}")
                );
            }
        }
    }

    #[test]
    fn a_code_is_matched_whole_not_as_a_prefix_or_in_the_text() {
        // BUSYKEY (RESTORE onto an existing key) is not BUSY; an ERR that
        // mentions OOM is not OOM.
        for (code, detail) in [
            ("BUSYKEY", "Target key name already exists."),
            (
                "ERR",
                "OOM command not allowed when used memory > 'maxmemory'.",
            ),
        ] {
            let err = Error::from_redis(&server_error(code, detail), "orders", None);
            assert_eq!(err.code(), Code::Internal, "{code}: {err}");
        }
    }

    /// Makes the server refuse writes for want of memory the way a full
    /// production Redis does: ballast (4 MiB) written while memory is
    /// unlimited, then `maxmemory` set to 2 MiB, far below what it holds,
    /// so that no freed buffer brings it back under the limit. The server
    /// must run with `maxmemory-policy noeviction`.
    fn exhaust_memory(conn: &mut redis::Connection) {
        let ballast = vec![b'x'; 100 * 1024];
        for i in 0..40 {
            let _: () = conn.set(format!("ballast:{i}"), &ballast).unwrap();
        }
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "maxmemory", "2mb"][..])
            .query(conn)
            .unwrap();
        let info: String = redis::cmd("INFO").arg("memory").query(conn).unwrap();
        let used: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .expect("INFO memory has used_memory")
            .trim()
            .parse()
            .unwrap();
        assert!(used > 2 << 20, "the ballast holds {used} bytes only");
    }

    /// What redis-rs hands the gateway for one error reply differs by how
    /// the command was sent; [`Error::from_redis`] classifies each shape by
    /// the reply's code, checked here against real replies from a real
    /// server: a plain command, a pipeline with and without
    /// `ignore_errors`, a script (EVAL) and a function (FCALL).
    #[test]
    fn every_shape_of_an_error_reply_classifies_by_its_code() {
        let redis = crate::test_redis::TestRedis::start_with(&["--maxmemory-policy", "noeviction"]);
        let mut conn = redis.conn();
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg(
                "#!lua name=probe\n\
                 redis.register_function('append', function(keys) \
                 return redis.call('XADD', keys[1], '*', 'a', 'b') end)",
            )
            .query(&mut conn)
            .unwrap();
        let _: () = conn.set("plain", "string").unwrap();
        exhaust_memory(&mut conn);

        let xadd = || {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&["orders", "*", "a", "b"][..]);
            cmd
        };
        let mut pipe = redis::pipe();
        pipe.cmd("PING").add_command(xadd());
        let mut tolerant = pipe.clone();
        tolerant.ignore_errors();
        // WRONGTYPE, a code redis-rs does not know either, in a pipeline.
        let mut wrongtype = redis::pipe();
        wrongtype.cmd("PING").cmd("XLEN").arg("plain");

        let failures: Vec<(&str, RedisError, Code)> = vec![
            (
                "command",
                xadd().query::<redis::Value>(&mut conn).unwrap_err(),
                Code::ResourceExhausted,
            ),
            (
                "pipeline",
                pipe.query::<Vec<redis::Value>>(&mut conn).unwrap_err(),
                Code::ResourceExhausted,
            ),
            (
                "pipeline with ignore_errors",
                match tolerant
                    .query::<Vec<redis::Value>>(&mut conn)
                    .unwrap()
                    .pop()
                {
                    Some(redis::Value::ServerError(e)) => e.into(),
                    other => panic!("{other:?}"),
                },
                Code::ResourceExhausted,
            ),
            (
                "script",
                redis::Script::new("return redis.call('XADD', KEYS[1], '*', 'a', 'b')")
                    .key("orders")
                    .invoke::<redis::Value>(&mut conn)
                    .unwrap_err(),
                Code::ResourceExhausted,
            ),
            (
                "function",
                redis::cmd("FCALL")
                    .arg(&["append", "1", "orders"][..])
                    .query::<redis::Value>(&mut conn)
                    .unwrap_err(),
                Code::ResourceExhausted,
            ),
            (
                "WRONGTYPE in a pipeline",
                wrongtype.query::<Vec<redis::Value>>(&mut conn).unwrap_err(),
                Code::FailedPrecondition,
            ),
        ];
        for (shape, err, code) in failures {
            let classified = Error::from_redis(&err, "orders", None);
            assert_eq!(classified.code(), code, "{shape}: {err} -> {classified}");
        }
    }

    #[test]
    fn io_errors_are_unavailable() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = Error::from_redis(&RedisError::from(io), "orders", None);
        assert_eq!(err.code(), Code::Unavailable);
        let io = std::io::Error::from(std::io::ErrorKind::TimedOut);
        let err = Error::from_redis(&RedisError::from(io), "orders", None);
        assert_eq!(err.code(), Code::DeadlineExceeded);
    }
}
