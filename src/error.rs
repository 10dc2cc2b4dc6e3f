//! The one domain error type, how Redis errors become domain errors, and the
//! single mapping from domain errors to gRPC status codes.
//!
//! Keeping both translations here means a reader finds every status-code
//! decision in one file, and a Redis error a client can cause (a missing
//! group, a key of the wrong type) can never leak out as INTERNAL.

use redis::RedisError;
use tonic::{Code, Status};

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
    /// Redis cannot be reached, the connection was lost, or Redis is not
    /// ready (loading, failover). Retryable.
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
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
    pub fn from_redis(err: &RedisError, stream: &str, group: Option<&str>) -> Error {
        let detail = err.detail().unwrap_or_default();
        match err.code() {
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
            // A cluster in motion: redis-rs follows MOVED and ASK and retries
            // TRYAGAIN / CLUSTERDOWN itself; what still surfaces is a failover
            // or resharding that outlasted its retries.
            Some(
                "LOADING" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "READONLY" | "BUSY"
                | "MOVED" | "ASK",
            ) => Error::Unavailable(err.to_string()),
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
            Error::LimitExceeded(_) | Error::ClientStalled(_) => Code::ResourceExhausted,
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

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        if let Error::Internal(_) = err {
            tracing::error!(error = %err, "internal error");
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

    #[test]
    fn cluster_conditions_are_unavailable_never_internal() {
        for (code, detail) in [
            ("CLUSTERDOWN", "The cluster is down"),
            ("TRYAGAIN", "Multiple keys request during rehashing of slot"),
            ("MASTERDOWN", "Link with MASTER is down"),
            ("MOVED", "12722 127.0.0.1:7103"),
            ("ASK", "12722 127.0.0.1:7103"),
        ] {
            let err = Error::from_redis(&server_error(code, detail), "orders", None);
            assert_eq!(err.code(), Code::Unavailable, "{code}: {err}");
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
