//! Which server the gateway talks to, and whether it can.
//!
//! streamgate relies on Redis 7.0 behaviour: XAUTOCLAIM lists the pending
//! entries whose payload was deleted in a third reply element, XINFO
//! GROUPS reports `entries-read` and `lag`. An older server would answer
//! most commands and misbehave on those, so the gateway reads INFO server
//! on its first contact and refuses such a server outright, with an error
//! that names what it found, instead of failing later in odd ways.
//!
//! Valkey forked from Redis 7.2.4 and reports that as `redis_version`
//! (its own release is `valkey_version`, its name `server_name`), so the
//! rule is applied to `redis_version`: every Valkey passes.

use std::fmt;

use tokio::sync::OnceCell;

use crate::error::{Error, Result};

/// The oldest Redis-compatible version the gateway serves.
pub const MIN_REDIS_VERSION: Version = Version(7, 0, 0);

/// A `major.minor.patch` version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parses `7.0.15`; missing parts count as 0, a suffix such as
    /// `-rc1` is ignored.
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.trim().split('.').map(|part| {
            let digits = part.split(|c: char| !c.is_ascii_digit()).next()?;
            digits.parse::<u32>().ok()
        });
        let major = parts.next()??;
        let minor = parts.next().unwrap_or(Some(0))?;
        let patch = parts.next().unwrap_or(Some(0))?;
        Some(Version(major, minor, patch))
    }
}

impl Version {
    /// `7.0`: how requirements are stated.
    fn short(self) -> String {
        format!("{}.{}", self.0, self.1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// What INFO server says about the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    /// `server_name` (`valkey`); Redis does not report one: `redis`.
    pub name: String,
    /// The product's own version (`valkey_version`, or `redis_version`),
    /// as reported.
    pub version: String,
    /// The Redis version the server is compatible with (`redis_version`).
    pub redis_version: Version,
}

impl ServerInfo {
    /// Parses the text of `INFO server` (`field:value` lines).
    pub fn parse(info: &str) -> std::result::Result<ServerInfo, String> {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .filter(|value| !value.is_empty())
        };
        let redis_version =
            field("redis_version").ok_or("INFO server has no redis_version field")?;
        let parsed = Version::parse(redis_version)
            .ok_or_else(|| format!("redis_version {redis_version:?} is not a version"))?;
        let name = field("server_name").unwrap_or("redis").to_owned();
        let version = field(&format!("{name}_version")).unwrap_or(redis_version);
        Ok(ServerInfo {
            version: version.to_owned(),
            name,
            redis_version: parsed,
        })
    }

    /// Whether the gateway can serve from this server; the error says
    /// what was found and why it is not enough.
    pub fn check(&self) -> Result<()> {
        if self.redis_version >= MIN_REDIS_VERSION {
            return Ok(());
        }
        Err(Error::UnsupportedServer(format!(
            "the Redis server is {self}; streamgate needs Redis {} or later \
             (it relies on the Redis 7.0 XAUTOCLAIM reply, which lists deleted entries \
             separately, and on XINFO GROUPS entries-read and lag)",
            MIN_REDIS_VERSION.short()
        )))
    }
}

impl fmt::Display for ServerInfo {
    /// `redis 7.0.15`, `valkey 8.1.8 (redis_version 7.2.4)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)?;
        if self.version != self.redis_version.to_string() {
            write!(f, " (redis_version {})", self.redis_version)?;
        }
        Ok(())
    }
}

/// The verdict on the server, reached once, on the first command that
/// finds Redis answering.
#[derive(Debug, Default)]
pub struct ServerCheck {
    /// `None`: serve; `Some`: the refusal every command answers with.
    verdict: OnceCell<Option<Error>>,
}

impl ServerCheck {
    /// Ok when the server is (or turns out to be) supported. Until Redis
    /// first answers, each call tries INFO server and fails as the command
    /// itself would (UNAVAILABLE); afterwards the verdict is remembered.
    pub(super) async fn ensure(&self, conn: &super::Link) -> Result<()> {
        let verdict = self
            .verdict
            .get_or_try_init(|| identify(conn.clone()))
            .await?;
        match verdict {
            None => Ok(()),
            Some(refusal) => Err(refusal.clone()),
        }
    }
}

/// Reads INFO server and decides (see [`decide`]).
/// On a cluster it asks one master: the nodes of a cluster run one version.
async fn identify(mut conn: super::Link) -> Result<Option<Error>> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("server");
    let reply = conn
        .on_any_master(&cmd)
        .await
        .and_then(|v| redis::from_redis_value::<String>(v).map_err(Into::into));
    decide(reply)
}

/// The verdict on an INFO server reply, logged: `None` to serve,
/// `Some(refusal)`, or an error when Redis did not answer at all (no
/// verdict yet). A server that answers but will not tell (an ACL user
/// without `+info`, a renamed command, an odd reply) is served, with a
/// warning that says its version went unchecked.
fn decide(reply: redis::RedisResult<String>) -> Result<Option<Error>> {
    let info = match reply {
        Ok(text) => ServerInfo::parse(&text),
        Err(e) if e.code().is_some() => Err(e.to_string()),
        Err(e) => return Err(Error::from_redis(&e, "", None)),
    };
    match info {
        Ok(info) => match info.check() {
            Ok(()) => {
                tracing::info!("redis server: {info}");
                Ok(None)
            }
            Err(refusal) => {
                tracing::error!(
                    "redis server: {info} is not supported; every request fails \
                     and health stays NOT_SERVING: {refusal}"
                );
                Ok(Some(refusal))
            }
        },
        Err(why) => {
            tracing::warn!(
                "redis server: unknown ({why}); its version is not checked \
                 (streamgate needs Redis {} or later; grant the gateway's user \
                 +info to have it checked)",
                MIN_REDIS_VERSION.short()
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    /// Abridged INFO server replies of real servers (CRLF, as sent).
    const REDIS_7_0: &str = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n\
        redis_mode:standalone\r\nos:Linux 6.1.0 x86_64\r\n";
    const VALKEY_8_1: &str = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\n\
        valkey_version:8.1.8\r\nvalkey_release_stage:ga\r\nserver_mode:standalone\r\n";
    const VALKEY_9_1: &str = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\n\
        valkey_version:9.1.2\r\nvalkey_release_stage:ga\r\n";
    const REDIS_6_2: &str = "# Server\r\nredis_version:6.2.14\r\nredis_git_sha1:00000000\r\n\
        redis_mode:standalone\r\n";
    const REDIS_8_RC: &str = "# Server\r\nredis_version:8.0.0-rc1\r\nredis_mode:standalone\r\n";

    #[test]
    fn redis_is_named_by_default_and_checked_by_its_version() {
        let info = ServerInfo::parse(REDIS_7_0).unwrap();
        assert_eq!(info.name, "redis");
        assert_eq!(info.version, "7.0.15");
        assert_eq!(info.redis_version, Version(7, 0, 15));
        assert_eq!(info.to_string(), "redis 7.0.15");
        assert!(info.check().is_ok());
    }

    #[test]
    fn valkey_reports_its_own_version_and_passes_by_its_redis_version() {
        for (text, version) in [(VALKEY_8_1, "8.1.8"), (VALKEY_9_1, "9.1.2")] {
            let info = ServerInfo::parse(text).unwrap();
            assert_eq!(
                (info.name.as_str(), info.version.as_str()),
                ("valkey", version)
            );
            assert_eq!(info.redis_version, Version(7, 2, 4));
            assert_eq!(
                info.to_string(),
                format!("valkey {version} (redis_version 7.2.4)")
            );
            assert!(info.check().is_ok());
        }
    }

    #[test]
    fn redis_6_2_is_refused_naming_the_version_and_the_reason() {
        let err = ServerInfo::parse(REDIS_6_2).unwrap().check().unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        let message = err.to_string();
        assert!(message.contains("redis 6.2.14"), "{message}");
        assert!(message.contains("Redis 7.0 or later"), "{message}");
        assert!(message.contains("XAUTOCLAIM"), "{message}");
    }

    #[test]
    fn the_boundary_is_7_0_0() {
        let at = |v: &str| ServerInfo {
            name: "redis".into(),
            version: v.into(),
            redis_version: Version::parse(v).unwrap(),
        };
        assert!(at("7.0.0").check().is_ok());
        assert!(at("6.9.99").check().is_err());
        assert!(at("6").check().is_err());
        assert!(at("7").check().is_ok());
    }

    #[test]
    fn pre_release_suffixes_are_ignored() {
        let info = ServerInfo::parse(REDIS_8_RC).unwrap();
        assert_eq!(info.redis_version, Version(8, 0, 0));
        assert_eq!(info.version, "8.0.0-rc1");
        assert!(info.check().is_ok());
    }

    #[test]
    fn a_reply_without_a_usable_version_is_an_error_not_a_guess() {
        assert!(ServerInfo::parse("# Server\r\nos:Linux\r\n").is_err());
        assert!(ServerInfo::parse("redis_version:\r\n").is_err());
        assert!(ServerInfo::parse("redis_version:seven\r\n").is_err());
        assert_eq!(Version::parse("x.1"), None);
        assert_eq!(Version::parse("7.x"), None);
    }

    /// A Redis error reply exactly as the server would send it.
    fn server_error(line: &str) -> redis::RedisError {
        match redis::parse_redis_value(format!("-{line}\r\n").as_bytes()) {
            Ok(redis::Value::ServerError(err)) => err.into(),
            other => panic!("not an error reply: {other:?}"),
        }
    }

    #[test]
    fn the_verdict_serves_supported_servers_and_refuses_old_ones() {
        assert!(decide(Ok(REDIS_7_0.into())).unwrap().is_none());
        assert!(decide(Ok(VALKEY_9_1.into())).unwrap().is_none());
        let refusal = decide(Ok(REDIS_6_2.into())).unwrap().unwrap();
        assert_eq!(refusal.code(), Code::FailedPrecondition);
        assert!(refusal.to_string().contains("redis 6.2.14"));
    }

    #[test]
    fn a_server_that_will_not_tell_is_served_unchecked() {
        let noperm = server_error("NOPERM User alice has no permissions to run the 'info' command");
        assert!(decide(Err(noperm)).unwrap().is_none());
        let renamed =
            server_error("ERR unknown command 'INFO', with args beginning with: 'server'");
        assert!(decide(Err(renamed)).unwrap().is_none());
        assert!(decide(Ok("# Server\r\n".into())).unwrap().is_none());
    }

    #[test]
    fn no_answer_is_no_verdict_yet() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = decide(Err(redis::RedisError::from(io))).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }

    #[test]
    fn a_field_name_must_match_whole() {
        let info = ServerInfo::parse("redis_version_extra:1.0.0\r\nredis_version:7.2.0\r\n");
        assert_eq!(info.unwrap().redis_version, Version(7, 2, 0));
    }
}
