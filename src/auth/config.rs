//! The auth config file (`--auth-config`, TOML):
//!
//! ```toml
//! [[tokens]]
//! name = "orders-producer"                  # shows up in logs and errors
//! sha256 = "<hex SHA-256 of the token>"     # printf %s "$TOKEN" | sha256sum
//! allow = [ { streams = "orders.*", permissions = ["produce"] } ]
//!
//! [anonymous]                               # only with --allow-anonymous
//! allow = [ { streams = "public.*", permissions = ["consume"] } ]
//! ```
//!
//! Only digests are stored, so the file is not a secret in itself (though
//! short tokens could be guessed from their digest: use long random ones).
//! Unknown keys are errors, so a typo such as `permission` cannot silently
//! grant nothing (or everything).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::glob::Glob;
use super::policy::{Digest, Permission, Policy, Principal, Rule};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    anonymous: Option<AnonymousEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    #[serde(default)]
    allow: Vec<RuleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnonymousEntry {
    #[serde(default)]
    allow: Vec<RuleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    streams: String,
    permissions: Vec<Permission>,
}

/// Reads and validates an auth config file.
pub fn load(path: &Path) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read auth config {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("auth config {}: {e}", path.display()))
}

/// Parses and validates the text of an auth config.
pub fn parse(text: &str) -> Result<Policy, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut names = HashSet::new();
    let mut digests = HashSet::new();
    let mut tokens = Vec::with_capacity(file.tokens.len());
    for (i, token) in file.tokens.into_iter().enumerate() {
        let at = format!("tokens[{i}]");
        if token.name.is_empty() {
            return Err(format!("{at}: name must not be empty"));
        }
        if !names.insert(token.name.clone()) {
            return Err(format!("{at}: name {:?} is used twice", token.name));
        }
        let digest = parse_digest(&token.sha256).map_err(|e| format!("{at}.sha256: {e}"))?;
        if !digests.insert(digest) {
            return Err(format!("{at}: the same sha256 appears twice"));
        }
        let rules = rules(&at, token.allow)?;
        tokens.push((digest, Arc::new(Principal::with_rules(token.name, rules))));
    }
    let anonymous = match file.anonymous {
        Some(entry) => rules("anonymous", entry.allow)?,
        None => Vec::new(),
    };
    Ok(Policy::new(
        tokens,
        Principal::with_rules("anonymous", anonymous),
    ))
}

fn rules(at: &str, entries: Vec<RuleEntry>) -> Result<Vec<Rule>, String> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = format!("{at}.allow[{i}]");
            if entry.permissions.is_empty() {
                return Err(format!("{at}.permissions must not be empty"));
            }
            Ok(Rule {
                streams: Glob::new(&entry.streams).map_err(|e| format!("{at}.streams: {e}"))?,
                permissions: entry.permissions,
            })
        })
        .collect()
}

/// 64 hex digits, either case.
fn parse_digest(hex: &str) -> Result<Digest, String> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return Err(format!(
            "must be 64 hex digits (the SHA-256 of the token), got {} characters",
            hex.chars().count()
        ));
    }
    let mut digest = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let high = hex_value(pair[0]);
        let low = hex_value(pair[1]);
        match (high, low) {
            (Some(h), Some(l)) => digest[i] = (h << 4) | l,
            _ => return Err("must contain only hex digits".into()),
        }
    }
    Ok(digest)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The SHA-256 of a token, as stored in the config.
pub fn digest(token: &str) -> Digest {
    Sha256::digest(token.as_bytes()).into()
}

/// The SHA-256 of a token in lowercase hex, as written in the config file;
/// for the tests that write one (the gateway only reads them).
#[cfg(test)]
pub fn digest_hex(token: &str) -> String {
    digest(token).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sha: &str, allow: &str) -> String {
        format!("[[tokens]]\nname = \"p\"\nsha256 = \"{sha}\"\nallow = [{allow}]\n")
    }

    #[test]
    fn the_documented_example_parses() {
        let sha = digest_hex("s3cret");
        let policy = parse(&config(
            &sha,
            r#"{ streams = "orders.*", permissions = ["produce"] }"#,
        ))
        .unwrap();
        let p = policy.find(&digest("s3cret")).unwrap();
        assert_eq!(p.name(), "p");
        assert!(p.allows(Permission::Produce, "orders.eu"));
        assert!(!p.allows(Permission::Consume, "orders.eu"));
        assert!(policy.find(&digest("other")).is_none());
        assert!(!policy.anonymous().allows(Permission::Consume, "orders.eu"));
    }

    #[test]
    fn digest_matches_sha256sum() {
        // printf %s abc | sha256sum
        assert_eq!(
            digest_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let upper = digest_hex("abc").to_uppercase();
        assert!(
            parse(&config(&upper, ""))
                .unwrap()
                .find(&digest("abc"))
                .is_some()
        );
    }

    #[test]
    fn anonymous_rules_are_read() {
        let policy = parse(
            "[anonymous]\nallow = [ { streams = \"public.*\", permissions = [\"consume\"] } ]\n",
        )
        .unwrap();
        assert_eq!(policy.token_count(), 0);
        assert!(policy.anonymous().allows(Permission::Consume, "public.x"));
    }

    /// The sample in docs/security.md is what operators copy: it must
    /// parse, with its three tokens and the anonymous grant.
    #[test]
    fn the_sample_config_in_the_security_docs_is_valid() {
        let page = include_str!("../../docs/security.md");
        let section = page.split("# Security").nth(1).expect("a Security section");
        let sample = section
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a TOML sample");
        let policy = parse(sample).expect("the sample parses");
        assert_eq!(policy.token_count(), 3);
        assert!(
            policy
                .anonymous()
                .allows(Permission::Consume, "public.news")
        );
    }

    #[test]
    fn mistakes_are_errors_naming_the_place() {
        let sha = digest_hex("t");
        let cases = [
            (config("abc", ""), "tokens[0].sha256"),
            (config(&"g".repeat(64), ""), "hex digits"),
            (
                config(&sha, r#"{ streams = "x", permissions = ["write"] }"#),
                "unknown variant",
            ),
            (
                config(&sha, r#"{ streams = "x", permission = ["produce"] }"#),
                "unknown field",
            ),
            (
                config(&sha, r#"{ streams = "", permissions = ["produce"] }"#),
                "tokens[0].allow[0].streams",
            ),
            (
                config(&sha, r#"{ streams = "x", permissions = [] }"#),
                "must not be empty",
            ),
            (
                format!("{}{}", config(&sha, ""), config(&digest_hex("u"), "")),
                "used twice",
            ),
            ("tokens = 3".to_owned(), "invalid type"),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(&text);
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }
}
