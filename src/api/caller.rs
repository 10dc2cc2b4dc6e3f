//! Who sent a request: what authentication resolved, and from which
//! connection (for per-connection limits).

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::Request;

use crate::auth::Principal;

/// The caller of one request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Set by [`crate::auth::Authenticate`]; `None` when the service runs
    /// without it, which authorization treats as unauthenticated (fail
    /// closed).
    pub principal: Option<Arc<Principal>>,
    /// The client's address and port: identifies its connection.
    pub peer: Option<SocketAddr>,
}

impl Caller {
    /// Splits a request into its caller and its message.
    pub fn split<T>(request: Request<T>) -> (Caller, T) {
        let caller = Caller {
            principal: request.extensions().get::<Arc<Principal>>().cloned(),
            peer: request.remote_addr(),
        };
        (caller, request.into_inner())
    }
}
