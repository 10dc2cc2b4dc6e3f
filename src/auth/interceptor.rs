//! The tonic interceptor that authenticates every request of the
//! streamgate services.

use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::Auth;

/// Resolves the caller from the `authorization` metadata and stores its
/// [`Principal`](super::Principal) (as `Arc<Principal>`) in the request's
/// extensions for the handler's authorization check. Refuses
/// unauthenticated requests here, before tonic decodes the request body,
/// so an unknown caller cannot make the gateway parse large messages.
#[derive(Clone)]
pub struct Authenticate {
    auth: Auth,
}

impl Authenticate {
    /// An interceptor checking against `auth`.
    pub fn new(auth: Auth) -> Authenticate {
        Authenticate { auth }
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let value = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let principal = self.auth.authenticate(value).map_err(Status::from)?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}
