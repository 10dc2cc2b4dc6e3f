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
            Some("LOADING" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "READONLY" | "BUSY") => {
                Error::Unavailable(err.to_string())
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
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::LimitExceeded(_) => Code::ResourceExhausted,
            Error::GroupNotFound { .. }
            | Error::StreamNotFound { .. }
            | Error::ConsumerNotFound { .. } => Code::NotFound,
            Error::WrongType { .. } | Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unavailable(_) | Error::ShuttingDown => Code::Unavailable,
            Error::Timeout(_) => Code::DeadlineExceeded,
            Error::RedisPermission(_) => Code::PermissionDenied,
            Error::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        if let Error::Internal(_) = err {
            tracing::error!(error = %err, "internal error");
        }
        Status::new(err.code(), err.to_string())
    }
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
    fn io_errors_are_unavailable() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = Error::from_redis(&RedisError::from(io), "orders", None);
        assert_eq!(err.code(), Code::Unavailable);
        let io = std::io::Error::from(std::io::ErrorKind::TimedOut);
        let err = Error::from_redis(&RedisError::from(io), "orders", None);
        assert_eq!(err.code(), Code::DeadlineExceeded);
    }
}
