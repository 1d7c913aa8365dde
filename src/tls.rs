//! Adapter layer (TLS): optional HTTPS for the HTTP listener with rustls (the `ring` provider,
//! never OpenSSL). It loads `[server.tls]` PEM files; the accept loop of
//! [`crate::http::server`] runs the handshake and serves the axum router on each connection
//! (HTTP/1.1 with WebSocket upgrades, or HTTP/2 when the client asks for it). It imports the
//! config and the router type only; no core, store or driver.

use crate::config::TlsConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.cert: cannot read {}: {source}", path.display())]
    Cert {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("server.tls.cert: {} holds no PEM certificate", path.display())]
    NoCert { path: PathBuf },
    #[error("server.tls.key: cannot read a PEM private key from {}: {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("server.tls: the certificate and key cannot be used together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS server configuration in force; cloned handles share it, so a reload (new
/// certificate after a renewal) applies to every connection accepted afterwards.
#[derive(Clone)]
pub struct TlsSettings {
    current: Arc<RwLock<TlsAcceptor>>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSettings")
    }
}

impl TlsSettings {
    /// Reads the certificate chain and private key named by `[server.tls]`.
    pub fn load(cfg: &TlsConfig) -> Result<TlsSettings, TlsError> {
        Ok(TlsSettings {
            current: Arc::new(RwLock::new(acceptor(cfg)?)),
        })
    }

    /// Reads the files again (e.g. after a certificate renewal); on error the configuration
    /// in force stays.
    pub fn reload(&self, cfg: &TlsConfig) -> Result<(), TlsError> {
        let new = acceptor(cfg)?;
        match self.current.write() {
            Ok(mut a) => *a = new,
            Err(p) => *p.into_inner() = new,
        }
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        match self.current.read() {
            Ok(a) => a.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let cert_err = |source| TlsError::Cert {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(cert_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let certs = read_certs(&cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|source| TlsError::Key {
        path: cfg.key.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
