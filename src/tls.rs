//! TLS material: the gRPC listener's certificate (optionally verifying
//! client certificates), and the trust anchors and client certificate for
//! `rediss://` connections to Redis.
//!
//! Both sides use rustls with the `ring` provider: it builds with a plain C
//! compiler, where aws-lc needs cmake/NASM surprises on a fresh machine.
//! tonic and redis-rs ask rustls for the process-wide default provider, so
//! [`install_crypto_provider`] picks ring once before either builds a
//! config (otherwise a second provider enabled by any dependency would
//! make rustls refuse to choose).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::error::{Error, Result};

/// Longest TLS handshake the listener waits for.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes ring the process-wide rustls provider; idempotent.
pub fn install_crypto_provider() {
    // Fails only when a provider is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The gRPC listener's TLS settings, from `--tls-cert`, `--tls-key` and
/// `--tls-client-ca`; `None` = plaintext.
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    client_ca: Option<&Path>,
) -> Result<Option<ServerTlsConfig>, String> {
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) if client_ca.is_some() => {
            return Err("--tls-client-ca needs --tls-cert and --tls-key".into());
        }
        (None, None) => return Ok(None),
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let identity = Identity::from_pem(read("--tls-cert", cert)?, read("--tls-key", key)?);
    // Handshakes run concurrently; a bound keeps clients that open a
    // connection and never finish the handshake from piling up sockets.
    let mut config = ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = client_ca {
        // Required, not optional: with a client CA configured, a client
        // without a certificate from it cannot complete the handshake.
        config = config.client_ca_root(Certificate::from_pem(read("--tls-client-ca", ca)?));
    }
    Ok(Some(config))
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// PEM files for `rediss://` connections (`--redis-ca`,
/// `--redis-client-cert`, `--redis-client-key`). Without a CA, the system
/// trust store verifies Redis' certificate.
#[derive(Clone, Debug, Default)]
pub struct RedisTls {
    /// CA certificate(s) Redis' certificate must chain to.
    pub ca: Option<PathBuf>,
    /// Client certificate, for a Redis with `tls-auth-clients yes`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key.
    pub client_key: Option<PathBuf>,
}

impl RedisTls {
    /// A Redis client for `url`: plain [`redis::Client::open`] when no TLS
    /// file is configured, otherwise a client that uses them (which needs
    /// a `rediss://` URL).
    pub fn client(&self, url: &str) -> Result<redis::Client> {
        self.client_for(url)
    }

    /// [`RedisTls::client`] for connection details already parsed (e.g.
    /// a URL's with another protocol version).
    pub fn client_for(&self, info: impl redis::IntoConnectionInfo) -> Result<redis::Client> {
        match self.certificates()? {
            None => {
                redis::Client::open(info).map_err(|e| Error::invalid("redis-url", e.to_string()))
            }
            Some(certificates) => redis::Client::build_with_tls(info, certificates)
                .map_err(|e| Error::invalid("redis-url", e.to_string())),
        }
    }

    /// The configured files read into redis-rs' form; `None` when no TLS
    /// file is configured. Shared by the standalone and the cluster client.
    pub fn certificates(&self) -> Result<Option<redis::TlsCertificates>> {
        let invalid = |flag: &str, e: String| Error::invalid(flag, e);
        if self.ca.is_none() && self.client_cert.is_none() && self.client_key.is_none() {
            return Ok(None);
        }
        let client_tls = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read("--redis-client-cert", cert)
                    .map_err(|e| invalid("redis-client-cert", e))?,
                client_key: read("--redis-client-key", key)
                    .map_err(|e| invalid("redis-client-key", e))?,
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "redis-client-cert",
                    "--redis-client-cert and --redis-client-key go together".into(),
                ));
            }
        };
        let root_cert = match &self.ca {
            Some(ca) => Some(read("--redis-ca", ca).map_err(|e| invalid("redis-ca", e))?),
            None => None,
        };
        Ok(Some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_flags_must_come_in_pairs() {
        let p = Path::new("/x");
        assert!(server_config(None, None, None).unwrap().is_none());
        assert!(server_config(Some(p), None, None).is_err());
        assert!(server_config(None, Some(p), None).is_err());
        assert!(server_config(None, None, Some(p)).is_err());
        let err = server_config(Some(p), Some(p), None).unwrap_err();
        assert!(err.contains("--tls-cert /x"), "{err}");
    }

    #[test]
    fn redis_tls_files_need_a_rediss_url() {
        let none = RedisTls::default();
        assert!(none.client("redis://127.0.0.1:1").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "").unwrap();
        let tls = RedisTls {
            ca: Some(ca),
            ..RedisTls::default()
        };
        let err = tls.client("redis://127.0.0.1:1").err().unwrap();
        assert!(err.to_string().contains("rediss://"), "{err}");
        let half = RedisTls {
            client_cert: Some(dir.path().join("c.pem")),
            ..RedisTls::default()
        };
        assert!(half.client("rediss://127.0.0.1:1").is_err());
    }
}
