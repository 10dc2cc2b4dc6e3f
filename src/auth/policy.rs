//! Who may do what: permissions, the grants of one caller, and the token
//! table they are looked up in.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::glob::Glob;

/// What a grant allows on a stream. Each RPC needs exactly one of them on
/// each stream it touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Produce: append entries.
    Produce,
    /// Subscribe, Ack, Nack, Extend, Reap, Replay, Tail: read entries and
    /// move them through a consumer group.
    Consume,
    /// Every StreamAdmin RPC, and Trim: change or inspect groups, remove
    /// entries.
    Admin,
}

impl Permission {
    /// The name used in the config file and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Produce => "produce",
            Permission::Consume => "consume",
            Permission::Admin => "admin",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `allow` entry: these permissions on the streams matching a pattern.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Which streams.
    pub streams: Glob,
    /// What may be done to them.
    pub permissions: Vec<Permission>,
}

/// An authenticated caller and everything it may do, resolved once per
/// request by the interceptor. A request keeps the grants it started with,
/// so a config reload never changes a request (or an open stream) midway.
#[derive(Debug)]
pub struct Principal {
    name: String,
    grants: Grants,
}

#[derive(Debug)]
enum Grants {
    /// Authentication is off: the local quick-start default.
    Everything,
    /// The union of these rules.
    Rules(Vec<Rule>),
}

impl Principal {
    /// The caller when authentication is off: may do anything.
    pub fn unrestricted() -> Principal {
        Principal {
            name: "anonymous".into(),
            grants: Grants::Everything,
        }
    }

    /// A caller allowed exactly what `rules` allow.
    pub fn with_rules(name: impl Into<String>, rules: Vec<Rule>) -> Principal {
        Principal {
            name: name.into(),
            grants: Grants::Rules(rules),
        }
    }

    /// The token's name from the config (or `anonymous`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this caller holds `permission` on `stream`.
    pub fn allows(&self, permission: Permission, stream: &str) -> bool {
        match &self.grants {
            Grants::Everything => true,
            Grants::Rules(rules) => rules
                .iter()
                .any(|r| r.permissions.contains(&permission) && r.streams.matches(stream)),
        }
    }
}

/// SHA-256 of a token.
pub type Digest = [u8; 32];

/// The tokens of one config file, and what an anonymous caller may do.
#[derive(Debug)]
pub struct Policy {
    tokens: Vec<(Digest, Arc<Principal>)>,
    anonymous: Arc<Principal>,
}

impl Policy {
    /// A policy from already validated parts.
    pub fn new(tokens: Vec<(Digest, Arc<Principal>)>, anonymous: Principal) -> Policy {
        Policy {
            tokens,
            anonymous: Arc::new(anonymous),
        }
    }

    /// The principal whose token hashes to `digest`. Every entry is compared
    /// in constant time and the scan never stops early, so the time taken
    /// says nothing about how close a guess came or where it matched.
    pub fn find(&self, digest: &Digest) -> Option<Arc<Principal>> {
        let mut found = None;
        for (known, principal) in &self.tokens {
            if bool::from(known.ct_eq(digest)) {
                found = Some(principal.clone());
            }
        }
        found
    }

    /// What a caller without a token may do (with `--allow-anonymous`).
    pub fn anonymous(&self) -> Arc<Principal> {
        self.anonymous.clone()
    }

    /// How many tokens the policy knows.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, permissions: &[Permission]) -> Rule {
        Rule {
            streams: Glob::new(pattern).unwrap(),
            permissions: permissions.to_vec(),
        }
    }

    #[test]
    fn grants_are_the_union_of_rules_per_permission_and_pattern() {
        let p = Principal::with_rules(
            "svc",
            vec![
                rule("orders.*", &[Permission::Produce]),
                rule("orders.eu", &[Permission::Consume]),
            ],
        );
        assert!(p.allows(Permission::Produce, "orders.eu"));
        assert!(p.allows(Permission::Consume, "orders.eu"));
        assert!(!p.allows(Permission::Consume, "orders.us"));
        assert!(!p.allows(Permission::Admin, "orders.eu"));
        assert!(!p.allows(Permission::Produce, "payments"));
    }

    #[test]
    fn unrestricted_allows_everything_and_no_rules_nothing() {
        assert!(Principal::unrestricted().allows(Permission::Admin, "x"));
        assert!(!Principal::with_rules("anonymous", vec![]).allows(Permission::Consume, "x"));
    }

    #[test]
    fn find_matches_whole_digests_only() {
        let a = Arc::new(Principal::with_rules("a", vec![]));
        let policy = Policy::new(
            vec![([1; 32], a), ([2; 32], Arc::new(Principal::unrestricted()))],
            Principal::with_rules("anonymous", vec![]),
        );
        assert_eq!(policy.find(&[1; 32]).unwrap().name(), "a");
        let mut near = [1; 32];
        near[31] = 0;
        assert!(policy.find(&near).is_none());
    }
}
