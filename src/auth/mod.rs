//! Authentication (who is calling) and the grants authorization checks.
//!
//! - Authentication runs once per request in [`Authenticate`], a tonic
//!   interceptor on the EventStream and StreamAdmin services (health and
//!   reflection need no token): it turns the `authorization: Bearer
//!   <token>` metadata into a [`Principal`] and stores it in the request's
//!   extensions, or answers UNAUTHENTICATED before the request body is even
//!   decoded.
//! - Authorization is one call per handler,
//!   [`Context::authorize`](crate::api::Context), with the [`Permission`]
//!   the RPC needs on each stream it touches.
//!
//! Without `--auth-config` authentication is off and every caller may do
//! everything (the local quick-start default; the gateway logs a warning).
//! The config is reloaded on SIGHUP ([`reload`]) without touching open
//! streams: a request keeps the grants it was authenticated with.

pub mod config;
mod glob;
mod interceptor;
mod policy;
pub mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
pub use interceptor::Authenticate;
pub use policy::{Permission, Policy, Principal};

use crate::error::{Error, Result};

/// The gateway's authentication state; cheap to clone, shared by the
/// interceptors and the reload task.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` = authentication off.
    source: Option<PathBuf>,
    allow_anonymous: bool,
    policy: ArcSwap<Policy>,
    unrestricted: Arc<Principal>,
}

impl Auth {
    /// Authentication off: every caller may do everything.
    pub fn off() -> Auth {
        Auth::with(
            None,
            true,
            Policy::new(Vec::new(), Principal::unrestricted()),
        )
    }

    /// Tokens from the config file at `path`; callers without a token are
    /// refused unless `allow_anonymous`, and then get the file's
    /// `[anonymous]` grants.
    pub fn from_file(path: &Path, allow_anonymous: bool) -> Result<Auth, String> {
        let policy = config::load(path)?;
        Ok(Auth::with(Some(path.to_owned()), allow_anonymous, policy))
    }

    fn with(source: Option<PathBuf>, allow_anonymous: bool, policy: Policy) -> Auth {
        Auth {
            inner: Arc::new(Inner {
                source,
                allow_anonymous,
                policy: ArcSwap::from_pointee(policy),
                unrestricted: Arc::new(Principal::unrestricted()),
            }),
        }
    }

    /// Whether callers must present a token at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.source.is_some()
    }

    /// The config file, when authentication is on.
    pub fn source(&self) -> Option<&Path> {
        self.inner.source.as_deref()
    }

    /// Reads the config file again and, if it is valid, uses it for every
    /// request from now on; on error the current config stays in force.
    /// Returns the number of tokens loaded.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.inner.source else {
            return Err("authentication is off (no --auth-config): nothing to reload".into());
        };
        let policy = config::load(path)?;
        let tokens = policy.token_count();
        self.inner.policy.store(Arc::new(policy));
        Ok(tokens)
    }

    /// Resolves the value of the `authorization` metadata (absent: `None`)
    /// to a principal.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Arc<Principal>> {
        if !self.is_enabled() {
            return Ok(self.inner.unrestricted.clone());
        }
        let policy = self.inner.policy.load();
        let Some(value) = authorization else {
            return if self.inner.allow_anonymous {
                Ok(policy.anonymous())
            } else {
                Err(Error::Unauthenticated(
                    "this gateway requires a token: send metadata `authorization: Bearer <token>`"
                        .into(),
                ))
            };
        };
        let token = bearer_token(value).ok_or_else(|| {
            Error::Unauthenticated("the authorization metadata must be `Bearer <token>`".into())
        })?;
        policy
            .find(&config::digest(token))
            .ok_or_else(|| Error::Unauthenticated("unknown token".into()))
    }
}

/// The token of an `authorization` value `Bearer <token>` (scheme in any
/// case, RFC 6750).
fn bearer_token(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tonic::Code;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn token_config(name: &str, token: &str) -> String {
        format!(
            "[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\n\
             allow = [ {{ streams = \"*\", permissions = [\"consume\"] }} ]\n",
            config::digest_hex(token)
        )
    }

    fn code(result: Result<Arc<Principal>>) -> Code {
        result.map(|_| ()).unwrap_err().code()
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer_token(b"bearer   abc "), Some("abc"));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"abc"), None);
        assert_eq!(bearer_token(b"Bearer \xff"), None);
    }

    #[test]
    fn off_lets_everyone_in_and_ignores_tokens() {
        let auth = Auth::off();
        assert!(!auth.is_enabled());
        assert!(
            auth.authenticate(None)
                .unwrap()
                .allows(Permission::Admin, "x")
        );
        assert!(auth.authenticate(Some(b"Bearer junk")).is_ok());
    }

    #[test]
    fn tokens_are_required_and_checked() {
        let f = file(&token_config("reader", "t1"));
        let auth = Auth::from_file(f.path(), false).unwrap();
        assert_eq!(code(auth.authenticate(None)), Code::Unauthenticated);
        assert_eq!(
            code(auth.authenticate(Some(b"Bearer t2"))),
            Code::Unauthenticated
        );
        assert_eq!(
            code(auth.authenticate(Some(b"Basic t1"))),
            Code::Unauthenticated
        );
        let p = auth.authenticate(Some(b"Bearer t1")).unwrap();
        assert_eq!(p.name(), "reader");
    }

    #[test]
    fn anonymous_needs_the_flag_and_gets_the_anonymous_grants() {
        let text = format!(
            "{}[anonymous]\nallow = [ {{ streams = \"public.*\", permissions = [\"consume\"] }} ]\n",
            token_config("reader", "t1")
        );
        let f = file(&text);
        let auth = Auth::from_file(f.path(), true).unwrap();
        let anonymous = auth.authenticate(None).unwrap();
        assert!(anonymous.allows(Permission::Consume, "public.x"));
        assert!(!anonymous.allows(Permission::Consume, "private"));
        // A wrong token is not downgraded to anonymous.
        assert_eq!(
            code(auth.authenticate(Some(b"Bearer nope"))),
            Code::Unauthenticated
        );
    }

    #[test]
    fn reload_swaps_valid_configs_and_keeps_the_old_one_on_error() {
        let f = file(&token_config("one", "t1"));
        let auth = Auth::from_file(f.path(), false).unwrap();
        let held = auth.authenticate(Some(b"Bearer t1")).unwrap();
        std::fs::write(f.path(), token_config("two", "t2")).unwrap();
        assert_eq!(auth.reload(), Ok(1));
        assert!(auth.authenticate(Some(b"Bearer t1")).is_err());
        assert!(auth.authenticate(Some(b"Bearer t2")).is_ok());
        // A principal resolved before the reload keeps its grants.
        assert!(held.allows(Permission::Consume, "x"));
        std::fs::write(f.path(), "this is not toml [").unwrap();
        assert!(auth.reload().is_err());
        assert!(auth.authenticate(Some(b"Bearer t2")).is_ok());
    }

    #[test]
    fn a_bad_file_refuses_to_start() {
        let f = file("[[tokens]]\nname = \"x\"\n");
        assert!(Auth::from_file(f.path(), false).is_err());
        assert!(Auth::from_file(Path::new("/nonexistent/auth.toml"), false).is_err());
    }
}
