//! Which client stream names are safe to turn into Redis keys.
//!
//! Every key the gateway touches is built from `--key-prefix` and a client
//! stream name: the stream is `<prefix><stream>` and its
//! bookkeeping keys are `<prefix>{<prefix><stream>}:<what>`. Both start
//! with the prefix whatever the name, so the prefix alone keeps a request
//! out of other applications' keys. What it does not prevent is a stream
//! name that *is* a bookkeeping key: with prefix `app:`, the stream
//! `{app:orders}:nack:g` would be the key `app:{app:orders}:nack:g`, the
//! Nack schedule of `orders`, readable and writable as a stream by anyone
//! allowed to use that odd name, and a name with a `}` inside moves the
//! hash tag so bookkeeping keys leave their stream's cluster slot. Names
//! without `{` and `}` can never collide with a bookkeeping key (each of
//! those contains `{`), so this is the rule, together with a length cap
//! and printable ASCII (no whitespace or control characters that would
//! make logs, metrics labels and `redis-cli` output ambiguous).

use crate::error::{Error, Result};

/// Longest stream name, in bytes.
pub const MAX_STREAM_NAME_BYTES: usize = 256;

/// Checks a client stream name from request field `field`; an invalid name
/// is INVALID_ARGUMENT naming the field.
pub fn stream_name<'a>(field: &str, name: &'a str) -> Result<&'a str> {
    if name.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if name.len() > MAX_STREAM_NAME_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes long; stream names have at most {MAX_STREAM_NAME_BYTES}",
                name.len()
            ),
        ));
    }
    if let Some(c) = name.chars().find(|&c| !allowed(c)) {
        return Err(Error::invalid(
            field,
            format!(
                "contains {c:?}; stream names are printable ASCII without whitespace, \
                 '{{' or '}}'"
            ),
        ));
    }
    Ok(name)
}

/// Printable ASCII except space and the hash-tag braces.
fn allowed(c: char) -> bool {
    c.is_ascii_graphic() && c != '{' && c != '}'
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn rejected(name: &str) -> String {
        let err = stream_name("stream", name).expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument);
        err.to_string()
    }

    #[test]
    fn ordinary_names_pass() {
        for name in [
            "orders",
            "a",
            "orders.eu-1",
            "app/x:y_z",
            "a*b?c[d]~!#$%^&()",
        ] {
            assert_eq!(stream_name("stream", name).unwrap(), name);
        }
        let longest = "s".repeat(MAX_STREAM_NAME_BYTES);
        assert!(stream_name("stream", &longest).is_ok());
    }

    #[test]
    fn names_that_could_forge_a_bookkeeping_key_are_rejected() {
        assert!(rejected("{orders}:nack:g").contains("'{'"));
        assert!(rejected("orders}").contains("'}'"));
    }

    #[test]
    fn whitespace_control_and_non_ascii_are_rejected() {
        for name in [
            "a b",
            "a\tb",
            "a\nb",
            "a\0b",
            "\u{7f}",
            "caf\u{e9}",
            "\u{202e}x",
        ] {
            rejected(name);
        }
    }

    #[test]
    fn empty_and_long_names_are_rejected_naming_the_field() {
        assert!(rejected("").starts_with("invalid stream"));
        let long = "s".repeat(MAX_STREAM_NAME_BYTES + 1);
        assert!(rejected(&long).contains("257 bytes"));
        let err = stream_name("dead_letter_stream", "a b").unwrap_err();
        assert!(err.to_string().starts_with("invalid dead_letter_stream"));
    }
}
