//! Stream-name patterns of the auth config: `*` matches any run of
//! characters (also none), `?` exactly one, anything else itself.
//!
//! Stream names are printable ASCII without braces ([`crate::namespace`]),
//! so two wildcards cover what operators write (`orders.*`, `*:dlq`,
//! `tenant-?.events`) without the surprises of a full glob dialect (path
//! separators, classes, alternation). Matching is the classic greedy
//! wildcard walk with one backtrack point: linear in practice and at worst
//! `O(pattern * name)`, so no pattern can make a request expensive.

use std::fmt;

/// A compiled stream-name pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<u8>,
}

impl Glob {
    /// A pattern; an empty one is refused because it could only ever match
    /// the empty name, which is never a valid stream.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("a stream pattern must not be empty (use \"*\" for every stream)".into());
        }
        Ok(Glob {
            pattern: pattern.as_bytes().to_vec(),
        })
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        matches(&self.pattern, name.as_bytes())
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", String::from_utf8_lossy(&self.pattern))
    }
}

fn matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the name position it currently covers up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry.
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        Glob::new(pattern).unwrap().matches(name)
    }

    #[test]
    fn literals_match_only_themselves() {
        assert!(m("orders", "orders"));
        assert!(!m("orders", "orders2"));
        assert!(!m("orders", "order"));
        assert!(!m("orders", ""));
    }

    #[test]
    fn star_matches_any_run_including_none() {
        assert!(m("*", "anything:at/all"));
        assert!(m("orders.*", "orders."));
        assert!(m("orders.*", "orders.eu.1"));
        assert!(!m("orders.*", "orders"));
        assert!(!m("orders.*", "xorders.eu"));
        assert!(m("*:dlq", "orders:dlq"));
        assert!(!m("*:dlq", "orders:dlq2"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("**", ""));
        assert!(m("a*a*a*b", "aaaaaaaaaab"));
        assert!(!m("a*a*a*b", "aaaaaaaaaaa"));
    }

    #[test]
    fn question_mark_matches_exactly_one() {
        assert!(m("tenant-?.events", "tenant-7.events"));
        assert!(!m("tenant-?.events", "tenant-.events"));
        assert!(!m("tenant-?.events", "tenant-77.events"));
    }

    #[test]
    fn empty_pattern_is_refused() {
        assert!(Glob::new("").is_err());
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let name = "a".repeat(256);
        let pattern = format!("{}b", "*a".repeat(100));
        let start = std::time::Instant::now();
        assert!(!m(&pattern, &name));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }
}
